"""Routes: connected hot segments joined along the road graph, with their events, series and trend.

Segments in a hot category that touch on the graph form a route; two such groups are joined
when a path of at most ``gap_segments`` other segments links them (the path's segments are
added as bridges). Hot H3 cells off the network join a route when they are its cell or next
to it (ring 1), or form a route of their own when two or more are adjacent. Routes keep their
identity across runs by the segments they share with the previous run's routes.

Geometries are EPSG:4326; lengths are metres along the network; times UTC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from scipy import sparse
from scipy.sparse import csgraph

from routes.cube import Cube
from routes.emerging import CATEGORIES, HOT_CATEGORIES, mann_kendall
from routes.segments import GEOD, geodesic_length_m, segment_adjacency

BRIDGE = "bridge"
#: Category of segments without any event in the period (they are not units of the cube).
NO_CATEGORY = "no_event"


@dataclass(frozen=True)
class RouteParams:
    """How routes are drawn: gap bridging, categories kept, crossings' reach, run id."""

    gap_segments: int = 2
    categories: tuple[str, ...] = HOT_CATEGORIES
    near_km: float = 25.0
    alpha: float = 0.05
    run_id: str | None = None


def _bridge(adjacency: sparse.csr_matrix, hot: npt.NDArray[np.bool_], gap: int
            ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Group label of every segment (-1 outside) and the mask of bridge segments.

    Hot segments touching each other share a group. A breadth-first search from all hot
    segments at once over the others (at most ``gap`` steps) gives each reached segment its
    nearest group, hop count and predecessor; two groups whose searches meet with at most
    ``gap`` segments between them are joined through that shortest path.
    """
    n = adjacency.shape[0]
    binary = sparse.csr_matrix((np.ones(adjacency.nnz), adjacency.indices, adjacency.indptr), shape=(n, n))
    hot_idx = np.flatnonzero(hot)
    label = np.full(n, -1, dtype=np.int64)
    bridge = np.zeros(n, dtype=bool)
    if not len(hot_idx):
        return label, bridge
    _, comp = csgraph.connected_components(binary[hot_idx][:, hot_idx], directed=False)
    label[hot_idx] = comp
    hops = np.where(hot, 0, np.iinfo(np.int64).max)
    pred = np.full(n, -1, dtype=np.int64)
    coo = binary.tocoo()
    for step in range(1, gap + 1):
        from_front = hops[coo.row] == step - 1
        to_new = hops[coo.col] == np.iinfo(np.int64).max
        sel = from_front & to_new
        rows, cols = coo.row[sel], coo.col[sel]
        if not len(rows):
            break
        # Deterministic: a segment reached from several groups takes the smallest label.
        order = np.lexsort((label[rows], cols))
        rows, cols = rows[order], cols[order]
        first = np.ones(len(cols), dtype=bool)
        first[1:] = cols[1:] != cols[:-1]
        rows, cols = rows[first], cols[first]
        hops[cols] = step
        label[cols] = label[rows]
        pred[cols] = rows
    reached = label >= 0
    u, v = coo.row, coo.col
    meet = reached[u] & reached[v] & (u < v)
    u, v = u[meet], v[meet]
    diff = label[u] != label[v]
    u, v = u[diff], v[diff]
    within = hops[u] + hops[v] <= gap
    u, v = u[within], v[within]
    n_groups = int(comp.max()) + 1
    if len(u):
        cost = hops[u] + hops[v]
        a, b = np.minimum(label[u], label[v]), np.maximum(label[u], label[v])
        order = np.lexsort((v, u, cost, b, a))
        keep = np.ones(len(order), dtype=bool)
        keep[1:] = (a[order][1:] != a[order][:-1]) | (b[order][1:] != b[order][:-1])
        u, v, a, b = u[order][keep], v[order][keep], a[order][keep], b[order][keep]
        walk = np.concatenate([u, v])
        for _ in range(gap + 1):
            inner = walk[walk >= 0]
            bridge[inner[~hot[inner]]] = True
            walk = np.where(walk >= 0, pred[np.maximum(walk, 0)], -1)
        joins = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_groups, n_groups))
        _, merged = csgraph.connected_components(joins, directed=False)
    else:
        merged = np.arange(n_groups)
    out = np.full(n, -1, dtype=np.int64)
    out[hot] = merged[label[hot]]
    out[bridge] = merged[label[bridge]]
    return out, bridge


def _h3_groups(cells: npt.NDArray[np.int64], hot: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Group label of each hot cell (cells touching by ring 1 share one); -1 for others."""
    idx = np.flatnonzero(hot)
    label = np.full(len(cells), -1, dtype=np.int64)
    if not len(idx):
        return label
    position = {int(c): k for k, c in enumerate(cells[idx].astype(np.uint64))}
    rows: list[int] = []
    cols: list[int] = []
    # h3 offers no array form of grid_disk: one call per hot off-network cell.
    for k, cell in enumerate(cells[idx].astype(np.uint64)):
        for other in h3i.grid_disk(int(cell), 1):
            j = position.get(int(other))
            if j is not None:
                rows.append(k)
                cols.append(j)
    adj = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(idx), len(idx)))
    _, comp = csgraph.connected_components(adj, directed=False)
    label[idx] = comp
    return label


