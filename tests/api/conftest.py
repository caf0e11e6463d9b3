"""Fixtures of the API tests: records of three countries, keys per role, an app and a live server.

Records are inserted straight into the test run's PostGIS (as the loader would, outside any
scope); everything a test reads goes through the API as a caller, under row-level security.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import sqlalchemy as sa
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from api.auth import create_key, set_agreement
from geodata.settings import Settings

COUNTRIES = ("COL", "VEN", "PER")
KINDS = ("incident", "interception", "victim_identification")
#: What each partner sees of each owner: (owner, partner, level).
AGREEMENTS = (("VEN", "COL", "detail"), ("PER", "COL", "aggregate"), ("COL", "PER", "detail"))
NOW = datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Record:
    """One seeded event: id, owner, kind, place (EPSG:4326 degrees) and time."""

    id: int
    owner: str
    kind: str
    lon: float
    lat: float
    occurred_at: datetime
    border_distance_m: float


def insert_events(engine: Engine, rows: list[dict[str, object]]) -> list[int]:
    """Insert events (keys: owner, kind, lon, lat, occurred_at, optional border_*) and their snaps."""
    with engine.begin() as conn:
        batch = conn.execute(
            sa.text(
                "INSERT INTO ingest_batches (file_name, sha256, kind, owner_country, source, loaded_by) "
                "VALUES ('tests.csv', 'x', 'incident', NULL, 'tests', 'tests') RETURNING id"
            )
        ).scalar_one()
        ids: list[int] = []
        for i, row in enumerate(rows):
            event_id = conn.execute(
                sa.text(
                    "INSERT INTO events (kind, crime_type, occurred_at, occurred_text, date_precision, "
                    "owner_country, location_country, geom, source, dedupe_key, batch_id, source_row, "
                    "attributes, dead) VALUES (:kind, 'smuggling', :at, 'x', 'day', :owner, :owner, "
                    "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), 'tests', :key, :batch, :row, "
                    'CAST(\'{"victim_name": "SECRET"}\' AS jsonb), 1) RETURNING id'
                ),
                {
                    "kind": row["kind"],
                    "at": row["occurred_at"],
                    "owner": row["owner"],
                    "lon": row["lon"],
                    "lat": row["lat"],
                    "key": f"{batch}-{i}",
                    "batch": batch,
                    "row": i + 1,
                },
            ).scalar_one()
            ids.append(int(event_id))
            if "border_distance_m" in row:
                conn.execute(
                    sa.text(
                        "INSERT INTO event_snaps (event_id, off_network, border_countries, "
                        "border_distance_m) VALUES (:id, false, :countries, :d)"
                    ),
                    {
                        "id": event_id,
                        "countries": row.get("border_countries", "COL-VEN"),
                        "d": row["border_distance_m"],
                    },
                )
    return ids


def reset_events(engine: Engine) -> None:
    """Empty the record tables and the sharing agreements."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, ingest_batches, sharing_agreements RESTART IDENTITY CASCADE"))


def seed_world(engine: Engine) -> list[Record]:
    """Two records of each kind per country, near the Colombia-Venezuela border, plus agreements."""
    reset_events(engine)
    rows: list[dict[str, object]] = []
    for c, country in enumerate(COUNTRIES):
        for k, kind in enumerate(KINDS):
            for j in range(2):
                rows.append(
                    {
                        "owner": country,
                        "kind": kind,
                        "lon": -72.40 + 0.05 * c + 0.01 * k,
                        "lat": 7.60 + 0.03 * j + 0.01 * k,
                        "occurred_at": NOW - timedelta(days=10 + 40 * j + k),
                        "border_distance_m": 5_000.0 + 20_000.0 * j,
                    }
                )
    ids = insert_events(engine, rows)
    for owner, partner, level in AGREEMENTS:
        set_agreement(engine, owner, partner, level)
    return [
        Record(
            i,
            str(r["owner"]),
            str(r["kind"]),
            float(str(r["lon"])),
            float(str(r["lat"])),
            cast(datetime, r["occurred_at"]),
            float(str(r["border_distance_m"])),
        )
        for i, r in zip(ids, rows, strict=True)
    ]


