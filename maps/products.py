"""The map products of the store, for one reader's scope: risk GeoTIFF, HTML map and PNG map.

Events enter every product only as k-suppressed cell counts (:mod:`maps.privacy`), read in the
reader's scope, so a product made for another country's office never holds a record's (and never
a victim's) coordinates. Routes, crossings and borders are read from the store as they are.
The ``risk`` export product (``rutas export risk --format tif``) is registered here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import read_stored_corridors
from geodata.db import SYSTEM, Scope, scoped
from geodata.errors import InputError
from geodata.reference import GLOBAL_MAP_CREDIT, credits
from geodata.settings import Settings, get_settings
from maps.basemap import BASEMAP_CREDIT, read_land
from maps.folium_map import build_map, save_map
from maps.privacy import cells_as_events, event_cells, sliced_event_cells
from maps.risk import RiskInputs, RiskParams, RiskReport, write_risk_surface
from maps.static import render_png
from routes.export import ExportRequest, Product, register_product, vector_product
from routes.joint_disclosure import withhold_scores
from routes.overlap import (
    JOINT_COLUMNS,
    convergence_zones,
    route_corridor_overlap,
)
from routes.overlap_store import (
    OverlapParams,
    read_convergence_zones,
    read_corridor_overlaps,
    read_joint_operations,
    stored_run_ids,
)
from routes.pipeline import read_routes

#: Credit lines always shown (record data and the software's own layers).
BASE_CREDITS = ("Records: offices of the REDTRAM network (aggregated, k-suppressed)",)


@dataclass(frozen=True)
class ProductParams:
    """How the products are made, built from the settings by :meth:`from_settings`.

    Attributes
    ----------
    cell_km
        Side (km) of the cells events are aggregated into (``RUTAS_AGGREGATE_CELL_KM``).
    k
        Cells, counts and months of fewer than ``k`` records are withheld (``RUTAS_K_ANONYMITY``).
    overlap
        Overlap distances (metres) for runs whose products were not stored
        (``RUTAS_OVERLAP_BUFFER_KM``, ``RUTAS_CONVERGENCE_KM``, ``RUTAS_BORDER_NEAR_KM``).
    slice, language, title, risk
        Time slice of the monthly cells, language of the maps (es, en, pt), title, risk parameters.
    countries_path
        Natural Earth's countries (land and names of the PNG map); None draws no land.
    """

    cell_km: float
    k: int
    overlap: OverlapParams
    slice: str = "month"
    language: str = "es"
    title: str = "Rutas: riesgo en rutas migratorias"
    risk: RiskParams = field(default_factory=RiskParams)
    countries_path: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **changes: Any) -> ProductParams:
        """The parameters the settings give, with ``changes`` (e.g. ``language="en"``) applied."""
        base = cls(
            cell_km=settings.aggregate_cell_km,
            k=settings.k_anonymity,
            overlap=OverlapParams.from_settings(settings),
        )
        return replace(base, **changes)


@dataclass(frozen=True)
class MapLayers:
    """What the maps draw, EPSG:4326: cells (whole period and monthly), routes, corridors, zones,
    crossings, borders and the joint-operation candidates (:func:`map_candidates`)."""

    cells: pd.DataFrame
    monthly_cells: pd.DataFrame
    routes: gpd.GeoDataFrame
    corridors: gpd.GeoDataFrame
    zones: gpd.GeoDataFrame
    crossings: gpd.GeoDataFrame
    borders: gpd.GeoDataFrame
    joint: gpd.GeoDataFrame
    attribution: tuple[str, ...]
    run_id: str


@dataclass(frozen=True)
class ProductPaths:
    """Where the products were written."""

    html: Path
    png: Path
    tif: Path


#: Credit lines required by open record sources, keyed by the batch source that calls for them.
RECORD_CREDITS = {"IOM Missing Migrants Project": "Source: IOM Missing Migrants Project (CC BY 4.0)"}


def record_credits(engine: Engine) -> list[str]:
    """Credit lines of the open record sources in the store (e.g. IOM's CC BY line)."""
    with scoped(engine) as conn:
        sources = set(conn.execute(sa.text("SELECT DISTINCT source FROM ingest_batches")).scalars())
    return [line for source, line in RECORD_CREDITS.items() if source in sources]


def corridor_sources(engine: Engine) -> set[str]:
    """Sources of corridor layers: left out of the credits, as an office's layers are confidential."""
    with scoped(engine) as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT source FROM reference_layers WHERE kind = 'corridors'"))
        return {str(s) for s in rows.scalars()}


def _read_frame(engine: Engine, sql: str) -> gpd.GeoDataFrame:
    with scoped(engine) as conn:
        return gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326").rename_geometry(
            "geometry"
        )


