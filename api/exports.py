"""``GET /exports/{product}?format=``: the products of ``rutas export`` over HTTP, in the caller's scope.

The same writers as the command line (:func:`routes.export.export`) write into a private
temporary folder with the caller's row-level-security scope, and the file is streamed back and
then deleted. Every export is written to the audit log with the number of features. ``events``
exports go only to the roles that read records (and hold only what row-level security lets the
caller see); other products are aggregates or reference layers read in the caller's scope.
Geometries are EPSG:4326.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated

import geopandas as gpd
import pandas as pd
import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api import audit
from api.auth import forbidden
from api.collections import RECORD_ROLES
from api.deps import PrincipalDep, StateDep
from geodata.db import scoped
from geodata.errors import InputError, RutasError
from geodata.settings import Settings
from maps.products import ProductParams, joint_operations_for_export
from routes.disclosure import FIGURES, route_figures
from routes.export import (
    PRODUCTS,
    SUFFIXES,
    VECTOR_FORMATS,
    ExportReport,
    ExportRequest,
    export,
    routes_for_export,
    write_frame,
)

router = APIRouter(tags=["Exports"])

MEDIA_TYPES = {
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
    "parquet": "application/vnd.apache.parquet",
    "kml": "application/vnd.google-earth.kml+xml",
    "csv": "text/csv; charset=utf-8",
    "tif": "image/tiff; application=geotiff; profile=cloud-optimized",
}
#: Products whose rows are records of a country.
RECORD_PRODUCTS = frozenset({"events"})

def _written(frame: pd.DataFrame, request: ExportRequest, product: str, *, name_column: str) -> ExportReport:
    """Write ``frame`` (EPSG:4326, geometry last) as the request says; the report of what was written."""
    ordered = [c for c in frame.columns if c != "geometry"] + ["geometry"]
    written = write_frame(gpd.GeoDataFrame(frame[ordered], geometry="geometry", crs="EPSG:4326"),
                          request.format, request.out, layer=product, name_column=name_column)
    notes = [] if written else ["nothing to export: run `rutas run` first"]
    return ExportReport(product=product, format=request.format, path=str(request.out),
                        features=written, notes=notes)


def _check_vector(product: str, fmt: str) -> None:
    if fmt not in VECTOR_FORMATS:
        raise InputError(f"The {product} product cannot be written as {fmt!r}: use one of "
                         f"{', '.join(VECTOR_FORMATS)}.",
                         f"El producto {product} no se puede escribir como {fmt!r}: use uno de "
                         f"{', '.join(VECTOR_FORMATS)}.", code="bad_format")


def _export_routes(engine: sa.Engine, request: ExportRequest, settings: Settings) -> ExportReport:
    """The routes product (EPSG:4326) as :func:`routes.export.export` writes it, with ``event_count``
    and each monthly count below ``k`` null and ``counts_suppressed`` true where the caller may not
    see every member record in detail (the events' row-level security, counted in SQL), and
    ``tau``, ``p_value`` and ``trend`` null with ``trend_suppressed`` true where they could give
    back the series of fewer than ``k`` hidden records."""
    _check_vector("routes", request.format)
    frame = routes_for_export(engine, request)
    with scoped(engine, request.scope) as conn:
        counts = pd.DataFrame(route_figures(conn, [int(i) for i in frame["id"]], settings.k_anonymity),
                              columns=list(FIGURES))
    counts = counts.set_index("id").reindex(frame["id"])
    # nullable integers: OGR's drivers take Int64; to_json and to_csv write Python ints and None
    total = counts["event_count"].astype("Int64")
    event_count = (total.to_numpy() if request.format in ("gpkg", "kml")
                   else total.astype(object).where(total.notna(), None).to_numpy())
    frame = frame.assign(event_count=event_count,
                         monthly_counts=counts["monthly_counts"].to_numpy(),
                         counts_suppressed=counts["counts_suppressed"].astype(bool).to_numpy(),
                         first_event=pd.to_datetime(counts["first_event"], utc=True).to_numpy(),
                         last_event=pd.to_datetime(counts["last_event"], utc=True).to_numpy(),
                         trend=counts["trend"].astype(object).to_numpy(),
                         tau=counts["tau"].astype(float).to_numpy(),
                         p_value=counts["p_value"].astype(float).to_numpy(),
                         trend_suppressed=counts["trend_suppressed"].astype(bool).to_numpy())
    return _written(frame, request, "routes", name_column="category")


def _export_joint_operations(engine: sa.Engine, request: ExportRequest, settings: Settings) -> ExportReport:
    """The joint-operations product (EPSG:4326) as ``rutas export`` writes it, with ``score`` null and
    ``score_suppressed`` true where a count is shown as ``<k`` (the score weighs the counts and would
    give it back), and the period from the routes' first/last event dates as the caller sees them
    (coarsened for callers who may not see every member record in detail, as in the routes)."""
    _check_vector("joint-operations", request.format)
    frame = joint_operations_for_export(engine, request, ProductParams.from_settings(settings))
    route_ids = sorted({int(i) for ids in frame["route_ids"] for i in ids})
    with scoped(engine, request.scope) as conn:
        figures = pd.DataFrame(route_figures(conn, route_ids, settings.k_anonymity), columns=list(FIGURES))
    dates = figures[["id", "first_event", "last_event"]].set_index("id")
    members = frame["route_ids"].explode().dropna().astype("int64")
    seen = dates.reindex(members.to_numpy()).set_axis(members.index)
    first = pd.to_datetime(seen["first_event"], utc=True).groupby(level=0).min()
    last = pd.to_datetime(seen["last_event"], utc=True).groupby(level=0).max()
    frame = frame.assign(period_start=first.reindex(frame.index), period_end=last.reindex(frame.index))
    return _written(frame, request, "joint-operations", name_column="name")


#: Products written here rather than by :func:`routes.export.export`, to suppress what k requires.
_SUPPRESSED_WRITERS = {"routes": _export_routes, "joint-operations": _export_joint_operations}


@router.get("/exports/{product}", summary="Export a product as a file", response_class=FileResponse,
            responses={200: {"content": {t.split(";")[0]: {} for t in MEDIA_TYPES.values()}}})
def export_product(
    product: str,
    state: StateDep,
    principal: PrincipalDep,
    format: Annotated[str, Query(description="geojson, gpkg, parquet, kml, csv or tif (risk)")] = "geojson",
    since: Annotated[date | None, Query(description="First day included (UTC)")] = None,
    until: Annotated[date | None, Query(description="Day after the last one included (UTC)")] = None,
) -> FileResponse:
    """The product written as ``format`` for the caller's scope, as an attachment."""
    if product not in PRODUCTS:
        known = ", ".join(sorted(PRODUCTS))
        raise RutasError(f"Unknown product {product!r}: export one of {known}.",
                         f"Producto desconocido {product!r}: exporte uno de {known}.", code="not_found")
    if product in RECORD_PRODUCTS and principal.role not in RECORD_ROLES:
        raise forbidden(f"Role {principal.role} sees aggregated layers only, not {product} records: "
                        "export routes, or use the event-cells collection.",
                        f"El rol {principal.role} sólo ve capas agregadas, no registros de {product}: "
                        "exporte las rutas o use la colección event-cells.")
    folder = Path(tempfile.mkdtemp(prefix="rutas-export-"))
    try:
        out = folder / f"{product}{SUFFIXES.get(format, '')}"
        request = ExportRequest(
            format=format, out=out, scope=principal.scope(),
            since=pd.Timestamp(since, tz="UTC") if since else None,
            until=pd.Timestamp(until, tz="UTC") if until else None,
        )
        writer = _SUPPRESSED_WRITERS.get(product)
        report = (writer(state.engine, request, state.settings) if writer
                  else export(state.engine, product, request))
        if not out.is_file():
            raise RutasError(f"Nothing to export: {'; '.join(report.notes) or 'no features'}.",
                             "Nada que exportar: no hay elementos en el periodo y alcance dados "
                             "(para rutas, ejecute `rutas run` primero).", code="not_found")
        with scoped(state.engine, principal.scope()) as conn:
            audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                        action="export", collection=product,
                        filters={"format": format, "since": since, "until": until},
                        records=report.features)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return FileResponse(out, media_type=MEDIA_TYPES.get(format, "application/octet-stream"),
                        filename=out.name, headers={"Cache-Control": "no-store"},
                        background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True))
