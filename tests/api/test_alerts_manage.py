"""Managing subscriptions (update, delete, enable, rotate the secret) and webhook address pinning.

The worker delivers to real receivers on loopback addresses; host names are resolved through
``api.webhooks.resolve``, the project's one resolver, which a test replaces to play DNS.
"""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api import webhooks
from api.app import create_app
from api.delivery import Worker
from geodata.settings import Settings
from tests.api import test_alerts as delivery_tests
from tests.api.test_alerts import (
    Receiver,
    auth,
    box,
    quick_retries,
    record,
    statuses,
    subscribe,
    wait_for,
)

# the delivery tests' fixtures, instantiated again for this module
alert_settings = delivery_tests.alert_settings
api = delivery_tests.api
keys = delivery_tests.keys


@pytest.fixture()
def worker(engine: Engine, alert_settings: Settings) -> Iterator[Worker]:
    """A worker the test drives round by round (``deliver_due``)."""
    one = Worker(engine, alert_settings, seed=2)
    yield one
    one.close()


def deliver_until(worker: Worker, condition: Callable[[], bool], what: str) -> None:
    """Run delivery rounds until ``condition`` holds."""
    def done() -> bool:
        worker.deliver_due()
        return condition()

    wait_for(done, what=what)


def alerts_of(engine: Engine, sub_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM alerts WHERE subscription_id = :s"),
                                {"s": sub_id}).scalar_one())


def test_update_moves_the_fence_and_webhook_and_only_the_owner_may(api: TestClient, keys: dict[str, str],
                                                                   engine: Engine, worker: Worker) -> None:
    old_place, new_place = (-92.40, 14.60), (-92.45, 14.65)
    first, second = Receiver(), Receiver()
    created = subscribe(api, keys["border"], first.url, old_place)
    path = f"/subscriptions/{created['id']}"
    changed = api.patch(path, headers=auth(keys["border"]), json={
        "name": "Suchiate norte", "fence": box(*new_place, 0.01), "webhook_url": second.url,
        "kinds": ["interception"], "min_persons": None})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["webhook_url"], body["filters"]) == ("Suchiate norte", second.url,
                                                                    {"kinds": ["interception"]})
    record(api, keys["steward"], [old_place, new_place])  # only the new fence holds a record
    deliver_until(worker, lambda: len(second.received) == 1, "the alert at the new webhook")
    event = json.loads(second.received[0][1])["data"]["event"]
    assert (event["lon"], event["lat"]) == pytest.approx(new_place) and first.received == []
    assert webhooks.verify(created["secret"], *second.received[0])
    # the new URL is checked against internal addresses as at creation
    refused = api.patch(path, headers=auth(keys["border"]), json={"webhook_url": "http://169.254.169.254/"})
    assert refused.status_code == 400 and "169.254.169.254" in refused.json()["description"]
    # radius alone cannot re-buffer a polygon fence; unknown fields are refused
    assert api.patch(path, headers=auth(keys["border"]), json={"radius_m": 500}).status_code == 400
    assert api.patch(path, headers=auth(keys["border"]), json={"secret": "x"}).status_code == 400
    # a colleague of the same office sees it but may not change it; another country does not see it
    assert api.patch(path, headers=auth(keys["colleague"]), json={"name": "x"}).status_code == 403
    assert api.patch(path, headers=auth(keys["gtm"]), json={"name": "x"}).status_code == 404
    assert api.post(f"{path}/rotate-secret", headers=auth(keys["colleague"])).status_code == 403
    assert api.delete(path, headers=auth(keys["colleague"])).status_code == 403
    # an administrator may
    by_admin = api.patch(path, headers=auth(keys["admin"]),
                            json={"triggers": ["event_in_fence", "route_new"]})
    assert by_admin.status_code == 200 and by_admin.json()["triggers"] == ["event_in_fence", "route_new"]
    first.stop()
    second.stop()


