"""A revoked key stops working at once in every running server, and the key cache still works.

Two servers run against the test run's database: one in this process (``live_server``) and one
``rutas serve`` process. Each has answered the key before, so each holds it in its key cache.
``rutas keys revoke`` commits the revocation with a ``NOTIFY``; the next request to either server
is refused, with no waiting. A key revoked behind the servers' back (an UPDATE without the
notification) is still answered from the cache: the cache is in use, not bypassed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api.auth import KEYS_CHANNEL, Authenticator, RevocationListener, create_key, set_agreement
from geodata import db
from geodata.errors import RutasError
from geodata.settings import Settings
from tests.api.conftest import AGREEMENTS, Record, bearer, expected_detail

RUTAS = str(Path(sys.executable).with_name("rutas"))


def _cli_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "RUTAS_DATABASE_URL": str(settings.database_url)}


@pytest.fixture(scope="module")
def served(settings: Settings, live_server: str) -> Iterator[list[str]]:
    """The base URLs of two running servers: this process's and a ``rutas serve`` process."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([RUTAS, "serve", "--port", str(port)], env=_cli_env(settings),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    other = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{other}/healthz", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"rutas serve did not start: {server.stdout.read() if server.stdout else ''}")
                time.sleep(0.2)
        yield [live_server, other]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _status(base: str, key: str) -> int:
    return httpx.get(f"{base}/collections", headers=bearer(key), timeout=10).status_code


def test_rutas_keys_revoke_refuses_the_key_at_once_in_every_server(
    settings: Settings, engine: Engine, world: list[Record], served: list[str]
) -> None:
    key = create_key(engine, "prosecutor", "COL", "revocation test")
    assert [_status(base, key) for base in served] == [200, 200]  # now cached in both
    revoked = subprocess.run([RUTAS, "keys", "revoke", key], capture_output=True, text=True,
                             env=_cli_env(settings), timeout=120)
    assert revoked.returncode == 0, revoked.stderr
    assert [_status(base, key) for base in served] == [401, 401]
    # another key of the same caller is untouched
    other = create_key(engine, "prosecutor", "COL", "revocation test")
    assert [_status(base, other) for base in served] == [200, 200]


def test_the_key_cache_still_answers_without_a_lookup(
    engine: Engine, world: list[Record], served: list[str]
) -> None:
    key = create_key(engine, "analyst", None, "cache test")
    assert [_status(base, key) for base in served] == [200, 200]
    with engine.begin() as conn:  # behind the servers' back: no notification
        conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :id"),
                     {"id": key.split("_")[1]})
    assert [_status(base, key) for base in served] == [200, 200]


def test_a_changed_agreement_applies_at_once(
    settings: Settings, engine: Engine, world: list[Record], served: list[str]
) -> None:
    """Cached callers carry their partners: removing COL's detail agreement with PER drops them."""
    key = create_key(engine, "prosecutor", "PER", "agreement test")
    seen = {r.id for r in world if expected_detail("prosecutor", "PER", r)}
    assert any(r.owner == "COL" for r in world if r.id in seen)

    def ids(base: str) -> set[int]:
        body = httpx.get(f"{base}/collections/events/items", params={"limit": "1000"}, headers=bearer(key),
                         timeout=10).json()
        return {int(f["id"]) for f in body["features"]}

    assert [ids(base) for base in served] == [seen, seen]
    shared = subprocess.run([RUTAS, "share", "COL", "PER", "--level", "none"], capture_output=True,
                            text=True, env=_cli_env(settings), timeout=120)
    try:
        assert shared.returncode == 0, shared.stderr
        own = {r.id for r in world if r.id in seen and r.owner == "PER"}
        assert [ids(base) for base in served] == [own, own]
    finally:
        level = next(level for o, p, level in AGREEMENTS if (o, p) == ("COL", "PER"))
        set_agreement(engine, "COL", "PER", level)


def _wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.05)


def test_no_cache_while_the_listener_is_down(settings: Settings, engine: Engine, world: list[Record]) -> None:
    """When the LISTEN connection is lost the cache is off (a revocation could be missed), and back on,
    emptied, once the listener has reconnected."""
    authenticator = Authenticator(engine, settings)
    listener = RevocationListener(db.database_url(settings), authenticator, retry_s=0.2)
    listener.start()
    try:
        assert authenticator.listening
        key = create_key(engine, "analyst", None, "listener test")
        authenticator(f"Bearer {key}")
        with engine.begin() as conn:
            pids = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = :q"),
                {"q": f"LISTEN {KEYS_CHANNEL}"}).scalars().all()
            assert pids
            # revoked behind the listener's back, and its connection cut: the notification is lost
            conn.execute(sa.text("UPDATE api_keys SET revoked_at = now() WHERE key_id = :id"),
                         {"id": key.split("_")[1]})
            for pid in pids:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # the cache is off from the moment the loss is seen, and emptied when listening again
        _wait_for(lambda: not authenticator.listening or authenticator._generation > 1)
        with pytest.raises(RutasError) as refused:
            authenticator(f"Bearer {key}")
        assert refused.value.code == "unauthorized"
        _wait_for(lambda: authenticator.listening)
        with pytest.raises(RutasError):
            authenticator(f"Bearer {key}")
    finally:
        listener.stop()
