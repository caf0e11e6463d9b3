"""Roles x countries x sharing agreements x endpoints: no record crosses a boundary it should not.

The expected visibility comes from ``expected_detail`` (the rule written out in Python); the
API's answers come through row-level security in PostGIS. The last tests drop or loosen the
policy inside the test and show the matrix then fails.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from api.collections import COLLECTIONS, CORRIDORS, EVENTS, JOINT_SECTORS, RECORD_ROLES, ROUTES
from geodata.db import APP_ROLE, Scope, scoped
from geodata.settings import Settings
from tests.api.conftest import Products, Record, bearer, expected_corridor, expected_detail

PRINCIPALS = [
    ("admin", None),
    ("steward", "COL"),
    ("prosecutor", "COL"),
    ("prosecutor", "VEN"),
    ("prosecutor", "PER"),
    ("border_authority", "COL"),
    ("analyst", None),
]


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return x, y


def _all_items(client: TestClient, key: str, params: dict[str, str]) -> list[dict[str, object]]:
    features: list[dict[str, object]] = []
    response = client.get("/collections/events/items", params={**params, "limit": "4"}, headers=bearer(key))
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        features.extend(body["features"])
        # numberMatched only when free: a lone first page tells it; a paged result does not.
        first_and_last = "after" not in str(response.url) and not any(
            link["rel"] == "next" for link in body["links"]
        )
        assert body.get("numberMatched") == (len(body["features"]) if first_and_last else None)
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not nxt:
            return features
        response = client.get(nxt[0], headers=bearer(key))


def check_matrix(client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]) -> None:
    """Every principal, every endpoint: exactly the records the rule allows, and no extra field."""
    by_id = {r.id: r for r in world}
    for role, country in PRINCIPALS:
        key = keys[(role, country)]
        expected = {r.id for r in world if expected_detail(role, country, r)}
        who = f"{role}/{country}"
        if role in ("analyst", "border_authority"):
            assert client.get("/collections/events/items", headers=bearer(key)).status_code == 403, who
            assert (
                client.get(f"/collections/events/items/{world[0].id}", headers=bearer(key)).status_code == 403
            )
            listed = {c["id"] for c in client.get("/collections", headers=bearer(key)).json()["collections"]}
            assert "events" not in listed and "event-cells" in listed, who
            # Tiles at a detail zoom: cells only (here all suppressed), never a record.
            x, y = _tile_of(world[0].lon, world[0].lat, 9)
            tile = client.get(f"/collections/events/tiles/WebMercatorQuad/9/{x}/{y}", headers=bearer(key))
            assert tile.status_code == 200, who
            for layer in mapbox_vector_tile.decode(tile.content).values():
                assert all(f["geometry"]["type"] == "Polygon" for f in layer["features"]), who
            continue
        # items, every page
        features = _all_items(client, key, {})
        assert {f["id"] for f in features} == expected, who
        for f in features:
            props = f["properties"]
            assert isinstance(props, dict)
            allowed = set(EVENTS.properties_for(role))
            assert set(props) <= allowed, f"{who}: unexpected fields {set(props) - allowed}"
            assert "SECRET" not in str(f), who
        # items with CQL2 text and JSON filters
        victims = _all_items(client, key, {"filter": "kind = 'victim_identification'"})
        assert {f["id"] for f in victims} == {i for i in expected if by_id[i].kind == "victim_identification"}
        everywhere = _all_items(
            client,
            key,
            {
                "filter": '{"op": "in", "args": [{"property": "owner_country"}, ["COL", "VEN", "PER"]]}',
                "filter-lang": "cql2-json",
            },
        )
        assert {f["id"] for f in everywhere} == expected, who
        # item by id
        for record in world:
            status = client.get(f"/collections/events/items/{record.id}", headers=bearer(key)).status_code
            assert status == (200 if record.id in expected else 404), f"{who} item {record.id}: {status}"
        # detailed tile (zoom 9) holding every record
        x, y = _tile_of(world[0].lon, world[0].lat, 9)
        tile = client.get(f"/collections/events/tiles/WebMercatorQuad/9/{x}/{y}", headers=bearer(key))
        assert tile.status_code == 200, tile.text
        layers = mapbox_vector_tile.decode(tile.content)
        tile_ids = {f["id"] for f in layers.get("events", {"features": []})["features"]}
        in_tile = {r.id for r in world if _tile_of(r.lon, r.lat, 9) == (x, y)}
        assert tile_ids == expected & in_tile, who


def test_matrix_of_roles_countries_agreements_endpoints(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    check_matrix(client, keys, world)


def test_low_zoom_tiles_carry_only_suppressed_counts(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    x, y = _tile_of(world[0].lon, world[0].lat, 3)
    for principal in PRINCIPALS:
        tile = client.get(
            f"/collections/events/tiles/WebMercatorQuad/3/{x}/{y}", headers=bearer(keys[principal])
        )
        assert tile.status_code == 200
        for layer in mapbox_vector_tile.decode(tile.content).values():
            for feature in layer["features"]:
                assert feature["properties"]["count"] >= 11  # six records per kind: all suppressed
                assert feature["geometry"]["type"] == "Polygon"


def test_requests_run_as_the_app_role_which_owns_nothing(engine: Engine) -> None:
    with scoped(engine, Scope(role="prosecutor", country="COL")) as conn:
        assert conn.execute(sa.text("SELECT current_user")).scalar_one() == APP_ROLE
        assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "30s"
    with engine.begin() as conn:
        owned = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = :r"
            ),
            {"r": APP_ROLE},
        ).scalar_one()
        forced = (
            conn.execute(
                sa.text(
                    "SELECT relname FROM pg_class WHERE relforcerowsecurity AND relrowsecurity ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
    assert owned == 0
    assert {"events", "event_snaps", "ingest_batches"} <= set(forced)


@pytest.mark.parametrize(
    "replacement",
    [None, "CREATE POLICY events_open ON events FOR SELECT USING (true)"],
    ids=["policy dropped", "policy loosened"],
)
def test_matrix_fails_when_the_policy_is_dropped(
    client: TestClient,
    keys: dict[tuple[str, str | None], str],
    world: list[Record],
    engine: Engine,
    replacement: str | None,
) -> None:
    with engine.begin() as conn:
        rule = conn.execute(
            sa.text("SELECT pg_get_expr(polqual, polrelid) FROM pg_policy WHERE polname = 'events_detail'")
        ).scalar_one()
        conn.execute(sa.text("DROP POLICY events_detail ON events"))
        if replacement:
            conn.execute(sa.text(replacement))
    try:
        with pytest.raises(AssertionError):
            check_matrix(client, keys, world)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP POLICY IF EXISTS events_open ON events"))
            conn.execute(
                sa.text(
                    f"CREATE POLICY events_detail ON events FOR SELECT USING ({rule})".replace(":", "\\:")
                )
            )
    check_matrix(client, keys, world)


def stored_counts(engine: Engine) -> dict[int, tuple[int, dict[str, float]]]:
    """Every route's stored event count and monthly counts (read as the owner, not through the API)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, event_count, monthly_counts FROM routes")).all()
    return {int(r.id): (int(r.event_count), dict(r.monthly_counts)) for r in rows}


