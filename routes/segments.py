"""Network segments: road edges cut into pieces of a set length, events placed on them, and
network-distance neighbourhoods between them.

Every geometry is in EPSG:4326 (lon/lat degrees); every length and distance is in metres
along the network. The functions take the edges frame of :func:`geodata.network.read_edges`
(columns ``id, source, target, length_m, road_class, name, country, geometry``).
"""

from __future__ import annotations

from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from pyproj import Geod
from scipy import sparse
from scipy.sparse import csgraph

from geodata.errors import InputError

EDGE_COLUMNS = ("id", "source", "target", "length_m", "geometry")
#: The WGS84 ellipsoid, for geodesic lengths and distances in metres.
GEOD = Geod(ellps="WGS84")


def geodesic_length_m(lines: npt.NDArray[np.object_]) -> npt.NDArray[np.float64]:
    """Geodesic (WGS84) length in metres of each lon/lat LineString (or MultiLineString)."""
    lines = np.asarray(lines, dtype=object)
    parts, owner_part = shapely.get_parts(lines, return_index=True)
    coords, part = shapely.get_coordinates(parts, return_index=True)
    same = part[1:] == part[:-1]
    _, _, step = GEOD.inv(coords[:-1, 0][same], coords[:-1, 1][same], coords[1:, 0][same],
                          coords[1:, 1][same])
    owner = owner_part[part[1:][same]]
    return np.bincount(owner, weights=step, minlength=len(lines)).astype(np.float64)


def _check_edges(edges: gpd.GeoDataFrame) -> None:
    missing = [c for c in EDGE_COLUMNS if c not in edges.columns]
    if missing:
        raise InputError(
            f"The road edges lack the column(s) {', '.join(missing)}; load the road network with "
            "`rutas load roads` first.",
            f"A las aristas viales les falta(n) la(s) columna(s) {', '.join(missing)}; cargue la red "
            "vial con `rutas load roads` primero.",
            code="bad_network",
        )
    bad = ~np.isfinite(edges["length_m"].to_numpy(dtype=float)) | (edges["length_m"].to_numpy() <= 0)
    if bad.any():
        first = edges.loc[bad, "id"].iloc[0]
        raise InputError(
            f"Road edge id={first} has length_m <= 0 or missing ({int(bad.sum())} edge(s)); "
            "reload the road layer so every edge has a positive length.",
            f"La arista vial id={first} tiene length_m <= 0 o vacío ({int(bad.sum())} arista(s)); "
            "recargue la capa vial para que toda arista tenga longitud positiva.",
            code="bad_network",
        )


