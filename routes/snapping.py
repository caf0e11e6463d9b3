"""Snapping: place every event on the road network and near its border and crossing.

The work is split in two layers:

* pure functions over arrays (:func:`nearest_lines`, :func:`snap_points`): given points and a
  :class:`Network`, they return the nearest edge, fraction along it, snapped point and
  distances; a Dask partition can run them unchanged;
* the store stage :func:`snap_pending`, which reads the events not yet snapped (or snapped
  against older layers) in chunks, calls :func:`snap_points` and writes ``event_snaps``.

Points are in EPSG:4326 degrees. Each group of points (a 4 x 4 degree cell) is projected
with an azimuthal equidistant projection centred on its cell, where nearest candidates are
found with a shapely STRtree; reported distances are then geodesic metres on WGS84 from the
event to the nearest point found, so they hold from Mexico to Chile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
import sqlalchemy as sa
from pyproj import Transformer
from sqlalchemy.engine import Engine

from geodata.db import scoped
from geodata.errors import InputError
from geodata.network import GEOD, WGS84, read_edges
from geodata.reference import _copy, active_layers, read_layer
from geodata.settings import Settings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Side of the cells (degrees) whose points share one local projection.
CELL_DEG = 4.0
#: Radius (metres) of the first, bounded pass of an unbounded nearest search.
UNBOUNDED_FIRST_PASS_M = 10_000.0
#: Metres per degree used to widen search boxes: lower bounds, so boxes are never too small.
_M_PER_DEG_LAT = 110_000.0
_M_PER_DEG_LON_EQ = 111_000.0


@dataclass(frozen=True)
class Network:
    """The reference geometry events are snapped to, in EPSG:4326, with spatial indexes.

    ``layers`` maps layer kind to the id of the layer version used (it is stored with each snap).
    """

    edge_ids: IntArray
    edges: npt.NDArray[Any]
    border_ids: IntArray
    borders: npt.NDArray[Any]
    border_pairs: npt.NDArray[Any]
    crossing_ids: IntArray
    crossings: npt.NDArray[Any]
    layers: dict[str, int] = field(default_factory=dict)
    edge_tree: shapely.STRtree = field(init=False)
    border_tree: shapely.STRtree = field(init=False)
    crossing_tree: shapely.STRtree = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edge_tree", shapely.STRtree(self.edges))
        object.__setattr__(self, "border_tree", shapely.STRtree(self.borders))
        object.__setattr__(self, "crossing_tree", shapely.STRtree(self.crossings))


def build_network(
    edges: gpd.GeoDataFrame,
    borders: gpd.GeoDataFrame | None = None,
    crossings: gpd.GeoDataFrame | None = None,
    layers: dict[str, int] | None = None,
) -> Network:
    """A :class:`Network` from frames with an ``id`` column (EPSG:4326).

    ``borders`` needs ``country_a`` and ``country_b``; the pair is kept as ``"AAA-BBB"``.
    """
    empty = gpd.GeoDataFrame(
        {"id": pd.Series([], dtype=np.int64), "country_a": [], "country_b": []}, geometry=[], crs=WGS84
    )
    borders = empty if borders is None else borders
    crossings = empty if crossings is None else crossings
    pairs = borders["country_a"].fillna("?").astype(str) + "-" + borders["country_b"].fillna("?").astype(str)
    return Network(
        edge_ids=edges["id"].to_numpy(dtype=np.int64),
        edges=np.asarray(edges.geometry.values),
        border_ids=borders["id"].to_numpy(dtype=np.int64),
        borders=np.asarray(borders.geometry.values),
        border_pairs=pairs.to_numpy(dtype=object),
        crossing_ids=crossings["id"].to_numpy(dtype=np.int64),
        crossings=np.asarray(crossings.geometry.values),
        layers=dict(layers or {}),
    )


def load_network(engine: Engine) -> Network:
    """The active road, border and crossing layers from the store as a :class:`Network`.

    Raises
    ------
    InputError
        No road layer is loaded yet.
    """
    with scoped(engine) as conn:
        layers = active_layers(conn)
    if "roads" not in layers:
        raise InputError(
            "No road network is loaded, so events cannot be snapped. Run `rutas load roads PATH` first.",
            "No hay red vial cargada; no se pueden ajustar los eventos. Ejecute antes "
            "`rutas load roads RUTA`.",
            code="no_roads",
        )
    return build_network(
        read_edges(engine),
        read_layer(engine, "border_segments", ("country_a", "country_b")),
        read_layer(engine, "crossings", ("name", "official")),
        layers,
    )


def morton_order(x: FloatArray, y: FloatArray) -> IntArray:
    """Order that sorts points along a Z-order curve, so neighbours are queried together."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)

    def quantise(v: FloatArray) -> npt.NDArray[np.uint64]:
        span = max(float(np.ptp(v)), 1e-9)
        scaled: FloatArray = np.clip((v - v.min()) / span * 65535, 0, 65535)
        return scaled.astype(np.uint64)

    qx, qy = quantise(x), quantise(y)

    def spread(v: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    return np.argsort(spread(qx) | (spread(qy) << np.uint64(1)), kind="stable").astype(np.int64)


def nearest_lines(
    x: FloatArray,
    y: FloatArray,
    lines: npt.NDArray[Any],
    max_distance: float | None,
    *,
    workers: int = 1,
) -> tuple[IntArray, FloatArray]:
    """Index of the nearest line to each point and the planar distance to it (-1 and NaN beyond reach).

    Parameters
    ----------
    x, y
        Point coordinates in the same metric CRS as ``lines`` (metres).
    lines
        Shapely geometries (edges, border segments or crossing points) in that CRS.
    max_distance
        Search radius in metres; points with nothing within it get index -1. ``None``
        searches without limit.
    workers
        Threads that query the tree at once (shapely releases the GIL while searching); each
        takes a contiguous run of Z-ordered points.

    Notes
    -----
    Lines are indexed in pieces of at most 8 segments: a piece's box is tight and its
    distance cheap, so the tree search visits fewer candidates than with long polylines. On exact
    ties the lowest line index wins, so the result does not depend on query order. Points
    are queried in Z-order, which keeps the tree walk in cache.
    """
    index = np.full(len(x), -1, dtype=np.int64)
    distance = np.full(len(x), np.nan)
    if len(x) == 0 or len(lines) == 0:
        return index, distance
    pieces, owner = _pieces(lines)
    tree = shapely.STRtree(pieces)
    order = morton_order(x, y)
    points = shapely.points(x[order], y[order])

    def search(subset: IntArray, limit: float | None) -> tuple[IntArray, IntArray, FloatArray]:
        def query(start: int, stop: int) -> tuple[IntArray, IntArray, FloatArray]:
            (at, found), how_far = tree.query_nearest(
                points[subset[start:stop]], max_distance=limit, return_distance=True, all_matches=True
            )
            return subset[start:stop][at], found, how_far

        cuts = np.linspace(0, len(subset), max(1, workers) + 1).astype(int)
        if workers > 1 and len(subset) > workers:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(query, cuts[:-1], cuts[1:]))
        else:
            parts = [query(0, len(subset))]
        return (
            np.concatenate([part[0] for part in parts]),
            np.concatenate([part[1] for part in parts]),
            np.concatenate([part[2] for part in parts]),
        )

    everyone = np.arange(len(points))
    if max_distance is None:
        # a bounded search prunes the tree early; only points with nothing near need the unbounded one
        pos, hit, dist = search(everyone, UNBOUNDED_FIRST_PASS_M)
        found = np.zeros(len(points), dtype=bool)
        found[pos] = True
        rest = np.flatnonzero(~found)
        if len(rest):
            more = search(rest, None)
            pos, hit, dist = (np.concatenate([a, b]) for a, b in zip((pos, hit, dist), more, strict=True))
    else:
        pos, hit, dist = search(everyone, max_distance)
    # all_matches gives every equidistant segment; keep the lowest line index for a stable answer
    hit = owner[hit]
    best = np.lexsort((hit, pos))
    pos, hit, dist = pos[best], hit[best], dist[best]
    first = np.ones(len(pos), dtype=bool)
    first[1:] = pos[1:] != pos[:-1]
    index[order[pos[first]]] = hit[first]
    distance[order[pos[first]]] = dist[first]
    return index, distance


