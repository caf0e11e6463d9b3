"""``rutas export``: products of the store written as GeoJSON, GeoPackage, GeoParquet, KML or CSV.

Products are looked up by name in :data:`PRODUCTS`; a later stage adds its own with
:func:`register_product` (a raster product brings its own writer and formats). Vector products
are read as GeoDataFrames in EPSG:4326 and written by :func:`write_frame`.

Privacy: events are read through :func:`geodata.db.scoped` with the caller's scope, so
row-level security decides which records leave the store (the CLI passes the system scope:
its user runs the installation). Even then an events export carries only what a case analyst
needs to map them (kind, crime type, date and its precision, countries, counts of dead,
missing, survivors and victims, source, point and its precision); the free-text attributes,
nationalities, source record ids and dedupe keys never leave through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import SYSTEM, Scope, scoped
from geodata.errors import InputError
from routes.pipeline import read_routes

VECTOR_FORMATS = ("geojson", "gpkg", "parquet", "kml", "csv")
SUFFIXES = {
    "geojson": ".geojson",
    "gpkg": ".gpkg",
    "parquet": ".parquet",
    "kml": ".kml",
    "csv": ".csv",
    "tif": ".tif",
}


@dataclass(frozen=True)
class ExportRequest:
    """What to export: the format, where, as whom, and the product's own options.

    ``since`` (inclusive) and ``until`` (exclusive) are UTC; ``run_ids`` picks routes' runs
    (the latest succeeded run of each crime-type group when None).
    """

    format: str
    out: Path
    scope: Scope = SYSTEM
    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    run_ids: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Product:
    """A product ``rutas export`` can write: ``write(engine, request)`` returns the features written."""

    name: str
    formats: tuple[str, ...]
    write: Callable[[Engine, ExportRequest], int]
    description: str = ""


@dataclass
class ExportReport:
    """What an export wrote, for the CLI (``--json``)."""

    product: str
    format: str
    path: str
    features: int
    notes: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


PRODUCTS: dict[str, Product] = {}


def register_product(product: Product) -> None:
    """Make ``product`` exportable by name (a later registration replaces an earlier one)."""
    PRODUCTS[product.name] = product


def _plain(frame: gpd.GeoDataFrame, fmt: str) -> gpd.GeoDataFrame:
    """Columns every driver of ``fmt`` can write: dicts as JSON text; lists native in GeoJSON and
    Parquet, comma-joined elsewhere; times as ISO 8601 text outside Parquet."""
    plain = frame.copy()
    for name in plain.columns:
        if name == plain.geometry.name:
            continue
        column = plain[name]
        if pd.api.types.is_datetime64_any_dtype(column):
            if fmt != "parquet":
                plain[name] = column.map(lambda t: None if pd.isna(t) else t.isoformat())
            continue
        sample = column.dropna()
        first = sample.iloc[0] if len(sample) else None
        if isinstance(first, dict):
            plain[name] = column.map(lambda v: None if v is None else json.dumps(v, sort_keys=True))
        elif isinstance(first, list | tuple | np.ndarray):
            if fmt in ("geojson", "parquet"):
                plain[name] = column.map(lambda v: None if v is None else [_scalar(x) for x in v])
            else:
                plain[name] = column.map(lambda v: None if v is None else ",".join(str(x) for x in v))
    return plain


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def write_frame(
    frame: gpd.GeoDataFrame, fmt: str, out: Path, *, layer: str, name_column: str | None = None
) -> int:
    """Write ``frame`` (EPSG:4326) to ``out`` as ``fmt``, replacing the file; returns the rows written.

    GeoJSON is RFC 7946 with list properties kept as arrays; GeoParquet keeps lists and
    times typed; GeoPackage, KML and CSV get lists as comma-joined text, and CSV the
    geometry as WKT in a column named ``geometry``.
    """
    if fmt not in VECTOR_FORMATS:
        raise InputError(
            f"Format {fmt!r} cannot hold the {layer} layer: use one of {', '.join(VECTOR_FORMATS)}.",
            f"El formato {fmt!r} no sirve para la capa {layer}: use uno de {', '.join(VECTOR_FORMATS)}.",
            code="bad_format",
        )
    frame = frame.to_crs("EPSG:4326") if frame.crs is not None else frame.set_crs("EPSG:4326")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    plain = _plain(frame, fmt)
    if fmt == "geojson":
        out.write_text(plain.to_json(drop_id=True, ensure_ascii=False), encoding="utf-8")
    elif fmt == "parquet":
        plain.to_parquet(out, index=False)
    elif fmt == "csv":
        table = pd.DataFrame(plain.drop(columns=plain.geometry.name))
        table["geometry"] = plain.geometry.to_wkt()
        table.to_csv(out, index=False)
    elif fmt == "kml":
        if name_column is not None and name_column in plain.columns:
            # the placemark's name, what Google Earth shows; the column itself stays as data
            plain.insert(0, "Name", plain[name_column])
        pyogrio.write_dataframe(plain, out, driver="KML", layer=layer)
    else:
        pyogrio.write_dataframe(plain, out, driver="GPKG", layer=layer)
    return len(frame)


#: Columns an events export carries (see the module docstring for what it leaves out).
EVENT_COLUMNS = (
    "id",
    "kind",
    "crime_type",
    "occurred_at",
    "date_precision",
    "owner_country",
    "location_country",
    "dead",
    "missing",
    "survivors",
    "victims",
    "source",
    "coord_precision_m",
)


def read_events_for_export(engine: Engine, request: ExportRequest) -> gpd.GeoDataFrame:
    """The events the request's scope may see, in its period, with :data:`EVENT_COLUMNS` (EPSG:4326)."""
    sql = (
        f"SELECT {', '.join('e.' + c for c in EVENT_COLUMNS)}, e.geom FROM events e "
        "WHERE (CAST(:since AS timestamptz) IS NULL OR e.occurred_at >= CAST(:since AS timestamptz)) "
        "AND (CAST(:until AS timestamptz) IS NULL OR e.occurred_at < CAST(:until AS timestamptz)) "
        "ORDER BY e.id"
    )
    params = {
        "since": None if request.since is None else pd.Timestamp(request.since).to_pydatetime(),
        "until": None if request.until is None else pd.Timestamp(request.until).to_pydatetime(),
    }
    with scoped(engine, request.scope) as conn:
        frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326", params=params)
    return frame.rename_geometry("geometry")


