"""``rutas load roads|borders|crossings`` and ``rutas snap``: reference layers and snapping."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from geodata import db
from geodata.errors import InputError
from geodata.reference import GLOBAL_MAP_CREDIT, LOADERS, LayerReport
from geodata.settings import Settings, get_settings
from routes.snapping import SnapReport, snap_pending, summary
from scripts.console import console, friendly_errors, out, print_json, progress

#: The demo's reference layers, relative to the data dir (Global Map roads: non-commercial use only).
DEMO_LAYERS = (
    (
        "borders",
        "natural_earth/ne_10m_admin_0_boundary_lines_land_latam.geojson",
        "Natural Earth 10m land boundaries (public domain)",
    ),
    (
        "roads",
        "globalmap_roads/globalmap_roads_latam.gpkg",
        GLOBAL_MAP_CREDIT,
    ),
    (
        "crossings",
        "bts_border_crossing_ports/us_land_ports_of_entry.geojson",
        "US BTS land ports of entry (public domain)",
    ),
)


def load_layer(
    settings: Settings,
    layer: str,
    path: Path,
    *,
    source: str | None = None,
    options: dict[str, Any] | None = None,
) -> LayerReport:
    """Load one reference layer through the loader registered for ``layer``."""
    loader = LOADERS.get(layer)
    if loader is None:
        raise InputError(
            f"Unknown layer {layer!r}: use one of {', '.join(sorted(LOADERS))}.",
            f"Capa desconocida {layer!r}: use una de {', '.join(sorted(LOADERS))}.",
            code="bad_option",
        )
    accepted = inspect.signature(loader).parameters
    for option in options or {}:
        if option not in accepted:
            raise InputError(
                f"--{option} does not apply to {layer} layers.",
                f"--{option} no se aplica a las capas {layer}.",
                code="bad_option",
            )
    return loader(db.get_engine(settings), path, settings=settings, source=source, **(options or {}))


def _print_layer(report: LayerReport) -> None:
    table = Table("", "", title=f"Capa cargada / layer loaded: {report.kind}")
    for key, value in report.as_record().items():
        if isinstance(value, dict):
            for k, v in value.items():
                table.add_row(f"  {k}", str(v))
        else:
            table.add_row(key, "" if value is None else str(value))
    out.print(table)


def _snap(settings: Settings, *, quiet: bool, redo: bool = False) -> SnapReport:
    engine = db.get_engine(settings)
    if quiet:
        return snap_pending(engine, settings, redo=redo)
    with progress() as bar:
        task = bar.add_task("Ajustando eventos / snapping events", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return snap_pending(engine, settings, redo=redo, on_chunk=step)


def _print_summary(numbers: dict[str, Any]) -> None:
    out.print(
        f"Eventos / events: {numbers['events']}  ajustados a la red / on the network: {numbers['snapped']}  "
        f"fuera de la red / off-network: {numbers['off_network']}  "
        f"a menos de {numbers['near_km']:g} km de una frontera / near a border: {numbers['near_border']}"
    )
    table = Table(
        "paso / crossing",
        "oficial / official",
        "países / countries",
        "eventos / events",
        "km medio / mean km",
        title=f"Pasos con más eventos a menos de {numbers['near_km']:g} km / top crossings",
    )
    for row in numbers["top_crossings"]:
        if row["official"]:
            name = row["name"] or f"#{row['id']}"
        else:  # an inferred crossing is named after the nearest place, if any
            name = f"cerca de / near {row['name']}" if row["name"] else f"inferido / inferred #{row['id']}"
        pair = "-".join(c for c in (row["country_a"], row["country_b"]) if c)
        table.add_row(
            name, "sí / yes" if row["official"] else "no", pair, str(row["events"]), str(row["mean_km"])
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``load`` and ``snap`` to the ``rutas`` command line."""

    @app.command("load")
    @friendly_errors
    def load(
        layer: Annotated[
            str, typer.Argument(help="roads | borders | crossings (and other registered layers)")
        ],
        path: Annotated[Path, typer.Argument(help="File to load / archivo a cargar")],
        source: Annotated[str | None, typer.Option(help="Provenance / procedencia")] = None,
        kind: Annotated[
            str | None, typer.Option(help="Sub-kind for layers that have one (corridors)")
        ] = None,
        country: Annotated[
            str | None, typer.Option(help="Owner country ISO3, for layers that have one (corridors)")
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the load report as JSON")] = False,
    ) -> None:
        """Load a reference layer, replacing its previous version in one transaction."""
        settings = get_settings()
        options = {k: v for k, v in (("kind", kind), ("country", country)) if v} or None
        with console.status(f"Cargando / loading {layer}: {path.name}"):
            report = load_layer(settings, layer, path, source=source, options=options)
        if json_out:
            print_json(report.as_record())
        else:
            _print_layer(report)

    @app.command("snap")
    @friendly_errors
    def snap(
        redo: Annotated[
            bool, typer.Option("--all", help="Snap every event again (after changing the snapping settings)")
        ] = False,
        json_out: Annotated[bool, typer.Option("--json", help="Print the snapping report as JSON")] = False,
    ) -> None:
        """Snap the events not yet snapped (or snapped to older layers) onto roads, borders, crossings."""
        settings = get_settings()
        report = _snap(settings, quiet=json_out, redo=redo)
        if json_out:
            print_json({**report.as_record(), "summary": summary(db.get_engine(settings), settings)})
            return
        out.print(f"Ajustados ahora / snapped now: {report.pending} eventos en {report.seconds:.1f} s")
        _print_summary(summary(db.get_engine(settings), settings))


def demo_stage(settings: Settings) -> None:
    """Load the demo's roads, borders and crossings, snap the stored events, print the summary."""
    if settings.data_dir is None:
        raise InputError(
            "The data dir is not set: set RUTAS_DATA_DIR.", "Defina RUTAS_DATA_DIR.", code="no_data_dir"
        )
    # inferred crossings are named after the nearest Natural Earth populated place
    data_dir = settings.data_dir
    places = data_dir / "natural_earth/ne_10m_populated_places_latam.geojson"
    settings = settings.model_copy(update={"crossing_places_file": places})
    for layer, relative, source in DEMO_LAYERS:
        with console.status(f"Cargando / loading {layer}"):
            report = load_layer(settings, layer, data_dir / relative, source=source)
        extra = ""
        if layer == "roads":
            d = report.details
            extra = (
                f" ({d['lines_read']} lines -> {d['edges']} edges, {d['nodes']} nodes, "
                f"{d['components']} connected components)"
            )
        out.print(f"{layer}: {report.feature_count} rasgos / features{extra}")
    _snap(settings, quiet=False)
    _print_summary(summary(db.get_engine(settings), settings))
