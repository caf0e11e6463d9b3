"""Alert detection against the real PostGIS: fences, filters, privacy, dedupe, run triggers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import Scope
from geodata.errors import InputError
from geodata.ingest import ingest_features
from geodata.settings import Settings
from routes.alerts import (
    Subscription,
    backfill_event_alerts,
    create_subscription,
    on_loaded,
    raise_event_alerts,
    raise_run_alerts,
)

# Tapachula, Mexico (lon, lat, EPSG:4326) and a point 40 km east of it, inside Mexico.
TAPACHULA = (-92.2630, 14.9054)
EAST = (-91.90, 14.95)
BORDER = Scope(role="border_authority", country="MEX", user="tests")


def box(lon: float, lat: float, half_deg: float) -> dict[str, Any]:
    """A square GeoJSON polygon of side 2 x half_deg degrees centred on (lon, lat)."""
    x0, y0, x1, y1 = lon - half_deg, lat - half_deg, lon + half_deg, lat + half_deg
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def subscribe(engine: Engine, fence: dict[str, Any], *, scope: Scope = BORDER, **kw: Any) -> int:
    sub = Subscription(name=f"test {uuid.uuid4().hex[:6]}", triggers=kw.pop("triggers", ("event_in_fence",)),
                       fence=fence, **kw)
    return create_subscription(engine, sub, scope=scope, owner="tests", secret="whsec_dGVzdA==")


def load(engine: Engine, settings: Settings, points: list[tuple[float, float]], *, owner: str = "MEX",
         kind: str = "incident", dead: int | None = None) -> int:
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": list(p)},
                 "properties": {"date": "2024-05-02", "crime_type": "tráfico de migrantes",
                                **({"dead": dead} if dead is not None else {})}} for p in points]
    report = ingest_features(engine, {"type": "FeatureCollection", "features": features}, settings=settings,
                             name="test", kind=kind, owner_country=owner, source=uuid.uuid4().hex,
                             on_loaded=on_loaded)
    assert report.accepted == len(points), report.errors
    assert report.batch_id is not None
    return report.batch_id


def alerts_of(engine: Engine, sub_id: int) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(
            "SELECT a.trigger, a.object_key, a.payload, (SELECT count(*) FROM deliveries d "
            "WHERE d.alert_id = a.id) AS queued FROM alerts a WHERE a.subscription_id = :s ORDER BY a.id"),
            {"s": sub_id}).mappings()]


def test_event_in_two_fences_gives_two_alerts_and_outside_none(engine: Engine, settings: Settings) -> None:
    big = subscribe(engine, box(*TAPACHULA, 0.2), webhook_url="http://127.0.0.1:9/hook")
    small = subscribe(engine, box(*TAPACHULA, 0.05))
    far = subscribe(engine, box(-99.13, 19.43, 0.2))  # Mexico City
    batch = load(engine, settings, [TAPACHULA, EAST])
    assert [a["payload"]["event"]["lon"] for a in alerts_of(engine, big)] == [pytest.approx(TAPACHULA[0])]
    assert len(alerts_of(engine, small)) == 1 and alerts_of(engine, far) == []
    # the webhook subscription queued its delivery in the same transaction; the SSE-only one did not
    assert alerts_of(engine, big)[0]["queued"] == 1 and alerts_of(engine, small)[0]["queued"] == 0
    with engine.begin() as conn:  # the same batch evaluated again raises nothing new
        assert raise_event_alerts(conn, batch).alerts == 0


def test_filters_kind_crime_type_and_persons(engine: Engine, settings: Settings) -> None:
    place = (-92.10, 15.05)
    persons = subscribe(engine, box(*place, 0.01), min_persons=3)
    kinds = subscribe(engine, box(*place, 0.01), kinds=("interception",))
    crimes = subscribe(engine, box(*place, 0.01), crime_types=("trafficking",))
    load(engine, settings, [place], dead=2)
    load(engine, settings, [place], dead=5)
    load(engine, settings, [place], kind="interception")
    assert [a["payload"]["event"]["persons"] for a in alerts_of(engine, persons)] == [5]
    assert [a["payload"]["event"]["kind"] for a in alerts_of(engine, kinds)] == ["interception"]
    assert alerts_of(engine, crimes) == []


#: What an alert may say of a record the subscriber may not see in detail, and what it says in detail.
SUMMARY = {"kind", "crime_type", "owner_country", "month", "detail"}
DETAIL = {"id", "lon", "lat", "occurred_at", "persons", "source"}


def test_alerts_about_other_countries_follow_the_apis_role_rule(engine: Engine, settings: Settings) -> None:
    """Mexico's records at a Guatemalan fence: in detail only to Guatemala's prosecutor under a detail
    agreement (as the API shows them), as kind and month to its border authority; Mexico's victim
    identifications raise nothing in Guatemala; Mexico's own border authority gets its incidents and
    interceptions in detail, its victim identifications as kind and month."""
    place = (-92.15, 14.80)
    fence = box(*place, 0.01)
    gtm_border = subscribe(engine, fence, scope=Scope("border_authority", "GTM", user="tests"))
    gtm_prosecutor = subscribe(engine, fence, scope=Scope("prosecutor", "GTM", user="tests"))
    gtm_admin = subscribe(engine, fence, scope=Scope("admin", "GTM", user="tests"))
    # a persons filter matches only records whose persons the subscriber may see
    border_persons = subscribe(engine, fence, scope=Scope("border_authority", "GTM", user="tests"),
                               min_persons=1)
    prosecutor_persons = subscribe(engine, fence, scope=Scope("prosecutor", "GTM", user="tests"),
                                   min_persons=1)
    mex_border = subscribe(engine, fence)
    load(engine, settings, [place], dead=2)  # a Mexican incident, no agreement with Guatemala yet
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sharing_agreements (owner_country, partner_country, level) "
                             "VALUES ('MEX', 'GTM', 'detail') ON CONFLICT DO NOTHING"))
    load(engine, settings, [place], kind="interception", dead=2)
    load(engine, settings, [place], kind="victim_identification", dead=2)

    def events(sub: int) -> list[dict[str, Any]]:
        return [a["payload"]["event"] for a in alerts_of(engine, sub)]

    border = events(gtm_border)  # a border authority reads no partner's record in detail, agreement or not
    assert [e["kind"] for e in border] == ["incident", "interception"]
    for event in border:
        assert set(event) == SUMMARY and event["month"] == "2024-05" and event["owner_country"] == "MEX"
    before, shared = events(gtm_prosecutor)
    assert set(before) == SUMMARY and "withheld" in before["detail"]
    assert shared["kind"] == "interception" and shared["lon"] == pytest.approx(place[0])
    assert shared["persons"] == 2 and set(shared) >= DETAIL
    # another country's victim identification raises nothing, not even for an administrator there
    assert [e["kind"] for e in events(gtm_admin)] == ["incident", "interception"]
    assert all(set(e) >= DETAIL for e in events(gtm_admin))
    assert events(border_persons) == []
    assert [e["kind"] for e in events(prosecutor_persons)] == ["interception"]
    # its own country's incidents and interceptions in detail (issue 7); its own victim
    # identifications only as the API shows them to a border authority: kind and month
    own = events(mex_border)
    assert [e["kind"] for e in own] == ["incident", "interception", "victim_identification"]
    assert all(set(e) >= DETAIL for e in own[:2])
    assert set(own[2]) == SUMMARY and own[2]["month"] == "2024-05"

    # the demo's backfill follows the same rule
    late = subscribe(engine, fence, scope=Scope("border_authority", "GTM", user="tests"))
    raised = backfill_event_alerts(engine, late).alerts
    backfilled = events(late)  # other tests may have stored Mexican records here too
    assert raised == len(backfilled) >= 2
    assert {e["kind"] for e in backfilled} == {"incident", "interception"}
    assert all(set(e) == SUMMARY for e in backfilled)


def test_fence_by_reference_and_bad_fences(engine: Engine) -> None:
    with engine.begin() as conn:
        layer = conn.execute(sa.text(
            "INSERT INTO reference_layers (kind, source, file_name, sha256) VALUES ('crossings', 't', 't', "
            ":sha) RETURNING id"), {"sha": uuid.uuid4().hex}).scalar_one()
        crossing = conn.execute(sa.text(
            "INSERT INTO crossings (layer_id, name, official, country_a, country_b, geom) VALUES "
            "(:l, 'Ciudad Hidalgo', true, 'MEX', 'GTM', "
            "ST_SetSRID(ST_MakePoint(-92.15, 14.68), 4326)) RETURNING id"), {"l": layer}).scalar_one()
    sub = create_subscription(engine, Subscription(name="paso", triggers=("event_in_fence",),
                                                   crossing_id=crossing, radius_m=5_000),
                              scope=BORDER, owner="tests", secret="whsec_dGVzdA==")
    with engine.connect() as conn:
        area_km2 = conn.execute(sa.text("SELECT ST_Area(CAST(fence AS geography)) / 1e6 FROM subscriptions "
                                        "WHERE id = :id"), {"id": sub}).scalar_one()
    assert area_km2 == pytest.approx(3.14159 * 25, rel=0.02)  # a 5 km disc
    with pytest.raises(InputError, match="crossing_id"):
        create_subscription(engine, Subscription(name="x", triggers=("event_in_fence",), crossing_id=10**12,
                                                 radius_m=100), scope=BORDER, owner="t", secret="s")
    with pytest.raises(InputError, match="fence"):
        subscribe(engine, {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]})
    with pytest.raises(InputError, match="triggers"):
        subscribe(engine, box(0, 0, 1), triggers=("route_vanished",))


def _run(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text(
        "INSERT INTO analysis_runs (status, code_version, counts) VALUES ('succeeded', 'test', "
        "CAST('{\"crime_types\": [\"smuggling\"]}' AS jsonb)) RETURNING id")).scalar_one())


def _route(conn: sa.Connection, run_id: int, key: str, category: str, seen_before: bool) -> None:
    conn.execute(sa.text(
        "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, length_m, event_count, "
        "trend, countries, crossing_ids, segment_keys, geom) VALUES (:run, :key, :seen, ARRAY['smuggling'], "
        ":cat, 30000, 12, 'up', ARRAY['MEX'], ARRAY[]::bigint[], ARRAY[]::text[], "
        "ST_GeomFromText('MULTILINESTRING((-92.40 14.60, -92.30 14.90, -92.20 15.20))', 4326))"),
        {"run": run_id, "key": key, "seen": seen_before, "cat": category})


def test_run_triggers_fire_once_per_route_and_category_change(engine: Engine) -> None:
    sub = subscribe(engine, box(-92.30, 14.90, 0.1),
                    triggers=("route_new", "route_intensifying", "route_convergence"))
    key = f"route-{uuid.uuid4().hex[:8]}"
    fired = []
    for category, seen in (("intensifying_hot", False), ("intensifying_hot", True), ("persistent_hot", True),
                           ("intensifying_hot", True)):
        with engine.begin() as conn:
            run = _run(conn)
            _route(conn, run, key, category, seen)
        before = len(alerts_of(engine, sub))
        raise_run_alerts(engine, [run], k=11)
        # other tests' subscriptions may cover this place too: count this subscription's alerts
        fired.append(len(alerts_of(engine, sub)) - before)
    assert fired == [2, 0, 0, 1]  # new + intensifying, nothing, nothing, intensifying again
    triggers = [a["trigger"] for a in alerts_of(engine, sub)]
    assert triggers == ["route_new", "route_intensifying", "route_intensifying"]
    # a drug corridor 300 m from the route, inside the fence: one convergence alert, once
    with engine.begin() as conn:
        layer = conn.execute(sa.text(
            "INSERT INTO reference_layers (kind, source, file_name, sha256) VALUES ('corridors', 't', 't', "
            ":sha) RETURNING id"), {"sha": uuid.uuid4().hex}).scalar_one()
        conn.execute(sa.text(
            "INSERT INTO corridors (layer_id, kind, owner_country, name, source_row, geom) VALUES "
            "(:l, 'drug', 'MEX', 'costera', 1, "
            "ST_GeomFromText('LINESTRING(-92.297 14.85, -92.297 14.95)', 4326))"), {"l": layer})
        run = _run(conn)
        _route(conn, run, key, "intensifying_hot", True)
    before = len(alerts_of(engine, sub))
    raise_run_alerts(engine, [run], k=11)
    assert len(alerts_of(engine, sub)) == before + 1
    raise_run_alerts(engine, [run], k=11)
    assert len(alerts_of(engine, sub)) == before + 1
    convergence = alerts_of(engine, sub)[-1]["payload"]
    assert convergence["trigger"] == "route_convergence" and convergence["corridor"]["name"] == "costera"
    assert convergence["route"]["route_key"] == key


def test_convergence_alerts_name_a_partners_corridor_only_as_the_api_shows_it(engine: Engine) -> None:
    """Guatemala shares in detail with Mexico: a route converging with Guatemala's fuel corridor is
    told to Mexico's prosecutor, who reads that corridor in the API, and not to its border authority,
    who reads no corridor there; a Mexican corridor is still told to the Mexican border authority."""
    triggers = ("route_convergence",)
    fence = box(-92.30, 14.90, 0.1)
    border = subscribe(engine, fence, triggers=triggers)
    prosecutor = subscribe(engine, fence, scope=Scope("prosecutor", "MEX", user="tests"), triggers=triggers)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sharing_agreements (owner_country, partner_country, level) "
                             "VALUES ('GTM', 'MEX', 'detail') ON CONFLICT DO NOTHING"))
        layer = conn.execute(sa.text(
            "INSERT INTO reference_layers (kind, source, file_name, sha256) VALUES ('corridors', 't', 't', "
            ":sha) RETURNING id"), {"sha": uuid.uuid4().hex}).scalar_one()
        for owner, name, lon in (("GTM", "gasolina", -92.303), ("MEX", "mezcal", -92.306)):
            conn.execute(sa.text(
                "INSERT INTO corridors (layer_id, kind, owner_country, name, source_row, geom) VALUES "
                "(:l, 'fuel', :owner, :name, 1, ST_SetSRID(ST_MakeLine(ST_MakePoint(:lon, 14.85), "
                "ST_MakePoint(:lon, 14.95)), 4326))"), {"l": layer, "owner": owner, "name": name, "lon": lon})
        run = _run(conn)
        _route(conn, run, f"route-{uuid.uuid4().hex[:8]}", "persistent_hot", True)
    raise_run_alerts(engine, [run], k=11)

    def corridors(sub: int) -> set[str]:  # other tests' corridors may lie along the same route
        return {a["payload"]["corridor"]["name"] for a in alerts_of(engine, sub)} & {"gasolina", "mezcal"}

    assert corridors(prosecutor) == {"gasolina", "mezcal"}
    assert corridors(border) == {"mezcal"}


def test_alerts_commit_or_roll_back_with_their_events(engine: Engine, settings: Settings) -> None:
    place = (-92.05, 14.95)
    sub = subscribe(engine, box(*place, 0.01), webhook_url="http://127.0.0.1:9/hook")

    def then_fail(conn: sa.Connection, batch_id: int) -> None:
        on_loaded(conn, batch_id)
        assert len(conn.execute(sa.text("SELECT 1 FROM alerts WHERE subscription_id = :s"),
                                {"s": sub}).all()) == 1  # raised inside the transaction...
        raise RuntimeError("the batch fails after its alerts were raised")

    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": list(place)},
         "properties": {"date": "2024-05-02"}}]}
    with pytest.raises(RuntimeError):
        ingest_features(engine, collection, settings=settings, name="t", kind="incident", owner_country="MEX",
                        source=uuid.uuid4().hex, on_loaded=then_fail)
    assert alerts_of(engine, sub) == []  # ...and gone with the events: no alert without its record
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM deliveries WHERE subscription_id = :s"),
                            {"s": sub}).scalar_one() == 0


# Desaguadero, on the Peru-Bolivia border (lon, lat, EPSG:4326): Peru's victim identifications there.
DESAGUADERO = (-69.04, -16.56)


def _victim_route(engine: Engine, members: list[int], monthly: str = '{"2024-05-01": 3, "2024-06-01": 2}',
                  ) -> tuple[int, int]:
    """A run and a new route through Desaguadero holding ``members`` and the ``monthly`` counts (JSON)."""
    with engine.begin() as conn:
        run = _run(conn)
        route = int(conn.execute(sa.text(
            "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, length_m, "
            "event_count, trend, tau, p_value, countries, crossing_ids, segment_keys, first_event, "
            "last_event, monthly_counts, geom) VALUES (:run, :key, false, ARRAY['smuggling'], 'new_hot', "
            "20000, :n, 'down', -1.0, 0.3, ARRAY['PER'], ARRAY[]::bigint[], ARRAY[]::text[], "
            "'2024-05-02T00:00:00Z', '2024-06-20T00:00:00Z', CAST(:monthly AS jsonb), "
            "ST_GeomFromText('MULTILINESTRING((-69.10 -16.50, -69.04 -16.56, -68.98 -16.62))', 4326)) "
            "RETURNING id"),
            {"run": run, "key": f"victims-{uuid.uuid4().hex[:8]}",
             "monthly": monthly, "n": sum(json.loads(monthly).values())}).scalar_one())
        for event_id in members:
            conn.execute(sa.text("INSERT INTO route_events (route_id, event_id) VALUES (:r, :e)"),
                         {"r": route, "e": event_id})
    return run, route


def test_route_alerts_carry_figures_only_as_the_api_shows_them(engine: Engine, settings: Settings) -> None:
    """Bolivia's subscribers get the route of Peru's five victim identifications without its counts,
    dates or trend, and no alert about the records themselves; Peru's prosecutor gets everything."""
    with engine.begin() as conn:  # Peru shares records in detail with Bolivia: never victims' records
        conn.execute(sa.text("INSERT INTO sharing_agreements (owner_country, partner_country, level) "
                             "VALUES ('PER', 'BOL', 'detail') ON CONFLICT DO NOTHING"))
    fence = box(*DESAGUADERO, 0.05)
    both = ("event_in_fence", "route_new")
    bolivia = subscribe(engine, fence, scope=Scope("prosecutor", "BOL", user="tests"), triggers=both)
    bolivia_border = subscribe(engine, fence, scope=Scope("border_authority", "BOL", user="tests"),
                               triggers=both)
    peru = subscribe(engine, fence, scope=Scope("prosecutor", "PER", user="tests"), triggers=both)
    # a border authority reads no record in detail through the API, its own country's neither
    peru_border = subscribe(engine, fence, scope=Scope("border_authority", "PER", user="tests"),
                            triggers=("route_new",))
    batch = load(engine, settings, [(DESAGUADERO[0] + i * 0.001, DESAGUADERO[1]) for i in range(5)],
                 owner="PER", kind="victim_identification")
    with engine.connect() as conn:
        members = list(conn.execute(sa.text("SELECT id FROM events WHERE batch_id = :b ORDER BY id"),
                                    {"b": batch}).scalars())
    run, route = _victim_route(engine, members)
    raise_run_alerts(engine, [run], k=11)

    for sub in (bolivia, bolivia_border):
        alerts = alerts_of(engine, sub)
        # Peru's victims raise no event alert in Bolivia (a small fence would locate them)...
        assert [a["trigger"] for a in alerts] == ["route_new"]
        shown = alerts[-1]["payload"]["route"]  # ...but count in the route, under the API's rule
        assert shown["id"] == route
        assert shown["event_count"] is None and shown["counts_suppressed"] is True
        assert shown["first_event"] is None and shown["last_event"] is None  # no month holds k records
        assert shown["trend"] is None and shown["trend_suppressed"] is True
        assert "tau" not in shown and "p_value" not in shown
    withheld = alerts_of(engine, peru_border)[-1]["payload"]["route"]
    assert withheld["event_count"] is None and withheld["trend"] is None

    full = alerts_of(engine, peru)
    assert [e["payload"]["event"]["lon"] for e in full[:5]] == [
        pytest.approx(DESAGUADERO[0] + i * 0.001) for i in range(5)]
    owner = full[-1]["payload"]["route"]
    assert owner["event_count"] == 5 and owner["counts_suppressed"] is False
    assert owner["trend"] == "down" and owner["trend_suppressed"] is False
    assert owner["first_event"].startswith("2024-05-02") and owner["last_event"].startswith("2024-06-20")


