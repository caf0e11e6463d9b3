"""The overlap products of a run, computed after route extraction and stored in its transaction.

:func:`store_overlap_products` computes, with :mod:`routes.overlap`, the route-corridor overlaps,
the convergence zones and the joint-operation candidates of a run's routes against every active
corridor (read with the run's system scope) and writes them to ``corridor_overlaps``,
``convergence_zones`` and ``joint_operations`` (migration 0008, which documents who reads what).
:func:`read_joint_operations` reads them back in a reader's scope. Geometries are EPSG:4326;
lengths in km, distances computed in metres (see :mod:`routes.overlap`).
"""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from geodata.db import Scope, scoped
from routes.overlap import (
    JOINT_COLUMNS,
    convergence_zones,
    joint_operation_candidates,
    local_crs,
    route_corridor_overlap,
)

#: Buffer (m) of a corridor within which a route's length counts as shared.
OVERLAP_BUFFER_M = 5_000.0
#: Distance (m) within which a route and corridors of two kinds or more make a convergence zone.
CONVERGENCE_M = 25_000.0
#: Weight of the corridor term in the joint-operation score (see
#: :func:`routes.overlap.joint_operation_candidates`).
ZONE_WEIGHT = 0.15
#: The keys of ``analysis_runs.counts`` that say the run stored its overlap products.
COUNT_KEYS = ("corridor_overlaps", "convergence_zones", "joint_operations")


def _ewkb(geoms: gpd.GeoSeries) -> list[str]:
    values = shapely.set_srid(np.asarray(geoms.values), 4326)
    return [str(h) for h in shapely.to_wkb(values, hex=True, include_srid=True)]


def _corridors(conn: Connection) -> gpd.GeoDataFrame:
    sql = (
        "SELECT c.id AS corridor_id, c.kind, c.owner_country, c.valid_from, c.valid_to, c.geom "
        "FROM corridors c JOIN reference_layers l ON l.id = c.layer_id WHERE l.active ORDER BY c.id"
    )
    frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326")
    return frame.rename_geometry("geometry")


def _records_by_country(routes: gpd.GeoDataFrame, events: pd.DataFrame) -> list[dict[str, int]]:
    members = routes[["id", "event_ids"]].explode("event_ids").dropna()
    owner = events.set_index("event_id")["owner_country"]
    members["country"] = owner.reindex(members["event_ids"].astype(np.int64).to_numpy()).to_numpy()
    counts = members.dropna().groupby(["id", "country"]).size()
    per_route: dict[int, dict[str, int]] = {}
    for (route_id, country), n in counts.items():
        per_route.setdefault(int(route_id), {})[str(country)] = int(n)
    return [per_route.get(int(i), {}) for i in routes["id"]]


