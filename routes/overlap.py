"""Where migrant routes share roads with trafficking corridors, and where several kinds converge.

Pure functions over GeoDataFrames in EPSG:4326. Distances and lengths are computed in metres in a
Lambert azimuthal equal-area projection centred on the inputs (scale error under 2 % within
1,500 km of the centre, enough for the buffers of a few km used here), never in degrees.

Overlap score of a route and a corridor, in 0-1::

    score = 0.4 * share + 0.3 * min(shared_km / 100, 1) + 0.2 * min(shared_crossings, 2) / 2
            + 0.1 * co_occurrence

``share`` is the fraction of the route's length within ``buffer_m`` of the corridor,
``shared_crossings`` the route's border crossings within that buffer, ``co_occurrence`` the
fraction of the route's events that lie on the shared part and fall within the corridor's
validity period (an open end counts as valid).

Convergence score of a zone (the part of a route within ``distance_m`` of corridors of at least
two kinds), in 0-1::

    score = 0.5 * (kinds - 1) / (all_kinds - 1) + 0.3 * exp(-d_crossing / distance_m)
            + 0.2 * emerging_weight(category)

with ``d_crossing`` the distance from the zone to the nearest crossing (metres) and
``emerging_weight`` 1.0 for new and intensifying routes, 0.8 consecutive, 0.6 persistent, 0.5
sporadic or oscillating, 0.3 diminishing, 0.2 historical, 0 otherwise.

Joint-operation candidates are the border crossings (:func:`joint_operation_candidates`) and
the border sectors, i.e. stored border segments (:func:`joint_sector_candidates`), where routes
carry records of two or more countries' offices, each scored in 0-1::

    score = 0.4 * min(records / 100, 1) + 0.2 * balance + 0.25 * emerging + 0.15 * in_zone

A candidate's period is its routes' first and last event, or, given ``k``, no finer than what
every reader may see (:func:`k_period`): the first days (UTC) of the first and last calendar
month holding at least ``k`` of the candidate's records, none when no month does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
from scipy import sparse
from scipy.sparse import csgraph

from geodata.network import WGS84, local_metric_crs, transform_geoms
from routes.segments import GEOD

#: How much a route's emerging category raises a convergence zone's score.
EMERGING_WEIGHTS = {
    "new_hot": 1.0,
    "intensifying_hot": 1.0,
    "consecutive_hot": 0.8,
    "persistent_hot": 0.6,
    "sporadic_hot": 0.5,
    "oscillating_hot": 0.5,
    "diminishing_hot": 0.3,
    "historical_hot": 0.2,
}
OVERLAP_COLUMNS = [
    "route_id",
    "corridor_id",
    "kind",
    "route_km",
    "shared_km",
    "share",
    "shared_crossings",
    "events_shared",
    "co_occurrence",
    "score",
]


def local_crs(*frames: gpd.GeoDataFrame | None) -> str:
    """A Lambert azimuthal equal-area CRS (metres) centred on the frames' joint extent."""
    bounds = np.array([f.to_crs(4326).total_bounds for f in frames if f is not None and not f.empty])
    if bounds.size == 0:
        return "+proj=laea +lat_0=0 +lon_0=-75 +ellps=WGS84 +units=m +no_defs"
    lon = (bounds[:, 0].min() + bounds[:, 2].max()) / 2
    lat = (bounds[:, 1].min() + bounds[:, 3].max()) / 2
    return f"+proj=laea +lat_0={lat:.4f} +lon_0={lon:.4f} +ellps=WGS84 +units=m +no_defs"


def _in_validity(when: pd.Series, start: object, end: object) -> npt.NDArray[np.bool_]:
    """Whether each time falls in [start, end] (dates, inclusive; a missing end is open)."""
    t = pd.to_datetime(when, utc=True)
    ok = np.ones(len(t), dtype=bool)
    first = pd.to_datetime(pd.Series([start]), utc=True).iloc[0]
    last = pd.to_datetime(pd.Series([end]), utc=True).iloc[0]
    if not pd.isna(first):
        ok &= (t >= first).to_numpy()
    if not pd.isna(last):
        ok &= (t < last + pd.Timedelta(days=1)).to_numpy()
    return ok


