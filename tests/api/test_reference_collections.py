"""Reference layers (crossings, borders) for every role: items, filters, queryables and tiles."""

from __future__ import annotations

from collections.abc import Iterator

import mapbox_vector_tile
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from tests.api.conftest import bearer

#: Two crossings on the Colombia-Venezuela border (lon, lat): Simón Bolívar bridge and Paraguachón.
BRIDGE = (-72.4358, 7.8217)
PARAGUACHON = (-72.1167, 11.3667)


@pytest.fixture(scope="module")
def layers(
    engine: Engine, keys: dict[tuple[str, str | None], str]
) -> Iterator[dict[tuple[str, str | None], str]]:
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM reference_layers WHERE source = 'api-tests'"))
        ids = {}
        previously = (
            conn.execute(
                sa.text("SELECT id FROM reference_layers WHERE active AND kind IN ('crossings', 'borders')")
            )
            .scalars()
            .all()
        )
        for kind in ("crossings", "borders"):
            conn.execute(sa.text("UPDATE reference_layers SET active = false WHERE kind = :k"), {"k": kind})
            ids[kind] = conn.execute(
                sa.text(
                    "INSERT INTO reference_layers (kind, source, file_name, sha256, active) "
                    "VALUES (:k, 'api-tests', 'tests', 'x', true) RETURNING id"
                ),
                {"k": kind},
            ).scalar_one()
        for name, (lon, lat), official in (
            ("Puente Simón Bolívar", BRIDGE, True),
            ("Paraguachón", PARAGUACHON, False),
        ):
            conn.execute(
                sa.text(
                    "INSERT INTO crossings (layer_id, name, official, country_a, country_b, geom) "
                    "VALUES (:layer, :name, :official, 'COL', 'VEN', "
                    "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326))"
                ),
                {"layer": ids["crossings"], "name": name, "official": official, "lon": lon, "lat": lat},
            )
        conn.execute(
            sa.text(
                "INSERT INTO border_segments (layer_id, country_a, country_b, geom) "
                "VALUES (:layer, 'COL', 'VEN', "
                "ST_SetSRID(ST_MakeLine(ST_MakePoint(-72.5, 7.0), ST_MakePoint(-72.3, 8.5)), 4326))"
            ),
            {"layer": ids["borders"]},
        )
    yield keys
    # Leave the reference layers as other tests' fixtures made them.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM reference_layers WHERE source = 'api-tests'"))
        conn.execute(
            sa.text("UPDATE reference_layers SET active = true WHERE id = ANY(:ids)"),
            {"ids": list(previously)},
        )


def test_every_role_reads_reference_layers(
    client: TestClient, layers: dict[tuple[str, str | None], str]
) -> None:
    for principal, key in layers.items():
        crossings = client.get("/collections/crossings/items", headers=bearer(key))
        assert crossings.status_code == 200, principal
        names = {f["properties"]["name"] for f in crossings.json()["features"]}
        assert names == {"Puente Simón Bolívar", "Paraguachón"}
        official = client.get(
            "/collections/crossings/items", params={"filter": "official = true"}, headers=bearer(key)
        )
        assert [f["properties"]["name"] for f in official.json()["features"]] == ["Puente Simón Bolívar"]
        borders = client.get("/collections/borders/items", headers=bearer(key)).json()["features"]
        assert [b["geometry"]["type"] for b in borders] == ["LineString"]


def test_queryables_describe_types(client: TestClient, layers: dict[tuple[str, str | None], str]) -> None:
    key = bearer(layers[("prosecutor", "COL")])
    events = client.get("/collections/events/queryables", headers=key)
    assert events.headers["content-type"].startswith("application/schema+json")
    props = events.json()["properties"]
    assert props["occurred_at"]["format"] == "date-time" and props["border_distance_m"]["type"] == "number"
    assert "attributes" not in props
    crossings = client.get("/collections/crossings/queryables", headers=key).json()["properties"]
    assert crossings["official"]["type"] == "boolean"


def test_reference_tiles_are_drawn_in_detail_for_every_role(
    client: TestClient, layers: dict[tuple[str, str | None], str]
) -> None:
    # Zoom 6 tile 6/19/30 holds the bridge; reference layers are never aggregated.
    tile = client.get(
        "/collections/crossings/tiles/WebMercatorQuad/6/19/30", headers=bearer(layers[("analyst", None)])
    )
    assert tile.status_code == 200
    features = mapbox_vector_tile.decode(tile.content)["crossings"]["features"]
    assert [f["properties"]["name"] for f in features] == ["Puente Simón Bolívar"]
    outside = client.get(
        "/collections/crossings/tiles/WebMercatorQuad/6/40/30", headers=bearer(layers[("analyst", None)])
    )
    assert outside.status_code == 200 and mapbox_vector_tile.decode(outside.content) == {}
    bad = client.get(
        "/collections/crossings/tiles/WebMercatorQuad/2/9/0", headers=bearer(layers[("analyst", None)])
    )
    assert bad.status_code == 400 and "0 to 3" in bad.json()["description"]