def expected_counts(
    detail: bool, count: int, monthly: dict[str, float], k: int
) -> tuple[int | None, dict[str, float | None], bool]:
    """The k-suppression rule written out: (event_count, monthly_counts, counts_suppressed) a caller
    gets. Who sees every member record in detail gets the counts; others get each month below k as
    null, and the total only when it is at least k and the months withheld add up to 0 or at least k
    (else the total minus the months shown would give them back)."""
    if detail:
        return count, dict(monthly), False
    months: dict[str, float | None] = {m: (v if v >= k else None) for m, v in monthly.items()}
    rest = count - sum(v for v in months.values() if v is not None)
    total = count if count >= k and (rest == 0 or rest >= k) else None
    return total, months, total is None or None in months.values()


def check_products_matrix(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record], products: Products,
    stored: dict[int, tuple[int, dict[str, float]]], k: int,
) -> None:
    """Routes: every role sees every route, member event ids only as far as it may see the events,
    and its counts k-suppressed unless it may see every member in detail. Corridors: only the owner's
    office, detail partners and admins. Exports follow the same rules."""
    x, y = _tile_of(-72.4, 7.6, 7)
    for role, country in PRINCIPALS:
        key = keys[(role, country)]
        who = f"{role}/{country}"

        allowed = {r.id for r in world if expected_detail(role, country, r)}
        members = {rid: set(ids) & allowed for rid, ids in products.routes.items()}
        counts = {rid: expected_counts(set(ids) <= allowed, *stored[rid], k)
                  for rid, ids in products.routes.items()}
        # the trend statistics: to who sees every member, or when no count is withheld and at least k
        # members are hidden (else they would describe the series of fewer than k hidden records)
        stats = {rid: set(ids) <= allowed or (not counts[rid][2] and len(set(ids) - allowed) >= k)
                 for rid, ids in products.routes.items()}
        for rid, (total, months, suppressed) in counts.items():
            series = client.get(f"/routes/{rid}/series", headers=bearer(key)).json()
            assert (series["event_count"], series["counts_suppressed"]) == (total, suppressed), who
            got = {p["start"]: p["count"] for p in series["series"]}
            assert {m: got[m] for m in months} == months, who
            assert series["trend_suppressed"] == (not stats[rid]), who
            assert series["trend"] is None or stats[rid], who
        # routes: items, item by id, tile
        body = client.get("/collections/routes/items", headers=bearer(key)).json()
        assert {f["id"] for f in body["features"]} == set(products.routes), who
        for f in body["features"]:
            props = f["properties"]
            assert set(props) <= set(ROUTES.properties_for(role)), who
            assert props["category"] and props["run_id"] in (products.old_run, products.latest_run)
            total, months, suppressed = counts[f["id"]]
            assert (props["event_count"], props["monthly_counts"], props["counts_suppressed"]) == (
                total, months, suppressed), who
            assert props["trend_suppressed"] == (not stats[f["id"]]), who
            if not stats[f["id"]]:
                assert (props["trend"], props["tau"], props["p_value"]) == (None, None, None), who
            if role in RECORD_ROLES:
                assert set(props["event_ids"]) == members[f["id"]], who
            else:
                assert "event_ids" not in props, who
        for route_id in products.routes:
            one = client.get(f"/collections/routes/items/{route_id}", headers=bearer(key))
            assert one.status_code == 200, who
            assert set(one.json()["properties"].get("event_ids", [])) == (
                members[route_id] if role in RECORD_ROLES else set()), who
        tile = client.get(f"/collections/routes/tiles/WebMercatorQuad/7/{x}/{y}", headers=bearer(key))
        assert tile.status_code == 200, who
        drawn = mapbox_vector_tile.decode(tile.content)["routes"]["features"]
        assert {f["id"] for f in drawn} == set(products.routes), who
        for f in drawn:
            shown = f["properties"].get("event_ids", "{}").strip("{}")
            assert {int(i) for i in shown.split(",") if i} == (
                members[f["id"]] if role in RECORD_ROLES else set()), who
        # corridors: items, item by id, tile; notes and sources by role
        visible = {c for c, owner in products.corridors.items() if expected_corridor(role, country, owner)}
        response = client.get("/collections/corridors/items", headers=bearer(key))
        assert response.status_code == 200, who
        features = response.json()["features"]
        assert {f["id"] for f in features} == visible, who
        for f in features:
            assert set(f["properties"]) <= set(CORRIDORS.properties_for(role)), who
        text = response.text
        assert ("NOTE-SECRET" in text) == (bool(visible) and role in RECORD_ROLES), who
        assert ("SOURCE-SECRET" in text) == (role == "admin"), who
        for cid in products.corridors:
            status = client.get(f"/collections/corridors/items/{cid}", headers=bearer(key)).status_code
            assert status == (200 if cid in visible else 404), f"{who} corridor {cid}"
        tile = client.get(f"/collections/corridors/tiles/WebMercatorQuad/7/{x}/{y}", headers=bearer(key))
        layers = mapbox_vector_tile.decode(tile.content)
        assert {f["id"] for f in layers.get("corridors", {"features": []})["features"]} == visible, who
        check_overlap_products(client, key, role, country, products, k, (x, y))
        # exports over HTTP, in the caller's scope
        routes = client.get("/exports/routes", params={"format": "geojson"}, headers=bearer(key))
        assert routes.status_code == 200, who
        assert sorted(f["properties"]["id"] for f in routes.json()["features"]) == products.latest_routes
        for f in routes.json()["features"]:
            total, months, suppressed = counts[f["properties"]["id"]]
            exported_months = json.loads(f["properties"]["monthly_counts"])
            assert (f["properties"]["event_count"], exported_months, f["properties"]["counts_suppressed"]
                    ) == (total, months, suppressed), who
        assert "event_ids" not in routes.text, who
        joint = client.get("/exports/joint-operations", params={"format": "geojson"}, headers=bearer(key))
        assert joint.status_code == 200, who
        route_a = client.get(f"/collections/routes/items/{list(products.routes)[1]}",
                             headers=bearer(key)).json()["properties"]
        exported_joint = joint.json()["features"]
        # the latest run's candidates at crossings and at border sectors, the sectors' lines as lines
        kinds = sorted((f["properties"]["candidate_type"], f["geometry"]["type"]) for f in exported_joint)
        assert kinds == sorted(
            [("crossing", "Point")] * len([v for v in products.joint.values() if v[0] == products.latest_run])
            + [("border_sector", "MultiLineString")]
            * len([v for v in products.sectors.values() if v[0] == products.latest_run])), who
        for f in exported_joint:
            props = f["properties"]
            under_k = f"<{k}" in json.loads(props["records_by_country"]).values()
            assert (props["score"] is None, props["score_suppressed"]) == (under_k, under_k), who
            for name, shown in (("period_start", "first_event"), ("period_end", "last_event")):
                assert (props[name] or "")[:19] == (route_a[shown] or "")[:19], f"{who} {name}"
        events = client.get("/exports/events", params={"format": "geojson"}, headers=bearer(key))
        if role in RECORD_ROLES:
            assert events.status_code == 200, who
            exported = {f["properties"]["id"] for f in events.json()["features"]}
            assert exported == allowed, who
        else:
            assert events.status_code == 403, who


