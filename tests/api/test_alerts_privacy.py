"""Alert payloads under the API's privacy rule, end to end: webhook body, delivery history, replay, stream.

Paraguay's steward loads five victim identifications at Ciudad del Este and a run stores a route
made of them (fewer than k = 11 records). Paraguay shares records in detail with Argentina, which
never covers victims' records. Argentina's prosecutor and border authority, subscribed to the
place, get no alert about the victims' records (a small fence would locate them) and the route
without its counts, dates or trend, exactly as ``/collections/routes/items/{id}`` shows that
route to them; Paraguay's prosecutor gets the records and the route in full, the same as the API
shows it. A Paraguayan interception there reaches each subscriber as ``/collections/events/items/{id}``
shows it: in detail to Argentina's prosecutor (the agreement), as kind and month to its border
authority (whose role reads no record). Each payload is what the webhook, the delivery history, a
replay and the stream carry; an Argentine colleague of another role does not read the prosecutor's
payloads.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.auth import create_key
from geodata.db import Scope, scoped
from geodata.settings import Settings
from routes.alerts import raise_run_alerts, read_alerts
from tests.api import test_alerts as delivery_tests
from tests.api.test_alerts import Receiver, auth, box, record, wait_for

# the delivery tests' fixtures, instantiated again for this module
alert_settings = delivery_tests.alert_settings
api = delivery_tests.api
worker = delivery_tests.worker

# Ciudad del Este, Paraguay (lon, lat, EPSG:4326), the five victims' places 100 m apart, and an
# interception 1 km from them.
CIUDAD_DEL_ESTE = (-54.61, -25.51)
VICTIMS = [(CIUDAD_DEL_ESTE[0] + i * 0.001, CIUDAD_DEL_ESTE[1]) for i in range(5)]
INTERCEPTION = (CIUDAD_DEL_ESTE[0], CIUDAD_DEL_ESTE[1] + 0.01)
#: The route's figures as stored (what the pipeline wrote) and as its owner country reads them.
STORED = {"event_count": 5, "trend": "down", "first_event": "2024-07-03", "last_event": "2024-08-20"}
FIGURES = ("event_count", "counts_suppressed", "first_event", "last_event", "trend", "trend_suppressed")


@pytest.fixture(scope="module")
def keys(engine: Engine) -> dict[str, str]:
    """Keys of Paraguay's steward and prosecutor, Argentina's prosecutor and border authority, after
    Paraguay's detail agreement with Argentina (keys read their partners when first used)."""
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sharing_agreements (owner_country, partner_country, level) "
                             "VALUES ('PRY', 'ARG', 'detail') ON CONFLICT DO NOTHING"))
    return {"steward": create_key(engine, "steward", "PRY"),
            "owner": create_key(engine, "prosecutor", "PRY"),
            "partner": create_key(engine, "prosecutor", "ARG"),
            "border": create_key(engine, "border_authority", "ARG")}


def _subscribe(api: TestClient, key: str, url: str) -> int:
    answer = api.post("/subscriptions", headers=auth(key), json={
        "name": "Puente de la Amistad", "fence": box(*CIUDAD_DEL_ESTE, 0.05),
        "triggers": ["event_in_fence", "route_new"], "webhook_url": url})
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


def _store_route(engine: Engine) -> tuple[int, int]:
    """A succeeded run and a new route through Ciudad del Este made of the five victims' records."""
    with engine.begin() as conn:
        run = int(conn.execute(sa.text(
            "INSERT INTO analysis_runs (status, code_version, counts) VALUES ('succeeded', 'test', "
            "CAST('{\"crime_types\": [\"trafficking\"]}' AS jsonb)) RETURNING id")).scalar_one())
        route = int(conn.execute(sa.text(
            "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, length_m, "
            "event_count, trend, tau, p_value, countries, crossing_ids, segment_keys, first_event, "
            "last_event, monthly_counts, geom) VALUES (:run, :key, false, ARRAY['trafficking'], "
            "'new_hot', 15000, :n, :trend, -1.0, 0.3, ARRAY['PRY'], ARRAY[]::bigint[], ARRAY[]::text[], "
            "CAST(:first AS timestamptz), CAST(:last AS timestamptz), "
            "CAST('{\"2024-07-01\": 3, \"2024-08-01\": 2}' AS jsonb), "
            "ST_GeomFromText('MULTILINESTRING((-54.65 -25.50, -54.61 -25.51, -54.57 -25.52))', 4326)) "
            "RETURNING id"),
            {"run": run, "key": f"pry-victims-{uuid.uuid4().hex[:8]}", "n": STORED["event_count"],
             "trend": STORED["trend"], "first": STORED["first_event"] + "T00:00:00Z",
             "last": STORED["last_event"] + "T00:00:00Z"}).scalar_one())
        conn.execute(sa.text(
            "INSERT INTO route_events (route_id, event_id) SELECT :r, e.id FROM events e "
            "WHERE e.owner_country = 'PRY' AND e.kind = 'victim_identification'"), {"r": route})
    return run, route


def _bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in receiver.received]


def _as_the_api_shows(api: TestClient, key: str, route_id: int) -> dict[str, Any]:
    answer = api.get(f"/collections/routes/items/{route_id}", headers=auth(key), params={"f": "json"})
    assert answer.status_code == 200, answer.text
    props: dict[str, Any] = answer.json()["properties"]
    return {name: props[name] for name in FIGURES}


def _figures(route: dict[str, Any]) -> dict[str, Any]:
    return {name: route[name] for name in FIGURES}


