"""Alert delivery end to end: the API, the worker and real HTTP receivers on 127.0.0.1.

Each receiver is a ``ThreadingHTTPServer`` started by the test; the worker runs in a thread (or,
to be killed, as a ``rutas alerts worker`` process). Tests wait on conditions, never on sleeps.
"""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api import webhooks
from api.app import create_app
from api.auth import create_key
from api.delivery import Worker, backoff_s, retry_after_s, start_worker
from geodata.errors import InputError
from geodata.settings import CHECKOUT_DIR, Settings

TAPACHULA = (-92.2630, 14.9054)


def box(lon: float, lat: float, half_deg: float) -> dict[str, Any]:
    """A square GeoJSON polygon (EPSG:4326) of side 2 x half_deg degrees around (lon, lat)."""
    x0, y0, x1, y1 = lon - half_deg, lat - half_deg, lon + half_deg, lat + half_deg
    return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # concurrent posts would otherwise wait for SYN retries (backlog 5)


class Receiver:
    """A webhook receiver on 127.0.0.1: records each request; ``answer`` picks the status code."""

    def __init__(self, answer: Callable[[int], tuple[int, dict[str, str]]] | None = None,
                 host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answer = answer or (lambda n: (204, {}))
        self.hold = threading.Event()
        self.hold.set()
        self.host = host
        self.port = port
        self.tls = tls
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                owner.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                owner.hold.wait(30)
                status, extra = owner.answer(len(owner.received))
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server((self.host, self.port), Handler)
        self.port = self.server.server_address[1]
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def ids(self) -> list[str]:
        return [h["webhook-id"] for h, _ in self.received]


def quick_retries(settings: Settings, allowed_hosts: str = "127.0.0.1") -> Settings:
    """``settings`` with ``allowed_hosts`` allowed and retries in fractions of a second."""
    return settings.model_copy(update={"webhook_allowed_hosts": allowed_hosts, "webhook_retry_base_s": 0.1,
                                       "webhook_retry_max_s": 0.3, "alerts_poll_s": 0.05,
                                       "webhook_timeout_s": 5.0})


def alert_keys(engine: Engine) -> dict[str, str]:
    """API keys: border authorities of MEX (two) and GTM, an administrator, a steward, an analyst."""
    return {"border": create_key(engine, "border_authority", "MEX"),
            "colleague": create_key(engine, "border_authority", "MEX"),
            "admin": create_key(engine, "admin"),
            "gtm": create_key(engine, "border_authority", "GTM"),
            "steward": create_key(engine, "steward", "MEX"),
            "analyst": create_key(engine, "analyst")}


@pytest.fixture(scope="module")
def alert_settings(settings: Settings) -> Settings:
    """The test run's settings with 127.0.0.1 allowed and retries in fractions of a second."""
    return quick_retries(settings)


@pytest.fixture(scope="module")
def api(alert_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(alert_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def keys(engine: Engine) -> dict[str, str]:
    return alert_keys(engine)


@pytest.fixture()
def worker(engine: Engine, alert_settings: Settings) -> Iterator[None]:
    thread, stop = start_worker(engine, alert_settings)
    yield
    stop.set()
    thread.join(10)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def subscribe(api: TestClient, key: str, url: str, center: tuple[float, float]) -> dict[str, Any]:
    answer = api.post("/subscriptions", headers=auth(key), json={
        "name": "Suchiate", "fence": box(*center, 0.01), "triggers": ["event_in_fence"], "webhook_url": url})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def record(api: TestClient, key: str, points: list[tuple[float, float]], *, kind: str = "interception",
           date: str = "2024-06-01", crime_type: str = "tráfico de migrantes") -> None:
    """Load ``points`` (lon, lat) as records of ``kind`` through the API with ``key``."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": list(p)},
                 "properties": {"date": date, "crime_type": crime_type}} for p in points]
    answer = api.post("/collections/events/items", headers=auth(key),
                      params={"kind": kind, "source": uuid.uuid4().hex},
                      json={"type": "FeatureCollection", "features": features})
    assert answer.status_code == 201 and answer.json()["accepted"] == len(points), answer.text


def statuses(engine: Engine, sub_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT status FROM deliveries WHERE subscription_id = :s ORDER BY id"),
                                 {"s": sub_id}).scalars())


def test_signed_delivery_history_and_replay(api: TestClient, keys: dict[str, str], engine: Engine,
                                            worker: None) -> None:
    receiver = Receiver()
    place = (-92.20, 14.75)
    created = subscribe(api, keys["border"], receiver.url, place)
    assert created["secret"].startswith("whsec_")
    record(api, keys["steward"], [place, (-92.0, 15.2)])  # one inside, one outside the fence
    wait_for(lambda: len(receiver.received) == 1, what="the signed alert")
    headers, body = receiver.received[0]
    assert webhooks.verify(created["secret"], headers, body)
    assert not webhooks.verify(webhooks.new_secret(), headers, body)
    assert not webhooks.verify(created["secret"], headers, body.replace(b"interception", b"incident"))
    alert = json.loads(body)
    assert alert["type"] == "alert.event_in_fence"
    assert alert["data"]["event"]["lon"] == pytest.approx(place[0])
    wait_for(lambda: statuses(engine, created["id"]) == ["delivered"], what="the delivery recorded")
    history = api.get(f"/subscriptions/{created['id']}/deliveries", headers=auth(keys["border"])).json()
    (delivery,) = history["deliveries"]
    assert delivery["webhook_id"] == headers["webhook-id"] and delivery["attempts"][0]["status_code"] == 204
    # another country's border authority neither lists it nor reads its history nor replays it
    listed = api.get("/subscriptions", headers=auth(keys["gtm"])).json()["subscriptions"]
    assert created["id"] not in [s["id"] for s in listed]
    assert api.get(f"/subscriptions/{created['id']}/deliveries", headers=auth(keys["gtm"])).status_code == 404
    assert api.post(f"/deliveries/{delivery['id']}/replay", headers=auth(keys["gtm"])).status_code == 404
    mine = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    assert "secret" not in next(s for s in mine if s["id"] == created["id"])
    replayed = api.post(f"/deliveries/{delivery['id']}/replay", headers=auth(keys["border"]))
    assert replayed.status_code == 202
    wait_for(lambda: len(receiver.received) == 2, what="the replay")
    assert receiver.ids() == [headers["webhook-id"]] * 2
    receiver.stop()


def test_receiver_down_then_back_gets_every_alert_once(api: TestClient, keys: dict[str, str], engine: Engine,
                                                       worker: None) -> None:
    receiver = Receiver()
    receiver.stop()  # down: connections are refused
    place = (-92.25, 14.70)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place, (place[0] + 0.001, place[1]), (place[0], place[1] + 0.001)])

    def failed_twice() -> bool:
        with engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) = 3 AND min(tries) >= 2 FROM deliveries WHERE subscription_id = :s"),
                {"s": created["id"]}).scalar())

    wait_for(failed_twice, what="retries while the receiver is down")
    receiver.start()  # back, on the same port
    wait_for(lambda: statuses(engine, created["id"]) == ["delivered"] * 3, what="all delivered")
    assert len(receiver.ids()) == 3 and len(set(receiver.ids())) == 3
    receiver.stop()


def test_410_disables_the_endpoint(api: TestClient, keys: dict[str, str], engine: Engine,
                                   worker: None) -> None:
    receiver = Receiver(lambda n: (410, {}))
    place = (-92.30, 14.72)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place])
    wait_for(lambda: statuses(engine, created["id"]) == ["disabled"], what="the endpoint disabled")
    listed = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    assert next(s for s in listed if s["id"] == created["id"])["status"] == "disabled"
    record(api, keys["steward"], [place])  # no alert, no delivery any more
    assert statuses(engine, created["id"]) == ["disabled"] and len(receiver.received) == 1
    receiver.stop()


def test_retry_after_and_dead_letter(engine: Engine, alert_settings: Settings, api: TestClient,
                                     keys: dict[str, str]) -> None:
    receiver = Receiver(lambda n: (503, {"Retry-After": "30"}))
    place = (-92.35, 14.74)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place])
    worker = Worker(engine, alert_settings, seed=1)
    try:
        wait_for(lambda: worker.deliver_due() > 0 or len(receiver.received) > 0, what="one try")
        with engine.connect() as conn:
            wait_s, tries = conn.execute(sa.text(
                "SELECT extract(epoch FROM next_attempt_at - now()), tries FROM deliveries "
                "WHERE subscription_id = :s"), {"s": created["id"]}).one()
        assert tries == 1 and 25 < wait_s <= 30  # the receiver's Retry-After, not the 0.1 s backoff
        # past the retry window the next failure dead-letters the delivery
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE deliveries SET next_attempt_at = now() WHERE subscription_id = :s"),
                         {"s": created["id"]})
        short = Worker(engine, alert_settings.model_copy(update={"webhook_retry_window_s": 1.0}), seed=1)

        def dead() -> bool:
            short.deliver_due()
            return statuses(engine, created["id"]) == ["dead"]

        wait_for(dead, what="the dead letter")
        short.close()
    finally:
        worker.close()
        receiver.stop()
    assert len(receiver.received) == 2
    # a dead letter disables the endpoint, as a 410 does, until its owner enables it again
    listed = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    mine = next(s for s in listed if s["id"] == created["id"])
    assert mine["status"] == "disabled" and "dead letter" in mine["disabled_reason"]


def test_worker_killed_mid_delivery_loses_nothing(api: TestClient, keys: dict[str, str], engine: Engine,
                                                  alert_settings: Settings) -> None:
    receiver = Receiver()
    receiver.hold.clear()  # the first request is held: the worker is killed while it waits
    place = (-92.18, 14.78)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place])
    env = {**os.environ, "RUTAS_DATABASE_URL": alert_settings.database_url or "",
           "RUTAS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "RUTAS_ALERTS_POLL_S": "0.05"}
    process = subprocess.Popen([sys.executable, "-m", "scripts.cli", "alerts", "worker"], env=env,
                               cwd=CHECKOUT_DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(receiver.received) == 1, timeout_s=60, what="the worker process's post")
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    receiver.hold.set()
    assert statuses(engine, created["id"]) == ["pending"]  # killed before it could record anything
    thread, stop = start_worker(engine, alert_settings)
    try:
        wait_for(lambda: statuses(engine, created["id"]) == ["delivered"], what="redelivery after restart")
    finally:
        stop.set()
        thread.join(10)
    assert receiver.ids() == [receiver.ids()[0]] * 2  # sent again under the same webhook-id
    receiver.stop()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/hook", "http://[::1]:8080/hook",
    "http://0.0.0.0/", "http://[::ffff:169.254.169.254]/", "http://192.168.1.1/", "ftp://example.org/x",
    "http://user:pw@127.0.0.1/",
])
def test_internal_webhook_targets_are_refused(api: TestClient, keys: dict[str, str], url: str) -> None:
    answer = api.post("/subscriptions", headers=auth(keys["border"]), json={
        "name": "x", "fence": box(*TAPACHULA, 0.01), "triggers": ["event_in_fence"], "webhook_url": url})
    assert answer.status_code == 400 and "webhook_url" in answer.json()["description"]


def test_allow_list_and_roles(api: TestClient, keys: dict[str, str], settings: Settings) -> None:
    closed = settings.model_copy(update={"webhook_allowed_hosts": ""})
    with pytest.raises(InputError, match=r"internal address 127\.0\.0\.1"):
        webhooks.check_target("http://127.0.0.1:9/", closed)
    allowed = settings.model_copy(update={"webhook_allowed_hosts": "10.0.0.0/8, hooks.internal"})
    assert [str(a) for a in webhooks.check_target("http://10.1.2.3/", allowed).addresses] == ["10.1.2.3"]
    analyst = api.post("/subscriptions", headers=auth(keys["analyst"]), json={
        "name": "x", "fence": box(*TAPACHULA, 0.01), "triggers": ["event_in_fence"]})
    assert analyst.status_code == 403
    assert api.post("/subscriptions", json={"name": "x"}).status_code == 401


def test_backoff_grows_with_jitter_and_retry_after_dates(settings: Settings) -> None:
    rng = random.Random(3)
    delays = [backoff_s(t, settings, rng) for t in range(1, 30)]
    for tries, delay in enumerate(delays[:5], start=1):
        full = settings.webhook_retry_base_s * 2 ** (tries - 1)
        assert 0.5 * full <= delay <= full
    assert max(delays) <= settings.webhook_retry_max_s and len(set(delays)) == len(delays)
    assert retry_after_s("120") == 120.0 and retry_after_s(None) is None
    assert 0 <= (retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") or 0.0) == 0.0


def _stream_until(base: str, key: str, sub_id: int, headers: dict[str, str] | None = None,
                  then: Callable[[], None] | None = None) -> list[str]:
    """The stream's lines up to the first alert of ``sub_id`` (``then`` runs once the stream is open)."""
    lines: list[str] = []
    with httpx.stream("GET", f"{base}/alerts/stream", headers={**auth(key), **(headers or {})},
                      timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        if then is not None:
            then()
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data: ") and json.loads(line[6:])["subscription_id"] == sub_id:
                return lines
    return lines


def test_sse_stream_pushes_alerts_when_ingest_commits_and_resumes(alert_settings: Settings,
                                                                   keys: dict[str, str],
                                                                   api: TestClient) -> None:
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(alert_settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base), what="the live server")
    place = (-92.22, 14.83)
    answer = api.post("/subscriptions", headers=auth(keys["border"]), json={
        "name": "sse", "fence": box(*place, 0.01), "triggers": ["event_in_fence"]})
    sub_id = answer.json()["id"]
    try:
        lines = _stream_until(base, keys["border"], sub_id,
                              then=lambda: record(api, keys["steward"], [place]))
        # pushed when the ingest committed: before the first keep-alive (a read every 15 s)
        assert not any(line.startswith(": keep-alive") for line in lines)
        first = json.loads(lines[-1][6:])
        assert first["trigger"] == "event_in_fence" and first["data"]["event"]["kind"] == "interception"
        ids = [line[4:] for line in lines if line.startswith("id: ")]
        assert ids[-1] == str(first["id"])
        # raised while the client is away: it resumes after the last id it saw, missing nothing
        record(api, keys["steward"], [(place[0] + 0.001, place[1])])
        resumed = _stream_until(base, keys["border"], sub_id, headers={"Last-Event-ID": ids[-1]})
        second = json.loads(resumed[-1][6:])
        assert second["id"] > first["id"] and second["subscription_id"] == sub_id
        # another country's authority never sees this subscription's alerts on its stream
        gtm_place = (-91.5, 14.9)
        gtm = api.post("/subscriptions", headers=auth(keys["gtm"]), json={
            "name": "sse gtm", "fence": box(*gtm_place, 0.01), "triggers": ["event_in_fence"]}).json()["id"]
        seen = _stream_until(base, keys["gtm"], gtm, headers={"Last-Event-ID": str(first["id"] - 1)},
                             then=lambda: record(api, keys["steward"], [gtm_place]))
        streamed = {json.loads(line[6:])["subscription_id"] for line in seen if line.startswith("data: ")}
        assert streamed == {gtm}
    finally:
        server.should_exit = True
        thread.join(10)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_secrets_are_sealed_at_rest(engine: Engine, alert_settings: Settings, keys: dict[str, str]) -> None:
    sealed = alert_settings.model_copy(update={"webhook_secret_key": Fernet.generate_key().decode()})
    receiver = Receiver()
    place = (-92.12, 14.88)
    with TestClient(create_app(sealed)) as client:
        created = subscribe(client, keys["border"], receiver.url, place)
        record(client, keys["steward"], [place])
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret FROM subscriptions WHERE id = :id"),
                              {"id": created["id"]}).scalar_one()
    assert stored.startswith("fernet:") and created["secret"] not in stored
    worker = Worker(engine, sealed)
    try:
        def arrived() -> bool:
            worker.deliver_due()
            return len(receiver.received) == 1

        wait_for(arrived, what="the sealed delivery")
    finally:
        worker.close()
        receiver.stop()
    headers, body = receiver.received[0]
    assert webhooks.verify(created["secret"], headers, body)