def check_overlap_products(client: TestClient, key: str, role: str, country: str | None, products: Products,
                           k: int, tile_xy: tuple[int, int]) -> None:
    """Convergence zones: only to who may read every corridor owner behind them; joint operations: to
    every role, counts under k as "<k", the corridor term only from zones the caller sees. Latest
    run by default, in items, item by id and tiles."""
    who = f"{role}/{country}"

    def zone_shown(zid: int) -> bool:
        return role == "admin" or all(expected_corridor(role, country, o) for o in products.zones[zid][1])

    def ids(cid: str, **params: str) -> set[int]:
        response = client.get(f"/collections/{cid}/items", params=params, headers=bearer(key))
        assert response.status_code == 200, f"{who} {cid} {params}: {response.text}"
        return {int(f["id"]) for f in response.json()["features"]}

    def of_run(items: dict[int, Any], run: int) -> set[int]:
        return {i for i, v in items.items() if v[0] == run}

    latest, old = products.latest_run, products.old_run
    zones = {z for z in products.zones if zone_shown(z)}
    assert ids("convergence-zones") == zones & of_run(products.zones, latest), who
    assert ids("convergence-zones", latest="false") == zones & of_run(products.zones, old), who
    assert ids("convergence-zones", filter=f"run_id = {old}") == zones & of_run(products.zones, old), who
    assert ids("convergence-zones", filter="owner_countries LIKE '%PER%'") == zones & {
        z for z, (run, owners) in products.zones.items() if run == latest and "PER" in owners}, who
    for zid in products.zones:
        status = client.get(f"/collections/convergence-zones/items/{zid}", headers=bearer(key)).status_code
        assert status == (200 if zid in zones else 404), f"{who} zone {zid}"
    x, y = tile_xy
    tile = client.get(f"/collections/convergence-zones/tiles/WebMercatorQuad/7/{x}/{y}", headers=bearer(key))
    drawn = mapbox_vector_tile.decode(tile.content).get("convergence-zones", {"features": []})["features"]
    assert {f["id"] for f in drawn} == zones & of_run(products.zones, latest), who

    for cid, names in (("convergence-zones", {"run_id", "latest", "owner_countries", "kinds", "score"}),
                       ("joint-operations", {"run_id", "score", "in_convergence_zone", "period_end"}),
                       ("joint-sectors", {"run_id", "score", "in_convergence_zone", "period_end",
                                          "candidate_type", "country_a"})):
        listed = client.get(f"/collections/{cid}/queryables", headers=bearer(key)).json()["properties"]
        assert names <= set(listed), f"{who} {cid}"
    # the second candidate of the latest run holds a count under k; the bbox holds it only
    for cid, candidates, kind, geometry, second_counts, second_bbox in (
        ("joint-operations", products.joint, "crossing", "Point", {"PER": 11, "COL": f"<{k}"},
         "-72.25,7.55,-72.15,7.65"),
        ("joint-sectors", products.sectors, "border_sector", "MultiLineString", {"VEN": f"<{k}", "PER": 15},
         "-72.12,7.55,-72.03,7.65"),
    ):
        check_joint_candidates(client, key, who, cid, candidates, zones, products, k, tile_xy,
                               (kind, geometry, second_counts, second_bbox))


