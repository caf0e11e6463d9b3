"""Victim identifications outside their owner's scope appear only as cells of at least k records."""

from __future__ import annotations

import math
from datetime import timedelta

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from shapely.geometry import Point, shape
from sqlalchemy.engine import Engine

from api.auth import create_key, set_agreement
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
    layer = mapbox_vector_tile.decode(tile.content, default_options={"y_coord_down": True})["events"]
    assert [f["properties"]["count"] for f in layer["features"]] == [11]
    # The cell is where the cluster is: its first point, in the tile's pixels (4096 wide, y down).
    px = ((BIG[0] + 180.0) / 360.0 * 16 - 5) * 4096
    py = ((1.0 - math.asinh(math.tan(math.radians(BIG[1]))) / math.pi) / 2.0 * 16 - 7) * 4096
    cell = shape(layer["features"][0]["geometry"])
    assert cell.contains(Point(px, py)) and math.isclose(cell.area, 128.0 * 128.0)


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
