"""End to end: ``rutas serve`` in its own process delivers what ``rutas ingest`` loads in another.

Nothing runs in the test's process but the receiver: the worker is the one ``rutas serve``
starts beside the API, woken by the ingest's commit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from api import webhooks
from api.auth import create_key
from geodata.settings import CHECKOUT_DIR, Settings
from tests.api.test_alerts import Receiver, box, wait_for

RUTAS = [sys.executable, "-m", "scripts.cli"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_rutas_serve_delivers_what_rutas_ingest_loads(engine: Engine, settings: Settings,
                                                      tmp_path: Path) -> None:
    env = {**os.environ, "RUTAS_DATABASE_URL": str(settings.database_url), "RUTAS_STATE_DIR": str(tmp_path),
           "RUTAS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([*RUTAS, "serve", "--host", "127.0.0.1", "--port", str(port)],
                             cwd=CHECKOUT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    receiver = Receiver()
    try:
        wait_for(lambda: _up(base) or serve.poll() is not None, timeout_s=90, what="rutas serve")
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        key = create_key(engine, "border_authority", "MEX")
        place = (-92.60, 14.40)
        created = httpx.post(f"{base}/subscriptions", headers={"Authorization": f"Bearer {key}"}, json={
            "name": "serve e2e", "fence": box(*place, 0.01), "triggers": ["event_in_fence"],
            "webhook_url": receiver.url}, timeout=30)
        assert created.status_code == 201, created.text
        records = tmp_path / "interceptions.csv"
        records.write_text(f"fecha,latitud,longitud\n2024-06-01,{place[1]},{place[0]}\n"
                           f"2024-06-02,{place[1] + 0.5},{place[0]}\n", encoding="utf-8")
        loaded = subprocess.run([*RUTAS, "ingest", str(records), "--kind", "interception", "--country",
                                 "MEX", "--source", uuid.uuid4().hex, "--json"], cwd=CHECKOUT_DIR,
                                env=env, capture_output=True, text=True, timeout=180)
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        assert json.loads(loaded.stdout.splitlines()[-1])["accepted"] == 2
        wait_for(lambda: len(receiver.received) >= 1, timeout_s=60, what="rutas serve's worker's delivery")
        headers, body = receiver.received[0]
        assert webhooks.verify(created.json()["secret"], headers, body)
        alert = json.loads(body)
        assert alert["type"] == "alert.event_in_fence"
        assert alert["data"]["subscription_id"] == created.json()["id"]
        assert (alert["data"]["event"]["lon"], alert["data"]["event"]["lat"]) == pytest.approx(place)
        assert len(receiver.received) == 1  # the record outside the fence raised nothing
    finally:
        serve.send_signal(signal.SIGINT)
        try:
            serve.wait(20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait(10)
        log.close()
        receiver.stop()
