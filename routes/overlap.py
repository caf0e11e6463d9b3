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
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

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
    buffer_m: float = 5_000.0,
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
    distance_m: float = 25_000.0,
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


JOINT_COLUMNS = [
    "crossing_id",
    "name",
    "countries",
    "records_by_country",
    "route_ids",
    "period_start",
    "period_end",
    "in_convergence_zone",
    "score",
    "geometry",
]


def joint_operation_candidates(
    routes: pd.DataFrame,
    crossings: gpd.GeoDataFrame,
    *,
    zones: gpd.GeoDataFrame | None = None,
) -> gpd.GeoDataFrame:
    """Border crossings where routes carry records of two or more countries' offices, ranked.

    ``routes``: route_id, category, crossing_ids (list), records_by_country (dict ISO3 -> count
    of the route's records), first_event, last_event. ``crossings``: crossing_id, name, geometry.
    ``zones``: convergence zones (:func:`convergence_zones`). One row per crossing, EPSG:4326,
    highest score first::

        score = 0.4 * min(records / 100, 1) + 0.2 * balance + 0.25 * emerging + 0.15 * in_zone

    ``records`` sums the routes' records, ``balance`` is the second-largest country's count over
    the largest (1 when both sides carry as many), ``emerging`` the highest emerging weight of the
    routes' categories and ``in_zone`` 1 when the crossing lies in a convergence zone.
    """
    if routes.empty or crossings.empty:
        return gpd.GeoDataFrame(columns=JOINT_COLUMNS, geometry="geometry", crs=4326)
    exploded = routes[["route_id", "crossing_ids"]].explode("crossing_ids").dropna()
    exploded = exploded.rename(columns={"crossing_ids": "crossing_id"})
    by_route = routes.set_index("route_id")
    records_of: dict[object, dict[str, int]] = dict(
        zip(routes["route_id"], [dict(r or {}) for r in routes["records_by_country"]], strict=True)
    )
    rows = []
    zone_union = (
        shapely.union_all(np.asarray(zones.geometry.values))
        if zones is not None and not zones.empty
        else None
    )
    points = crossings.set_index("crossing_id")
    for crossing_id, group in exploded.groupby("crossing_id"):
        if crossing_id not in points.index:
            continue
        ids = sorted(group["route_id"].unique().tolist())
        counts: dict[str, int] = {}
        for route_id in ids:
            for country, n in records_of[route_id].items():
                counts[country] = counts.get(country, 0) + int(n)
        if len([c for c, n in counts.items() if n > 0]) < 2:
            continue
        ranked = sorted(counts.values(), reverse=True)
        records = sum(ranked)
        emerging = max(EMERGING_WEIGHTS.get(str(by_route.at[r, "category"]), 0.0) for r in ids)
        point = points.at[crossing_id, "geometry"]
        in_zone = bool(zone_union is not None and shapely.intersects(zone_union, point))
        score = (
            0.4 * min(records / 100.0, 1.0)
            + 0.2 * ranked[1] / ranked[0]
            + 0.25 * emerging
            + 0.15 * float(in_zone)
        )
        rows.append(
            {
                "crossing_id": crossing_id,
                "name": points.at[crossing_id, "name"],
                "countries": ",".join(sorted(counts)),
                "records_by_country": dict(sorted(counts.items())),
                "route_ids": ids,
                "period_start": pd.to_datetime(by_route.loc[ids, "first_event"]).min(),
                "period_end": pd.to_datetime(by_route.loc[ids, "last_event"]).max(),
                "in_convergence_zone": in_zone,
                "score": score,
                "geometry": point,
            }
        )
    if not rows:
        return gpd.GeoDataFrame(columns=JOINT_COLUMNS, geometry="geometry", crs=4326)
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs=crossings.crs).to_crs(4326)
    return frame.sort_values("score", ascending=False, ignore_index=True)[JOINT_COLUMNS]