def check_joint_candidates(
    client: TestClient, key: str, who: str, cid: str, candidates: dict[int, tuple[int, list[int], float]],
    zones: set[int], products: Products, k: int, tile_xy: tuple[int, int],
    expected: tuple[str, str, dict[str, int | str], str],
) -> None:
    """One collection of joint-operation candidates (crossings or border sectors) under one rule: every
    role, latest run by default, counts under k as "<k" and then no score, the corridor term only from
    zones the caller sees, the period as the caller's routes show it; items, item, CQL2, bbox, tiles."""
    kind, geometry, second_counts, second_bbox = expected
    latest, old = products.latest_run, products.old_run

    def ids(**params: str) -> set[int]:
        response = client.get(f"/collections/{cid}/items", params=params, headers=bearer(key))
        assert response.status_code == 200, f"{who} {cid} {params}: {response.text}"
        return {int(f["id"]) for f in response.json()["features"]}

    def of_run(run: int) -> set[int]:
        return {i for i, v in candidates.items() if v[0] == run}

    body = client.get(f"/collections/{cid}/items", headers=bearer(key)).json()
    assert {f["id"] for f in body["features"]} == of_run(latest), f"{who} {cid}"
    assert ids(filter=f"run_id = {old}") == of_run(old), f"{who} {cid}"
    assert ids(filter=f"candidate_type = '{kind}'") == of_run(latest), f"{who} {cid}"
    route_a = list(products.routes)[1]
    dates = client.get(f"/collections/routes/items/{route_a}", headers=bearer(key)).json()["properties"]
    for f in body["features"]:
        _, covering, base = candidates[f["id"]]
        inside = any(z in zones for z in covering)
        props = f["properties"]
        assert f["geometry"]["type"] == geometry and props["candidate_type"] == kind, f"{who} {cid}"
        assert props["in_convergence_zone"] is inside, f"{who} {cid} {f['id']}"
        shown = props["records_by_country"].values()
        assert all((isinstance(n, int) and n >= k) or n == f"<{k}" for n in shown), who
        # a count under k withholds the score, which weighs the counts and would give it back
        if f"<{k}" in shown:
            assert (props["base_score"], props["score"], props["score_suppressed"]) == (None, None, True), who
        else:
            assert math.isclose(props["score"], base + (0.15 if inside else 0.0)), f"{who} {cid}"
            assert props["score_suppressed"] is False, who
        # the period as the caller's routes show it (route a's dates, coarsened when not in detail)
        period = (props["period_start"], props["period_end"])
        assert period == (dates["first_event"], dates["last_event"]), f"{who} {cid}"
    second = sorted(of_run(latest))[1]
    assert client.get(f"/collections/{cid}/items/{second}", headers=bearer(key)).json()[
        "properties"]["records_by_country"] == second_counts, f"{who} {cid}"
    assert second not in ids(filter="score >= 0"), f"{who} {cid}"
    assert ids(bbox=second_bbox) == {second}, f"{who} {cid}"
    assert ids(filter="in_convergence_zone = true") == {
        j for j, (run, covering, _) in candidates.items()
        if run == latest and any(z in zones for z in covering)}, f"{who} {cid}"
    x, y = tile_xy
    tile = client.get(f"/collections/{cid}/tiles/WebMercatorQuad/7/{x}/{y}", headers=bearer(key))
    drawn = mapbox_vector_tile.decode(tile.content)[cid]["features"]
    assert {f["id"] for f in drawn} == of_run(latest), f"{who} {cid}"
    for f in drawn:
        shown = json.loads(f["properties"]["records_by_country"]).values()
        assert ("score" in f["properties"]) == (f"<{k}" not in shown), f"{who} {cid} tile {f['id']}"