def _pieces(geoms: npt.NDArray[Any], max_segments: int = 8) -> tuple[npt.NDArray[Any], IntArray]:
    """LineStrings cut into pieces of at most ``max_segments`` segments, and the line each came from.

    Other geometries (points, polygons) are kept whole. Pieces keep every vertex, so the
    distance to the nearest piece of a line is the distance to the line.
    """
    is_line = shapely.get_type_id(geoms) == 1
    lines_at = np.flatnonzero(is_line)
    coords, which = shapely.get_coordinates(geoms[is_line], return_index=True)
    count = np.bincount(which, minlength=len(lines_at))
    pos = np.arange(len(coords)) - np.repeat(np.cumsum(count) - count, count)
    last_piece = np.maximum(count - 2, 0) // max_segments  # per line
    piece = np.minimum(pos // max_segments, last_piece[which])
    # a vertex where one piece ends and the next starts belongs to both
    shared = (pos % max_segments == 0) & (pos > 0) & (pos < count[which] - 1)
    offset = np.cumsum(last_piece + 1) - (last_piece + 1)
    piece_id = np.concatenate([offset[which] + piece, offset[which[shared]] + piece[shared] - 1])
    # within a piece: the shared start vertex (from the previous piece's end) sorts by position
    all_pos = np.concatenate([pos, pos[shared]])
    order = np.lexsort((all_pos, piece_id))
    xy = np.concatenate([coords, coords[shared]])[order]
    pieces = shapely.linestrings(xy, indices=piece_id[order])
    owner = np.repeat(lines_at, last_piece + 1)
    others = np.flatnonzero(~is_line)
    return np.concatenate([pieces, geoms[others]]), np.concatenate([owner, others]).astype(np.int64)


def snap_points(
    lon: FloatArray,
    lat: FloatArray,
    network: Network,
    *,
    reach_m: FloatArray | float,
    search_m: float,
    workers: int = 1,
) -> pd.DataFrame:
    """Nearest edge, border segment and crossing of each point (a pure function of points and network).

    Parameters
    ----------
    lon, lat
        Event positions in EPSG:4326 degrees; NaN marks an event without geometry.
    network
        The layers to snap to.
    reach_m
        How far (metres) each point may be from a road to be placed on it; farther points are
        flagged ``off_network``.
    search_m
        Radius (metres) in which the nearest border segment and crossing are looked for.
    workers
        Threads for the nearest-edge search (see :func:`nearest_lines`); results do not depend on it.

    Returns
    -------
    DataFrame
        One row per point, in input order: ``edge_id``, ``fraction`` (0..1 along the edge's
        digitised direction), ``snapped_lon``, ``snapped_lat``, ``distance_m`` (geodesic),
        ``off_network``, ``no_geometry``, ``border_segment_id``, ``border_countries``,
        ``border_distance_m``, ``crossing_id``, ``crossing_distance_m``. Missing values are NaN
        (ids are pandas nullable integers).
    """
    lon = np.asarray(lon, dtype=float)
    lat = np.asarray(lat, dtype=float)
    n = len(lon)
    reach = np.broadcast_to(np.asarray(reach_m, dtype=float), (n,))
    out: dict[str, Any] = {
        "edge": np.full(n, -1, dtype=np.int64),
        "fraction": np.full(n, np.nan),
        "snapped_lon": np.full(n, np.nan),
        "snapped_lat": np.full(n, np.nan),
        "distance_m": np.full(n, np.nan),
        "border": np.full(n, -1, dtype=np.int64),
        "border_distance_m": np.full(n, np.nan),
        "crossing": np.full(n, -1, dtype=np.int64),
        "crossing_distance_m": np.full(n, np.nan),
    }
    valid = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    # group the valid points by cell with one sort (no pass over all points per cell)
    rows = np.flatnonzero(valid)
    cell = np.floor(lon[rows] / CELL_DEG) * 1000 + np.floor(lat[rows] / CELL_DEG)
    by_cell = np.argsort(cell, kind="stable")
    rows, cell = rows[by_cell], cell[by_cell]
    bounds = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1], True]) if len(rows) else np.zeros(1, int)
    for start, stop in pairwise(bounds):
        members = rows[start:stop]
        _snap_cell(lon[members], lat[members], reach[members], search_m, network, members, out, workers)
    edge, border, crossing = out["edge"], out["border"], out["crossing"]
    return pd.DataFrame(
        {
            "edge_id": _ids(network.edge_ids, edge),
            "fraction": out["fraction"],
            "snapped_lon": out["snapped_lon"],
            "snapped_lat": out["snapped_lat"],
            "distance_m": out["distance_m"],
            "off_network": edge < 0,
            "no_geometry": ~valid,
            "border_segment_id": _ids(network.border_ids, border),
            "border_countries": pd.Series(_pairs(network.border_pairs, border), dtype=object),
            "border_distance_m": out["border_distance_m"],
            "crossing_id": _ids(network.crossing_ids, crossing),
            "crossing_distance_m": out["crossing_distance_m"],
        }
    )