def expected_detail(role: str, country: str | None, record: Record) -> bool:
    """The visibility rule, written independently of the SQL policy: may this caller see it in detail?"""
    if role == "admin":
        return True
    if role == "steward":
        return record.owner == country
    if role == "prosecutor":
        if record.owner == country:
            return True
        shared = {(o, p): level for o, p, level in AGREEMENTS}
        return (
            shared.get((record.owner, country or "")) == "detail" and record.kind != "victim_identification"
        )
    return False


@pytest.fixture(scope="module")
def world(engine: Engine) -> list[Record]:
    """The seeded records of this test module."""
    return seed_world(engine)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    """An in-process client of the app (lifespan run)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def keys(engine: Engine, world: list[Record]) -> dict[tuple[str, str | None], str]:
    """One API key per (role, country) the tests use (created after the agreements)."""
    pairs = [
        ("admin", None),
        ("steward", "COL"),
        ("prosecutor", "COL"),
        ("prosecutor", "VEN"),
        ("prosecutor", "PER"),
        ("border_authority", "COL"),
        ("analyst", None),
    ]
    return {(role, country): create_key(engine, role, country, "tests") for role, country in pairs}


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_server(settings: Settings) -> Iterator[str]:
    """A real uvicorn server on a free local port, for clients such as GDAL; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("The API server did not start within 20 s.")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@dataclass(frozen=True)
class Products:
    """Seeded analysis products: runs (old, latest, a failed newer one), routes and corridors."""

    old_run: int
    latest_run: int
    failed_run: int
    #: route id to its member event ids
    routes: dict[int, list[int]]
    latest_routes: list[int]
    #: corridor id to its owner country
    corridors: dict[int, str]
    #: convergence zone id to (run id, owner countries of its corridors)
    zones: dict[int, tuple[int, list[str]]] = field(default_factory=dict)
    #: joint-operation id to (run id, the zone ids covering its crossing, base score); the latest
    #: run's second holds a count under k (stored as null)
    joint: dict[int, tuple[int, list[int], float]] = field(default_factory=dict)
    #: joint-sector id to (run id, the zone ids its sector crosses, base score); the latest run's
    #: second holds a count under k (stored as null)
    sectors: dict[int, tuple[int, list[int], float]] = field(default_factory=dict)


def expected_corridor(role: str, country: str | None, owner: str) -> bool:
    """The corridor rule, written independently of the policy: own office, detail partners, admin."""
    if role == "admin":
        return True
    if role in ("steward", "prosecutor") and owner == country:
        return True
    shared = {(o, p): level for o, p, level in AGREEMENTS}
    return role == "prosecutor" and shared.get((owner, country or "")) == "detail"


def _run(conn: sa.Connection, status: str, crime_types: list[str], routes: int) -> int:
    return int(
        conn.execute(
            sa.text(
                "INSERT INTO analysis_runs (status, finished_at, parameters, filters, code_version, timings, "
                "counts, error) VALUES (:status, now(), CAST(:p AS jsonb), '{}', 'tests', "
                "CAST(:t AS jsonb), CAST(:c AS jsonb), :error) RETURNING id"
            ),
            {
                "status": status,
                "p": '{"alpha": 0.05, "slice": "month", "segment_km": 5.0}',
                "t": '{"cube": 0.5, "total": 1.25}',
                # joint_operations: the run stored its overlap products (read back by the exports)
                "c": f'{{"crime_types": {crime_types!r}, "routes": {routes}, "joint_operations": 0}}'.replace(
                    "'", '"'),
                "error": "Run stopped: tests" if status == "failed" else None,
            },
        ).scalar_one()
    )