def _leg_lines(cells: npt.NDArray[np.int64]) -> list[shapely.LineString]:
    """Lines between the centres of the adjacent cells of one off-network group (lon/lat)."""
    centre = {int(c): h3i.cell_to_latlng(int(c))[::-1] for c in cells.astype(np.uint64)}
    lines = []
    for c in centre:
        for other in h3i.grid_ring(c, 1):
            if int(other) in centre and c < int(other):
                lines.append(shapely.LineString([centre[c], centre[int(other)]]))
    return lines


def extract_routes(segments: gpd.GeoDataFrame, cube: Cube, categories: npt.NDArray[np.str_],
                   params: RouteParams | None = None,
                   crossings: gpd.GeoDataFrame | None = None) -> gpd.GeoDataFrame:
    """Routes from the categorised units of ``cube``.

    Parameters
    ----------
    segments
        Output of :func:`routes.segments.cut_segments` (the cube's segment units index it).
    cube
        The space-time cube.
    categories
        Category of each unit of the cube (:func:`routes.emerging.categorise`).
    params
        Gap bridging, categories kept, crossings' reach (km), alpha of the route trend, run id.
    crossings
        Border crossings (``id, name, geometry`` Point EPSG:4326); those within ``near_km``
        of a route are listed on it.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per route: ``route`` (0..), ``geometry`` (merged lines), ``length_m``,
        ``segments`` (segment rows), ``member_keys`` (stable segment keys and ``h3:<cell>``),
        ``event_ids``, ``counts`` (events per slice), ``category`` (dominant, by length),
        ``category_shares`` (dict), ``tau``, ``p_value`` (Mann-Kendall of counts),
        ``trend`` (up / down / none), ``countries``, ``crossing_ids``, ``first_event``,
        ``last_event``, ``run_id``.
    """
    params = params or RouteParams()
    n_seg = len(segments)
    seg_cat = np.full(n_seg, NO_CATEGORY, dtype=object)
    seg_cat[cube.segments] = categories[: cube.n_segment_units]
    hot = np.isin(seg_cat, list(params.categories))
    adjacency = segment_adjacency(segments)
    seg_route, bridge = _bridge(adjacency, hot, params.gap_segments)
    n_routes = int(seg_route.max()) + 1 if (seg_route >= 0).any() else 0

    cell_cat = categories[cube.n_segment_units:]
    cell_hot = np.isin(cell_cat, list(params.categories))
    cell_group = _h3_groups(cube.cells, cell_hot)
    cell_route = np.full(len(cube.cells), -1, dtype=np.int64)
    if (cell_group >= 0).any():
        # A hot cell joins the route whose segments' midpoints fall in it or next to it.
        members = np.flatnonzero(seg_route >= 0)
        mids = shapely.get_coordinates(shapely.line_interpolate_point(
            np.asarray(segments.geometry.array)[members], 0.5, normalized=True))
        mid_cells = np.array([h3i.latlng_to_cell(y, x, cube.h3_resolution) for x, y in mids],
                             dtype=np.uint64)
        route_at = pd.Series(seg_route[members], index=mid_cells.astype(np.int64))
        route_at = route_at[~route_at.index.duplicated()]
        for g in np.unique(cell_group[cell_group >= 0]):
            cells_g = cube.cells[cell_group == g]
            ring = {int(o) for c in cells_g.astype(np.uint64) for o in h3i.grid_disk(int(c), 1)}
            touching = route_at.reindex(np.array(sorted(ring), dtype=np.uint64).astype(np.int64)).dropna()
            if len(touching):
                cell_route[cell_group == g] = int(touching.min())
            elif len(cells_g) >= 2:
                cell_route[cell_group == g] = n_routes
                n_routes += 1

    seg_rows = np.flatnonzero(seg_route >= 0)
    seg_rows = seg_rows[np.argsort(seg_route[seg_rows], kind="stable")]
    geoms = np.asarray(segments.geometry.array)
    merged = shapely.multilinestrings(geoms[seg_rows], indices=seg_route[seg_rows]) if len(seg_rows) else []
    lines: list[Any] = [None] * n_routes
    for r, geom in zip(np.unique(seg_route[seg_rows]), merged, strict=True):
        lines[int(r)] = geom
    length = np.bincount(seg_route[seg_rows], weights=segments["length_m"].to_numpy()[seg_rows],
                         minlength=n_routes)
    spacing_m = np.sqrt(3.0) * h3i.average_hexagon_edge_length(cube.h3_resolution, unit="m")
    for r in np.unique(cell_route[cell_route >= 0]):
        legs = _leg_lines(cube.cells[cell_route == r])
        if lines[r] is not None:
            # Join each cell to the route by its centre's nearest point on the route.
            for c in cube.cells[cell_route == r].astype(np.uint64):
                lat, lon = h3i.cell_to_latlng(int(c))
                centre = shapely.Point(lon, lat)
                legs.append(shapely.shortest_line(centre, lines[r]))
        leg_arr = np.asarray(legs, dtype=object)
        length[r] += float(geodesic_length_m(leg_arr).sum()) if len(leg_arr) else 0.0
        parts = [lines[r]] if lines[r] is not None else []
        lines[r] = shapely.multilinestrings(
            [*shapely.get_parts(np.asarray(parts, dtype=object)).tolist(), *legs])
    geometry = shapely.line_merge(np.asarray(lines, dtype=object)) if n_routes else np.array([], dtype=object)

    # Units of each route (cube rows), for events and series.
    unit_route = np.full(cube.n_units, -1, dtype=np.int64)
    unit_route[: cube.n_segment_units] = seg_route[cube.segments]
    unit_route[cube.n_segment_units:] = cell_route
    in_route = unit_route >= 0
    counts = np.zeros((n_routes, cube.n_slices))
    np.add.at(counts, unit_route[in_route], cube.values[in_route])
    ev_route = unit_route[cube.event_unit]
    ev_in = ev_route >= 0
    ev_frame = pd.DataFrame({"route": ev_route[ev_in], "event_id": cube.event_ids[ev_in],
                             "time": cube.event_time[ev_in]})
    by_route = ev_frame.groupby("route")
    event_lists = by_route["event_id"].agg(lambda s: sorted(s.tolist())).reindex(range(n_routes))
    first = by_route["time"].min().reindex(range(n_routes))
    last = by_route["time"].max().reindex(range(n_routes))
    trend = mann_kendall(counts) if n_routes else None

    # Category shares by length: segments weigh their length, cells the spacing of cells.
    share_frame = pd.DataFrame({
        "route": np.concatenate([seg_route[seg_rows], cell_route[cell_route >= 0]]),
        "category": np.concatenate([np.where(bridge[seg_rows], BRIDGE, seg_cat[seg_rows]),
                                    cell_cat[cell_route >= 0]]).astype(str),
        "length": np.concatenate([segments["length_m"].to_numpy()[seg_rows],
                                  np.full(int((cell_route >= 0).sum()), spacing_m)]),
    })
    weights = share_frame.groupby(["route", "category"])["length"].sum().unstack(fill_value=0)
    weights = weights.reindex(range(n_routes), fill_value=0.0)
    # Ties go to the category listed first in CATEGORIES (new before consecutive, ...).
    ranked = weights.drop(columns=[BRIDGE], errors="ignore")
    ranked = ranked[[c for c in CATEGORIES if c in ranked.columns]]
    dominant = ranked.idxmax(axis=1) if n_routes else pd.Series(dtype=str)
    shares = weights.div(weights.sum(axis=1), axis=0)
    share_dicts = [{k: round(float(v), 4) for k, v in row.items() if v > 0}
                   for _, row in shares.iterrows()]

    key_frame = pd.DataFrame({
        "route": np.concatenate([seg_route[seg_rows], cell_route[cell_route >= 0]]),
        "key": np.concatenate([segments["key"].to_numpy()[seg_rows].astype(str),
                               np.array([f"h3:{h3i.int_to_str(int(c))}"
                                         for c in cube.cells[cell_route >= 0].astype(np.uint64)],
                                        dtype=str)]),
    })
    keys = key_frame.groupby("route")["key"].agg(lambda s: sorted(s.tolist())).reindex(range(n_routes))
    seg_lists = pd.Series(seg_rows).groupby(seg_route[seg_rows]).agg(list).reindex(range(n_routes))
    if "country" in segments.columns:
        countries = pd.Series(segments["country"].to_numpy()[seg_rows]).groupby(
            seg_route[seg_rows]).agg(lambda s: sorted(set(s.dropna()))).reindex(range(n_routes))
    else:
        countries = pd.Series([[]] * n_routes)
    routes = gpd.GeoDataFrame(
        {
            "route": np.arange(n_routes),
            "length_m": length,
            "segments": [v if isinstance(v, list) else [] for v in seg_lists],
            "member_keys": [v if isinstance(v, list) else [] for v in keys],
            "event_ids": [v if isinstance(v, list) else [] for v in event_lists],
            "counts": [row.tolist() for row in counts],
            "category": dominant.to_numpy(dtype=object) if n_routes else [],
            "category_shares": share_dicts,
            "tau": trend.tau if trend is not None else [],
            "p_value": trend.p if trend is not None else [],
            "trend": _trend_words(trend, params.alpha) if trend is not None else [],
            "countries": [v if isinstance(v, list) else [] for v in countries],
            "first_event": pd.to_datetime(first.to_numpy(), utc=True),
            "last_event": pd.to_datetime(last.to_numpy(), utc=True),
            "run_id": params.run_id,
        },
        geometry=geometry,
        crs="EPSG:4326",
    )
    routes["crossing_ids"] = near_crossings(routes, crossings, params.near_km)
    return routes