def _pairs(pairs: npt.NDArray[Any], index: IntArray) -> npt.NDArray[Any]:
    out = np.full(len(index), None, dtype=object)
    out[index >= 0] = pairs[index[index >= 0]]
    return out


def _ids(ids: IntArray, index: IntArray) -> pd.Series:
    has = index >= 0
    values = ids[np.maximum(index, 0)] if len(ids) else np.zeros(len(index), dtype=np.int64)
    return pd.Series(pd.array(values, dtype="Int64")).where(has)


@lru_cache(maxsize=4096)
def _cell_transformer(lon_cell: float, lat_cell: float) -> Transformer:
    """EPSG:4326 degrees -> azimuthal equidistant metres centred on a cell (inverse for the way back)."""
    lon_0, lat_0 = (lon_cell + 0.5) * CELL_DEG, (lat_cell + 0.5) * CELL_DEG
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=aeqd +lat_0={lat_0} +lon_0={lon_0} +ellps=WGS84"
    )


def _project(geoms: npt.NDArray[Any], transformer: Transformer) -> npt.NDArray[Any]:
    def _apply(xy: FloatArray) -> FloatArray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, _apply))


def _candidates(lon: FloatArray, lat: FloatArray, radius_m: float, tree: shapely.STRtree) -> IntArray:
    """Indexes of geometries whose box comes within ``radius_m`` of the points' box (a superset)."""
    d_lat = radius_m / _M_PER_DEG_LAT
    worst = min(89.0, float(np.max(np.abs(lat))) + d_lat)
    d_lon = min(180.0, radius_m / (_M_PER_DEG_LON_EQ * np.cos(np.radians(worst))))
    box = shapely.box(lon.min() - d_lon, lat.min() - d_lat, lon.max() + d_lon, lat.max() + d_lat)
    return np.sort(tree.query(box)).astype(np.int64)