def _route(conn: sa.Connection, run_id: int, key: str, category: str, trend: str, tau: float | None,
           countries: list[str], monthly: str, members: list[int], lon: float) -> int:
    route_id = int(
        conn.execute(
            sa.text(
                "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, "
                "category_shares, length_m, event_count, tau, p_value, trend, countries, crossing_ids, "
                "first_event, last_event, monthly_counts, segment_keys, geom) VALUES (:run, :key, false, "
                "ARRAY['smuggling'], :cat, CAST(:shares AS jsonb), 12345.5, :n, :tau, :p, :trend, "
                ":countries, ARRAY[]::bigint[], now() - interval '90 days', now() - interval '10 days', "
                "CAST(:monthly AS jsonb), ARRAY['s1'], "
                "ST_Multi(ST_SetSRID(ST_MakeLine(ST_MakePoint(:lon, 7.55), ST_MakePoint(:lon + 0.2, 7.70)), "
                "4326))) RETURNING id"
            ),
            {"run": run_id, "key": key, "cat": category, "shares": f'{{"{category}": 1.0}}',
             "n": len(members),
             "tau": tau, "p": None if tau is None else 0.01, "trend": trend, "countries": countries,
             "monthly": monthly, "lon": lon},
        ).scalar_one()
    )
    for event_id in members:
        conn.execute(sa.text("INSERT INTO route_events (route_id, event_id) VALUES (:r, :e)"),
                     {"r": route_id, "e": event_id})
    return route_id


#: A joint-operation candidate at a crossing (a point at ``:lon``) and at a border sector (a line from
#: ``:lon``), of route ``:route``, as the overlap stage stores them.
_CROSSING_SQL = (
    "INSERT INTO joint_operations (run_id, crossing_id, name, countries, records_by_country, "
    "route_ids, period_start, period_end, base_score, geom) VALUES (:run, 1, 'Paso tests', "
    "'COL,VEN', CAST(:records AS jsonb), ARRAY[:route]::bigint[], "
    "now() - interval '90 days', now() - interval '10 days', :base, "
    "ST_SetSRID(ST_MakePoint(:lon, 7.60), 4326)) RETURNING id"
)
_SECTOR_SQL = (
    "INSERT INTO joint_sectors (run_id, border_segment_id, border_segment_ids, name, "
    "country_a, country_b, countries, records_by_country, route_ids, crossing_ids, "
    "period_start, period_end, base_score, geom) VALUES (:run, 7, ARRAY[7, 8]::bigint[], "
    "'Tramo tests', 'COL', 'VEN', 'COL,VEN', CAST(:records AS jsonb), "
    "ARRAY[:route]::bigint[], ARRAY[1]::bigint[], now() - interval '90 days', "
    "now() - interval '10 days', :base, ST_Multi(ST_SetSRID(ST_MakeLine("
    "ST_MakePoint(:lon, 7.58), ST_MakePoint(:lon + 0.05, 7.62)), 4326))) RETURNING id"
)


def _candidates(
    conn: sa.Connection, sql: str, route: int, rows: tuple[tuple[int, str, float, float, list[int]], ...]
) -> dict[int, tuple[int, list[int], float]]:
    """Insert candidates (run, records by country, lon, base score, zones covering it) with ``sql``;
    id to (run, covering zones, base score)."""
    stored: dict[int, tuple[int, list[int], float]] = {}
    for run, records, lon, base, covering in rows:
        cid = conn.execute(
            sa.text(sql), {"run": run, "records": records, "route": route, "base": base, "lon": lon}
        ).scalar_one()
        stored[int(cid)] = (run, covering, base)
    return stored