#: Route properties exported, in order; ``category`` is the dominant category.
ROUTE_COLUMNS = (
    "id",
    "route_key",
    "seen_before",
    "run_id",
    "crime_types",
    "category",
    "category_shares",
    "length_km",
    "event_count",
    "trend",
    "tau",
    "p_value",
    "countries",
    "crossing_ids",
    "first_event",
    "last_event",
    "monthly_counts",
)


def routes_for_export(engine: Engine, request: ExportRequest) -> gpd.GeoDataFrame:
    """The routes to export (latest run per crime-type group unless ``run_ids``), EPSG:4326."""
    routes = read_routes(
        engine, list(request.run_ids) if request.run_ids is not None else None, request.scope
    )
    routes["length_km"] = (routes["length_m"] / 1000.0).round(3)
    return gpd.GeoDataFrame(routes[[*ROUTE_COLUMNS, "geometry"]], geometry="geometry", crs="EPSG:4326")


def vector_product(
    name: str,
    read: Callable[[Engine, ExportRequest], gpd.GeoDataFrame],
    description: str = "",
    *,
    name_column: str | None = None,
) -> Product:
    """A product whose reader returns a GeoDataFrame, written in any of :data:`VECTOR_FORMATS`.

    ``name_column`` names each KML placemark.
    """

    def write(engine: Engine, request: ExportRequest) -> int:
        return write_frame(
            read(engine, request), request.format, request.out, layer=name, name_column=name_column
        )

    return Product(name=name, formats=VECTOR_FORMATS, write=write, description=description)


register_product(
    vector_product(
        "events",
        read_events_for_export,
        "events the caller's scope may see, without free text or personal fields",
        name_column="kind",
    )
)
register_product(
    vector_product(
        "routes",
        routes_for_export,
        "emerging routes of the latest run per crime type, dominant category in 'category'",
        name_column="category",
    )
)


def export(engine: Engine, product: str, request: ExportRequest) -> ExportReport:
    """Write ``product`` as the request says.

    Raises
    ------
    InputError
        Unknown product, a format the product cannot be written in, or an output folder that
        cannot be created.
    """
    chosen = PRODUCTS.get(product)
    if chosen is None:
        known = ", ".join(sorted(PRODUCTS))
        raise InputError(
            f"Unknown product {product!r}: export one of {known}.",
            f"Producto desconocido {product!r}: exporte uno de {known}.",
            code="bad_product",
        )
    if request.format not in chosen.formats:
        raise InputError(
            f"The {product} product cannot be written as {request.format!r}: use one of "
            f"{', '.join(chosen.formats)}.",
            f"El producto {product} no se puede escribir como {request.format!r}: use uno de "
            f"{', '.join(chosen.formats)}.",
            code="bad_format",
        )
    try:
        count = chosen.write(engine, request)
    except PermissionError as error:
        raise InputError(
            f"Cannot write {request.out}: permission denied; choose another --out.",
            f"No se puede escribir {request.out}: permiso denegado; elija otro --out.",
            code="bad_output",
        ) from error
    notes = []
    if not count:
        notes.append(
            "nothing to export: run `rutas run` first"
            if product == "routes"
            else "nothing to export in the period and scope given"
        )
    return ExportReport(
        product=product, format=request.format, path=str(request.out), features=count, notes=notes
    )