def store_overlap_products(
    conn: Connection,
    run_id: int,
    routes: gpd.GeoDataFrame,
    events: pd.DataFrame,
    crossings: gpd.GeoDataFrame,
    *,
    k: int = 11,
) -> dict[str, int]:
    """Compute and insert a run's overlap products on ``conn`` (the run's system-scope transaction).

    Parameters
    ----------
    conn
        The transaction that wrote the run's routes (system scope: every corridor is read).
    run_id
        The run.
    routes
        The stored routes: ``id`` (routes.id), ``category``, ``event_ids``, ``crossing_ids``,
        ``first_event``, ``last_event``, geometry (EPSG:4326 lines).
    events
        The run's events: ``event_id, lon, lat, occurred_at, owner_country``.
    crossings
        Border crossings: ``id``, ``name``, geometry (EPSG:4326 points).
    k
        Counts of records per country under ``k`` are stored as null (shown as ``<k``).

    Returns
    -------
    dict
        Rows written per table (``corridor_overlaps``, ``convergence_zones``, ``joint_operations``).
    """
    written = dict.fromkeys(COUNT_KEYS, 0)
    if routes.empty:
        return written
    frame = gpd.GeoDataFrame(routes.assign(route_id=routes["id"]), geometry="geometry", crs=4326)
    points = crossings.rename(columns={"id": "crossing_id"})[["crossing_id", "name", "geometry"]]
    corridors = _corridors(conn)
    zones = gpd.GeoDataFrame(columns=["route_id"], geometry=[], crs=4326)
    if not corridors.empty:
        members = frame[["route_id", "event_ids"]].explode("event_ids").dropna()
        on_route = events.set_index("event_id").reindex(members["event_ids"].astype(np.int64).to_numpy())
        route_events = pd.DataFrame(
            {
                "route_id": members["route_id"].to_numpy(),
                "lon": on_route["lon"].to_numpy(),
                "lat": on_route["lat"].to_numpy(),
                "occurred_at": on_route["occurred_at"].to_numpy(),
            }
        )
        overlap = route_corridor_overlap(
            frame, corridors, buffer_m=OVERLAP_BUFFER_M, crossings=points, events=route_events
        )
        owner = corridors.set_index("corridor_id")["owner_country"]
        overlap["owner_country"] = owner.reindex(overlap["corridor_id"].to_numpy()).to_numpy()
        if len(overlap):
            conn.execute(
                sa.text(
                    "INSERT INTO corridor_overlaps (run_id, route_id, corridor_id, owner_country, kind, "
                    "route_km, shared_km, share, shared_crossings, events_shared, co_occurrence, score) "
                    "VALUES (:run_id, :route_id, :corridor_id, :owner_country, :kind, :route_km, "
                    ":shared_km, :share, :shared_crossings, :events_shared, :co_occurrence, :score)"
                ),
                [{"run_id": run_id, **{str(c): v for c, v in r.items()}} for r in overlap.to_dict("records")],
            )
        written["corridor_overlaps"] = len(overlap)
        zones = convergence_zones(frame, corridors, distance_m=CONVERGENCE_M, crossings=points)
        if len(zones):
            owners = _zone_owners(frame, zones, corridors)
            conn.execute(
                sa.text(
                    "INSERT INTO convergence_zones (run_id, route_id, kinds, kind_count, "
                    "crossing_distance_km, category, score, owner_countries, geom) VALUES (:run_id, "
                    ":route_id, :kinds, :kind_count, :d, :category, :score, CAST(:owners AS char(3)[]), "
                    "ST_GeomFromEWKB(decode(:geom, 'hex')))"
                ),
                [
                    {
                        "run_id": run_id,
                        "route_id": int(z.route_id),
                        "kinds": str(z.kinds),
                        "kind_count": int(z.kind_count),
                        "d": float(z.crossing_distance_km) if np.isfinite(z.crossing_distance_km) else None,
                        "category": str(z.category),
                        "score": float(z.score),
                        "owners": owners[i],
                        "geom": geom,
                    }
                    for i, (z, geom) in enumerate(zip(zones.itertuples(), _ewkb(zones.geometry), strict=True))
                ],
            )
        written["convergence_zones"] = len(zones)
    frame["records_by_country"] = _records_by_country(frame, events)
    # stored without the corridor term, so the rows hold nothing only some readers may see
    joint = joint_operation_candidates(frame, points, zones=None)
    if len(joint):
        conn.execute(
            sa.text(
                "INSERT INTO joint_operations (run_id, crossing_id, name, countries, records_by_country, "
                "route_ids, period_start, period_end, base_score, geom) VALUES (:run_id, :crossing, :name, "
                ":countries, CAST(:records AS jsonb), :routes, :start, :end, :score, "
                "ST_GeomFromEWKB(decode(:geom, 'hex')))"
            ),
            [
                {
                    "run_id": run_id,
                    "crossing": int(j.crossing_id),
                    "name": None if pd.isna(j.name) else str(j.name),
                    "countries": str(j.countries),
                    "records": json.dumps(
                        {c: (n if n >= k else None) for c, n in j.records_by_country.items()}
                    ),
                    "routes": [int(r) for r in j.route_ids],
                    "start": None if pd.isna(j.period_start) else j.period_start.to_pydatetime(),
                    "end": None if pd.isna(j.period_end) else j.period_end.to_pydatetime(),
                    "score": float(j.score),
                    "geom": geom,
                }
                for j, geom in zip(joint.itertuples(), _ewkb(joint.geometry), strict=True)
            ],
        )
    written["joint_operations"] = len(joint)
    return written