def seed_products(engine: Engine, world: list[Record]) -> Products:
    """Three runs, three routes over the seeded records, one corridor per country, convergence zones
    (latest run: one from COL and VEN corridors, one from PER's; old run: one from COL's) and
    joint-operation candidates at crossings (three of the latest run, one of the old run) and at
    border sectors (two of the latest run, one of the old run)."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE analysis_runs RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))
        old = _run(conn, "succeeded", ["smuggling"], 1)
        latest = _run(conn, "succeeded", ["smuggling"], 2)
        failed = _run(conn, "failed", ["smuggling"], 0)
        all_ids = [r.id for r in world]
        peru = [r.id for r in world if r.owner == "PER"]
        routes = {
            _route(conn, old, "old", "sporadic_hot", "none", None, ["COL"], '{"2026-01-01": 1}',
                   all_ids[:2], -72.5): all_ids[:2],
            _route(conn, latest, "a", "intensifying_hot", "up", 0.8, ["COL", "PER", "VEN"],
                   '{"2026-09-01": 2.0, "2026-06-01": 1.0, "2026-08-01": 1.0}', all_ids, -72.4): all_ids,
            _route(conn, latest, "b", "new_hot", "none", None, ["PER"], '{"2026-09-01": 3}',
                   peru, -72.3): peru,
        }
        layer = conn.execute(
            sa.text(
                "INSERT INTO reference_layers (kind, subkind, source, file_name, sha256, feature_count, "
                "active) VALUES ('corridors', 'tests', 'tests', 'corridors.geojson', 'x', 3, true) "
                "RETURNING id"
            )
        ).scalar_one()
        corridors: dict[int, str] = {}
        for i, (owner, kind) in enumerate((("COL", "drug"), ("VEN", "fuel"), ("PER", "arms"))):
            cid = conn.execute(
                sa.text(
                    "INSERT INTO corridors (layer_id, kind, owner_country, name, source, confidence, note, "
                    "source_row, geom) VALUES (:layer, :kind, :owner, :name, 'SOURCE-SECRET', 'high', "
                    "'NOTE-SECRET', :row, ST_SetSRID(ST_MakeLine(ST_MakePoint(:lon, 7.5), "
                    "ST_MakePoint(:lon, 7.8)), 4326)) RETURNING id"
                ),
                {"layer": layer, "kind": kind, "owner": owner, "name": f"{kind} {owner}", "row": i + 1,
                 "lon": -72.45 + 0.1 * i},
            ).scalar_one()
            corridors[int(cid)] = owner
        route_a = list(routes)[1]
        zones: dict[int, tuple[int, list[str]]] = {}
        # (run, owners, box west lon): two zones of the latest run, one of the old run
        for run, owners, west in ((latest, ["COL", "VEN"], -72.45), (latest, ["PER"], -72.25),
                                  (old, ["COL"], -72.45)):
            zid = conn.execute(
                sa.text(
                    "INSERT INTO convergence_zones (run_id, route_id, kinds, kind_count, "
                    "crossing_distance_km, category, score, owner_countries, geom) "
                    "VALUES (:run, :route, 'drug,fuel', 2, 3.5, "
                    "'intensifying_hot', 0.7, CAST(:owners AS char(3)[]), "
                    "ST_MakeEnvelope(:west, 7.55, :west + 0.1, 7.65, 4326)) RETURNING id"
                ),
                {"run": run, "route": route_a, "owners": owners, "west": west},
            ).scalar_one()
            zones[int(zid)] = (run, owners)
        zone_ids = list(zones)
        # (run, records by country, lon, base score, zones covering the crossing)
        joint = _candidates(conn, _CROSSING_SQL, route_a, (
            (latest, '{"COL": 12, "VEN": 14}', -72.40, 0.5, [zone_ids[0]]),
            (latest, '{"PER": 11, "COL": null}', -72.20, 0.4, [zone_ids[1]]),
            (latest, '{"COL": 13, "PER": 20}', -72.00, 0.2, []),
            (old, '{"COL": 12, "VEN": 11}', -72.40, 0.3, [zone_ids[2]]),
        ))
        # (run, records by country, west lon of the sector's line, base score, zones it crosses)
        sectors = _candidates(conn, _SECTOR_SQL, route_a, (
            (latest, '{"COL": 12, "VEN": 14}', -72.42, 0.45, [zone_ids[0]]),
            (latest, '{"VEN": null, "PER": 15}', -72.11, 0.35, []),
            (old, '{"COL": 12, "VEN": 11}', -72.42, 0.25, [zone_ids[2]]),
        ))
    latest_routes = sorted(list(routes)[1:])
    return Products(old, latest, failed, routes, latest_routes, corridors, zones, joint, sectors)


@pytest.fixture(scope="module")
def products(engine: Engine, world: list[Record]) -> Products:
    """The seeded analysis products of this test module (after the records)."""
    return seed_products(engine, world)