def map_zones(
    engine: Engine,
    scope: Scope,
    routes: gpd.GeoDataFrame,
    corridors: gpd.GeoDataFrame,
    crossings: gpd.GeoDataFrame,
    params: ProductParams,
) -> gpd.GeoDataFrame:
    """Convergence zones of the routes' runs that ``scope`` may see, EPSG:4326, highest score first.

    Those the runs stored (:func:`routes.overlap_store.read_convergence_zones`, under row-level
    security: a zone is shown only to a reader who may see every corridor in it), for the routes
    the reader sees; computed from the corridors the reader sees only for runs stored before
    those products existed (migration 0008).
    """
    if routes.empty:
        return convergence_zones(
            routes, corridors, distance_m=params.overlap.convergence_m, crossings=crossings
        )
    runs = sorted({int(r) for r in routes["run_id"]})
    stored = stored_run_ids(engine, runs)
    frames: list[gpd.GeoDataFrame] = []
    if stored:
        zones = read_convergence_zones(engine, stored, scope)
        frames.append(zones[zones["route_id"].isin(routes["id"])])
    older = [r for r in runs if r not in stored]
    if older:
        frames.append(
            convergence_zones(
                routes[routes["run_id"].isin(older)],
                corridors,
                distance_m=params.overlap.convergence_m,
                crossings=crossings,
            )
        )
    if not frames:
        return convergence_zones(routes.iloc[:0], corridors, distance_m=params.overlap.convergence_m)
    merged = pd.concat(frames, ignore_index=True).sort_values("score", ascending=False, ignore_index=True)
    return gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")


def read_layers(
    engine: Engine,
    scope: Scope,
    params: ProductParams,
    *,
    since: date | None = None,
    until: date | None = None,
) -> MapLayers:
    """The layers of the maps for ``scope`` (events as k-suppressed cells only)."""
    cells = event_cells(engine, scope, cell_km=params.cell_km, k=params.k, since=since, until=until)
    monthly = sliced_event_cells(
        engine, scope, cell_km=params.cell_km, k=params.k, since=since, until=until, slice=params.slice
    )
    routes = read_routes(engine, None, scope)
    if not routes.empty:
        routes["length_km"] = (routes["length_m"] / 1000.0).round(1)
        routes["countries"] = routes["countries"].map(lambda c: ", ".join(c))
        routes["route_id"] = routes["id"]
    corridors = read_stored_corridors(engine, scope)
    crossings = _read_frame(engine, "SELECT name, country_a, country_b, official, geom FROM crossings")
    borders = _read_frame(engine, "SELECT country_a, country_b, geom FROM border_segments")
    confidential = corridor_sources(engine)
    layer_credits = [c for c in credits(engine) if c not in confidential]
    attribution = (*BASE_CREDITS, *record_credits(engine), *layer_credits)
    if any("Global Map" in c for c in layer_credits) and GLOBAL_MAP_CREDIT not in attribution:
        attribution = (*attribution, GLOBAL_MAP_CREDIT)
    run_ids = sorted({str(r) for r in routes["run_id"]}) if not routes.empty else []
    return MapLayers(
        cells=cells,
        monthly_cells=monthly,
        routes=routes,
        corridors=corridors,
        zones=map_zones(engine, scope, routes, corridors, crossings, params),
        crossings=crossings,
        borders=borders,
        joint=map_candidates(engine, scope, routes, params),
        attribution=attribution,
        run_id=",".join(run_ids) or "none",
    )


def risk_inputs(layers: MapLayers) -> RiskInputs:
    """The risk surface's inputs: monthly cells as weighted points, routes and crossings."""
    return RiskInputs(
        events=cells_as_events(layers.monthly_cells),
        routes=layers.routes,
        corridors=layers.corridors,
        crossings=layers.crossings,
    )