def test_matrix_of_routes_corridors_and_exports(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record], products: Products,
    engine: Engine, settings: Settings,
) -> None:
    check_products_matrix(client, keys, world, products, stored_counts(engine), settings.k_anonymity)


@pytest.mark.parametrize("table", ["corridors", "convergence_zones"])
def test_products_matrix_fails_when_a_product_policy_is_loosened(
    client: TestClient,
    keys: dict[tuple[str, str | None], str],
    world: list[Record],
    products: Products,
    engine: Engine,
    settings: Settings,
    table: str,
) -> None:
    stored = stored_counts(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE POLICY {table}_open ON {table} FOR SELECT USING (true)"))
    try:
        with pytest.raises(AssertionError):
            check_products_matrix(client, keys, world, products, stored, settings.k_anonymity)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP POLICY {table}_open ON {table}"))
    check_products_matrix(client, keys, world, products, stored, settings.k_anonymity)


#: Loosened versions of the border-sector candidates' rule: the score shown with a count under k,
#: every run's rows by default.
_LOOSENED_SECTORS = {
    "score": {"properties": {**JOINT_SECTORS.properties, "score": "p.base_score",
                             "base_score": "p.base_score"}},
    "latest": {"latest_by_default": False},
}


@pytest.mark.parametrize("loosened", sorted(_LOOSENED_SECTORS))
def test_products_matrix_fails_when_the_sector_rule_is_loosened(
    keys: dict[tuple[str, str | None], str],
    world: list[Record],
    products: Products,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    loosened: str,
) -> None:
    stored = stored_counts(engine)
    loose = dataclasses.replace(JOINT_SECTORS, **_LOOSENED_SECTORS[loosened])  # type: ignore[arg-type]
    monkeypatch.setitem(COLLECTIONS, JOINT_SECTORS.id, loose)
    with TestClient(create_app(settings)) as client, pytest.raises(AssertionError):
        check_products_matrix(client, keys, world, products, stored, settings.k_anonymity)
    monkeypatch.undo()
    with TestClient(create_app(settings)) as client:
        check_products_matrix(client, keys, world, products, stored, settings.k_anonymity)


def test_overlap_product_reads_are_audited(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products, engine: Engine
) -> None:
    key = keys[("prosecutor", "COL")]
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_log")).scalar_one()
    x, y = _tile_of(-72.4, 7.6, 7)
    for cid, some in (("convergence-zones", min(products.zones)), ("joint-operations", min(products.joint)),
                      ("joint-sectors", min(products.sectors))):
        assert client.get(f"/collections/{cid}/items", headers=bearer(key)).status_code == 200
        client.get(f"/collections/{cid}/items/{some}", headers=bearer(key))
        assert client.get(f"/collections/{cid}/tiles/WebMercatorQuad/7/{x}/{y}",
                          headers=bearer(key)).status_code == 200
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT collection, action FROM audit_log WHERE seq > :s"),
                            {"s": before}).all()
    products_read = ("convergence-zones", "joint-operations", "joint-sectors")
    assert {(r.collection, r.action) for r in rows} >= {
        (cid, action) for cid in products_read for action in ("items", "item", "tile")}
