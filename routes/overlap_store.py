"""The overlap products of a run, computed after route extraction and stored in its transaction.

:func:`store_overlap_products` computes, with :mod:`routes.overlap`, the route-corridor overlaps,
the convergence zones and the joint-operation candidates (at border crossings and at border
sectors) of a run's routes against every active corridor and border segment (read with the
run's system scope) and writes them to ``corridor_overlaps``, ``convergence_zones``,
``joint_operations`` (migration 0008, which documents who reads what) and ``joint_sectors``
(migration 0010, same rule as ``joint_operations``): counts under k as null and a period no
finer than the months holding at least k records. :func:`read_joint_operations` reads the
candidates back in a reader's scope. Distances come from :class:`OverlapParams` (built from the
settings). Geometries are EPSG:4326; lengths in km, distances computed in metres (see
:mod:`routes.overlap`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from geodata.db import Scope, scoped
from geodata.settings import Settings
from routes.overlap import (
    BORDER_SECTOR,
    CROSSING,
    JOINT_COLUMNS,
    ZONE_WEIGHT,
    convergence_zones,
    joint_operation_candidates,
    joint_sector_candidates,
    local_crs,
    month_key,
    route_corridor_overlap,
)

#: The keys of ``analysis_runs.counts`` that say the run stored its overlap products.
COUNT_KEYS = ("corridor_overlaps", "convergence_zones", "joint_operations", "joint_sectors")


@dataclass(frozen=True)
class OverlapParams:
    """How a run's overlap products are computed.

    Attributes
    ----------
    buffer_m
        Buffer (metres) of a corridor within which a route's length counts as shared
        (``RUTAS_OVERLAP_BUFFER_KM``).
    convergence_m
        Distance (metres) within which a route and corridors of two kinds or more make a
        convergence zone (``RUTAS_CONVERGENCE_KM``).
    sector_reach_m
        How near (metres) a route must come to a border segment to count at that border sector
        (``RUTAS_BORDER_NEAR_KM``, the reach of the routes' crossings too).
    k
        Counts of records per country under ``k`` are stored as null and shown as ``<k``
        (``RUTAS_K_ANONYMITY``).
    """

    buffer_m: float
    convergence_m: float
    sector_reach_m: float
    k: int

    @classmethod
    def from_settings(cls, settings: Settings) -> OverlapParams:
        """The parameters the settings give (kilometres there, metres here)."""
        return cls(
            buffer_m=settings.overlap_buffer_km * 1000.0,
            convergence_m=settings.convergence_km * 1000.0,
            sector_reach_m=settings.border_near_km * 1000.0,
            k=settings.k_anonymity,
        )

    def as_record(self) -> dict[str, float | int]:
        """Plain dict, as the run records it."""
        return asdict(self)


def _ewkb(geoms: gpd.GeoSeries) -> list[str]:
    values = shapely.set_srid(np.asarray(geoms.values), 4326)
    return [str(h) for h in shapely.to_wkb(values, hex=True, include_srid=True)]


#: The active corridors and the active border segments (border sectors).
_CORRIDORS_SQL = (
    "SELECT c.id AS corridor_id, c.kind, c.owner_country, c.valid_from, c.valid_to, c.geom "
    "FROM corridors c JOIN reference_layers l ON l.id = c.layer_id WHERE l.active ORDER BY c.id"
)
_SECTORS_SQL = (
    "SELECT b.id AS border_segment_id, b.country_a, b.country_b, b.geom FROM border_segments b "
    "JOIN reference_layers l ON l.id = b.layer_id WHERE l.active AND l.kind = 'borders' ORDER BY b.id"
)


def _read_active(conn: Connection, sql: str) -> gpd.GeoDataFrame:
    frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326")
    return frame.rename_geometry("geometry")


def _suppressed(records: dict[str, int], k: int) -> str:
    """Counts per country as stored: a count under ``k`` becomes null (shown as ``<k``)."""
    return json.dumps({c: (n if n >= k else None) for c, n in records.items()})


def _route_tallies(
    routes: gpd.GeoDataFrame, events: pd.DataFrame
) -> tuple[list[dict[str, int]], list[dict[str, int]]]:
    """Each route's records per owner country, and per calendar month (UTC, :func:`month_key`)."""
    members = routes[["id", "event_ids"]].explode("event_ids").dropna()
    known = events.set_index("event_id").reindex(members["event_ids"].astype(np.int64).to_numpy())
    members["country"] = known["owner_country"].to_numpy()
    members["month"] = month_key(known["occurred_at"]).to_numpy()
    tallies = []
    for column in ("country", "month"):
        counts = members.dropna(subset=[column]).groupby(["id", column]).size()
        per_route: dict[int, dict[str, int]] = {}
        for (route_id, value), n in counts.items():
            per_route.setdefault(int(route_id), {})[str(value)] = int(n)
        tallies.append([per_route.get(int(i), {}) for i in routes["id"]])
    return tallies[0], tallies[1]


def store_overlap_products(
    conn: Connection,
    run_id: int,
    routes: gpd.GeoDataFrame,
    events: pd.DataFrame,
    crossings: gpd.GeoDataFrame,
    *,
    params: OverlapParams,
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
    params
        Distances (metres) and k (:meth:`OverlapParams.from_settings`).

    Returns
    -------
    dict
        Rows written per table (``corridor_overlaps``, ``convergence_zones``,
        ``joint_operations``, ``joint_sectors``).
    """
    written = dict.fromkeys(COUNT_KEYS, 0)
    if routes.empty:
        return written
    frame = gpd.GeoDataFrame(routes.assign(route_id=routes["id"]), geometry="geometry", crs=4326)
    points = crossings.rename(columns={"id": "crossing_id"})[["crossing_id", "name", "geometry"]]
    corridors = _read_active(conn, _CORRIDORS_SQL)
    if not corridors.empty:
        written.update(_store_corridor_products(conn, run_id, frame, events, points, corridors, params))
    frame["records_by_country"], frame["monthly_counts"] = _route_tallies(frame, events)
    # stored without the corridor term and with a k-coarsened period, so the rows hold nothing
    # only some readers may see
    joint = joint_operation_candidates(frame, points, zones=None, k=params.k)
    if len(joint):
        conn.execute(
            sa.text(
                "INSERT INTO joint_operations (run_id, crossing_id, name, countries, records_by_country, "
                "route_ids, period_start, period_end, base_score, geom) VALUES (:run_id, :crossing, :name, "
                ":countries, CAST(:records AS jsonb), :routes, :start, :end, :score, "
                "ST_GeomFromEWKB(decode(:geom, 'hex')))"
            ),
            [
                {**_candidate_record(run_id, j, params.k), "crossing": int(j.crossing_id), "geom": geom}
                for j, geom in zip(joint.itertuples(), _ewkb(joint.geometry), strict=True)
            ],
        )
    written["joint_operations"] = len(joint)
    sectors = _read_active(conn, _SECTORS_SQL)
    joint = joint_sector_candidates(
        frame, sectors, reach_m=params.sector_reach_m, crossings=points, zones=None, k=params.k
    )
    if len(joint):
        pair = sectors.set_index("border_segment_id")[["country_a", "country_b"]]
        conn.execute(
            sa.text(
                "INSERT INTO joint_sectors (run_id, border_segment_id, border_segment_ids, name, "
                "country_a, country_b, countries, records_by_country, route_ids, crossing_ids, "
                "period_start, period_end, base_score, geom) VALUES (:run_id, :segment, :segments, "
                ":name, :a, :b, :countries, CAST(:records AS jsonb), :routes, :crossings, :start, :end, "
                ":score, "
                "ST_Multi(ST_GeomFromEWKB(decode(:geom, 'hex'))))"
            ),
            [
                {
                    **_candidate_record(run_id, j, params.k),
                    "segment": int(j.border_segment_id),
                    "segments": [int(s) for s in j.border_segment_ids],
                    "a": pair.at[j.border_segment_id, "country_a"],
                    "b": pair.at[j.border_segment_id, "country_b"],
                    "crossings": [int(c) for c in j.crossing_ids],
                    "geom": geom,
                }
                for j, geom in zip(joint.itertuples(), _ewkb(joint.geometry), strict=True)
            ],
        )
    written["joint_sectors"] = len(joint)
    return written


def _candidate_record(run_id: int, j: Any, k: int) -> dict[str, Any]:
    """The columns a crossing's and a sector's stored candidate share (counts under ``k`` as null)."""
    return {
        "run_id": run_id,
        "name": None if pd.isna(j.name) else str(j.name),
        "countries": str(j.countries),
        "records": _suppressed(j.records_by_country, k),
        "routes": [int(r) for r in j.route_ids],
        "start": None if pd.isna(j.period_start) else j.period_start.to_pydatetime(),
        "end": None if pd.isna(j.period_end) else j.period_end.to_pydatetime(),
        "score": float(j.score),
    }


def _store_corridor_products(
    conn: Connection,
    run_id: int,
    frame: gpd.GeoDataFrame,
    events: pd.DataFrame,
    points: gpd.GeoDataFrame,
    corridors: gpd.GeoDataFrame,
    params: OverlapParams,
) -> dict[str, int]:
    """Insert the route-corridor overlaps and the convergence zones; rows written per table."""
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
        frame, corridors, buffer_m=params.buffer_m, crossings=points, events=route_events
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
    zones = convergence_zones(frame, corridors, distance_m=params.convergence_m, crossings=points)
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
    return {"corridor_overlaps": len(overlap), "convergence_zones": len(zones)}


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


#: Both kinds of stored candidate in the columns :func:`read_joint_operations` returns.
_JOINT_SQL = (
    "SELECT '" + CROSSING + "' AS candidate_type, j.crossing_id, NULL::bigint AS border_segment_id, "
    "CAST(ARRAY[] AS bigint[]) AS border_segment_ids, "
    "j.name, j.countries, j.records_by_country, j.route_ids, ARRAY[j.crossing_id] AS crossing_ids, "
    "j.period_start, j.period_end, j.base_score, j.geom, j.id, j.run_id "
    "FROM joint_operations j WHERE j.run_id = ANY(CAST(:ids AS bigint[])) "
    "UNION ALL "
    "SELECT '" + BORDER_SECTOR + "', NULL::bigint, s.border_segment_id, s.border_segment_ids, "
    "s.name, s.countries, "
    "s.records_by_country, s.route_ids, s.crossing_ids, s.period_start, s.period_end, s.base_score, "
    "s.geom, s.id, s.run_id FROM joint_sectors s WHERE s.run_id = ANY(CAST(:ids AS bigint[]))"
)


def read_joint_operations(
    engine: Engine, run_ids: list[int], scope: Scope, *, k: int
) -> gpd.GeoDataFrame:
    """Stored joint-operation candidates (crossings and border sectors) of ``run_ids`` in ``scope``.

    Columns of :data:`routes.overlap.JOINT_COLUMNS`; ``candidate_type`` says ``crossing`` or
    ``border_sector``. ``in_convergence_zone`` and the score's corridor term (0.15) come from
    the convergence zones the scope may see; counts stored as null are shown as ``<k`` with the
    k the run stored them with (its ``parameters.overlap.k``), or ``k`` for runs that did not
    record it. The period is as stored: the first days (UTC) of the first and last month holding
    at least k of the candidate's records (NaT when none; runs stored before this rule hold the
    exact first and last event). Highest score first (crossings first at equal score).
    """
    sql = (
        "SELECT c.candidate_type, c.crossing_id, c.border_segment_id, c.border_segment_ids, "
        "c.name, c.countries, "
        "c.records_by_country, c.route_ids, c.crossing_ids, c.period_start, c.period_end, "
        "EXISTS (SELECT 1 FROM convergence_zones z WHERE z.run_id = c.run_id "
        "AND ST_Intersects(z.geom, c.geom)) AS in_convergence_zone, c.base_score, c.geom, "
        "(SELECT CAST(a.parameters->'overlap'->>'k' AS integer) FROM analysis_runs a "
        "WHERE a.id = c.run_id) AS stored_k "
        f"FROM ({_JOINT_SQL}) c ORDER BY c.candidate_type DESC, c.id"
    )
    with scoped(engine, scope) as conn:
        frame = gpd.read_postgis(
            sa.text(sql), conn, geom_col="geom", crs="EPSG:4326", params={"ids": [int(i) for i in run_ids]}
        ).rename_geometry("geometry")
    frame["score"] = frame["base_score"] + ZONE_WEIGHT * frame["in_convergence_zone"].astype(float)
    frame["records_by_country"] = [
        {c: (f"<{k if pd.isna(run_k) else int(run_k)}" if n is None else int(n)) for c, n in dict(r).items()}
        for r, run_k in zip(frame["records_by_country"], frame["stored_k"], strict=True)
    ]
    for column in ("route_ids", "crossing_ids", "border_segment_ids"):
        frame[column] = frame[column].map(lambda ids: [int(i) for i in ids])
    for column in ("crossing_id", "border_segment_id"):
        ids = [None if pd.isna(v) else int(v) for v in frame[column]]
        frame[column] = pd.Series(ids, index=frame.index, dtype=object)
    out: dict[str, Any] = {c: frame[c] for c in JOINT_COLUMNS}
    result = gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")
    return result.sort_values("score", ascending=False, kind="stable", ignore_index=True)
