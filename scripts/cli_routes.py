"""``rutas run``, ``rutas export`` and ``rutas scenario``: the emerging-route analysis from the command line.

``run`` snaps pending events, analyses the stored events per crime type and stores the run
and its routes (:func:`routes.pipeline.run_pipeline`); ``export`` writes a product of the
store (:data:`routes.export.PRODUCTS`); ``scenario`` plants routes along the Global Map roads
(new, intensifying, persistent, diminishing, sporadic) over noise and shows what is found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import geopandas as gpd
import pandas as pd
import typer
from rich.table import Table

from geodata import db
from geodata.errors import InputError
from geodata.settings import Settings, get_settings
from routes.analysis import Analysis, AnalysisParams, analyse
from routes.cube import CubeFilter
from routes.export import ExportRequest, export
from routes.pipeline import RunFilters, RunSummary, route_summaries, run_pipeline
from routes.synthetic import Scenario, globalmap_edges, make_scenario
from scripts.console import console, friendly_errors, out, print_json

DEMO_COUNTRIES = ("SLV", "HND", "GTM")
#: Parameters of the demo on the IOM incidents: about 5,700 incidents over 11 years and the whole
#: Americas, four in five off the road network (deserts, sea, rivers), so coarser H3 cells
#: (resolution 4, ~1,800 km2), a wider neighbourhood and two months on each side in time.
IOM_DEMO_PARAMS = {"segment_km": 25.0, "neighbour_km": 100.0, "time_step": 2, "h3_resolution": 4}


def route_records(routes: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """One plain record per route (no geometry, no event ids), longest first."""
    return route_summaries(routes)


def run_scenario(
    settings: Settings, params: AnalysisParams, *, countries: tuple[str, ...] = DEMO_COUNTRIES, seed: int = 1
) -> tuple[Scenario, Analysis]:
    """Build the scenario on the Global Map roads of ``countries`` and analyse it."""
    if settings.data_dir is None:
        raise InputError(
            "The data dir is not set: set RUTAS_DATA_DIR to the shared data folder.",
            "No hay carpeta de datos: defina RUTAS_DATA_DIR con la carpeta compartida.",
            code="no_data_dir",
        )
    edges = globalmap_edges(Path(settings.data_dir), countries)
    scenario = make_scenario(edges, seed=seed)
    period = CubeFilter(since=scenario.since, until=scenario.until)
    result = analyse(scenario.events, edges, params, filters=period, run_id=f"scenario-{seed}")
    return scenario, result


def _print(scenario: Scenario, result: Analysis) -> None:
    planted = ", ".join(f"{b}" for b in scenario.planted["behaviour"])
    out.print(
        f"Escenario sintético / synthetic scenario: {len(scenario.events):,} eventos / events, "
        f"{scenario.n_slices} meses / months, rutas sembradas / planted routes: {planted}"
    )
    out.print(
        f"Cubo / cube: {result.cube.n_units:,} unidades / units x {result.cube.n_slices} intervalos / "
        f"slices; parámetros / parameters: {result.params.as_record()}"
    )
    table = Table(
        "categoría / category",
        "km",
        "eventos / events",
        "tendencia / trend",
        "tau",
        "p",
        "países / countries",
        title="Rutas emergentes / emerging routes",
    )
    for r in route_records(result.routes):
        table.add_row(
            r["category"],
            f"{r['length_km']:,.0f}",
            f"{r['events']:,}",
            r["trend"],
            f"{r['tau']:.2f}",
            f"{r['p_value']:.3g}",
            " ".join(r["countries"]),
        )
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``run``, ``export`` and ``scenario`` to the ``rutas`` command line."""
    _register_run(app)
    _register_export(app)

    @app.command("scenario")
    @friendly_errors
    def scenario(
        seed: Annotated[int, typer.Option(help="Seed of the scenario / semilla")] = 1,
        countries: Annotated[str, typer.Option(help="ISO3 codes, comma separated")] = "SLV,HND,GTM",
        segment_km: Annotated[float | None, typer.Option("--segment-km")] = None,
        neighbour_km: Annotated[float | None, typer.Option("--neighbour-km")] = None,
        time_step: Annotated[int | None, typer.Option("--time-step")] = None,
        alpha: Annotated[float | None, typer.Option("--alpha")] = None,
        gap_segments: Annotated[int | None, typer.Option("--gap-segments")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the routes as JSON")] = False,
    ) -> None:
        """Plant routes on the real roads, run the emerging-route analysis, print what it finds."""
        settings = get_settings()
        params = AnalysisParams.from_settings(
            settings,
            segment_km=segment_km,
            neighbour_km=neighbour_km,
            time_step=time_step,
            alpha=alpha,
            gap_segments=gap_segments,
        )
        codes = tuple(c.strip().upper() for c in countries.split(",") if c.strip())
        with console.status("Analizando / analysing"):
            planted, result = run_scenario(settings, params, countries=codes, seed=seed)
        if json_out:
            print_json(
                {
                    "parameters": result.params.as_record(),
                    "timings_s": result.timings_s,
                    "planted": planted.planted[["name", "behaviour", "length_m"]].to_dict("records"),
                    "routes": route_records(result.routes),
                }
            )
        else:
            _print(planted, result)


def _date(value: str | None, option: str) -> pd.Timestamp | None:
    """The option's date as a UTC timestamp (a date without a zone is UTC)."""
    if value is None:
        return None
    try:
        when = pd.Timestamp(value)
        return when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
    except ValueError as error:
        raise InputError(
            f"{option} {value!r} is not a date: write it as YYYY-MM-DD.",
            f"{option} {value!r} no es una fecha: escríbala como AAAA-MM-DD.",
            code="bad_date",
        ) from error


def _routes_table(records: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    table.add_column("categoría / category", no_wrap=True)
    table.add_column("km", justify="right")
    table.add_column("eventos / events", justify="right")
    table.add_column("tendencia / trend")
    table.add_column("países / countries")
    table.add_column("pasos / crossings")
    table.add_column("vista antes / seen before")
    for r in records:
        crossings = r.get("crossings") or [f"#{c}" for c in r.get("crossing_ids", [])]
        shown = ", ".join(crossings[:2]) + (f" (+{len(crossings) - 2})" if len(crossings) > 2 else "")
        tau = "" if r["tau"] is None else f" (tau {r['tau']:.2f})"
        table.add_row(
            r["category"],
            f"{r['length_km']:,.0f}",
            f"{r['events']:,}",
            r["trend"] + tau,
            " ".join(r["countries"]),
            shown or "-",
            "sí / yes" if r["seen_before"] else "no",
        )
    return table


def print_runs(runs: list[RunSummary]) -> None:
    """The runs as a person reads them: parameters, counts, timings and a table of routes."""
    for run in runs:
        c = run.counts
        out.print(
            f"Ejecución / run {run.run_id} ({'+'.join(run.crime_types)}): "
            f"{c.get('events_analysed', 0):,} eventos / events "
            f"({c.get('events_on_network', 0):,} en la red / on the network), "
            f"{c.get('units', 0):,} unidades / units x {c.get('slices', 0)} intervalos / slices, "
            f"{c.get('routes', 0)} rutas / routes ({c.get('routes_new', 0)} nuevas / new)"
        )
        out.print(
            f"Solapes con corredores / corridor overlaps: {c.get('corridor_overlaps', 0)}, "
            f"zonas de convergencia / convergence zones: {c.get('convergence_zones', 0)}, "
            f"candidatos a operaciones conjuntas / joint-operation candidates: "
            f"{c.get('joint_operations', 0)} en pasos / at crossings, "
            f"{c.get('joint_sectors', 0)} en tramos de frontera / at border sectors"
        )
        out.print(
            f"[dim]parámetros / parameters: {run.parameters}  ·  código / code: {run.code_version}  ·  "
            f"tiempos / timings (s): {run.timings_s}[/]"
        )
        out.print(_routes_table(run.routes, "Rutas emergentes / emerging routes"))


def _register_run(app: typer.Typer) -> None:
    @app.command("run")
    @friendly_errors
    def run(
        since: Annotated[str | None, typer.Option(help="First day analysed, YYYY-MM-DD (UTC)")] = None,
        until: Annotated[str | None, typer.Option(help="Day after the last one analysed (UTC)")] = None,
        segment_km: Annotated[float | None, typer.Option("--segment-km", help="Longest segment, km")] = None,
        neighbour_km: Annotated[
            float | None, typer.Option("--neighbour-km", help="Network neighbourhood, km")
        ] = None,
        time_step: Annotated[int | None, typer.Option("--time-step", help="Slices on each side")] = None,
        slice_: Annotated[str | None, typer.Option("--slice", help="month or week")] = None,
        alpha: Annotated[float | None, typer.Option("--alpha", help="False discovery rate")] = None,
        gap_segments: Annotated[
            int | None, typer.Option("--gap-segments", help="Gap bridged, segments")
        ] = None,
        h3_resolution: Annotated[
            int | None, typer.Option("--h3-resolution", help="H3 cells off the network")
        ] = None,
        crime_type: Annotated[
            list[str] | None,
            typer.Option(
                "--crime-type",
                help="Crime type (repeatable; named together, analysed together). "
                "Default: one run per crime type present",
            ),
        ] = None,
        kind: Annotated[list[str] | None, typer.Option("--kind", help="Event kind (repeatable)")] = None,
        country: Annotated[
            list[str] | None, typer.Option("--country", help="Owner country ISO3 (repeatable)")
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
    ) -> None:
        """Snap pending events, find the emerging routes per crime type, store and print the runs."""
        settings = get_settings()
        params = AnalysisParams.from_settings(
            settings,
            segment_km=segment_km,
            neighbour_km=neighbour_km,
            time_step=time_step,
            slice=slice_,
            alpha=alpha,
            gap_segments=gap_segments,
            h3_resolution=h3_resolution,
        )
        filters = RunFilters(
            since=_date(since, "--since"),
            until=_date(until, "--until"),
            crime_types=tuple(crime_type) if crime_type else None,
            kinds=tuple(kind) if kind else None,
            countries=tuple(c.strip().upper() for c in country) if country else None,
        )
        engine = db.get_engine(settings)
        with console.status("Analizando / analysing") as status:
            runs = run_pipeline(
                engine,
                settings,
                params,
                filters,
                on_stage=lambda name: status.update(f"Analizando / analysing: {name}"),
            )
        if json_out:
            print_json({"runs": [r.as_record() for r in runs]})
        else:
            print_runs(runs)


def _register_export(app: typer.Typer) -> None:
    @app.command("export")
    @friendly_errors
    def export_(
        product: Annotated[str, typer.Argument(help="events, routes, or a product a later stage adds")],
        fmt: Annotated[
            str, typer.Option("--format", help="geojson, gpkg, parquet, kml, csv (tif for rasters)")
        ],
        out_path: Annotated[Path, typer.Option("--out", help="File to write (replaced when it exists)")],
        since: Annotated[str | None, typer.Option(help="Events from this day, YYYY-MM-DD (UTC)")] = None,
        until: Annotated[str | None, typer.Option(help="Events before this day (UTC)")] = None,
        run_id: Annotated[
            list[int] | None, typer.Option("--run", help="Routes of this run (repeatable)")
        ] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print what was written as JSON")] = False,
    ) -> None:
        """Write a product of the store to a file. Runs with the system scope (the installation's user)."""
        settings = get_settings()
        request = ExportRequest(
            format=fmt.lower(),
            out=out_path,
            scope=db.SYSTEM,
            since=_date(since, "--since"),
            until=_date(until, "--until"),
            run_ids=tuple(run_id) if run_id else None,
        )
        report = export(db.get_engine(settings), product, request)
        if json_out:
            print_json(report.as_record())
        else:
            out.print(
                f"{report.product}: {report.features:,} rasgos / features -> {report.path} ({report.format})"
                + "".join(f"\n  {n}" for n in report.notes)
            )


def demo_stage(settings: Settings) -> None:
    """Find the emerging routes of the stored IOM incidents, print them, then the synthetic check."""
    engine = db.get_engine(settings)
    params = AnalysisParams.from_settings(settings, **IOM_DEMO_PARAMS)
    with console.status("Analizando los incidentes OIM / analysing the IOM incidents"):
        runs = run_pipeline(engine, settings, params)
    out.print("Incidentes OIM Missing Migrants en el almacén / IOM Missing Migrants incidents in the store")
    print_runs(runs)
    products = Path(settings.state_dir) / "products"
    report = export(engine, "routes", ExportRequest(format="geojson", out=products / "routes.geojson"))
    out.print(f"Rutas exportadas / routes exported: {report.path}")
    out.print("Comprobación con rutas sembradas / check on planted routes:")
    planted, result = run_scenario(settings, AnalysisParams.from_settings(settings))
    _print(planted, result)