def cut_segments(edges: gpd.GeoDataFrame, segment_km: float) -> gpd.GeoDataFrame:
    """Road edges cut into equal pieces no longer than ``segment_km``.

    An edge of length L becomes ``ceil(L / segment_km)`` pieces of equal length in metres
    (an edge shorter than ``segment_km`` stays whole). Pieces are cut at equal fractions of
    the edge's geodesic length, the fraction in metres that snapping reports, so an event
    at ``fraction`` f lies on piece ``floor(f * pieces)``. Between two vertices a cut point is
    placed linearly in lon/lat (vertices of road lines are close together).

    Parameters
    ----------
    edges
        Road edges, EPSG:4326, with ``id, source, target, length_m`` (metres, geodesic).
    segment_km
        Longest segment, in kilometres (> 0).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per segment, index 0..n-1 equal to column ``segment``, with columns
        ``segment`` (int), ``key`` (stable text id ``"<edge id>:<piece>/<pieces>"``), ``edge_id``,
        ``piece``, ``pieces``, ``start_fraction``, ``end_fraction``, ``start_m``, ``end_m``
        (metres from the edge's start), ``length_m``, ``node_a``, ``node_b`` (graph nodes at
        the segment's ends: the edge's source/target or new negative ids for cut points),
        ``country`` when the edges have it, and ``geometry`` (LineString, EPSG:4326).
    """
    if not segment_km > 0:
        raise InputError(
            f"segment_km must be a positive number of kilometres, got {segment_km}; try 10 for a "
            "regional network or 0.5 for a city.",
            f"segment_km debe ser un número positivo de kilómetros, se recibió {segment_km}; pruebe 10 "
            "para una red regional o 0.5 para una ciudad.",
        )
    _check_edges(edges)
    geoms = shapely.force_2d(np.asarray(edges.geometry.array, dtype=object))
    length_m = edges["length_m"].to_numpy(dtype=np.float64)
    pieces = np.maximum(1, np.ceil(length_m / (segment_km * 1000.0) - 1e-9)).astype(np.int64)
    n_edges = len(edges)
    edge_row = np.repeat(np.arange(n_edges), pieces)
    first = np.concatenate([[0], np.cumsum(pieces)[:-1]])
    piece = np.arange(len(edge_row)) - first[edge_row]
    f0 = piece / pieces[edge_row]
    f1 = (piece + 1) / pieces[edge_row]

    # Vertices of every edge with their fraction of the edge's geodesic length, the fraction
    # snapping measures in metres.
    coords, owner = shapely.get_coordinates(geoms, return_index=True)
    step = np.zeros(len(coords))
    same = owner[1:] == owner[:-1]
    _, _, step_m = GEOD.inv(coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1])
    step[1:][same] = step_m[same]
    cum = np.cumsum(step)
    start_of = np.searchsorted(owner, np.arange(n_edges))
    cum -= cum[start_of[owner]]
    total = np.bincount(owner, weights=step, minlength=n_edges)
    vfrac = np.clip(cum / np.where(total[owner] > 0, total[owner], 1.0), 0.0, 1.0)

    # Interior vertices go to the piece holding them; cut points close one piece and open the next.
    seg_first = first[owner]
    vpiece = np.minimum((vfrac * pieces[owner]).astype(np.int64), pieces[owner] - 1)
    interior = (vfrac > 1e-12) & (vfrac < 1 - 1e-12)
    interior &= np.abs(vfrac * pieces[owner] - np.round(vfrac * pieces[owner])) > 1e-9
    start_pts = _point_at(coords, owner, vfrac, edge_row, f0)
    end_pts = _point_at(coords, owner, vfrac, edge_row, f1)
    n_seg = len(edge_row)
    seg_ids = np.arange(n_seg)
    all_xy = np.concatenate([start_pts, coords[interior], end_pts])
    all_seg = np.concatenate([seg_ids, (seg_first + vpiece)[interior], seg_ids])
    all_f = np.concatenate([f0, vfrac[interior], f1])
    order = np.lexsort((all_f, all_seg))
    lines = shapely.linestrings(all_xy[order], indices=all_seg[order])

    src = edges["source"].to_numpy(dtype=np.int64)
    tgt = edges["target"].to_numpy(dtype=np.int64)
    # Cut points get negative node ids so they never collide with the edges' own nodes.
    cut_id = -(np.arange(n_seg) + 1)
    node_a = np.where(piece == 0, src[edge_row], np.roll(cut_id, 1))
    node_b = np.where(piece == pieces[edge_row] - 1, tgt[edge_row], cut_id)
    edge_id = edges["id"].to_numpy(dtype=np.int64)[edge_row]
    out: dict[str, Any] = {
        "segment": seg_ids,
        "key": pd.Series(edge_id.astype(str)) + ":" + pd.Series(piece.astype(str)) + "/"
        + pd.Series(pieces[edge_row].astype(str)),
        "edge_id": edge_id,
        "piece": piece,
        "pieces": pieces[edge_row],
        "start_fraction": f0,
        "end_fraction": f1,
        "start_m": f0 * length_m[edge_row],
        "end_m": f1 * length_m[edge_row],
        "length_m": (f1 - f0) * length_m[edge_row],
        "node_a": node_a,
        "node_b": node_b,
    }
    if "country" in edges.columns:
        out["country"] = edges["country"].to_numpy()[edge_row]
    return gpd.GeoDataFrame(out, geometry=lines, crs="EPSG:4326")