def _same_instants(shown: dict[str, Any], api_shows: dict[str, Any]) -> None:
    """The alert's figures equal the API's (dates compared as instants, both ISO 8601)."""
    for name in FIGURES:
        a, b = shown[name], api_shows[name]
        if name.endswith("_event") and a is not None and b is not None:
            assert datetime.fromisoformat(a) == datetime.fromisoformat(b), name
        else:
            assert a == b, name


def _event_as_the_api_shows(api: TestClient, key: str, event_id: int) -> int:
    """The status ``/collections/events/items/{id}`` answers the caller of ``key`` for that record."""
    answer = api.get(f"/collections/events/items/{event_id}", headers=auth(key), params={"f": "json"})
    return answer.status_code


def test_alerts_about_another_countrys_records_carry_what_the_api_shows(
        api: TestClient, keys: dict[str, str], engine: Engine, alert_settings: Settings,
        worker: None) -> None:
    receivers = {who: Receiver() for who in ("owner", "partner", "border")}
    subs = {who: _subscribe(api, keys[who], r.url) for who, r in receivers.items()}
    record(api, keys["steward"], VICTIMS, kind="victim_identification", date="2024-07-03",
           crime_type="trata de personas")
    record(api, keys["steward"], [INTERCEPTION], kind="interception", date="2024-07-05")
    with engine.connect() as conn:
        interception = int(conn.execute(sa.text(
            "SELECT id FROM events WHERE owner_country = 'PRY' AND kind = 'interception'")).scalar_one())
    run, route = _store_route(engine)
    raise_run_alerts(engine, [run], k=alert_settings.k_anonymity)
    expected = {"owner": 7, "partner": 2, "border": 2}  # Paraguay's 5 victims reach only Paraguay
    for who, receiver in receivers.items():
        wait_for(lambda r=receiver, n=expected[who]: len(r.received) >= n, what=f"the {who}'s webhooks")

    for who in ("partner", "border"):
        bodies = _bodies(receivers[who])
        events = [b["data"]["event"] for b in bodies if b["type"] == "alert.event_in_fence"]
        assert [e["kind"] for e in events] == ["interception"]  # no victims' record, not even its month
        (event,) = events
        seen = _event_as_the_api_shows(api, keys[who], interception)
        if who == "partner":  # the prosecutor reads it in detail through the API, and in its alert
            assert seen == 200 and event["id"] == interception
            assert event["lon"] == pytest.approx(INTERCEPTION[0])
        else:  # the border authority reads no record through the API: kind and month in its alert
            assert seen == 403
            assert event["month"] == "2024-07" and event["owner_country"] == "PRY"
            assert not {"id", "lon", "lat", "occurred_at", "persons", "source"} & set(event)
        (alert,) = [b for b in bodies if b["type"] == "alert.route_new"]
        shown = alert["data"]["route"]
        assert shown["id"] == route
        assert _figures(shown) == {"event_count": None, "counts_suppressed": True, "first_event": None,
                                   "last_event": None, "trend": None, "trend_suppressed": True}
        _same_instants(shown, _as_the_api_shows(api, keys[who], route))
        # nor does the delivery history hold an alert about them
        history = api.get(f"/subscriptions/{subs[who]}/deliveries", headers=auth(keys[who])).json()
        assert sorted(d["trigger"] for d in history["deliveries"]) == ["event_in_fence", "route_new"]

    owner_bodies = _bodies(receivers["owner"])
    points = sorted(b["data"]["event"]["lon"] for b in owner_bodies
                    if b["type"] == "alert.event_in_fence" and b["data"]["event"]["kind"] != "interception")
    assert points == [pytest.approx(p[0]) for p in VICTIMS]
    (owner_alert,) = [b for b in owner_bodies if b["type"] == "alert.route_new"]
    full = owner_alert["data"]["route"]
    assert full["event_count"] == 5 and full["trend"] == "down"
    assert full["counts_suppressed"] is False and full["trend_suppressed"] is False
    assert full["first_event"].startswith("2024-07-03") and full["last_event"].startswith("2024-08-20")
    _same_instants(full, _as_the_api_shows(api, keys["owner"], route))

    # the delivery history and a replay carry the payload the webhook carried, to the owner
    history = api.get(f"/subscriptions/{subs['partner']}/deliveries", headers=auth(keys["partner"])).json()
    delivered = next(d for d in history["deliveries"] if d["trigger"] == "route_new")
    assert delivered["payload_withheld"] is False
    assert _figures(delivered["payload"]["route"]) == _figures(shown)
    replayed = api.post(f"/deliveries/{delivered['id']}/replay", headers=auth(keys["partner"]))
    assert replayed.status_code == 202
    wait_for(lambda: len(receivers["partner"].received) == 3, what="the replay")
    assert _bodies(receivers["partner"])[-1]["data"] == delivered["payload"]
    # an Argentine border authority reads no payload of the prosecutor's subscription
    other = api.get(f"/subscriptions/{subs['partner']}/deliveries", headers=auth(keys["border"])).json()
    assert other["deliveries"]
    assert all(d["payload"] is None and d["payload_withheld"] for d in other["deliveries"])

    # the stream reads the same payloads, each reader only its role's subscriptions
    for who, role in (("partner", "prosecutor"), ("border", "border_authority")):
        with scoped(engine, Scope(role=role, country="ARG", partners={"PRY": "detail"})) as conn:
            streamed = read_alerts(conn, 0, 1000, role=role)
        assert {a["subscription_id"] for a in streamed} == {subs[who]}
        assert sorted(a["trigger"] for a in streamed) == ["event_in_fence", "route_new"]
        (route_alert,) = [a for a in streamed if a["trigger"] == "route_new"]
        assert _figures(route_alert["data"]["route"]) == _figures(shown)
    for receiver in receivers.values():
        receiver.stop()