def test_delete_stops_pending_deliveries_and_keeps_the_history(api: TestClient, keys: dict[str, str],
                                                               engine: Engine, worker: Worker) -> None:
    receiver = Receiver()
    receiver.stop()  # down: the deliveries wait for their retries
    place = (-92.42, 14.58)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place, (place[0] + 0.001, place[1])])
    deliver_until(worker, lambda: _tried(engine, created["id"], 2), "the failed first tries")
    assert statuses(engine, created["id"]) == ["pending"] * 2
    path = f"/subscriptions/{created['id']}"
    deleted = api.delete(path, headers=auth(keys["border"]))
    assert deleted.status_code == 200 and deleted.json()["stopped_deliveries"] == 2
    assert statuses(engine, created["id"]) == ["disabled"] * 2
    receiver.start()  # back: nothing more is sent
    record(api, keys["steward"], [(place[0], place[1] + 0.001)])  # and nothing more raised
    worker.deliver_due()
    assert receiver.received == [] and alerts_of(engine, created["id"]) == 2
    # the history stays readable for the audit; the subscription is listed as deleted
    history = api.get(f"{path}/deliveries", headers=auth(keys["border"])).json()["deliveries"]
    assert [d["status"] for d in history] == ["disabled"] * 2 and all(d["attempts"] for d in history)
    listed = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    assert next(s for s in listed if s["id"] == created["id"])["status"] == "deleted"
    assert api.post(f"{path}/enable", headers=auth(keys["border"])).status_code == 404
    assert api.delete(path, headers=auth(keys["border"])).status_code == 404
    with engine.connect() as conn:
        actions = conn.execute(sa.text(
            "SELECT action FROM audit_log WHERE filter->>'subscription_id' = :s ORDER BY id"),
            {"s": str(created["id"])}).scalars().all()
    assert "subscription_delete" in actions
    receiver.stop()


def _tried(engine: Engine, sub_id: int, deliveries: int) -> bool:
    """Whether the subscription has ``deliveries`` deliveries, each tried at least once."""
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) = :n AND bool_and(tries >= 1) FROM deliveries WHERE subscription_id = :s"),
            {"s": sub_id, "n": deliveries}).scalar())


def test_enable_after_410_sends_the_stopped_deliveries(api: TestClient, keys: dict[str, str],
                                                       engine: Engine, worker: Worker) -> None:
    receiver = Receiver(lambda n: (410, {}) if n == 1 else (204, {}))
    place = (-92.47, 14.55)
    created = subscribe(api, keys["border"], receiver.url, place)
    record(api, keys["steward"], [place])
    deliver_until(worker, lambda: statuses(engine, created["id"]) == ["disabled"], "the endpoint disabled")
    path = f"/subscriptions/{created['id']}"
    assert api.post(f"{path}/enable", headers=auth(keys["colleague"])).status_code == 403
    enabled = api.post(f"{path}/enable", headers=auth(keys["border"]))
    assert enabled.status_code == 200 and enabled.json()["requeued_deliveries"] == 1
    deliver_until(worker, lambda: statuses(engine, created["id"]) == ["delivered"], "the delivery sent again")
    assert receiver.ids() == [receiver.ids()[0]] * 2  # the same message, under the same webhook-id
    record(api, keys["steward"], [(place[0] + 0.001, place[1])])  # enabled: alerts are raised again
    deliver_until(worker, lambda: len(receiver.received) == 3, "a new alert")
    listed = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    assert next(s for s in listed if s["id"] == created["id"])["status"] == "enabled"
    receiver.stop()


def test_rotated_secret_signs_the_next_deliveries(api: TestClient, keys: dict[str, str], engine: Engine,
                                                  worker: Worker) -> None:
    receiver = Receiver()
    place = (-92.50, 14.52)
    created = subscribe(api, keys["border"], receiver.url, place)
    rotated = api.post(f"/subscriptions/{created['id']}/rotate-secret", headers=auth(keys["border"]))
    assert rotated.status_code == 200
    secret = rotated.json()["secret"]
    assert secret.startswith("whsec_") and secret != created["secret"]
    record(api, keys["steward"], [place])
    deliver_until(worker, lambda: len(receiver.received) == 1, "the delivery")
    headers, body = receiver.received[0]
    assert webhooks.verify(secret, headers, body) and not webhooks.verify(created["secret"], headers, body)
    listed = api.get("/subscriptions", headers=auth(keys["border"])).json()["subscriptions"]
    assert secret not in json.dumps(listed)
    receiver.stop()