def _zone_owners(
    routes: gpd.GeoDataFrame, zones: gpd.GeoDataFrame, corridors: gpd.GeoDataFrame
) -> list[list[str]]:
    """Owners of the corridors (of the zone's kinds) within reach of each zone's route stretch."""
    crs = local_crs(zones, corridors)
    zone_m = np.asarray(zones.to_crs(crs).geometry.values)
    corridor_m = np.asarray(corridors.to_crs(crs).geometry.values)
    tree = shapely.STRtree(corridor_m)
    z_idx, c_idx = tree.query(zone_m, predicate="intersects")
    kinds = corridors["kind"].to_numpy()
    owners = corridors["owner_country"].to_numpy()
    found: list[set[str]] = [set() for _ in range(len(zones))]
    zone_kinds = [set(str(k).split(",")) for k in zones["kinds"]]
    for z, c in zip(z_idx, c_idx, strict=True):
        if kinds[c] in zone_kinds[z]:
            found[z].add(str(owners[c]))
    return [sorted(f) for f in found]


def stored_run_ids(engine: Engine, run_ids: list[int]) -> list[int]:
    """Those of ``run_ids`` whose overlap products were stored (runs from before 0008 were not)."""
    with scoped(engine) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id FROM analysis_runs WHERE id = ANY(CAST(:ids AS bigint[])) "
                "AND counts ? 'joint_operations' ORDER BY id"
            ),
            {"ids": [int(i) for i in run_ids]},
        ).scalars()
        return [int(r) for r in rows]


def read_corridor_overlaps(engine: Engine, run_ids: list[int], scope: Scope) -> pd.DataFrame:
    """Stored overlaps of ``run_ids`` the scope may see (row-level security decides)."""
    sql = (
        "SELECT run_id, route_id, corridor_id, owner_country, kind, route_km, shared_km, share, "
        "shared_crossings, events_shared, co_occurrence, score FROM corridor_overlaps "
        "WHERE run_id = ANY(CAST(:ids AS bigint[])) ORDER BY score DESC, id"
    )
    with scoped(engine, scope) as conn:
        return pd.read_sql_query(sa.text(sql), conn, params={"ids": [int(i) for i in run_ids]})


def read_convergence_zones(engine: Engine, run_ids: list[int], scope: Scope) -> gpd.GeoDataFrame:
    """Stored convergence zones of ``run_ids`` the scope may see, EPSG:4326."""
    sql = (
        "SELECT run_id, route_id, kinds, kind_count, crossing_distance_km, category, score, geom "
        "FROM convergence_zones WHERE run_id = ANY(CAST(:ids AS bigint[])) ORDER BY score DESC, id"
    )
    with scoped(engine, scope) as conn:
        frame = gpd.read_postgis(
            sa.text(sql), conn, geom_col="geom", crs="EPSG:4326", params={"ids": [int(i) for i in run_ids]}
        )
    return frame.rename_geometry("geometry")


def read_joint_operations(
    engine: Engine, run_ids: list[int], scope: Scope, *, k: int = 11
) -> gpd.GeoDataFrame:
    """Stored joint-operation candidates of ``run_ids`` in ``scope``, columns of ``JOINT_COLUMNS``.

    ``in_convergence_zone`` and the score's corridor term (0.15) come from the convergence zones
    the scope may see; counts stored as null (under k) are shown as ``<k``. Highest score first.
    """
    sql = (
        "SELECT j.crossing_id, j.name, j.countries, j.records_by_country, j.route_ids, j.period_start, "
        "j.period_end, EXISTS (SELECT 1 FROM convergence_zones z WHERE z.run_id = j.run_id "
        "AND ST_Intersects(z.geom, j.geom)) AS in_convergence_zone, j.base_score, j.geom "
        "FROM joint_operations j WHERE j.run_id = ANY(CAST(:ids AS bigint[])) ORDER BY j.id"
    )
    with scoped(engine, scope) as conn:
        frame = gpd.read_postgis(
            sa.text(sql), conn, geom_col="geom", crs="EPSG:4326", params={"ids": [int(i) for i in run_ids]}
        ).rename_geometry("geometry")
    frame["score"] = frame["base_score"] + ZONE_WEIGHT * frame["in_convergence_zone"].astype(float)
    frame["records_by_country"] = [
        {c: (f"<{k}" if n is None else int(n)) for c, n in dict(r).items()}
        for r in frame["records_by_country"]
    ]
    frame["route_ids"] = frame["route_ids"].map(lambda ids: [int(i) for i in ids])
    out: dict[str, Any] = {c: frame[c] for c in JOINT_COLUMNS}
    result = gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")
    return result.sort_values("score", ascending=False, ignore_index=True)
