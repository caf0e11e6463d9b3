"""Trafficking corridors: reading analysts' layers (GeoJSON, GeoPackage, KML, Shapefile) and storing them.

A corridor is a line or a polygon with a kind (drug, fuel, arms, other), an owner country and,
when the file has them, a name, a source, a confidence and a validity period. Corridor layers are
sensitive like records: each is stored with its owner country and read under row-level security
(migration 0005). Loading ``--kind K --country C`` replaces the previous corridors of that kind
and country in one transaction. Geometries are stored in EPSG:4326.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import pyogrio.raw
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import Scope, scoped
from geodata.errors import InputError, Problem
from geodata.reference import LOADERS, LayerReport, file_sha256
from geodata.settings import Settings
from geodata.tables import CORRIDOR_KINDS

#: Accepted column names (lower case, any of es/en/pt) for each corridor attribute.
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "nombre", "nome"),
    "source": ("source", "fuente", "fonte"),
    "confidence": ("confidence", "confianza", "confiança", "confianca"),
    "valid_from": ("valid_from", "desde", "inicio", "start", "from", "begin"),
    "valid_to": ("valid_to", "hasta", "fin", "end", "to", "até", "ate"),
    "illustrative": ("illustrative", "ilustrativo"),
    "note": ("note", "nota"),
}
GEOMETRY_TYPES = ("LineString", "MultiLineString", "Polygon", "MultiPolygon")
_LINE_OR_POLYGON_IDS = (1, 3, 5, 6)  # shapely type ids of the GEOMETRY_TYPES
SUFFIXES = (".geojson", ".json", ".gpkg", ".kml", ".kmz", ".shp", ".zip")


#: Bookkeeping fields GDAL's KML drivers add to every placemark (kept out of ``properties``).
KML_FIELDS = ("id", "timestamp", "altitudeMode", "tessellate", "extrude", "visibility", "drawOrder", "icon")


def _problem(file: str, row: int | None, field: str, value: Any, reason: str, reason_es: str) -> Problem:
    return Problem(
        file=file,
        row=row,
        field=field,
        value=str(value)[:200],
        reason=reason,
        reason_es=reason_es,
        code="bad_corridor",
    )


def _unreadable(path: Path) -> InputError:
    return InputError(
        f"{path.name}: cannot be read as GeoJSON, GeoPackage, KML/KMZ or Shapefile (a .shp with its "
        ".shx, .dbf and .prj, or a .zip holding them); save it again from your GIS in one of them.",
        f"{path.name}: no se puede leer como GeoJSON, GeoPackage, KML/KMZ o Shapefile (un .shp con sus "
        ".shx, .dbf y .prj, o un .zip que los contenga); guárdelo de nuevo desde su SIG en uno de ellos.",
        code="bad_file",
    )


def _column(frame: pd.DataFrame, attribute: str) -> pd.Series | None:
    lower = {str(c).lower(): c for c in frame.columns}
    for alias in ALIASES[attribute]:
        if alias in lower:
            return frame[lower[alias]]
    return None


def _dates(file: str, frame: pd.DataFrame, attribute: str, problems: list[Problem]) -> list[Any]:
    column = _column(frame, attribute)
    if column is None:
        return [None] * len(frame)
    parsed = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
    bad = column.notna() & (column.astype(str).str.strip() != "") & parsed.isna()
    for row in np.flatnonzero(bad.to_numpy()):
        problems.append(
            _problem(
                file,
                int(row) + 1,
                attribute,
                column.iloc[row],
                "not a date: write it as YYYY-MM-DD",
                "no es una fecha: escríbala como AAAA-MM-DD",
            )
        )
    return [None if pd.isna(t) else t.date() for t in parsed]


def _layers(path: Path) -> list[tuple[str, gpd.GeoDataFrame, npt.NDArray[np.bool_]]]:
    """Every layer of ``path`` with geometries: name, frame (EPSG:4326 when it has a CRS, else
    none) and which features carry a geometry that cannot be read (a line of one point, an
    unclosed ring), whose geometry is then missing."""
    try:
        listed = pyogrio.list_layers(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError):
        raise _unreadable(path) from None
    layers = []
    for name, geometry_type in listed:
        if geometry_type is None:  # an attribute table of a GeoPackage
            continue
        try:
            meta, _, wkb, fields = pyogrio.raw.read(path, layer=name)
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, ValueError):
            raise _unreadable(path) from None
        geometry = shapely.from_wkb(wkb, on_invalid="ignore")
        unreadable = np.array([w is not None for w in wkb], dtype=bool) & shapely.is_missing(geometry)
        columns = zip(meta["fields"], fields, strict=True)
        frame = gpd.GeoDataFrame(
            {str(f): pd.Series(values, dtype=object) for f, values in columns},
            geometry=geometry,
            crs=meta["crs"],
        )
        layers.append((str(name), frame, unreadable))
    return layers


def read_corridors(path: Path, *, kind: str, owner_country: str) -> tuple[gpd.GeoDataFrame, list[Problem]]:
    """The valid corridors of ``path`` (EPSG:4326) and a problem per refused feature.

    Every layer with geometries is read (GeoPackage layers, KML folders, the shapefiles of a
    .zip); a problem names the file (``file.gpkg:layer`` when it has several layers), the
    feature's 1-based number in its layer, the field and the value.

    Columns: kind, owner_country, name, source, confidence, valid_from, valid_to (dates or
    None), illustrative, note, source_row (1-based feature number in its layer), properties
    (the file's other attributes as a dict, and ``layer`` when the file has several), geometry
    (lines or polygons, made valid). KML's TimeSpan ``begin``/``end`` give the validity period.

    Raises
    ------
    InputError
        Unknown kind, malformed country code, a file that cannot be read, a layer without CRS
        whose coordinates are not degrees, or no usable feature at all.
    """
    if kind not in CORRIDOR_KINDS:
        raise InputError(
            f"--kind {kind!r}: use one of {', '.join(CORRIDOR_KINDS)}.",
            f"--kind {kind!r}: use uno de {', '.join(CORRIDOR_KINDS)}.",
            code="bad_option",
        )
    if not (len(owner_country) == 3 and owner_country.isalpha()):
        raise InputError(
            f"--country {owner_country!r}: give the owner's ISO 3166 alpha-3 code (e.g. COL).",
            f"--country {owner_country!r}: indique el código ISO 3166 alfa-3 del país dueño (p. ej. COL).",
            code="bad_option",
        )
    if not path.is_file():
        raise InputError(
            f"{path}: the file does not exist.", f"{path}: el archivo no existe.", code="bad_file"
        )
    layers = _layers(path)
    kml = path.suffix.lower() in (".kml", ".kmz")
    problems: list[Problem] = []
    parts = []
    for name, frame, unreadable in layers:
        file = path.name if len(layers) == 1 else f"{path.name}:{name}"
        part = _layer_corridors(file, frame, unreadable, problems, kml=kml)
        if len(layers) > 1:
            part["properties"] = [{**p, "layer": name} for p in part["properties"]]
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if out.empty:
        raise InputError(
            f"{path.name}: no usable corridor (lines or polygons) in the file.",
            f"{path.name}: ningún corredor utilizable (líneas o polígonos) en el archivo.",
            code="bad_file",
            problems=problems,
        )
    out.insert(0, "kind", kind)
    out.insert(1, "owner_country", owner_country.upper())
    return gpd.GeoDataFrame(out, geometry="geometry", crs=4326), problems


def _layer_corridors(
    file: str,
    frame: gpd.GeoDataFrame,
    unreadable: npt.NDArray[np.bool_],
    problems: list[Problem],
    *,
    kml: bool,
) -> gpd.GeoDataFrame:
    """The valid corridors of one layer (EPSG:4326); appends a problem per refused feature."""
    if frame.crs is None:
        x0, y0, x1, y1 = frame.total_bounds if frame.geometry.notna().any() else (0, 0, 0, 0)
        if not (-180 <= x0 <= x1 <= 180 and -90 <= y0 <= y1 <= 90):
            raise InputError(
                f"{file}: the layer has no CRS and its coordinates are not degrees; "
                "save it with its CRS (e.g. EPSG:4326).",
                f"{file}: la capa no tiene SRC y sus coordenadas no son grados; "
                "guárdela con su SRC (p. ej. EPSG:4326).",
                code="bad_file",
            )
        frame = frame.set_crs(4326)
    frame = frame.to_crs(4326)
    first = len(problems)
    geometry = np.asarray(frame.geometry.values)
    type_ids = shapely.get_type_id(geometry)  # -1 when missing
    missing = ((type_ids < 0) | shapely.is_empty(geometry)) & ~unreadable
    wrong = (type_ids >= 0) & ~np.isin(type_ids, list(_LINE_OR_POLYGON_IDS))
    x0, y0, x1, y1 = shapely.bounds(geometry).T
    with np.errstate(invalid="ignore"):
        outside = (type_ids >= 0) & ~wrong & ~((x0 >= -180) & (x1 <= 180) & (y0 >= -90) & (y1 <= 90))
    for rows, value, reason, reason_es in (
        (missing, "", "the feature has no geometry", "el elemento no tiene geometría"),
        (
            unreadable,
            "",
            "the geometry cannot be read (e.g. a line of one point or a ring that does not close)",
            "la geometría no se puede leer (p. ej. una línea de un solo punto o un anillo que no cierra)",
        ),
    ):
        for row in np.flatnonzero(rows):
            problems.append(_problem(file, int(row) + 1, "geometry", value, reason, reason_es))
    for row in np.flatnonzero(wrong):
        problems.append(
            _problem(
                file,
                int(row) + 1,
                "geometry",
                geometry[row].geom_type,
                f"a corridor is a line or a polygon ({', '.join(GEOMETRY_TYPES)})",
                f"un corredor es una línea o un polígono ({', '.join(GEOMETRY_TYPES)})",
            )
        )
    for row in np.flatnonzero(outside):
        problems.append(
            _problem(
                file,
                int(row) + 1,
                "geometry",
                f"{x0[row]:.6g} {y0[row]:.6g}, {x1[row]:.6g} {y1[row]:.6g}",
                "coordinates out of range (longitude -180..180, latitude -90..90): check the CRS "
                "and that longitude and latitude are not swapped",
                "coordenadas fuera de rango (longitud -180..180, latitud -90..90): revise el SRC y "
                "que longitud y latitud no estén intercambiadas",
            )
        )
    fixed = shapely.make_valid(geometry)
    valid_from = _dates(file, frame, "valid_from", problems)
    valid_to = _dates(file, frame, "valid_to", problems)
    for i, (start, end) in enumerate(zip(valid_from, valid_to, strict=True)):
        if start is not None and end is not None and start > end:
            problems.append(
                _problem(
                    file,
                    i + 1,
                    "valid_to",
                    end,
                    "the validity period ends before it starts",
                    "el período de validez termina antes de empezar",
                )
            )
    refused = {p.row - 1 for p in problems[first:] if p.row is not None}
    keep = np.array([i not in refused for i in range(len(frame))], dtype=bool)
    known = {str(c) for a in ALIASES for c in frame.columns if str(c).lower() in ALIASES[a]}
    skip = known | ({frame.geometry.name} | set(KML_FIELDS) if kml else {frame.geometry.name})
    extra = [c for c in frame.columns if str(c) not in skip]

    def text(attribute: str) -> pd.Series:
        column = _column(frame, attribute)
        values = (
            [None] * len(frame)
            if column is None
            else [None if pd.isna(v) or str(v).strip() == "" else str(v).strip() for v in column]
        )
        return pd.Series(values, dtype=object)

    illustrative_col = _column(frame, "illustrative")
    illustrative = (
        [str(v).lower() in ("true", "1", "yes", "sí", "si", "sim") for v in illustrative_col]
        if illustrative_col is not None
        else [False] * len(frame)
    )
    out = gpd.GeoDataFrame(
        {
            "name": text("name"),
            "source": text("source"),
            "confidence": text("confidence"),
            "valid_from": pd.Series(valid_from, dtype=object),
            "valid_to": pd.Series(valid_to, dtype=object),
            "illustrative": illustrative,
            "note": text("note"),
            "source_row": np.arange(1, len(frame) + 1),
            "properties": [
                {str(c): (None if pd.isna(v) else str(v)) for c, v in zip(extra, values, strict=True)}
                for values in frame[extra].itertuples(index=False, name=None)
            ],
        },
        geometry=fixed,
        crs=4326,
    )[keep]
    return out.reset_index(drop=True)


def load_corridors(
    engine: Engine,
    path: Path,
    *,
    settings: Settings,
    source: str | None = None,
    kind: str | None = None,
    country: str | None = None,
) -> LayerReport:
    """Store the corridors of ``path`` as the active ``kind`` layer of ``country`` (``rutas load corridors``).

    Refused features are listed in the report's ``details['problems']``; the rest is stored.
    """
    if kind is None or country is None:
        raise InputError(
            "Corridors need --kind (drug, fuel, arms, other) and --country ISO3 (their owner).",
            "Los corredores necesitan --kind (drug, fuel, arms, other) y --country ISO3 (su dueño).",
            code="bad_option",
        )
    frame, problems = read_corridors(path, kind=kind, owner_country=country)
    owner = country.upper()
    report = LayerReport("corridors", path.name, source or path.name, file_sha256(path))
    with scoped(engine) as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('rutas.reference_layers'))"))
        subkind = f"{kind}:{owner}"
        old = conn.execute(
            sa.text("SELECT id FROM reference_layers WHERE kind = 'corridors' AND subkind = :s AND active"),
            {"s": subkind},
        ).scalar()
        conn.execute(sa.text("UPDATE reference_layers SET active = false WHERE id = :old"), {"old": old})
        layer_id = int(
            conn.execute(
                sa.text(
                    "INSERT INTO reference_layers (kind, subkind, source, file_name, sha256, feature_count, "
                    "active, report) VALUES ('corridors', :s, :source, :file, :sha, :n, true, "
                    "CAST(:report AS jsonb)) RETURNING id"
                ),
                {
                    "s": subkind,
                    "source": report.source,
                    "file": report.file,
                    "sha": report.sha256,
                    "n": len(frame),
                    "report": json.dumps({"refused": len(problems)}),
                },
            ).scalar_one()
        )
        if old is not None:
            conn.execute(sa.text("DELETE FROM corridors WHERE layer_id = :old"), {"old": old})
        records = [
            {
                "layer": layer_id,
                "kind": r.kind,
                "owner": r.owner_country,
                "name": r.name,
                "source": r.source,
                "confidence": r.confidence,
                "vf": r.valid_from,
                "vt": r.valid_to,
                "ill": bool(r.illustrative),
                "note": r.note,
                "row": int(r.source_row),
                "props": json.dumps(r.properties),
                "wkb": r.geometry.wkb,
            }
            for r in frame.itertuples(index=False)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO corridors (layer_id, kind, owner_country, name, source, confidence, valid_from, "
                "valid_to, illustrative, note, source_row, properties, geom) VALUES (:layer, :kind, :owner, "
                ":name, :source, :confidence, :vf, :vt, :ill, :note, :row, CAST(:props AS jsonb), "
                "ST_SetSRID(ST_GeomFromWKB(:wkb), 4326))"
            ),
            records,
        )
    report.layer_id, report.replaced_layer_id = layer_id, None if old is None else int(old)
    report.feature_count = len(frame)
    report.details = {
        "kind": kind,
        "owner_country": owner,
        "refused": len(problems),
        "problems": [p.as_record() for p in problems],
    }
    return report


def read_stored_corridors(engine: Engine, scope: Scope) -> gpd.GeoDataFrame:
    """The active corridors ``scope`` may see (row-level security decides), EPSG:4326.

    ``corridor_id`` is the stored ``corridors.id``.
    """
    sql = (
        "SELECT c.id AS corridor_id, c.kind, c.owner_country, c.name, c.source, c.confidence, "
        "c.valid_from, c.valid_to, "
        "c.illustrative, c.note, c.geom FROM corridors c JOIN reference_layers l ON l.id = c.layer_id "
        "WHERE l.active ORDER BY c.id"
    )
    with scoped(engine, scope) as conn:
        frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326")
    return frame.rename_geometry("geometry")


LOADERS["corridors"] = load_corridors