def _point_at(coords: npt.NDArray[np.float64], owner: npt.NDArray[np.int64], vfrac: npt.NDArray[np.float64],
              edge_row: npt.NDArray[np.int64], fraction: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Lon/lat of the points at ``fraction`` of the geodesic length of edges ``edge_row``.

    Vertices are sorted by edge then fraction, so ``owner * 2 + vfrac`` increases along the
    array and one ``searchsorted`` finds the vertex pair around every point.
    """
    key = owner * 2.0 + vfrac
    at = np.searchsorted(key, edge_row * 2.0 + fraction, side="right") - 1
    last = np.searchsorted(owner, edge_row, side="right") - 1
    at = np.clip(at, np.searchsorted(owner, edge_row), np.maximum(last - 1, 0))
    nxt = np.minimum(at + 1, last)
    span = vfrac[nxt] - vfrac[at]
    t = np.clip(np.where(span > 0, (fraction - vfrac[at]) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0)
    out: npt.NDArray[np.float64] = coords[at] + (coords[nxt] - coords[at]) * t[:, None]
    return out


def assign_events(segments: gpd.GeoDataFrame, edge_id: npt.ArrayLike,
                  fraction: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Segment index (row of ``segments``) of each snapped event; -1 when off the network.

    Parameters
    ----------
    segments
        Output of :func:`cut_segments`.
    edge_id
        Edge id of each event (NaN / missing when the event is off the network).
    fraction
        Position of each event along its edge, 0 at the edge's start and 1 at its end.
    """
    eid = pd.Series(edge_id).astype("Int64").to_numpy(dtype=np.float64, na_value=np.nan)
    frac = np.clip(np.nan_to_num(np.asarray(fraction, dtype=np.float64), nan=0.0), 0.0, 1.0)
    firsts = segments.loc[segments["piece"] == 0, ["edge_id", "segment", "pieces"]]
    firsts = firsts.assign(edge_id=firsts["edge_id"].astype(np.float64))
    lookup = pd.DataFrame({"edge_id": eid}).merge(firsts, on="edge_id", how="left")
    first_seg = lookup["segment"].to_numpy(dtype=np.float64, na_value=np.nan)
    pieces = lookup["pieces"].to_numpy(dtype=np.float64, na_value=np.nan)
    found = np.isfinite(first_seg)
    out = np.full(len(frac), -1, dtype=np.int64)
    offset = np.minimum(np.floor(frac[found] * pieces[found]), pieces[found] - 1)
    out[found] = (first_seg[found] + offset).astype(np.int64)
    return out


def segment_adjacency(segments: gpd.GeoDataFrame) -> sparse.csr_matrix:
    """Segments touching at a graph node, weighted by the distance between their midpoints.

    The weight of a pair (i, j) sharing a node is ``(length_i + length_j) / 2`` metres, so
    shortest paths in this matrix are midpoint-to-midpoint distances along the network.
    The matrix is symmetric, n x n, with an empty diagonal.
    """
    n = len(segments)
    ends = pd.DataFrame({
        "node": np.concatenate([segments["node_a"].to_numpy(), segments["node_b"].to_numpy()]),
        "segment": np.concatenate([np.arange(n), np.arange(n)]),
    }).drop_duplicates()
    pairs = ends.merge(ends, on="node", suffixes=("_i", "_j"))
    pairs = pairs[pairs["segment_i"] != pairs["segment_j"]]
    i = pairs["segment_i"].to_numpy()
    j = pairs["segment_j"].to_numpy()
    half = segments["length_m"].to_numpy(dtype=np.float64) / 2.0
    w = half[i] + half[j]
    adj = sparse.coo_matrix((w, (i, j)), shape=(n, n)).tocsr()
    # Parallel edges between the same two nodes yield duplicate pairs: keep one (same weight).
    adj.sum_duplicates()
    adj.data = (half[np.repeat(np.arange(n), np.diff(adj.indptr))] + half[adj.indices])
    return adj


def bounded_distances(adjacency: sparse.csr_matrix, limit: float,
                      sources: npt.NDArray[np.int64] | None = None,
                      lonlat: npt.NDArray[np.float64] | None = None) -> sparse.csr_matrix:
    """Network distances from each source to every node within ``limit``, as a sparse matrix.

    Row r holds the distances from ``sources[r]`` (all nodes when ``sources`` is None);
    reached nodes are stored explicitly (the source itself with distance 0).

    Parameters
    ----------
    adjacency
        Symmetric n x n sparse matrix of non-negative lengths in metres.
    limit
        Largest distance kept, metres.
    lonlat
        Position (lon, lat, EPSG:4326) of every node, or None. When given, the sources are
        grouped in tiles about ``limit`` wide and each tile is searched (Dijkstra, in C) on
        the subgraph of nodes within ``limit`` as the crow flies of the tile; no path within
        ``limit`` along the network can leave it, since a road is never shorter than the
        straight line between its ends, so the result is exact.
    """
    adj = sparse.csr_matrix(adjacency)
    n = adj.shape[0]
    src = np.arange(n, dtype=np.int64) if sources is None else np.asarray(sources, dtype=np.int64)
    if lonlat is None:
        tiles = [np.arange(len(src))]
        boxes = None
    else:
        lon, lat = lonlat[src, 0], lonlat[src, 1]
        # Degrees of latitude are >= 110.57 km, degrees of longitude >= 111.32 km x cos(lat).
        dlat = limit / 110_574.0 * 1.01 + 1e-4
        row = np.floor(lat / dlat)
        width = dlat / np.cos(np.radians(np.minimum(np.abs(row * dlat) + 2 * dlat, 89.0)))
        col = np.floor(lon / width)
        _, tile_of = np.unique(np.column_stack([row, col]), axis=0, return_inverse=True)
        order = np.argsort(tile_of.ravel(), kind="stable")
        cuts = np.flatnonzero(np.diff(tile_of.ravel()[order])) + 1
        tiles = np.split(order, cuts)
        lat_order = np.argsort(lonlat[:, 1], kind="stable")
        lat_sorted = lonlat[lat_order, 1]
        boxes = (dlat, lat_order, lat_sorted)
    rows: list[npt.NDArray[np.int64]] = []
    cols: list[npt.NDArray[np.int64]] = []
    vals: list[npt.NDArray[np.float64]] = []
    # One Dijkstra call per tile of sources; the searches themselves run in scipy's C code.
    for tile in tiles:
        if boxes is None or lonlat is None:
            cand = np.arange(n)
        else:
            dlat, lat_order, lat_sorted = boxes
            t_lat = lonlat[src[tile], 1]
            t_lon = lonlat[src[tile], 0]
            lat0, lat1 = t_lat.min() - dlat, t_lat.max() + dlat
            far = min(max(abs(lat0), abs(lat1)), 89.0)
            dlon = limit / (111_320.0 * np.cos(np.radians(far))) * 1.01 + 1e-4
            first = np.searchsorted(lat_sorted, lat0)
            band = lat_order[first:np.searchsorted(lat_sorted, lat1, side="right")]
            lon_b = lonlat[band, 0]
            cand = np.sort(band[(lon_b >= t_lon.min() - dlon) & (lon_b <= t_lon.max() + dlon)])
        sub = adj[cand][:, cand]
        local = np.searchsorted(cand, src[tile])
        dist = csgraph.dijkstra(sub, directed=True, indices=local, limit=limit)
        r, c = np.nonzero(np.isfinite(dist))
        rows.append(tile[r])
        cols.append(cand[c])
        vals.append(dist[r, c])
    out = sparse.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(len(src), n))
    return out.tocsr()