def _snap_cell(
    lon: FloatArray,
    lat: FloatArray,
    reach: FloatArray,
    search_m: float,
    network: Network,
    members: IntArray,
    out: dict[str, Any],
    workers: int = 1,
) -> None:
    forward = _cell_transformer(float(np.floor(lon[0] / CELL_DEG)), float(np.floor(lat[0] / CELL_DEG)))
    x, y = (np.asarray(v) for v in forward.transform(lon, lat))
    points = shapely.points(x, y)

    def nearest(
        geoms: npt.NDArray[Any], tree: shapely.STRtree, radius: FloatArray
    ) -> tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray]:
        found = np.full(len(x), -1, dtype=np.int64)
        where = np.full(len(x), np.nan)
        s_lon, s_lat, dist = np.full(len(x), np.nan), np.full(len(x), np.nan), np.full(len(x), np.nan)
        if not len(geoms):
            return found, where, s_lon, s_lat, dist
        # geodesic and projected distances differ by < 0.1 % in a cell: widen the search slightly
        limit = float(radius.max()) * 1.002 + 1.0
        cand = _candidates(lon, lat, limit, tree)
        if not len(cand):
            return found, where, s_lon, s_lat, dist
        # densify to 0.01 degree first: a long straight segment in lon/lat is not straight in the cell's
        # projection, and the nearest point must lie on the line as stored (EPSG:4326)
        local = _project(shapely.segmentize(geoms[cand], 0.01), forward)
        idx, _ = nearest_lines(x, y, local, limit, workers=workers if len(x) > 10_000 else 1)
        hit = np.flatnonzero(idx >= 0)
        geom = local[idx[hit]]
        on_line = shapely.get_type_id(geom) != 0
        along = np.full(len(hit), np.nan)
        along[on_line] = shapely.line_locate_point(geom[on_line], points[hit][on_line], normalized=True)
        nearest_pt = geom.copy()
        nearest_pt[on_line] = shapely.line_interpolate_point(geom[on_line], along[on_line], normalized=True)
        nx_, ny_ = forward.transform(
            shapely.get_x(nearest_pt), shapely.get_y(nearest_pt), direction="INVERSE"
        )
        _, _, geodesic = GEOD.inv(lon[hit], lat[hit], np.asarray(nx_), np.asarray(ny_))
        ok = np.asarray(geodesic) <= radius[hit]
        hit = hit[ok]
        found[hit] = cand[idx[hit]]
        where[hit] = np.where(on_line[ok], along[ok], np.nan)
        s_lon[hit], s_lat[hit] = np.asarray(nx_)[ok], np.asarray(ny_)[ok]
        dist[hit] = np.asarray(geodesic)[ok]
        return found, where, s_lon, s_lat, dist

    edge, fraction, s_lon, s_lat, dist = nearest(network.edges, network.edge_tree, reach)
    out["edge"][members], out["fraction"][members] = edge, fraction
    out["snapped_lon"][members], out["snapped_lat"][members], out["distance_m"][members] = s_lon, s_lat, dist
    search = np.full(len(x), search_m)
    border, _, _, _, b_dist = nearest(network.borders, network.border_tree, search)
    out["border"][members], out["border_distance_m"][members] = border, b_dist
    crossing, _, _, _, c_dist = nearest(network.crossings, network.crossing_tree, search)
    out["crossing"][members], out["crossing_distance_m"][members] = crossing, c_dist


