"""Authentication (keys, JWT, 401/403), the CLI's keys and audit commands, and the audit hash chain."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from api.audit import verify_chain
from geodata.settings import Settings
from tests.api.conftest import Record, bearer, expected_detail

RUTAS = str(Path(sys.executable).with_name("rutas"))


def test_no_or_bad_credentials_get_401_with_a_clear_message(client: TestClient, world: list[Record]) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer rutas_000000000000_notARealSecretButLongEnough"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer not-a-jwt"},
    ):
        response = client.get("/collections/events/items", headers=headers)
        assert response.status_code == 401
        body = response.json()
        assert body["code"] == "Unauthorized" and body["description"] and body["description_es"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_aggregate_roles_get_403_on_records(
    client: TestClient, keys: dict[tuple[str, str | None], str]
) -> None:
    response = client.get("/collections/events/items", headers=bearer(keys[("analyst", None)]))
    assert response.status_code == 403
    assert "event-cells" in response.json()["description"]
    assert (
        client.get("/collections/event-cells/items", headers=bearer(keys[("analyst", None)])).status_code
        == 200
    )


def test_public_documents_and_openapi(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert "conformsTo" in client.get("/conformance").json()
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/collections/{collectionId}/items",
        "/collections/{collectionId}/items/{featureId}",
        "/collections/{collectionId}/queryables",
        "/healthz",
        "/collections/{collectionId}/tiles/WebMercatorQuad/{z}/{x}/{y}",
    ):
        assert path in paths
    assert client.get("/healthz").json()["status"] == "ok"


def test_bad_parameters_are_400_in_ogc_form(
    client: TestClient, keys: dict[tuple[str, str | None], str]
) -> None:
    key = bearer(keys[("admin", None)])
    for params in (
        {"limit": "0"},
        {"limit": "10001"},
        {"bbox": "1,2,3"},
        {"bbox": "-200,0,0,1"},
        {"datetime": "yesterday"},
        {"filter": "kind = "},
        {"filter": "nope = 1"},
        {"after": "x"},
    ):
        response = client.get("/collections/events/items", params=params, headers=key)
        assert response.status_code == 400, params
        assert response.json()["code"] == "InvalidParameterValue"
    nested = " AND ".join(f"dead <> {i}" for i in range(300))
    response = client.get("/collections/events/items", params={"filter": nested}, headers=key)
    assert response.status_code == 400 and "at most" in response.json()["description"]


def test_jwt_bearer_tokens(settings: Settings, world: list[Record]) -> None:
    secret = "a-test-secret-of-enough-length-1234567890"
    app = create_app(settings.model_copy(update={"jwt_secret": secret}))
    later = datetime.now(UTC) + timedelta(minutes=5)
    good = jwt.encode({"sub": "ana", "role": "prosecutor", "country": "VEN", "exp": later}, secret)
    expired = jwt.encode(
        {
            "sub": "ana",
            "role": "prosecutor",
            "country": "VEN",
            "exp": datetime.now(UTC) - timedelta(minutes=1),
        },
        secret,
    )
    forged = jwt.encode({"sub": "eve", "role": "admin", "exp": later}, "another-secret-of-enough-length-123")
    with TestClient(app) as client:
        response = client.get("/collections/events/items", headers=bearer(good))
        assert response.status_code == 200
        ids = {f["id"] for f in response.json()["features"]}
        assert ids == {r.id for r in world if expected_detail("prosecutor", "VEN", r)}
        assert client.get("/collections/events/items", headers=bearer(expired)).status_code == 401
        assert client.get("/collections/events/items", headers=bearer(forged)).status_code == 401


def test_rate_limit_per_key(settings: Settings, keys: dict[tuple[str, str | None], str]) -> None:
    app = create_app(settings.model_copy(update={"api_rate_per_minute": 60}))
    with TestClient(app) as client:
        codes = [
            client.get("/collections", headers=bearer(keys[("analyst", None)])).status_code for _ in range(15)
        ]
    assert codes[0] == 200 and codes[-1] == 429


def _cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "RUTAS_DATABASE_URL": str(settings.database_url)}


def test_keys_create_prints_a_working_key_as_last_word(settings: Settings, client: TestClient) -> None:
    done = subprocess.run(
        [RUTAS, "keys", "create", "--role", "steward", "--country", "per"],
        capture_output=True,
        text=True,
        env=_cli_env(settings),
        timeout=120,
        check=True,
    )
    key = done.stdout.split()[-1]
    assert key.startswith("rutas_")
    assert client.get("/collections", headers=bearer(key)).status_code == 200
    revoked = subprocess.run(
        [RUTAS, "keys", "revoke", key], capture_output=True, text=True, env=_cli_env(settings), timeout=120
    )
    assert revoked.returncode == 0
    with TestClient(create_app(settings)) as fresh:  # a new server: no cached verification
        assert fresh.get("/collections", headers=bearer(key)).status_code == 401
    refused = subprocess.run(
        [RUTAS, "keys", "create", "--role", "prosecutor"],
        capture_output=True,
        text=True,
        env=_cli_env(settings),
        timeout=120,
    )
    assert refused.returncode == 2 and "--country" in refused.stderr


def test_audit_rows_record_every_read_and_the_chain_detects_edits(
    client: TestClient,
    keys: dict[tuple[str, str | None], str],
    world: list[Record],
    engine: Engine,
    settings: Settings,
) -> None:
    key = keys[("prosecutor", "COL")]
    before = verify_chain(engine)
    assert before.ok
    response = client.get(
        "/collections/events/items", params={"filter": "kind = 'incident'"}, headers=bearer(key)
    )
    returned = len(response.json()["features"])
    with engine.begin() as conn:
        last = conn.execute(sa.text("SELECT * FROM audit_log ORDER BY id DESC LIMIT 1")).one()
    assert last.who == f"key:{key.split('_')[1]}" and last.role == "prosecutor" and last.country == "COL"
    assert (
        last.collection == "events"
        and last.records == returned
        and last.filter["filter"] == "kind = 'incident'"
    )
    client.get(f"/collections/events/items/{world[0].id}", headers=bearer(key))
    client.get("/collections/events/items", headers=bearer(key))
    assert verify_chain(engine).ok
    verify = [RUTAS, "audit", "verify", "--json"]
    assert subprocess.run(verify, env=_cli_env(settings), capture_output=True, timeout=120).returncode == 0

    # The app role may only insert; even the owner is stopped by the trigger.
    with engine.begin() as conn:
        try:
            conn.execute(sa.text("UPDATE audit_log SET records = 0 WHERE id = :id"), {"id": last.id})
            raise AssertionError("the audit log accepted an UPDATE")
        except sa.exc.DBAPIError as exc:
            assert "append-only" in str(exc)

    # A DBA who switches the trigger off and edits a row is caught; so is one who deletes a row.
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        conn.execute(sa.text("UPDATE audit_log SET records = records + 1 WHERE id = :id"), {"id": last.id})
    try:
        report = verify_chain(engine)
        assert not report.ok and report.broken_id == last.id
        failed = subprocess.run(verify, env=_cli_env(settings), capture_output=True, text=True, timeout=120)
        assert failed.returncode == 1 and f'"broken_id": {last.id}' in failed.stdout
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE audit_log SET records = records - 1 WHERE id = :id"), {"id": last.id}
            )
    assert verify_chain(engine).ok
    with engine.begin() as conn:
        saved = conn.execute(sa.text("SELECT * FROM audit_log WHERE id = :id"), {"id": last.id}).one()
        conn.execute(sa.text("DELETE FROM audit_log WHERE id = :id"), {"id": last.id})
    try:
        report = verify_chain(engine)
        assert not report.ok and report.broken_id is not None and report.broken_id > last.id
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_chain"))
            conn.execute(
                sa.text(
                    "INSERT INTO audit_log OVERRIDING SYSTEM VALUE SELECT * FROM json_populate_record("
                    "NULL::audit_log, CAST(:row AS json))"
                ),
                {"row": json.dumps(saved._asdict(), default=str)},
            )
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_chain"))
            conn.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    assert verify_chain(engine).ok


def test_concurrent_reads_keep_one_unbroken_chain(
    live_server: str, keys: dict[tuple[str, str | None], str], world: list[Record], engine: Engine
) -> None:
    key = bearer(keys[("prosecutor", "COL")])

    def read(i: int) -> int:
        url = f"{live_server}/collections/events/items?limit={1 + i % 5}"
        return httpx.get(url, headers=key, timeout=60).status_code

    with engine.begin() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM audit_log")).scalar_one()
    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(read, range(64))) == {200}
    report = verify_chain(engine)
    assert report.ok, report
    assert report.rows == before + 64


def test_rutas_serve_answers_until_stopped(
    settings: Settings, keys: dict[tuple[str, str | None], str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [RUTAS, "serve", "--port", str(port)],
        env=_cli_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        status = 0
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(
                    f"http://127.0.0.1:{port}/collections", headers=bearer(keys[("analyst", None)]), timeout=5
                ).status_code
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200, (
            server.stdout.read() if server.poll() is not None and server.stdout else "no answer")
        assert httpx.get(f"http://127.0.0.1:{port}/map", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
