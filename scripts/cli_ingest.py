"""``rutas ingest``: validate and load record files; and the ingest stage of ``rutas demo``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.table import Table

from geodata import db
from geodata.errors import RutasError
from geodata.ingest import BatchReport, ingest_file
from geodata.settings import Settings, get_settings
from routes.alerts import on_loaded as alert_hook
from scripts.console import console, out, print_json, progress, show_error

IOM_FILE = Path("iom_missing_migrants") / "missing_migrants_americas_NO_ROUTE_LABEL.csv"
IOM_SOURCE = "IOM Missing Migrants Project"


def show_report(report: BatchReport) -> None:
    """Print a batch report for people: counts, then rejected rows and notes as tables."""
    summary = Table("archivo / file", "lote / batch", "leídas / read", "aceptadas / accepted",
                    "rechazadas / rejected", "duplicadas / duplicates", "reparadas / fixed",
                    title="Carga / load")
    summary.add_row(report.file, str(report.batch_id), str(report.rows_read), str(report.accepted),
                    str(report.rejected), str(report.duplicates), str(report.fixed))
    out.print(summary)
    if report.errors:
        shown = report.errors[:50]
        table = Table("fila / row", "campo / field", "valor / value", "motivo / reason",
                      title=f"Filas rechazadas / rejected rows ({report.errors_total} problems)")
        for p in shown:
            table.add_row("" if p.row is None else str(p.row), p.field, p.value[:40],
                          f"{p.reason_es}\n[dim]{p.reason}[/]")
        out.print(table)
        if report.errors_total > len(shown):
            out.print(f"... {report.errors_total - len(shown)} más / more (use --json for all)")
    for note in report.notes:
        out.print(f"[yellow]Nota / note:[/] {note.reason_es}\n[dim]{note.reason}[/]")


def _ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files: CSV, XLSX, GeoJSON, GPKG, KML/KMZ, zipped SHP")],
    kind: Annotated[str, typer.Option(help="incident, interception or victim_identification")],
    country: Annotated[str | None, typer.Option(
        help="ISO3 of the reporting office (e.g. MEX); omit to take each row's location country")] = None,
    source: Annotated[str | None, typer.Option(
        help="Source system name; records are unique per country, source and record id")] = None,
    mapping: Annotated[Path | None, typer.Option(help="JSON mapping file for unrecognised columns")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse a whole file if any row is bad")] = False,
    fix_coordinates: Annotated[bool, typer.Option(
        "--fix-coordinates", help="Repair swapped or sign-lost coordinates and record the repair")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per batch")] = False,
) -> None:
    """Validate and load record files, one batch per file / Validar y cargar archivos de registros."""
    settings = get_settings()
    try:
        db.upgrade(settings)
        engine = db.get_engine(settings)
    except RutasError as error:
        show_error(error)
        raise typer.Exit(code=2) from None
    failed = False
    for path in paths:
        try:
            with progress() as bar:
                task = bar.add_task(path.name, total=None)

                def advance(done: int, total: int, task: object = task) -> None:
                    bar.update(task, completed=done, total=total)  # type: ignore[arg-type]

                report = ingest_file(
                    engine, path, settings=settings, kind=kind,
                    owner_country=country.upper() if country else None, source=source, mapping=mapping,
                    strict=strict, fix_coordinates=fix_coordinates, loaded_by="cli", progress=advance,
                    on_loaded=alert_hook,
                )
        except RutasError as error:
            failed = True
            if as_json:
                print_json({"batch_id": None, "file": path.name, "accepted": 0, "rejected": 0,
                            "duplicates": 0, "error": {"code": error.code, "message": error.message,
                                                       "message_es": error.message_es},
                            "errors": [p.as_record() for p in error.problems]})
            else:
                show_error(error)
            continue
        if as_json:
            print_json(report.as_record())
        else:
            show_report(report)
    if failed:
        raise typer.Exit(code=2)


def register(app: typer.Typer) -> None:
    """Add ``rutas ingest`` to the command line."""
    app.command("ingest")(_ingest)


def demo_stage(settings: Settings) -> None:
    """Load the IOM Missing Migrants Americas file as incidents and print what became of every row.

    The owner country of each incident is its location country. Loading it again (a second
    demo run) stores nothing new and counts every row as a duplicate.
    """
    if settings.data_dir is None:
        raise RutasError("The data dir is not set (RUTAS_DATA_DIR).", "Falta la carpeta de datos.")
    db.upgrade(settings)
    engine = db.get_engine(settings)
    report = ingest_file(engine, settings.data_dir / IOM_FILE, settings=settings, kind="incident",
                         owner_country=None, source=IOM_SOURCE, fix_coordinates=True, loaded_by="demo",
                         on_loaded=alert_hook)
    show_report(report)
    reasons = Counter(p.code for p in report.errors)
    table = Table("motivo / reason", "filas / rows", title="Rechazos por motivo / rejections by reason")
    for code, count in reasons.most_common():
        table.add_row(code, str(count))
    out.print(table)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT owner_country, count(*), count(coordinate_fix), sum(dead), sum(missing) "
            "FROM events WHERE source = :source GROUP BY 1 ORDER BY 2 DESC LIMIT 12"),
            {"source": IOM_SOURCE}).all()
    by_country = Table("país / country", "eventos / events", "reparados / fixed", "muertos / dead",
                       "desaparecidos / missing", title="IOM en el almacén / IOM in the store")
    for code, count, fixed, dead, missing in rows:
        by_country.add_row(code, str(count), str(fixed), str(dead or 0), str(missing or 0))
    out.print(by_country)
    accounted = report.accepted + report.rejected + report.duplicates
    status = ("[green]todas contadas / all accounted for[/]" if accounted == report.rows_read
              else "[red]MISMATCH[/]")
    console.print(f"Filas / rows: {report.rows_read} = {report.accepted} aceptadas + {report.rejected} "
                  f"rechazadas + {report.duplicates} duplicadas: {status}")