def reach_for(precision_m: FloatArray, settings: Settings) -> FloatArray:
    """How far (metres) each event may be from a road: its coordinate precision, within the settings' bounds.

    Unknown precision (NaN) gets ``snap_max_distance_m``; known precision is kept between
    ``snap_min_distance_m`` and ``snap_max_distance_m``.
    """
    precision = np.asarray(precision_m, dtype=float)
    low = min(settings.snap_min_distance_m, settings.snap_max_distance_m)
    return np.where(
        np.isnan(precision),
        settings.snap_max_distance_m,
        np.clip(precision, low, settings.snap_max_distance_m),
    )


@dataclass
class SnapReport:
    """What a snapping run did, for the CLI and the pipeline's run record."""

    pending: int = 0
    snapped: int = 0
    off_network: int = 0
    no_geometry: int = 0
    near_border: int = 0
    seconds: float = 0.0
    layers: dict[str, int] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return dict(self.__dict__)


_SNAP_COLUMNS = (
    "event_id",
    "edge_id",
    "fraction",
    "snapped",
    "distance_m",
    "off_network",
    "border_segment_id",
    "border_countries",
    "border_distance_m",
    "crossing_id",
    "crossing_distance_m",
    "layers",
)


def snap_pending(
    engine: Engine,
    settings: Settings,
    *,
    network: Network | None = None,
    redo: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> SnapReport:
    """Snap every event not yet snapped, or snapped against other layer versions, and store it.

    Works in chunks of ``settings.snap_chunk_rows`` events, each in its own transaction, so
    an interrupted run resumes where it stopped. ``redo`` snaps every event again (after a
    change of the snapping settings). ``on_chunk(done, total)`` reports progress.
    """
    started = time.perf_counter()
    network = network if network is not None else load_network(engine)
    layers_json = json.dumps(network.layers, sort_keys=True)
    pending_sql = (
        "FROM events e LEFT JOIN event_snaps s ON s.event_id = e.id "
        "WHERE (s.event_id IS NULL OR s.layers <> CAST(:layers AS jsonb) "
        "OR s.snapped_at < CAST(:since AS timestamptz))"
    )
    report = SnapReport(layers=network.layers)
    with scoped(engine) as conn:
        # with redo, every snap made before this run started is stale
        since = conn.execute(sa.text("SELECT now()")).scalar_one() if redo else None
        report.pending = int(
            conn.execute(
                sa.text(f"SELECT count(*) {pending_sql}"), {"layers": layers_json, "since": since}
            ).scalar_one()
        )
    last_id, done = -1, 0
    while True:
        with scoped(engine) as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT e.id, ST_X(e.geom), ST_Y(e.geom), e.coord_precision_m "
                    f"{pending_sql} AND e.id > :last ORDER BY e.id LIMIT :limit"
                ),
                {"layers": layers_json, "since": since, "last": last_id, "limit": settings.snap_chunk_rows},
            ).all()
            if not rows:
                break
            chunk = np.array([(r[0], _num(r[1]), _num(r[2]), _num(r[3])) for r in rows], dtype=float)
            ids = chunk[:, 0].astype(np.int64)
            snaps = snap_points(
                chunk[:, 1],
                chunk[:, 2],
                network,
                reach_m=reach_for(chunk[:, 3], settings),
                search_m=settings.snap_search_km * 1000.0,
                workers=settings.snap_workers,
            )
            _store(conn, ids, snaps, layers_json)
            last_id = int(ids[-1])
        done += len(rows)
        report.snapped += int((~snaps["off_network"]).sum())
        report.off_network += int(snaps["off_network"].sum())
        report.no_geometry += int(snaps["no_geometry"].sum())
        report.near_border += int((snaps["border_distance_m"] <= settings.border_near_km * 1000.0).sum())
        if on_chunk is not None:
            on_chunk(done, report.pending)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _store(conn: sa.Connection, ids: IntArray, snaps: pd.DataFrame, layers_json: str) -> None:
    conn.execute(sa.text("DELETE FROM event_snaps WHERE event_id = ANY(:ids)"), {"ids": ids.tolist()})
    snapped = shapely.points(snaps["snapped_lon"].to_numpy(), snaps["snapped_lat"].to_numpy())
    snapped_hex = shapely.to_wkb(shapely.set_srid(snapped, 4326), hex=True, include_srid=True)
    has = ~snaps["off_network"].to_numpy()

    def col(name: str) -> list[Any]:
        return [None if pd.isna(v) else v for v in snaps[name].tolist()]

    _copy(
        conn,
        "event_snaps",
        _SNAP_COLUMNS,
        zip(
            ids.tolist(),
            col("edge_id"),
            col("fraction"),
            [h if ok else None for h, ok in zip(snapped_hex, has, strict=True)],
            col("distance_m"),
            snaps["off_network"].tolist(),
            col("border_segment_id"),
            col("border_countries"),
            col("border_distance_m"),
            col("crossing_id"),
            col("crossing_distance_m"),
            [layers_json] * len(ids),
            strict=True,
        ),
    )