def make_products(
    engine: Engine,
    out_dir: Path,
    *,
    scope: Scope = SYSTEM,
    params: ProductParams,
    since: date | None = None,
    until: date | None = None,
    name: str = "rutas",
) -> ProductPaths:
    """Write ``<name>_risk.tif``, ``<name>_map.html`` and ``<name>_map.png`` in ``out_dir`` for ``scope``."""
    layers = read_layers(engine, scope, params, since=since, until=until)
    tif = write_risk_surface(
        out_dir / f"{name}_risk.tif", risk_inputs(layers), params.risk, run_id=layers.run_id
    ).path
    fmap = build_map(
        cells=layers.cells,
        monthly_cells=layers.monthly_cells,
        routes=layers.routes,
        corridors=layers.corridors,
        zones=layers.zones,
        crossings=layers.crossings,
        borders=layers.borders,
        joint=layers.joint,
        risk_path=tif,
        attribution=layers.attribution,
        title=params.title,
        language=params.language,
        slice=params.slice,
    )
    html = save_map(fmap, out_dir / f"{name}_map.html")
    months = pd.to_datetime(layers.monthly_cells["month"]) if not layers.monthly_cells.empty else None
    period = f"{months.min():%Y-%m} – {months.max():%Y-%m}" if months is not None else "—"
    land = read_land(params.countries_path, params.language) if params.countries_path else None
    png = render_png(
        out_dir / f"{name}_map.png",
        risk_path=tif,
        title=params.title,
        period=period,
        attribution=(*layers.attribution, BASEMAP_CREDIT) if land is not None else layers.attribution,
        routes=layers.routes,
        corridors=layers.corridors,
        zones=layers.zones,
        crossings=layers.crossings,
        borders=layers.borders,
        joint=layers.joint,
        land=land,
        run_id=layers.run_id,
        language=params.language,
    )
    return ProductPaths(html=html, png=png, tif=tif)


def export_risk(engine: Engine, request: ExportRequest, params: ProductParams) -> int:
    """``rutas export risk --format tif``: the risk surface for the request's scope.

    Returns the number of bands written.
    """
    since = request.since.date() if request.since is not None else None
    until = request.until.date() if request.until is not None else None
    layers = read_layers(engine, request.scope, params, since=since, until=until)
    report: RiskReport = write_risk_surface(
        request.out, risk_inputs(layers), params.risk, run_id=layers.run_id
    )
    return len(report.bands)


def _latest_stored_runs(engine: Engine, request: ExportRequest, routes: gpd.GeoDataFrame) -> list[int]:
    """The runs asked for (or of the routes read) whose overlap products are stored."""
    wanted = list(request.run_ids) if request.run_ids else sorted({int(r) for r in routes["run_id"]})
    return stored_run_ids(engine, wanted) if wanted else []


def corridors_for_export(engine: Engine, request: ExportRequest, params: ProductParams) -> gpd.GeoDataFrame:
    """``rutas export corridors``: each corridor the scope may see with its overlap with each route.

    One row per (corridor, route) pair that shares length (and one per corridor sharing none),
    figures of :func:`routes.overlap.route_corridor_overlap`, geometry of the corridor, EPSG:4326.
    The figures are the stored ones (``corridor_overlaps``, under row-level security) of the
    runs asked for, else of the latest run per crime-type group; runs stored before those
    products existed are computed on the fly.
    """
    corridors = read_stored_corridors(engine, request.scope)
    routes = read_routes(engine, list(request.run_ids) if request.run_ids else None, request.scope)
    runs = _latest_stored_runs(engine, request, routes)
    if runs:
        overlap = read_corridor_overlaps(engine, runs, request.scope)
        overlap = overlap[overlap["route_id"].isin(routes["id"])].drop(columns=["run_id", "owner_country"])
    else:
        if not routes.empty:
            routes["route_id"] = routes["id"]
        crossings = _read_frame(engine, "SELECT id AS crossing_id, geom FROM crossings")
        overlap = route_corridor_overlap(
            routes, corridors, buffer_m=params.overlap.buffer_m, crossings=crossings
        )
    merged = corridors.merge(overlap.drop(columns=["kind"]), on="corridor_id", how="left")
    merged["illustrative"] = merged["illustrative"].astype(bool)
    return gpd.GeoDataFrame(merged, geometry="geometry", crs="EPSG:4326")