def test_route_alert_dates_are_coarsened_to_slices_of_k_records(engine: Engine, settings: Settings) -> None:
    """A route of 14 records, Peru's five victims among them, 12 in May and 2 in June: Bolivia's
    prosecutor is told May as both first and last month, and neither the count nor the trend."""
    place = (DESAGUADERO[0] + 0.2, DESAGUADERO[1])
    sub = subscribe(engine, box(*DESAGUADERO, 0.05), scope=Scope("prosecutor", "BOL", user="tests"),
                    triggers=("route_new",))
    batch = load(engine, settings, [(place[0], place[1] + i * 0.001) for i in range(5)], owner="PER",
                 kind="victim_identification")
    with engine.connect() as conn:
        members = list(conn.execute(sa.text("SELECT id FROM events WHERE batch_id = :b"),
                                    {"b": batch}).scalars())
    run, _ = _victim_route(engine, members, monthly='{"2024-05-01": 12, "2024-06-01": 2}')
    raise_run_alerts(engine, [run], k=11)
    (alert,) = alerts_of(engine, sub)
    shown = alert["payload"]["route"]
    assert shown["first_event"].startswith("2024-05-01T00:00:00")
    assert shown["last_event"] == shown["first_event"]
    # 14 minus the 12 shown would give back the 2 withheld
    assert shown["event_count"] is None and shown["counts_suppressed"] is True
    assert shown["trend"] is None and shown["trend_suppressed"] is True