def midpoints(segments: gpd.GeoDataFrame) -> npt.NDArray[np.float64]:
    """(lon, lat) of the point halfway along each segment, EPSG:4326, shape (n, 2)."""
    geoms = np.asarray(segments.geometry.array, dtype=object)
    points = shapely.line_interpolate_point(geoms, 0.5, normalized=True)
    return np.asarray(shapely.get_coordinates(points), dtype=np.float64)


def network_neighbours(segments: gpd.GeoDataFrame, neighbour_km: float,
                       subset: npt.NDArray[np.int64] | None = None) -> sparse.csr_matrix:
    """Binary spatial weights: segments whose midpoints are within ``neighbour_km`` along the network.

    Distances are midpoint to midpoint along the road graph (metres), never as the crow
    flies. The diagonal is empty (Gi* adds each unit itself).

    Parameters
    ----------
    segments
        Output of :func:`cut_segments`.
    neighbour_km
        Network distance, in kilometres.
    subset
        Rows of ``segments`` that are units of the cube (segments with events). Paths may run
        through any segment, but the matrix is ``len(subset)`` square, in ``subset`` order.

    Returns
    -------
    scipy.sparse.csr_matrix
        Symmetric 0/1 matrix of float64.
    """
    if not neighbour_km >= 0:
        raise InputError(
            f"neighbour_km must be zero or a positive number of kilometres, got {neighbour_km}.",
            f"neighbour_km debe ser cero o un número positivo de kilómetros, se recibió {neighbour_km}.",
        )
    adj = segment_adjacency(segments)
    n = len(segments)
    units = np.arange(n, dtype=np.int64) if subset is None else np.asarray(subset, dtype=np.int64)
    reach = bounded_distances(adj, neighbour_km * 1000.0, units, midpoints(segments)).tocoo()
    position = np.full(n, -1, dtype=np.int64)
    position[units] = np.arange(len(units))
    col = position[reach.col]
    keep = (col >= 0) & (col != reach.row)
    m = len(units)
    w = sparse.csr_matrix((np.ones(int(keep.sum())), (reach.row[keep], col[keep])), shape=(m, m))
    # Symmetric by construction; the max guards against rounding at the limit.
    return sparse.csr_matrix(w.maximum(w.T))
