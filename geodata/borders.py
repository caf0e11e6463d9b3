"""Land borders and border crossings: read them from files, derive them from polygons and roads.

All frames are in EPSG:4326; tolerances and distances are metres (computed in an azimuthal
equidistant projection centred on the data).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geodata.errors import InputError
from geodata.network import WGS84, local_metric_crs, to_wgs84, transform_geoms

#: Column pairs naming the countries on each side of a border line.
PAIR_COLUMNS = (
    ("country_a", "country_b"),
    ("adm0_a3_l", "adm0_a3_r"),
    ("sov_a3_l", "sov_a3_r"),
    ("left", "right"),
)
#: Columns naming the country of a polygon (ISO 3166-1 alpha-3 or Natural Earth's ADM0_A3).
COUNTRY_COLUMNS = ("adm0_a3", "iso_a3", "iso3", "country", "gu_a3", "sov_a3")
CROSSING_NAME_COLUMNS = ("name", "port name", "port_name", "nombre", "nome")


def _read(path: Path) -> gpd.GeoDataFrame:
    try:
        frame = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises several DataSource errors
        raise InputError(
            f"{path.name}: cannot be read as a vector layer ({type(exc).__name__}).",
            f"{path.name}: no se puede leer como capa vectorial.",
            code="bad_file",
        ) from exc
    frame = to_wgs84(frame, path)
    frame = frame[~(frame.geometry.isna() | frame.geometry.is_empty)]
    return frame


def _column(frame: pd.DataFrame, options: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): str(c) for c in frame.columns}
    return next((lower[o] for o in options if o in lower), None)


def _iso3(values: pd.Series) -> npt.NDArray[Any]:
    text = values.astype("string").str.strip().str.upper()
    ok = text.str.fullmatch(r"[A-Z]{3}").fillna(False).astype(bool)
    return np.asarray(text.where(ok, None).astype(object))


def read_borders(path: Path) -> gpd.GeoDataFrame:
    """Border segments from a line layer (with a country pair) or from country polygons.

    Returns
    -------
    GeoDataFrame
        ``country_a``, ``country_b`` (ISO3, alphabetical order, ``None`` when unknown) and
        ``geometry`` (EPSG:4326 LineStrings).

    Raises
    ------
    InputError
        No CRS, or the layer holds neither lines nor polygons.
    """
    frame = _read(path)
    kinds = set(frame.geometry.geom_type)
    if kinds and kinds <= {"LineString", "MultiLineString"}:
        return _from_lines(frame)
    if kinds and kinds <= {"Polygon", "MultiPolygon"}:
        return borders_from_polygons(frame, path)
    raise InputError(
        f"{path.name}: a border layer must hold lines (borders) or polygons (countries), but it holds "
        f"{', '.join(sorted(kinds)) or 'no geometry'}.",
        f"{path.name}: una capa de fronteras debe tener líneas (fronteras) o polígonos (países), pero "
        f"tiene {', '.join(sorted(kinds)) or 'ninguna geometría'}.",
        code="bad_geometry_type",
    )


def _from_lines(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    pair = next(
        (
            (a, b)
            for a, b in ((_column(frame, (x,)), _column(frame, (y,))) for x, y in PAIR_COLUMNS)
            if a and b
        ),
        None,
    )
    a = _iso3(frame[pair[0]]) if pair else np.full(len(frame), None, dtype=object)
    b = _iso3(frame[pair[1]]) if pair else np.full(len(frame), None, dtype=object)
    out = gpd.GeoDataFrame({"country_a": a, "country_b": b}, geometry=frame.geometry.values, crs=WGS84)
    return _normalise(out.explode(index_parts=False, ignore_index=True))


def borders_from_polygons(frame: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    """Land border segments shared by neighbouring country polygons, labelled with the country pair."""
    column = _column(frame, COUNTRY_COLUMNS)
    if column is None:
        raise InputError(
            f"{path.name}: country polygons need a column with the ISO3 code (one of "
            f"{', '.join(COUNTRY_COLUMNS)}).",
            f"{path.name}: los polígonos de países necesitan una columna con el código ISO3 (una de "
            f"{', '.join(COUNTRY_COLUMNS)}).",
            code="no_country_column",
        )
    codes = _iso3(frame[column])
    polys = shapely.make_valid(np.asarray(frame.geometry.values))
    left, right = shapely.STRtree(polys).query(polys, predicate="intersects")
    keep = (left < right) & (codes[left] != codes[right])
    left, right = left[keep], right[keep]
    shared = shapely.intersection(shapely.boundary(polys[left]), shapely.boundary(polys[right]))
    parts = shapely.get_parts(shared, return_index=True)
    lines, which = parts
    is_line = shapely.get_type_id(lines) == 1
    merged = gpd.GeoDataFrame(
        {"country_a": codes[left][which[is_line]], "country_b": codes[right][which[is_line]]},
        geometry=lines[is_line],
        crs=WGS84,
    )
    if merged.empty:
        return _normalise(merged)
    merged = merged.dissolve(by=["country_a", "country_b"], as_index=False)
    merged["geometry"] = shapely.line_merge(np.asarray(merged.geometry.values))
    return _normalise(merged.explode(index_parts=False, ignore_index=True))


def _normalise(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    a, b = frame["country_a"].to_numpy(dtype=object), frame["country_b"].to_numpy(dtype=object)
    swap = np.array(
        [x is not None and y is not None and x > y for x, y in zip(a, b, strict=True)], dtype=bool
    )
    frame = frame.assign(country_a=np.where(swap, b, a), country_b=np.where(swap, a, b))
    frame = frame[
        (frame.geometry.geom_type == "LineString") & (shapely.length(np.asarray(frame.geometry.values)) > 0)
    ]
    return frame.reset_index(drop=True)


def read_crossings(path: Path) -> gpd.GeoDataFrame:
    """Official crossings from a point layer: ``name``, ``country_a``, ``country_b``, ``geometry``.

    Country pairs come from ``country_a``/``country_b`` columns when the file has them; the
    loader fills the others from the nearest border segment.
    """
    frame = _read(path)
    kinds = set(frame.geometry.geom_type)
    if not kinds or not kinds <= {"Point", "MultiPoint"}:
        raise InputError(
            f"{path.name}: a crossings layer must hold points, but it holds "
            f"{', '.join(sorted(kinds)) or 'no geometry'}.",
            f"{path.name}: una capa de pasos fronterizos debe tener puntos, pero tiene "
            f"{', '.join(sorted(kinds)) or 'ninguna geometría'}.",
            code="bad_geometry_type",
        )
    name = _column(frame, CROSSING_NAME_COLUMNS)
    a, b = _column(frame, ("country_a",)), _column(frame, ("country_b",))
    none = np.full(len(frame), None, dtype=object)
    out = gpd.GeoDataFrame(
        {
            "name": frame[name].astype(object).where(frame[name].notna(), None) if name else none,
            "country_a": _iso3(frame[a]) if a else none,
            "country_b": _iso3(frame[b]) if b else none,
        },
        geometry=frame.geometry.values,
        crs=WGS84,
    )
    return out.explode(index_parts=False, ignore_index=True)


def infer_crossings(
    edges: gpd.GeoDataFrame, borders: gpd.GeoDataFrame, *, merge_m: float = 1_000.0
) -> gpd.GeoDataFrame:
    """Crossings where a road edge meets a border segment, merged when closer than ``merge_m`` metres.

    Returns ``name`` (``None``), ``country_a``, ``country_b`` and ``geometry`` (EPSG:4326
    points at the mean position of each merged group).
    """
    empty = gpd.GeoDataFrame({"name": [], "country_a": [], "country_b": []}, geometry=[], crs=WGS84)
    if edges.empty or borders.empty:
        return empty
    roads = np.asarray(edges.geometry.values)
    lines = np.asarray(borders.geometry.values)
    road_i, border_i = shapely.STRtree(lines).query(roads, predicate="intersects")
    if not len(road_i):
        return empty
    hits = shapely.intersection(roads[road_i], lines[border_i])
    points, which = shapely.get_parts(shapely.extract_unique_points(hits), return_index=True)
    border_of = border_i[which]
    crs = local_metric_crs(shapely.get_x(points), shapely.get_y(points))
    metric = transform_geoms(points, WGS84, crs)
    left, right = shapely.STRtree(metric).query(metric, predicate="dwithin", distance=merge_m)
    n = len(points)
    _, label = connected_components(
        coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n)), directed=False
    )
    size = np.bincount(label)
    x = np.bincount(label, shapely.get_x(metric)) / size
    y = np.bincount(label, shapely.get_y(metric)) / size
    first = np.unique(label, return_index=True)[1]
    centres = transform_geoms(shapely.points(np.column_stack([x, y])), crs, WGS84)
    return gpd.GeoDataFrame(
        {
            "name": np.full(len(centres), None, dtype=object),
            "country_a": borders["country_a"].to_numpy(dtype=object)[border_of[first]],
            "country_b": borders["country_b"].to_numpy(dtype=object)[border_of[first]],
        },
        geometry=centres,
        crs=WGS84,
    )


PLACE_NAME_COLUMNS = ("name", "nameascii", "nombre", "nome")


def name_after_places(
    crossings: gpd.GeoDataFrame, places_file: Path, *, within_m: float = 30_000.0
) -> gpd.GeoDataFrame:
    """Crossings without a name take the name of the nearest place within ``within_m`` metres.

    ``places_file`` is a point layer with a name column (e.g. Natural Earth populated places).
    Distances are measured in an azimuthal equidistant projection centred on the crossings.
    """
    unnamed = crossings["name"].isna().to_numpy()
    if not unnamed.any():
        return crossings
    places = _read(places_file)
    column = _column(places, PLACE_NAME_COLUMNS)
    if column is None or places.empty:
        raise InputError(
            f"{places_file.name}: a places layer needs a name column "
            f"(one of {', '.join(PLACE_NAME_COLUMNS)}).",
            f"{places_file.name}: una capa de lugares necesita una columna de nombre.",
            code="no_name_column",
        )
    points = np.asarray(crossings.geometry.values)
    crs = local_metric_crs(shapely.get_x(points), shapely.get_y(points))
    here = transform_geoms(points[unnamed], WGS84, crs)
    there = transform_geoms(shapely.centroid(np.asarray(places.geometry.values)), WGS84, crs)
    which, nearest = shapely.STRtree(there).query_nearest(here, max_distance=within_m, all_matches=False)
    names = crossings["name"].to_numpy(dtype=object).copy()
    target = np.flatnonzero(unnamed)[which]
    names[target] = places[column].to_numpy(dtype=object)[nearest]
    return crossings.assign(name=names)