def _trend_words(trend: Any, alpha: float) -> list[str]:
    sig = trend.p <= alpha
    words = np.where(sig & (trend.s > 0), "up", np.where(sig & (trend.s < 0), "down", "none"))
    return [str(w) for w in words]


def near_crossings(routes: gpd.GeoDataFrame, crossings: gpd.GeoDataFrame | None,
                   near_km: float) -> list[list[Any]]:
    """Ids of the crossings within ``near_km`` (geodesic) of each route, nearest first."""
    out: list[list[Any]] = [[] for _ in range(len(routes))]
    if crossings is None or not len(crossings) or not len(routes):
        return out
    points = np.asarray(crossings.geometry.array)
    lines = np.asarray(routes.geometry.array)
    # Candidates by a degree box wide enough at any latitude up to 60 degrees, then geodesic.
    reach_deg = near_km / 111.0 / np.cos(np.radians(60.0))
    tree = shapely.STRtree(points)
    route_i, cross_i = tree.query(lines, predicate="dwithin", distance=reach_deg)
    if not len(route_i):
        return out
    nearest = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(points[cross_i],
                                                                              lines[route_i]), 1))
    xy = shapely.get_coordinates(points[cross_i])
    _, _, dist = GEOD.inv(xy[:, 0], xy[:, 1], nearest[:, 0], nearest[:, 1])
    ok = dist <= near_km * 1000.0
    frame = pd.DataFrame({"route": route_i[ok], "id": crossings["id"].to_numpy()[cross_i[ok]],
                          "dist": dist[ok]}).sort_values(["route", "dist"])
    for r, ids in frame.groupby("route")["id"]:
        out[int(str(r))] = ids.tolist()
    return out


