"""Analytics endpoints: the latest run's summary, a route's monthly series, the risk at a point.

What each role sees:

- ``/runs/latest`` and ``/routes/{id}/series``: every role. Runs and routes are aggregates over
  every country's records (counts, timings, a trend), with no record, position or event id in them;
  a route's counts below k are withheld from callers who may not see all its records in detail.
- ``/risk``: the bands of the latest risk GeoTIFF (written by ``rutas maps`` / the demo in the
  system scope, EPSG of the file's grid, values as written by :mod:`maps.risk`). Bands made from
  layers the caller's scope may not read are withheld and named in ``withheld``: the event density
  (region-wide k-suppressed cells) goes to the roles whose aggregates are region-wide (admin,
  analyst, border authority); the corridor convergence and the combined ``risk`` (which adds it)
  go only to admins, as other countries' corridors are confidential. Emerging-route and
  crossing-proximity bands come from routes and public crossings: every role gets them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import rasterio
import sqlalchemy as sa
from fastapi import APIRouter, Query
from pyproj import Transformer
from rasterio.errors import RasterioIOError

from api.auth import Principal
from api.deps import PrincipalDep, StateDep
from geodata.db import scoped
from geodata.errors import InputError, RutasError
from geodata.settings import Settings
from routes.disclosure import (
    ROUTE_DETAIL_SQL,
    ROUTE_EVENT_COUNT_SQL,
    ROUTE_FIRST_EVENT_SQL,
    ROUTE_LAST_EVENT_SQL,
    ROUTE_P_VALUE_SQL,
    ROUTE_SCOPE_SQL,
    ROUTE_TAU_SQL,
    ROUTE_TREND_SQL,
    ROUTE_TREND_SUPPRESSED_SQL,
)

router = APIRouter(tags=["Analytics"])

#: Roles whose aggregated layers are region-wide (migration 0003's ``rutas_aggregate_all``).
REGION_WIDE_ROLES = frozenset({"admin", "analyst", "border_authority"})
#: Band-name prefixes only admins get (made from every country's confidential corridors).
ADMIN_BANDS = ("corridor_convergence", "risk")
#: Band-name prefixes for region-wide roles (k-suppressed cells of every country's records).
REGION_BANDS = ("event_density",)


def _not_found(message: str, message_es: str) -> RutasError:
    return RutasError(message, message_es, code="not_found")


_RUN_SQL = (
    "SELECT a.id, a.status, a.started_at, a.finished_at, a.parameters, a.filters, a.code_version, "
    "a.timings, a.counts, a.error, (SELECT count(*) FROM routes r WHERE r.run_id = a.id) AS routes "
    "FROM analysis_runs a WHERE {where} ORDER BY a.id DESC LIMIT 1"
)


def _run_record(row: Any) -> dict[str, Any]:
    started, finished = row.started_at, row.finished_at
    return {
        "id": int(row.id),
        "status": row.status,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat() if finished else None,
        "duration_s": round((finished - started).total_seconds(), 3) if finished else None,
        "parameters": row.parameters,
        "filters": row.filters,
        "code_version": row.code_version,
        "timings_s": row.timings,
        "counts": row.counts,
        "routes_stored": int(row.routes),
        "error": row.error,
    }


@router.get("/runs/latest", summary="The latest succeeded analysis run")
def latest_run(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """Parameters, filters, code version, timings (seconds), counts and stored routes of the latest
    succeeded run; ``newer_attempt`` describes a later run that failed or is still running."""
    with scoped(state.engine, principal.scope()) as conn:
        done = conn.execute(sa.text(_RUN_SQL.format(where="a.status = 'succeeded'"))).one_or_none()
        newest = conn.execute(sa.text(_RUN_SQL.format(where="TRUE"))).one_or_none()
    if done is None:
        raise _not_found("No analysis run has succeeded yet: run `rutas run` (or `rutas demo`) first.",
                         "Ningún análisis ha terminado aún: ejecute `rutas run` (o `rutas demo`) primero.")
    summary = _run_record(done)
    newer = newest is not None and int(newest.id) != summary["id"]
    summary["newer_attempt"] = (
        {"id": int(newest.id), "status": newest.status, "started_at": newest.started_at.isoformat(),
         "error": newest.error} if newer and newest is not None else None)
    return summary


@router.get("/routes/{route_id}/series", summary="Monthly counts and trend of a route")
def route_series(route_id: int, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """The route's events per time slice (``series``: slice start date (UTC) and count, in time
    order; with monthly slices every month from the first to the last is listed, 0 when it had no
    event), its Mann-Kendall ``tau`` and ``p_value`` and the ``trend`` (up, down or none) at the
    run's ``alpha``. When the caller may not see every member record of the route in detail
    (row-level security of the events), ``event_count`` and each count below k
    (``settings.k_anonymity``) are null and ``counts_suppressed`` is true, ``first_event`` and
    ``last_event`` are the starts of the first and last slice of at least k, and ``tau``, ``p_value``
    and ``trend`` are null with ``trend_suppressed`` true unless no count is withheld and at least k
    member records are hidden from the caller (see :data:`routes.disclosure.ROUTE_STATS_SHOWN_SQL`)."""
    sql = (f"SELECT r.id, r.run_id, r.category, {ROUTE_TREND_SQL} AS trend, {ROUTE_TAU_SQL} AS tau, "
           f"{ROUTE_P_VALUE_SQL} AS p_value, {ROUTE_TREND_SUPPRESSED_SQL} AS trend_suppressed, "
           f"{ROUTE_EVENT_COUNT_SQL} AS event_count, {ROUTE_DETAIL_SQL} AS detail, "
           f"{ROUTE_FIRST_EVENT_SQL} AS first_event, {ROUTE_LAST_EVENT_SQL} AS last_event, "
           "r.monthly_counts, a.parameters FROM routes r "
           f"JOIN analysis_runs a ON a.id = r.run_id AND a.status = 'succeeded' {ROUTE_SCOPE_SQL} "
           "WHERE r.id = :id")
    k = state.settings.k_anonymity
    with scoped(state.engine, principal.scope()) as conn:
        row = conn.execute(sa.text(sql), {"id": route_id, "k": k}).one_or_none()
    if row is None:
        raise _not_found(f"Route {route_id} does not exist (or its run did not succeed): list the routes "
                         "at /collections/routes/items.",
                         f"La ruta {route_id} no existe (o su análisis no terminó): vea las rutas en "
                         "/collections/routes/items.")
    params = row.parameters or {}
    stored: dict[str, float] = row.monthly_counts or {}
    starts = sorted(stored)
    if starts and params.get("slice", "month") == "month":
        # the run stores only the slices with events: list the empty months between them too
        months = pd.date_range(starts[0], starts[-1], freq="MS")
        starts = sorted({*starts, *(m.date().isoformat() for m in months)})
    counts: list[int | float | None] = [_number(stored.get(start, 0)) for start in starts]
    if not row.detail:
        # the caller cannot see every member record in detail: counts below k are withheld
        counts = [c if c is not None and c >= k else None for c in counts]
    series = [{"start": start, "count": count} for start, count in zip(starts, counts, strict=True)]
    suppressed = not row.detail and (row.event_count is None or None in counts)
    return {
        "route_id": int(row.id),
        "run_id": int(row.run_id),
        "category": row.category,
        "event_count": None if row.event_count is None else int(row.event_count),
        "counts_suppressed": suppressed,
        "first_event": row.first_event.isoformat() if row.first_event else None,
        "last_event": row.last_event.isoformat() if row.last_event else None,
        "series": series,
        "trend": row.trend,
        "tau": row.tau,
        "p_value": row.p_value,
        "trend_suppressed": bool(row.trend_suppressed),
        "alpha": params.get("alpha"),
        "slice": params.get("slice"),
    }


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def risk_path(settings: Settings) -> Path:
    """Where ``GET /risk`` reads the risk GeoTIFF: ``api_risk_path``, else the demo's product."""
    if settings.api_risk_path is not None:
        return Path(settings.api_risk_path)
    return Path(settings.state_dir) / "products" / "rutas_risk.tif"