def summary(engine: Engine, settings: Settings, top: int = 10) -> dict[str, Any]:
    """Counts over stored snaps: snapped, off-network, near a border, and the crossings with most events near.

    "Near" means within ``settings.border_near_km`` (geodesic).
    """
    near_m = settings.border_near_km * 1000.0
    with scoped(engine) as conn:
        counts = conn.execute(
            sa.text(
                "SELECT count(*), count(*) FILTER (WHERE NOT off_network), "
                "count(*) FILTER (WHERE off_network), "
                "count(*) FILTER (WHERE border_distance_m <= :near) FROM event_snaps"
            ),
            {"near": near_m},
        ).one()
        rows = (
            conn.execute(
                sa.text(
                    "SELECT c.id, c.name, c.official, c.country_a, c.country_b, count(*) AS events, "
                    "round(avg(s.crossing_distance_m)::numeric / 1000, 1)::float8 AS mean_km "
                    "FROM event_snaps s JOIN crossings c ON c.id = s.crossing_id "
                    "WHERE s.crossing_distance_m <= :near GROUP BY c.id ORDER BY events DESC, c.id LIMIT :top"
                ),
                {"near": near_m, "top": top},
            )
            .mappings()
            .all()
        )
    return {
        "events": int(counts[0]),
        "snapped": int(counts[1]),
        "off_network": int(counts[2]),
        "near_border": int(counts[3]),
        "near_km": settings.border_near_km,
        "top_crossings": [dict(r) for r in rows],
    }