def route_corridor_overlap(
    routes: gpd.GeoDataFrame,
    corridors: gpd.GeoDataFrame,
    *,
    buffer_m: float,
    crossings: gpd.GeoDataFrame | None = None,
    events: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Overlap figures of every route with every corridor it comes within ``buffer_m`` of.

    ``routes``: route_id, geometry (lines). ``corridors``: corridor_id, kind, geometry (lines or
    polygons), optional valid_from / valid_to. ``crossings``: crossing_id, geometry (points).
    ``events``: route_id, lon, lat, occurred_at (the route's member events). Returns one row per
    (route, corridor) pair with a shared length above zero, columns :data:`OVERLAP_COLUMNS`,
    lengths in km, sorted by score (highest first).
    """
    if routes.empty or corridors.empty:
        return pd.DataFrame(columns=OVERLAP_COLUMNS)
    crs = local_crs(routes, corridors)
    route_geom = np.asarray(routes.to_crs(crs).geometry.values)
    corridor_zone = shapely.buffer(np.asarray(corridors.to_crs(crs).geometry.values), buffer_m)
    tree = shapely.STRtree(corridor_zone)
    r_idx, c_idx = tree.query(route_geom, predicate="intersects")
    shared = shapely.intersection(route_geom[r_idx], corridor_zone[c_idx])
    shared_m = shapely.length(shared)
    route_m = shapely.length(route_geom[r_idx])
    frame = pd.DataFrame(
        {
            "route_id": routes["route_id"].to_numpy()[r_idx],
            "corridor_id": corridors["corridor_id"].to_numpy()[c_idx],
            "kind": corridors["kind"].to_numpy()[c_idx],
            "route_km": route_m / 1000.0,
            "shared_km": shared_m / 1000.0,
            "share": np.divide(shared_m, route_m, out=np.zeros_like(shared_m), where=route_m > 0),
        }
    )
    crossing_counts = np.zeros(len(frame), dtype=np.int64)
    if crossings is not None and not crossings.empty:
        points = np.asarray(crossings.to_crs(crs).geometry.values)
        # a crossing is shared when it lies on the route (within buffer_m) and within the corridor's zone
        on_route = shapely.buffer(route_geom, buffer_m)
        for i, (r, c) in enumerate(zip(r_idx, c_idx, strict=True)):
            crossing_counts[i] = int(
                (shapely.intersects(on_route[r], points) & shapely.intersects(corridor_zone[c], points)).sum()
            )
    frame["shared_crossings"] = crossing_counts
    events_shared = np.zeros(len(frame), dtype=np.int64)
    co_occurrence = np.zeros(len(frame))
    if events is not None and not events.empty:
        ev = gpd.GeoDataFrame(
            events, geometry=gpd.points_from_xy(events["lon"], events["lat"]), crs=4326
        ).to_crs(crs)
        ev_points = np.asarray(ev.geometry.values)
        ev_route = ev["route_id"].to_numpy()
        start = (
            corridors["valid_from"].to_numpy()[c_idx] if "valid_from" in corridors else [None] * len(frame)
        )
        end = corridors["valid_to"].to_numpy()[c_idx] if "valid_to" in corridors else [None] * len(frame)
        for i, route_id in enumerate(frame["route_id"].to_numpy()):
            mine = ev_route == route_id
            if not mine.any():
                continue
            # an event is on the shared part when it is within buffer_m of the shared line
            near = shapely.dwithin(ev_points[mine], shared[i], buffer_m)
            valid = _in_validity(ev["occurred_at"][mine], start[i], end[i])
            events_shared[i] = int((near & valid).sum())
            co_occurrence[i] = events_shared[i] / int(mine.sum())
    frame["events_shared"] = events_shared
    frame["co_occurrence"] = co_occurrence
    frame["score"] = (
        0.4 * frame["share"]
        + 0.3 * np.minimum(frame["shared_km"] / 100.0, 1.0)
        + 0.2 * np.minimum(frame["shared_crossings"], 2) / 2
        + 0.1 * frame["co_occurrence"]
    )
    frame = frame[frame["shared_km"] > 0]
    return frame.sort_values("score", ascending=False, ignore_index=True)[OVERLAP_COLUMNS]


def convergence_zones(
    routes: gpd.GeoDataFrame,
    corridors: gpd.GeoDataFrame,
    *,
    distance_m: float,
    crossings: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """Zones where a route comes within ``distance_m`` of corridors of at least two kinds, ranked.

    Returns route_id, kinds (sorted, comma-separated), kind_count, crossing_distance_km, category,
    score and the zone polygon (the converging part of the route buffered by ``distance_m``),
    EPSG:4326, highest score first.
    """
    columns = ["route_id", "kinds", "kind_count", "crossing_distance_km", "category", "score", "geometry"]
    if routes.empty or corridors.empty:
        return gpd.GeoDataFrame(columns=columns, geometry="geometry", crs=4326)
    crs = local_crs(routes, corridors)
    route_geom = np.asarray(routes.to_crs(crs).geometry.values)
    projected = corridors.to_crs(crs)
    all_kinds = sorted(set(projected["kind"]))
    reach = {
        k: shapely.union_all(shapely.buffer(np.asarray(g.geometry.values), distance_m))
        for k, g in projected.groupby("kind")
    }
    points = (
        np.asarray(crossings.to_crs(crs).geometry.values)
        if crossings is not None and not crossings.empty
        else None
    )
    rows = []
    for i, line in enumerate(route_geom):
        parts = {k: shapely.intersection(line, zone) for k, zone in reach.items()}
        parts = {k: p for k, p in parts.items() if not p.is_empty}
        kinds = sorted(parts)
        if len(kinds) < 2:
            continue
        # the stretch of route within reach of two kinds or more: pairwise overlaps of the parts
        pieces = [
            shapely.intersection(shapely.buffer(parts[a], 1.0), parts[b])
            for j, a in enumerate(kinds)
            for b in kinds[j + 1 :]
        ]
        stretch = shapely.union_all([p for p in pieces if not p.is_empty])
        if stretch.is_empty:
            continue
        kinds_here = sorted({k for k in kinds if shapely.intersects(parts[k], shapely.buffer(stretch, 1.0))})
        zone = shapely.buffer(stretch, distance_m)
        d_crossing = float(shapely.distance(stretch, points).min()) if points is not None else np.inf
        category = str(routes["category"].iloc[i]) if "category" in routes else ""
        score = (
            0.5 * (len(kinds_here) - 1) / max(len(all_kinds) - 1, 1)
            + 0.3 * float(np.exp(-d_crossing / distance_m))
            + 0.2 * EMERGING_WEIGHTS.get(category, 0.0)
        )
        rows.append(
            {
                "route_id": routes["route_id"].iloc[i],
                "kinds": ",".join(kinds_here),
                "kind_count": len(kinds_here),
                "crossing_distance_km": d_crossing / 1000.0,
                "category": category,
                "score": score,
                "geometry": zone,
            }
        )
    if not rows:
        return gpd.GeoDataFrame(columns=columns, geometry="geometry", crs=4326)
    zones = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_crs(4326)
    return zones.sort_values("score", ascending=False, ignore_index=True)[columns]


#: Columns of every joint-operation candidate, crossing or border sector.
JOINT_COLUMNS = [
    "candidate_type",
    "crossing_id",
    "border_segment_id",
    "border_segment_ids",
    "name",
    "countries",
    "records_by_country",
    "route_ids",
    "crossing_ids",
    "period_start",
    "period_end",
    "in_convergence_zone",
    "score",
    "geometry",
]
#: ``candidate_type`` of a candidate at a border crossing and at a border sector.
CROSSING, BORDER_SECTOR = "crossing", "border_sector"
#: Weight of the corridor term (``in_zone``) in a joint-operation candidate's score.
ZONE_WEIGHT = 0.15


def _no_candidates() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns=JOINT_COLUMNS, geometry="geometry", crs=4326)


def month_key(when: pd.Series) -> pd.Series:
    """The calendar month (UTC) of each time, as the ISO date of its first day (``2024-03-01``)."""
    utc = pd.DatetimeIndex(pd.to_datetime(when, utc=True))
    return pd.Series(utc.strftime("%Y-%m-01"), index=when.index)


def k_period(
    monthly_counts: list[dict[str, int]], k: int
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """First days (UTC) of the first and last month holding at least ``k`` records; None when none.

    ``monthly_counts`` holds one dict per route (month's first day as ``YYYY-MM-DD`` -> records
    that month); the routes' counts are added up. This is the rule the API applies to a route's
    first and last event for a reader who may not see every member record: an exact date, or
    a month of fewer than ``k`` records, could single out a victim.
    """
    total: dict[str, int] = {}
    for counts in monthly_counts:
        for month, n in (counts or {}).items():
            total[month] = total.get(month, 0) + int(n)
    months = sorted(m for m, n in total.items() if n >= k)
    if not months:
        return None, None
    return pd.Timestamp(months[0], tz="UTC"), pd.Timestamp(months[-1], tz="UTC")


def _candidate(
    route_ids: list[object],
    routes: pd.DataFrame,
    records_of: dict[object, dict[str, int]],
    place: shapely.Geometry,
    zone_union: shapely.Geometry | None,
    k: int | None,
) -> dict[str, object] | None:
    """Countries, records, period and score of the routes at one place; None under two countries.

    The period is the routes' first and last event, or with ``k`` the :func:`k_period` of their
    ``monthly_counts``.
    """
    counts: dict[str, int] = {}
    for route_id in route_ids:
        for country, n in records_of[route_id].items():
            counts[country] = counts.get(country, 0) + int(n)
    if len([c for c, n in counts.items() if n > 0]) < 2:
        return None
    ranked = sorted(counts.values(), reverse=True)
    emerging = max(EMERGING_WEIGHTS.get(str(routes.at[r, "category"]), 0.0) for r in route_ids)
    in_zone = bool(zone_union is not None and shapely.intersects(zone_union, place))
    score = (
        0.4 * min(sum(ranked) / 100.0, 1.0)
        + 0.2 * ranked[1] / ranked[0]
        + 0.25 * emerging
        + ZONE_WEIGHT * float(in_zone)
    )
    start: pd.Timestamp | None
    end: pd.Timestamp | None
    if k is None:
        start = pd.to_datetime(routes.loc[route_ids, "first_event"]).min()
        end = pd.to_datetime(routes.loc[route_ids, "last_event"]).max()
    else:
        start, end = k_period([cast(dict[str, int], routes.at[r, "monthly_counts"]) for r in route_ids], k)
    return {
        "countries": ",".join(sorted(counts)),
        "records_by_country": dict(sorted(counts.items())),
        "route_ids": route_ids,
        "period_start": start,
        "period_end": end,
        "in_convergence_zone": in_zone,
        "score": score,
    }


def _ranked(rows: list[dict[str, object]], crs: object) -> gpd.GeoDataFrame:
    if not rows:
        return _no_candidates()
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crs).to_crs(4326)
    for column in ("crossing_id", "border_segment_id"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame.sort_values("score", ascending=False, ignore_index=True)[JOINT_COLUMNS]


def _inputs(
    routes: pd.DataFrame, zones: gpd.GeoDataFrame | None, crs: object
) -> tuple[pd.DataFrame, dict[object, dict[str, int]], shapely.Geometry | None]:
    """Routes by id, their records per country, and the zones' union in ``crs``."""
    by_route = routes.set_index("route_id")
    records_of: dict[object, dict[str, int]] = dict(
        zip(routes["route_id"], [dict(r or {}) for r in routes["records_by_country"]], strict=True)
    )
    zone_union = (
        shapely.union_all(np.asarray(zones.to_crs(crs).geometry.values))
        if zones is not None and not zones.empty
        else None
    )
    return by_route, records_of, zone_union


def joint_operation_candidates(
    routes: pd.DataFrame,
    crossings: gpd.GeoDataFrame,
    *,
    zones: gpd.GeoDataFrame | None = None,
    k: int | None = None,
) -> gpd.GeoDataFrame:
    """Border crossings where routes carry records of two or more countries' offices, ranked.

    ``routes``: route_id, category, crossing_ids (list), records_by_country (dict ISO3 -> count
    of the route's records), first_event, last_event, and with ``k`` monthly_counts (dict month's
    first day ``YYYY-MM-DD`` -> the route's records that month, UTC). ``crossings``:
    crossing_id, name, geometry. ``zones``: convergence zones (:func:`convergence_zones`).
    ``k``: when given, the period is the :func:`k_period` of the routes' monthly counts (what
    every reader may see), else their first and last event. One row per crossing
    (``candidate_type`` ``"crossing"``, columns :data:`JOINT_COLUMNS`), EPSG:4326, highest
    score first::

        score = 0.4 * min(records / 100, 1) + 0.2 * balance + 0.25 * emerging + 0.15 * in_zone

    ``records`` sums the routes' records, ``balance`` is the second-largest country's count over
    the largest (1 when both sides carry as many), ``emerging`` the highest emerging weight of the
    routes' categories and ``in_zone`` 1 when the crossing lies in a convergence zone.
    """
    if routes.empty or crossings.empty:
        return _no_candidates()
    exploded = routes[["route_id", "crossing_ids"]].explode("crossing_ids").dropna()
    exploded = exploded.rename(columns={"crossing_ids": "crossing_id"})
    by_route, records_of, zone_union = _inputs(routes, zones, 4326)
    points = crossings.to_crs(4326).set_index("crossing_id")
    rows = []
    for crossing_id, group in exploded.groupby("crossing_id"):
        if crossing_id not in points.index:
            continue
        ids = sorted(group["route_id"].unique().tolist())
        point = points.at[crossing_id, "geometry"]
        found = _candidate(ids, by_route, records_of, point, zone_union, k)
        if found is None:
            continue
        rows.append(
            {
                "candidate_type": CROSSING,
                "crossing_id": crossing_id,
                "border_segment_id": None,
                "border_segment_ids": [],
                "name": points.at[crossing_id, "name"],
                "crossing_ids": [crossing_id],
                **found,
                "geometry": point,
            }
        )
    return _ranked(rows, 4326)


def sector_name(border_segment_ids: list[int], country_a: object, country_b: object) -> str:
    """How a border sector is named: its countries and its border segment ids, e.g. ``GTM-MEX
    sector 12`` for one segment, ``GTM-MEX sectors 12, 13, 17`` for contiguous ones merged."""
    pair = "-".join(str(c) if isinstance(c, str) and c else "?" for c in (country_a, country_b))
    ids = ", ".join(str(i) for i in sorted(border_segment_ids))
    return f"{pair} sector{'s' if len(border_segment_ids) > 1 else ''} {ids}"


def _geodesic_pairs(
    here: npt.NDArray[Any], there: npt.NDArray[Any], reach_m: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Pairs (i of ``here``, j of ``there``) of EPSG:4326 geometries within ``reach_m`` metres,
    with their geodesic distance (WGS84, between the nearest points in degrees)."""
    # candidates by a degree box wide enough at any latitude up to 60 degrees, then geodesic
    reach_deg = reach_m / 111_000.0 / np.cos(np.radians(60.0))
    i, j = shapely.STRtree(there).query(here, predicate="dwithin", distance=reach_deg)
    if not len(i):
        return i, j, np.zeros(0)
    ends = shapely.get_coordinates(shapely.shortest_line(here[i], there[j])).reshape(-1, 2, 2)
    _, _, dist = GEOD.inv(ends[:, 0, 0], ends[:, 0, 1], ends[:, 1, 0], ends[:, 1, 1])
    ok = dist <= reach_m
    return i[ok], j[ok], np.asarray(dist[ok], dtype=np.float64)


def _stretch(sector: shapely.Geometry, routes: npt.NDArray[Any], reach_m: float) -> shapely.Geometry:
    """The part of ``sector`` within ``reach_m`` metres of ``routes`` (EPSG:4326), measured in an
    azimuthal equidistant projection centred on the sector; the whole sector when none is left."""
    xy = shapely.get_coordinates(sector)
    crs = local_metric_crs(xy[:, 0], xy[:, 1])
    projected = transform_geoms(np.asarray([sector, *routes]), WGS84, crs)
    part = shapely.intersection(projected[0], shapely.union_all(shapely.buffer(projected[1:], reach_m)))
    if part.is_empty:  # a route exactly at reach_m
        return sector
    return transform_geoms(np.asarray([part]), crs, WGS84)[0]


#: Border segments whose ends lie this close (degrees, about 1 cm) are contiguous.
_TOUCH_DEG = 1e-7


def _contiguous_groups(keys: Sequence[tuple[object, ...]], lines: npt.NDArray[Any]) -> npt.NDArray[np.intp]:
    """A group label per line: lines of equal ``keys`` joined by touching ones (within 1 cm)."""
    n = len(lines)
    i, j = shapely.STRtree(lines).query(lines, predicate="dwithin", distance=_TOUCH_DEG)
    same = np.array([keys[a] == keys[b] for a, b in zip(i, j, strict=True)], dtype=bool)
    graph = sparse.coo_matrix((np.ones(int(same.sum())), (i[same], j[same])), shape=(n, n))
    _, labels = csgraph.connected_components(graph, directed=False)
    return np.asarray(labels, dtype=np.intp)


def joint_sector_candidates(
    routes: gpd.GeoDataFrame,
    sectors: gpd.GeoDataFrame,
    *,
    reach_m: float,
    crossings: gpd.GeoDataFrame | None = None,
    zones: gpd.GeoDataFrame | None = None,
    k: int | None = None,
) -> gpd.GeoDataFrame:
    """Border sectors where routes carry records of two or more countries' offices, ranked.

    A border sector is one stored border segment, or several contiguous ones of the same border
    (same country pair, ends within 1 cm) reached by the same set of routes, merged into one
    candidate; a route reaches a segment when it comes within ``reach_m`` metres of it
    (geodesic distance on WGS84). Scored as :func:`joint_operation_candidates` does for
    crossings, ``in_zone`` meaning that the stretch of the sector the routes reach lies in a
    convergence zone.

    Parameters
    ----------
    routes
        route_id, category, crossing_ids (list), records_by_country (dict ISO3 -> count),
        first_event, last_event, geometry (lines, EPSG:4326), and with ``k`` monthly_counts
        (as :func:`joint_operation_candidates`).
    sectors
        border_segment_id, country_a, country_b (ISO3 or None), geometry (lines, EPSG:4326).
    reach_m
        How near (metres) a route must come to a segment to be counted there.
    crossings
        crossing_id, geometry (points, EPSG:4326): a crossing belongs to the nearest segment
        within ``reach_m``; a candidate lists the crossings of its segments that its routes carry.
    zones
        Convergence zones (:func:`convergence_zones`), EPSG:4326.
    k
        When given, the period is the :func:`k_period` of the routes' monthly counts (what every
        reader may see), else their first and last event.

    Returns
    -------
    GeoDataFrame
        One row per sector (``candidate_type`` ``"border_sector"``, columns
        :data:`JOINT_COLUMNS`; ``border_segment_ids`` its segments, ``border_segment_id`` the
        first of them, name from :func:`sector_name`), geometry the stretch of the sector within
        ``reach_m`` of its routes (EPSG:4326 lines), highest score first.
    """
    if routes.empty or sectors.empty:
        return _no_candidates()
    route_geom = np.asarray(routes.to_crs(4326).geometry.values)
    sector_geom = np.asarray(sectors.to_crs(4326).geometry.values)
    s_idx, r_idx, _ = _geodesic_pairs(sector_geom, route_geom, reach_m)
    if not len(s_idx):
        return _no_candidates()
    sector_ids = sectors["border_segment_id"].to_numpy()
    crossing_sector: dict[object, object] = {}
    if crossings is not None and not crossings.empty:
        points = np.asarray(crossings.to_crs(4326).geometry.values)
        c_idx, near, dist = _geodesic_pairs(points, sector_geom, reach_m)
        nearest = pd.DataFrame({"c": c_idx, "s": near, "d": dist}).sort_values("d").drop_duplicates("c")
        ids = crossings["crossing_id"].to_numpy()
        crossing_sector = dict(zip(ids[nearest["c"]], sector_ids[nearest["s"]], strict=True))
    by_route, records_of, zone_union = _inputs(routes, zones, 4326)
    route_ids = routes["route_id"].to_numpy()
    carried_by = {
        r: [] if c is None else list(c) for r, c in zip(route_ids, routes["crossing_ids"], strict=True)
    }
    pairs = sectors[["country_a", "country_b"]].to_numpy(dtype=object)
    reached = np.unique(s_idx)
    # the routes (positions in ``routes``) that reach each reached segment
    reached_by = [np.unique(r_idx[s_idx == s]) for s in reached]
    keys = [
        (str(pairs[s, 0]), str(pairs[s, 1]), tuple(mine.tolist()))
        for s, mine in zip(reached, reached_by, strict=True)
    ]
    groups = _contiguous_groups(keys, sector_geom[reached])
    rows = []
    for group in np.unique(groups):
        where = np.flatnonzero(groups == group)
        members = reached[where]
        mine = reached_by[where[0]]  # the same routes reach every segment of the group
        ids = sorted(route_ids[mine].tolist())
        segments = sorted(sector_ids[members].tolist())
        whole = shapely.line_merge(shapely.union_all(sector_geom[members]))
        stretch = _stretch(whole, route_geom[mine], reach_m)
        found = _candidate(ids, by_route, records_of, stretch, zone_union, k)
        if found is None:
            continue
        carried = {c for r in ids for c in carried_by[r]}
        in_sector = set(segments)
        rows.append(
            {
                "candidate_type": BORDER_SECTOR,
                "crossing_id": None,
                "border_segment_id": segments[0],
                "border_segment_ids": segments,
                "name": sector_name(segments, *pairs[members[0]]),
                "crossing_ids": sorted(c for c in carried if crossing_sector.get(c) in in_sector),
                **found,
                "geometry": stretch,
            }
        )
    return _ranked(rows, 4326)
