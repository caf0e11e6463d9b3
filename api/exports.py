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

import pandas as pd
from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from api import audit
from api.auth import forbidden
from api.collections import RECORD_ROLES
from api.deps import PrincipalDep, StateDep
from geodata.db import scoped
from geodata.errors import RutasError
from routes.export import PRODUCTS, SUFFIXES, ExportRequest, export

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
        report = export(state.engine, product, request)
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