def joint_operations_for_export(
    engine: Engine, request: ExportRequest, params: ProductParams
) -> gpd.GeoDataFrame:
    """``rutas export joint-operations``: crossings and border sectors where routes carry two or more
    countries' records, as the runs stored them.

    The stored candidates (:func:`routes.overlap_store.read_joint_operations`, columns of
    :data:`routes.overlap.JOINT_COLUMNS` plus ``score_suppressed``, EPSG:4326: points at crossings,
    lines along border sectors) of the runs asked for, else of the latest run per crime-type group,
    with the corridor term of the zones the request's scope may see. Counts under k are shown as
    ``<k`` and then the score is null (:func:`routes.joint_disclosure.withhold_scores`); the period
    is the first/last month holding k records. Routes the scope may not see are left out of the
    candidates' lists.

    Raises
    ------
    InputError
        When a run wanted was stored before its candidates were (migration 0008): they would carry
        the routes' exact first/last dates; ``rutas run`` stores them with the coarsened period.
    """
    routes = read_routes(engine, list(request.run_ids) if request.run_ids else None, request.scope)
    if routes.empty:
        return map_candidates(engine, request.scope, routes, params)
    wanted = list(request.run_ids) if request.run_ids else sorted({int(r) for r in routes["run_id"]})
    runs = stored_run_ids(engine, wanted)
    older = sorted(set(wanted) - set(runs))
    if older:
        listed = ", ".join(str(r) for r in older)
        raise InputError(
            f"Run(s) {listed} were stored before joint-operation candidates were: run `rutas run` "
            "again to compute and store them, then export.",
            f"Las ejecuciones {listed} se guardaron antes que las candidatas a operaciones conjuntas: "
            "ejecute `rutas run` de nuevo para calcularlas y guardarlas, y exporte después.",
            code="bad_parameter",
        )
    return _stored_candidates(engine, runs, request.scope, routes, params.k)


def _stored_candidates(
    engine: Engine, runs: list[int], scope: Scope, routes: gpd.GeoDataFrame, k: int
) -> gpd.GeoDataFrame:
    """The stored candidates of ``runs`` in ``scope``, only with ``routes`` (those the scope sees),
    scores withheld where a count is under k."""
    stored = read_joint_operations(engine, runs, scope, k=k)
    visible = set(routes["id"].astype(int))
    stored["route_ids"] = stored["route_ids"].map(lambda ids: [i for i in ids if i in visible])
    return withhold_scores(stored[stored["route_ids"].map(len) > 0].reset_index(drop=True))


def map_candidates(
    engine: Engine, scope: Scope, routes: gpd.GeoDataFrame, params: ProductParams
) -> gpd.GeoDataFrame:
    """The joint-operation candidates the maps draw: those of the routes' runs that stored them.

    As :func:`joint_operations_for_export` gives them (EPSG:4326 points at crossings, lines along
    border sectors, score NaN where a count is under k); runs stored before the candidates were
    (migration 0008) add none, as the maps are drawn without them rather than refused.
    """
    runs = stored_run_ids(engine, sorted({int(r) for r in routes["run_id"]})) if not routes.empty else []
    if not runs:
        empty = gpd.GeoDataFrame(columns=JOINT_COLUMNS, geometry="geometry", crs="EPSG:4326")
        return withhold_scores(empty)
    return _stored_candidates(engine, runs, scope, routes, params.k)


T = TypeVar("T")


def _with_settings(
    write: Callable[[Engine, ExportRequest, ProductParams], T],
) -> Callable[[Engine, ExportRequest], T]:
    """``write`` as ``rutas export`` calls it: with the parameters of the command's settings."""

    def with_settings(engine: Engine, request: ExportRequest) -> T:
        return write(engine, request, ProductParams.from_settings(get_settings()))

    return with_settings


register_product(
    vector_product(
        "joint-operations",
        _with_settings(joint_operations_for_export),
        "crossings and border sectors where routes carry records of two or more countries, ranked, "
        "with counts per country",
    )
)
register_product(
    vector_product(
        "corridors",
        _with_settings(corridors_for_export),
        "corridors the caller may see, with shared km, share, crossings and score per route",
    )
)
register_product(
    Product(
        name="risk",
        formats=("tif",),
        write=_with_settings(export_risk),
        description="risk surface (Cloud-Optimised GeoTIFF, bands and 'risk' in 0-1)",
    )
)
