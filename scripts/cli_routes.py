"""``rutas scenario``: the emerging-route analysis on a synthetic scenario over the real roads.

Until ``rutas run`` reads snapped events from the store, this shows the analysis end to end:
routes planted along the Global Map roads (new, intensifying, persistent, diminishing,
sporadic) over background noise, and the routes, categories and trends Rutas finds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import geopandas as gpd
import pandas as pd
import typer
from rich.table import Table

from geodata.errors import InputError
from geodata.settings import Settings, get_settings
from routes.analysis import Analysis, AnalysisParams, analyse
from routes.cube import CubeFilter
from routes.synthetic import Scenario, globalmap_edges, make_scenario
from scripts.console import console, friendly_errors, out, print_json

DEMO_COUNTRIES = ("SLV", "HND", "GTM")


def route_records(routes: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """One plain record per route (no geometry, no event ids), longest first."""
    records = []
    for r in routes.sort_values("length_m", ascending=False).itertuples():
        records.append({
            "route_key": getattr(r, "route_key", None),
            "seen_before": bool(getattr(r, "seen_before", False)),
            "category": r.category,
            "length_km": round(float(r.length_m) / 1000.0, 1),
            "events": len(r.event_ids),
            "trend": r.trend,
            "tau": round(float(r.tau), 3),
            "p_value": float(r.p_value),
            "countries": list(r.countries),
            "first_event": None if pd.isna(r.first_event) else r.first_event.isoformat(),
            "last_event": None if pd.isna(r.last_event) else r.last_event.isoformat(),
            "category_shares": r.category_shares,
        })
    return records


def run_scenario(settings: Settings, params: AnalysisParams, *, countries: tuple[str, ...] = DEMO_COUNTRIES,
                 seed: int = 1) -> tuple[Scenario, Analysis]:
    """Build the scenario on the Global Map roads of ``countries`` and analyse it."""
    if settings.data_dir is None:
        raise InputError("The data dir is not set: set RUTAS_DATA_DIR to the shared data folder.",
                         "No hay carpeta de datos: defina RUTAS_DATA_DIR con la carpeta compartida.",
                         code="no_data_dir")
    edges = globalmap_edges(Path(settings.data_dir), countries)
    scenario = make_scenario(edges, seed=seed)
    period = CubeFilter(since=scenario.since, until=scenario.until)
    result = analyse(scenario.events, edges, params, filters=period, run_id=f"scenario-{seed}")
    return scenario, result


def _print(scenario: Scenario, result: Analysis) -> None:
    planted = ", ".join(f"{b}" for b in scenario.planted["behaviour"])
    out.print(f"Escenario sintético / synthetic scenario: {len(scenario.events):,} eventos / events, "
              f"{scenario.n_slices} meses / months, rutas sembradas / planted routes: {planted}")
    out.print(f"Cubo / cube: {result.cube.n_units:,} unidades / units x {result.cube.n_slices} intervalos / "
              f"slices; parámetros / parameters: {result.params.as_record()}")
    table = Table("categoría / category", "km", "eventos / events", "tendencia / trend", "tau", "p",
                  "países / countries", title="Rutas emergentes / emerging routes")
    for r in route_records(result.routes):
        table.add_row(r["category"], f"{r['length_km']:,.0f}", f"{r['events']:,}", r["trend"],
                      f"{r['tau']:.2f}", f"{r['p_value']:.3g}", " ".join(r["countries"]))
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add ``scenario`` to the ``rutas`` command line."""

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
        params = AnalysisParams.from_settings(settings, segment_km=segment_km, neighbour_km=neighbour_km,
                                              time_step=time_step, alpha=alpha, gap_segments=gap_segments)
        codes = tuple(c.strip().upper() for c in countries.split(",") if c.strip())
        with console.status("Analizando / analysing"):
            planted, result = run_scenario(settings, params, countries=codes, seed=seed)
        if json_out:
            print_json({"parameters": result.params.as_record(), "timings_s": result.timings_s,
                        "planted": planted.planted[["name", "behaviour", "length_m"]].to_dict("records"),
                        "routes": route_records(result.routes)})
        else:
            _print(planted, result)


def demo_stage(settings: Settings) -> None:
    """Run the analysis on the demo scenario with the settings' parameters and print the routes."""
    planted, result = run_scenario(settings, AnalysisParams.from_settings(settings))
    _print(planted, result)
