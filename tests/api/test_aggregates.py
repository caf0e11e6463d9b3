"""Victim identifications outside their owner's scope appear only as cells of at least k records."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from shapely.geometry import Point, shape
from sqlalchemy.engine import Engine

from api.auth import create_key, set_agreement
from api.web import install_assets
from geodata.settings import Settings
from tests.api.conftest import NOW, bearer, insert_events, reset_events

#: Two clusters of Venezuelan victim identifications: 11 (= k, shown) and 10 (suppressed).
BIG = (-67.00, 10.00)
SMALL = (-64.00, 9.00)


@pytest.fixture(scope="module")
def cells_keys(engine: Engine) -> dict[str, str]:
    reset_events(engine)
    rows: list[dict[str, object]] = []
    for centre, n in ((BIG, 11), (SMALL, 10)):
        for i in range(n):
            rows.append(
                {
                    "owner": "VEN",
                    "kind": "victim_identification",
                    "lon": centre[0] + 0.001 * i,
                    "lat": centre[1] + 0.0005 * i,
                    "occurred_at": NOW - timedelta(days=i),
                }
            )
    insert_events(engine, rows)
    set_agreement(engine, "VEN", "COL", "detail")
    return {
        "col": create_key(engine, "prosecutor", "COL"),
        "per": create_key(engine, "prosecutor", "PER"),
        "ven": create_key(engine, "prosecutor", "VEN"),
        "analyst": create_key(engine, "analyst"),
    }


def _cells(client: TestClient, key: str) -> list[dict[str, object]]:
    response = client.get("/collections/event-cells/items", headers=bearer(key))
    assert response.status_code == 200, response.text
    features: list[dict[str, object]] = response.json()["features"]
    return features


def test_partner_sees_victims_only_as_cells_of_at_least_k(
    client: TestClient, cells_keys: dict[str, str]
) -> None:
    # Even a detail agreement does not reveal victim identifications as points.
    items = client.get("/collections/events/items", headers=bearer(cells_keys["col"])).json()["features"]
    assert items == []
    cells = _cells(client, cells_keys["col"])
    assert [(c["properties"]["kind"], c["properties"]["count"]) for c in cells] == [  # type: ignore[index]
        ("victim_identification", 11)
    ]
    polygon = shape(cells[0]["geometry"])  # type: ignore[arg-type]
    assert polygon.geom_type == "Polygon" and polygon.contains(Point(BIG))
    assert not polygon.contains(Point(SMALL))
    assert 0.15 < polygon.bounds[2] - polygon.bounds[0] < 0.3  # a 25 km cell, not a point's position


def test_analyst_sees_region_wide_suppressed_cells(client: TestClient, cells_keys: dict[str, str]) -> None:
    counts = [c["properties"]["count"] for c in _cells(client, cells_keys["analyst"])]  # type: ignore[index]
    assert counts == [11]


def test_country_without_agreement_sees_no_cells(client: TestClient, cells_keys: dict[str, str]) -> None:
    assert _cells(client, cells_keys["per"]) == []


def test_owner_sees_its_victims_in_detail(client: TestClient, cells_keys: dict[str, str]) -> None:
    items = client.get("/collections/events/items", headers=bearer(cells_keys["ven"])).json()["features"]
    assert len(items) == 21


def test_low_zoom_tile_suppresses_small_cells(client: TestClient, cells_keys: dict[str, str]) -> None:
    # Zoom 4 tile 4/5/7 covers both clusters; cells are 1/32 of the tile (about 78 km).
    tile = client.get(
        "/collections/events/tiles/WebMercatorQuad/4/5/7", headers=bearer(cells_keys["analyst"])
    )
    assert tile.status_code == 200
    layer = mapbox_vector_tile.decode(tile.content)["events"]
    assert [f["properties"]["count"] for f in layer["features"]] == [11]


def test_precomputed_cells_follow_deletes_and_match_the_live_count(
    client: TestClient, cells_keys: dict[str, str], engine: Engine
) -> None:
    with engine.begin() as conn:
        live = conn.execute(sa.text("SELECT sum(n) FROM event_cell_counts WHERE level = 4")).scalar_one()
        assert live == 21
        conn.execute(
            sa.text("DELETE FROM events WHERE id = (SELECT min(id) FROM events WHERE ST_X(geom) < -66)")
        )
    try:
        tile = client.get(
            "/collections/events/tiles/WebMercatorQuad/4/5/7", headers=bearer(cells_keys["analyst"])
        )
        assert mapbox_vector_tile.decode(tile.content) == {}  # 10 left: suppressed
    finally:
        insert_events(
            engine,
            [
                {
                    "owner": "VEN",
                    "kind": "victim_identification",
                    "lon": BIG[0],
                    "lat": BIG[1],
                    "occurred_at": NOW,
                }
            ],
        )
    tile = client.get(
        "/collections/events/tiles/WebMercatorQuad/4/5/7", headers=bearer(cells_keys["analyst"])
    )
    assert [
        f["properties"]["count"] for f in mapbox_vector_tile.decode(tile.content)["events"]["features"]
    ] == [11]


def test_cells_cannot_be_cut_by_bbox_or_period(client: TestClient, cells_keys: dict[str, str]) -> None:
    # A bbox over part of the big cluster, and a period of a few days, still count whole cells and
    # whole months: subtracting two requests cannot reveal a suppressed count.
    key = bearer(cells_keys["analyst"])
    part = f"{BIG[0] - 0.0005},{BIG[1] - 0.0005},{BIG[0] + 0.0035},{BIG[1] + 0.0015}"
    cut = client.get("/collections/event-cells/items", params={"bbox": part}, headers=key).json()
    assert [c["properties"]["count"] for c in cut["features"]] == [11]
    day = NOW.strftime("%Y-%m-%d")
    month = client.get("/collections/event-cells/items", params={"datetime": f"{day}/{day}"}, headers=key)
    counts = [c["properties"]["count"] for c in month.json()["features"]]
    in_month = sum(1 for i in range(11) if (NOW - timedelta(days=i)).month == NOW.month)
    assert counts == ([11] if in_month == 11 else [])


class _Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4, NUL-separated JSON)."""

    def __init__(self) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium is None:
            pytest.fail("chromium is missing: install Debian's chromium (scripts/setup.sh does).")
        self.profile = tempfile.TemporaryDirectory(prefix="rutas-chromium-", ignore_cleanup_errors=True)
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()

        def fds() -> None:
            os.dup2(to_chrome, 3)
            os.dup2(from_chrome, 4)

        self.process = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-dev-shm-usage",
                "--use-angle=swiftshader",
                "--enable-unsafe-swiftshader",
                f"--user-data-dir={self.profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=fds,
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome)
        os.close(from_chrome)
        self._buffer = b""
        self._next = 0

    def call(self, method: str, session: str | None = None, **params: object) -> dict[str, object]:
        self._next += 1
        message: dict[str, object] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                assert "error" not in answer, answer
                result: dict[str, object] = answer["result"]
                return result

    def page_state(self, url: str, timeout_s: float = 60.0) -> dict[str, str]:
        """Open ``url`` and wait until the map reports features or an error; the body's data attributes."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        session = str(self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
        deadline = time.monotonic() + timeout_s
        state: dict[str, str] = {}
        while time.monotonic() < deadline:
            result = self.call(
                "Runtime.evaluate",
                session,
                returnByValue=True,
                expression="JSON.stringify(document.body ? document.body.dataset : {})",
            )
            state = json.loads(result["result"]["value"])  # type: ignore[index]
            if "features" in state or "error" in state:
                return state
            time.sleep(0.2)
        return state

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self._write)
        os.close(self._read)
        self.profile.cleanup()


def test_web_map_draws_the_scoped_tiles_in_a_real_browser(
    live_server: str, cells_keys: dict[str, str], settings: Settings
) -> None:
    install_assets(settings)
    centre = f"{BIG[0]},{BIG[1]}"
    browser = _Chromium()
    try:
        cells = browser.page_state(f"{live_server}/map#key={cells_keys['analyst']}&center={centre}&zoom=4")
        assert int(cells.get("features", "0")) > 0 and cells.get("points") == "0", cells
        points = browser.page_state(f"{live_server}/map#key={cells_keys['ven']}&center={centre}&zoom=12")
        assert int(points.get("points", "0")) > 0, points
        # The analyst at the same zoom gets no points at all: victims outside its scope stay cells.
        hidden = browser.page_state(f"{live_server}/map#key={cells_keys['analyst']}&center={centre}&zoom=12")
        assert hidden.get("points") == "0", hidden
        refused = browser.page_state(f"{live_server}/map#key=rutas_000000000000_notARealSecretButLongEnough")
        assert refused.get("error") == "401", refused
    finally:
        browser.close()
