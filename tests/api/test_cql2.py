"""CQL2: parsing text and JSON, the SQL it becomes (values always bound), and what filters return."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pyproj import Geod
from sqlalchemy.engine import Engine

from api.collections import EVENTS
from api.cql2 import compile_filter
from geodata.db import Scope, scoped
from geodata.errors import InputError
from tests.api.conftest import NOW, Record, bearer

Q = EVENTS.queryables


def _sql(text: str) -> tuple[str, dict[str, object]]:
    compiled = compile_filter(text, None, Q, max_nodes=200)
    return compiled.sql, compiled.params


def test_text_and_json_give_the_same_sql() -> None:
    text = "kind = 'interception' AND dead >= 2"
    as_json = (
        '{"op": "and", "args": [{"op": "=", "args": [{"property": "kind"}, "interception"]}, '
        '{"op": ">=", "args": [{"property": "dead"}, 2]}]}'
    )
    assert compile_filter(as_json, "cql2-json", Q, max_nodes=50).sql == _sql(text)[0]


def test_values_are_bound_never_pasted() -> None:
    sql, params = _sql("source = 'x''); DROP TABLE events; --'")
    assert "DROP" not in sql and "events" not in sql
    assert list(params.values()) == ["x'); DROP TABLE events; --"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("T_BEFORE(occurred_at, TIMESTAMP('2024-01-01T00:00:00Z'))", "e.occurred_at < :cql_0"),
        ("T_AFTER(occurred_at, TIMESTAMP('2024-01-01T00:00:00Z'))", "e.occurred_at > :cql_0"),
        (
            "T_INTERSECTS(occurred_at, INTERVAL('2024-01-01', '2024-01-31'))",
            "(e.occurred_at >= :cql_0 AND e.occurred_at <= :cql_1)",
        ),
        ("T_DURING(occurred_at, INTERVAL('2024-01-01', '..'))", "(e.occurred_at > :cql_0)"),
        ("S_INTERSECTS(geom, BBOX(-75, 0, -60, 12))", "ST_Intersects(e.geom, ST_MakeEnvelope("),
        ("S_DWITHIN(geom, POINT(-72 7), 20, kilometers)", "ST_DWithin((e.geom)::geography"),
        ("kind IN ('incident', 'interception')", "e.kind IN (:cql_0, :cql_1)"),
        ("CASEI(source) LIKE 'test%'", "(lower(e.source) LIKE :cql_0)"),
        ("victims IS NULL", "(e.victims IS NULL)"),
        ("NOT (dead BETWEEN 1 AND 3)", "(NOT (e.dead BETWEEN :cql_0 AND :cql_1))"),
    ],
)
def test_operators_translate(text: str, fragment: str) -> None:
    assert fragment in _sql(text)[0]


def test_dwithin_units_become_metres() -> None:
    assert list(_sql("S_DWITHIN(geom, POINT(-72 7), 20, kilometers)")[1].values())[-1] == 20_000.0


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("attributes = 'x'", "not queryable"),
        ("kind = ", "cannot be parsed"),
        ("kind = 3", "cannot compare"),
        ("T_BEFORE(kind, TIMESTAMP('2024-01-01T00:00:00Z'))", "date-time property"),
        ("occurred_at > TIMESTAMP('2024-13-45T00:00:00Z')", "ISO 8601"),
        ("S_DWITHIN(geom, POINT(0 0), 5, parsecs)", "unit"),
    ],
)
def test_bad_filters_say_why(text: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        _sql(text)
    assert says in caught.value.message and caught.value.message_es and caught.value.code == "bad_filter"


def test_complexity_is_bounded() -> None:
    with pytest.raises(InputError, match="at most 20"):
        compile_filter(" OR ".join(f"dead = {i}" for i in range(10)), None, Q, max_nodes=20)
    with pytest.raises(InputError, match="nests deeper"):
        parse_tree = {"op": "not", "args": [{"op": "=", "args": [{"property": "dead"}, 1]}]}
        for _ in range(40):
            parse_tree = {"op": "not", "args": [parse_tree]}
        from api.cql2 import to_sql

        to_sql(parse_tree, Q, max_nodes=1000)


@given(st.text(max_size=40))
@example("\\")  # a pattern ending in the LIKE escape character: a 400, not a database error
@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_text_value_runs_safely(engine: Engine, value: str) -> None:
    escaped = value.replace("'", "''")
    try:
        compiled = compile_filter(
            f"source = '{escaped}' OR CASEI(kind) LIKE '{escaped}'", None, Q, max_nodes=50
        )
    except InputError:
        return  # e.g. control characters the grammar refuses: a 400, never SQL
    with scoped(engine, Scope(role="admin")) as conn:
        count = conn.execute(
            sa.text(f"SELECT count(*) FROM {EVENTS.from_sql} WHERE {compiled.sql}"), compiled.params
        ).scalar_one()
    assert count >= 0


def _ids(client: TestClient, key: str, **params: str) -> set[int]:
    response = client.get(
        "/collections/events/items", params={"limit": "1000", **params}, headers=bearer(key)
    )
    assert response.status_code == 200, response.text
    return {f["id"] for f in response.json()["features"]}


def test_interceptions_last_30_days_near_the_venezuelan_border(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    since = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = (
        f"kind = 'interception' AND T_AFTER(occurred_at, TIMESTAMP('{since}')) "
        "AND border_distance_m <= 20000 AND border_countries LIKE '%VEN%'"
    )
    got = _ids(client, keys[("admin", None)], filter=text)
    want = {
        r.id
        for r in world
        if r.kind == "interception"
        and r.occurred_at > NOW - timedelta(days=30)
        and r.border_distance_m <= 20000
    }
    assert got == want and want


def test_dwithin_matches_geodesic_distance(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    geod = Geod(ellps="WGS84")
    centre = (-72.35, 7.62)
    radius_m = 6_000.0
    got = _ids(
        client,
        keys[("admin", None)],
        filter=f"S_DWITHIN(geom, POINT({centre[0]} {centre[1]}), {radius_m / 1000}, kilometers)",
    )
    distances = {r.id: geod.inv(centre[0], centre[1], r.lon, r.lat)[2] for r in world}
    assert got == {i for i, d in distances.items() if d <= radius_m}
    assert 0 < len(got) < len(world)
    assert all(not math.isclose(d, radius_m, rel_tol=1e-3) for d in distances.values())


def test_bbox_datetime_and_temporal_filters(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    key = keys[("admin", None)]
    assert _ids(client, key, bbox="-72.41,7.59,-72.34,7.70") == {
        r.id for r in world if -72.41 <= r.lon <= -72.34 and 7.59 <= r.lat <= 7.70
    }
    start = (NOW - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = {r.id for r in world if r.occurred_at >= NOW - timedelta(days=30)}
    assert _ids(client, key, datetime=f"{start}/..") == recent
    assert _ids(client, key, filter=f"T_INTERSECTS(occurred_at, INTERVAL('{start}', '..'))") == recent
    assert (
        _ids(client, key, filter=f"T_BEFORE(occurred_at, TIMESTAMP('{start}'))")
        == {r.id for r in world} - recent
    )


def test_queryables_as_query_parameters(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    key = keys[("admin", None)]
    got = _ids(client, key, kind="interception", owner_country="VEN")
    assert got == {r.id for r in world if r.kind == "interception" and r.owner == "VEN"} and got
    both = _ids(
        client, key, kind="interception", filter="owner_country = 'VEN'", **{"filter-lang": "cql-text"}
    )
    assert both == got
    bad = client.get("/collections/events/items", params={"dead": "many"}, headers=bearer(key))
    assert bad.status_code == 400 and "dead" in bad.json()["description"]