class _Dns:
    """A DNS server for one name: each answer is followed by ``rebind_to`` (a rebinding attacker)."""

    def __init__(self, name: str, answer: str, rebind_to: str) -> None:
        self.name, self.answer, self.rebind_to = name, answer, rebind_to
        self.calls = 0
        self.real = webhooks.resolve

    def __call__(self, host: str, port: int) -> list[webhooks.IPAddress]:
        if host != self.name:
            return self.real(host, port)
        self.calls += 1
        given, self.answer = self.answer, self.rebind_to
        return [ipaddress.ip_address(given)]


def test_posts_go_to_the_checked_address_not_a_rebound_one(engine: Engine, settings: Settings,
                                                           keys: dict[str, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # 127.0.0.2 stands for a public receiver (allowed); 127.0.0.1 for an internal service (not)
    pinned = quick_retries(settings, "127.0.0.2")
    public = Receiver(host="127.0.0.2")
    internal = Receiver(port=public.port)
    dns = _Dns("hooks.rebind.test", "127.0.0.2", rebind_to="127.0.0.1")
    monkeypatch.setattr(webhooks, "resolve", dns)
    place = (-92.53, 14.49)
    url = f"http://hooks.rebind.test:{public.port}/hook"
    worker = Worker(engine, pinned, seed=3)
    try:
        with TestClient(create_app(pinned)) as pinned_api:
            created = subscribe(pinned_api, keys["border"], url, place)
            dns.answer = "127.0.0.2"
            record(pinned_api, keys["steward"], [place])
            deliver_until(worker, lambda: statuses(engine, created["id"]) != ["pending"], "the first attempt")
            # resolved once for the attempt, posted to that address with the name as Host
            assert dns.calls == 2 and len(public.received) == 1 and internal.received == []
            headers, body = public.received[0]
            assert headers["host"] == f"hooks.rebind.test:{public.port}"
            assert webhooks.verify(created["secret"], headers, body)
            # now the name answers the internal address: the attempt is refused, nothing is sent there
            dns.answer = "127.0.0.1"
            record(pinned_api, keys["steward"], [(place[0] + 0.001, place[1])])
            deliver_until(worker, lambda: _tried(engine, created["id"], 2), "the refused attempt")
            history = pinned_api.get(f"/subscriptions/{created['id']}/deliveries",
                                 headers=auth(keys["border"])).json()["deliveries"]
            assert "internal address 127.0.0.1" in history[0]["attempts"][0]["error"]
            assert internal.received == [] and len(public.received) == 1
            # a name resolving to loopback is refused at subscription when not allowed
            local = pinned_api.post("/subscriptions", headers=auth(keys["border"]), json={
                "name": "x", "fence": box(*place, 0.01), "triggers": ["event_in_fence"],
                "webhook_url": f"http://localhost:{internal.port}/hook"})
            assert local.status_code == 400 and "internal address" in local.json()["description"]
    finally:
        worker.close()
        public.stop()
        internal.stop()


def _self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``host`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_to_the_checked_address_verifies_the_host_name(settings: Settings, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path, "hooks.tls.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: names.append(name)  # type: ignore[func-returns-value]
    receiver = Receiver(host="127.0.0.2", tls=server_tls)
    monkeypatch.setattr(webhooks, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.2")])
    allowed = quick_retries(settings, "127.0.0.2")
    clients = webhooks.PinnedClients(5.0, tls=ssl.create_default_context(cafile=str(cert)))
    secret, body = webhooks.new_secret(), b'{"type": "alert"}'
    try:
        target = webhooks.check_target(f"https://hooks.tls.test:{receiver.port}/hook", allowed)
        answer = clients.post(target, body, webhooks.headers(secret, "msg_alert_1", body))
        # connected to 127.0.0.2, but SNI, the certificate check and Host are for the name
        assert answer.status_code == 204 and names == ["hooks.tls.test"]
        assert receiver.received[0][0]["host"] == f"hooks.tls.test:{receiver.port}"
        # the same address under a name the certificate does not hold: refused before sending
        other = webhooks.check_target(f"https://other.tls.test:{receiver.port}/hook", allowed)
        with pytest.raises(ssl.SSLCertVerificationError, match=r"other\.tls\.test"):
            clients.post(other, body, webhooks.headers(secret, "msg_alert_2", body))
        assert len(receiver.received) == 1
    finally:
        clients.close()
        receiver.stop()