def bands_for(principal: Principal, names: list[str]) -> tuple[list[str], list[str]]:
    """The band names the caller may read and those withheld (see the module docstring)."""
    allowed, withheld = [], []
    for name in names:
        admin_only = name.startswith(ADMIN_BANDS) and principal.role != "admin"
        region_only = name.startswith(REGION_BANDS) and principal.role not in REGION_WIDE_ROLES
        if admin_only or region_only:
            withheld.append(name)
        else:
            allowed.append(name)
    return allowed, withheld


def _coordinate(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise InputError(f"Parameter {name}={value!r} must be a number from {low:g} to {high:g} "
                         "(EPSG:4326 degrees).",
                         f"El parámetro {name}={value!r} debe ser un número de {low:g} a {high:g} "
                         "(grados EPSG:4326).", code="bad_parameter")


@router.get("/risk", summary="Risk bands at a point")
def risk_at(
    state: StateDep,
    principal: PrincipalDep,
    lon: Annotated[float, Query(description="Longitude, EPSG:4326 degrees")],
    lat: Annotated[float, Query(description="Latitude, EPSG:4326 degrees")],
) -> dict[str, Any]:
    """The value of each band the caller may read at (lon, lat) in the latest risk GeoTIFF
    (``null`` for no data), the cell's size in metres, the run the surface was made from and the
    bands withheld from the caller's role. 404 when no surface has been written or the point is
    outside it."""
    _coordinate("lon", lon, -180.0, 180.0)
    _coordinate("lat", lat, -90.0, 90.0)
    path = risk_path(state.settings)
    if not path.is_file():
        raise _not_found(
            "No risk surface has been made yet: run `rutas maps` (or `rutas demo`), or point "
            f"RUTAS_API_RISK_PATH at a risk GeoTIFF (looked for {path.name}).",
            "Aún no hay superficie de riesgo: ejecute `rutas maps` (o `rutas demo`), o indique un "
            f"GeoTIFF de riesgo en RUTAS_API_RISK_PATH (se buscó {path.name}).")
    try:
        with rasterio.open(path) as src:
            names = [d or f"band_{i + 1}" for i, d in enumerate(src.descriptions)]
            x, y = Transformer.from_crs("EPSG:4326", src.crs, always_xy=True).transform(lon, lat)
            row, col = src.index(x, y)
            if not (0 <= row < src.height and 0 <= col < src.width):
                raise _not_found(f"The point ({lon}, {lat}) is outside the risk surface.",
                                 f"El punto ({lon}, {lat}) está fuera de la superficie de riesgo.")
            allowed, withheld = bands_for(principal, names)
            indexes = [names.index(n) + 1 for n in allowed]
            window = rasterio.windows.Window(col, row, 1, 1)  # type: ignore[attr-defined]
            values = src.read(indexes, window=window)[:, 0, 0] if indexes else np.zeros(0)
            nodata = src.nodata
            tags = src.tags()
            res_m = float(abs(src.res[0]))
    except RasterioIOError as error:
        raise RutasError(f"The risk surface {path.name} cannot be read; make it again with `rutas maps`.",
                         f"No se puede leer la superficie de riesgo {path.name}; vuelva a crearla con "
                         "`rutas maps`.", code="internal") from error
    bands = {name: (None if (nodata is not None and float(v) == nodata) or not math.isfinite(float(v))
                    else round(float(v), 6))
             for name, v in zip(allowed, values, strict=True)}
    return {"lon": lon, "lat": lat, "bands": bands, "withheld": withheld, "cell_m": res_m,
            "run_id": tags.get("run_id")}