def _member_spans(frame: pd.DataFrame, owner: str) -> pd.DataFrame:
    """Members as spans: (owner, place, start, end); a segment key ``"<edge>:<piece>/<pieces>"``
    spans [piece/pieces, (piece+1)/pieces] of its edge, an ``"h3:<cell>"`` key spans [0, 1] of its cell."""
    members = frame[[owner, "member_keys"]].explode("member_keys").dropna()
    keys = members["member_keys"].astype(str)
    cell = keys.str.startswith("h3:")
    parts = keys.where(~cell, "0:0/1").str.extract(r"^(-?\d+):(\d+)/(\d+)$").astype(np.float64)
    piece, pieces = parts[1].to_numpy(), parts[2].to_numpy()
    return pd.DataFrame({
        owner: members[owner].to_numpy(),
        "place": np.where(cell, keys, "e" + parts[0].astype("Int64").astype(str)),
        "start": np.where(cell, 0.0, piece / pieces),
        "end": np.where(cell, 1.0, (piece + 1) / pieces),
    }).dropna()


def match_routes(routes: gpd.GeoDataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    """Stable keys: each route takes the key of the previous route it shares most road with.

    Shared road is measured on the edges, so runs with different segment lengths still
    match: for every edge both routes use, the overlap of their stretches (as a share of the
    edge) counts, and each shared H3 cell counts one. Pairs are assigned greedily, most
    shared first, each previous route at most once. Routes without a match get a new key
    derived from their members (a UUID5), and ``seen_before`` False.

    Parameters
    ----------
    routes
        Output of :func:`extract_routes` (uses ``member_keys``).
    previous
        The previous run's routes with ``route_key`` and ``member_keys``; None for a first run.

    Returns
    -------
    pandas.DataFrame
        ``route_key``, ``seen_before``, ``shared`` (edges' worth of shared road plus shared
        cells) indexed like ``routes``.
    """
    out = pd.DataFrame({
        "route_key": [str(uuid.uuid5(uuid.NAMESPACE_URL, "rutas-route:" + "|".join(k)))
                      for k in routes["member_keys"]],
        "seen_before": False,
        "shared": 0.0,
    }, index=routes.index)
    if previous is None or not len(previous) or not len(routes):
        return out
    now = _member_spans(routes.assign(new=routes.index), "new")
    before = _member_spans(previous, "route_key")
    pairs = now.merge(before, on="place", suffixes=("_now", "_before"))
    overlap = (np.minimum(pairs["end_now"].to_numpy(), pairs["end_before"].to_numpy())
               - np.maximum(pairs["start_now"].to_numpy(), pairs["start_before"].to_numpy()))
    pairs = pairs.assign(shared=np.clip(overlap, 0.0, None))
    pairs = pairs[pairs["shared"] > 1e-9].groupby(["new", "route_key"])["shared"].sum().reset_index()
    pairs = pairs.sort_values(["shared", "new", "route_key"], ascending=[False, True, True])
    used_new: set[Any] = set()
    used_old: set[str] = set()
    # Greedy one-to-one assignment; the number of overlapping pairs is small.
    for new, key, shared in zip(pairs["new"].to_numpy(), pairs["route_key"].astype(str).to_numpy(),
                                pairs["shared"].to_numpy(dtype=np.float64), strict=True):
        if new in used_new or key in used_old:
            continue
        used_new.add(new)
        used_old.add(str(key))
        out.at[new, "route_key"] = str(key)
        out.at[new, "seen_before"] = True
        out.at[new, "shared"] = round(float(shared), 6)
    return out
