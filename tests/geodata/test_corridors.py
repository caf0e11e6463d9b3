"""Corridor layers: reading with validation, storing per kind and owner, row-level security."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors, read_corridors, read_stored_corridors
from geodata.db import Scope
from geodata.errors import InputError
from geodata.settings import CHECKOUT_DIR, Settings

DEMO = CHECKOUT_DIR / "geodata" / "illustrative"


def _write(path: Path, features: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def _line(props: dict[str, object], coords: list[list[float]]) -> dict[str, object]:
    return {"type": "Feature", "properties": props, "geometry": {"type": "LineString", "coordinates": coords}}


def test_demo_layers_are_read_and_marked_illustrative() -> None:
    for kind in ("drug", "fuel", "arms"):
        frame, problems = read_corridors(
            DEMO / f"corridors_demo_{kind}.geojson", kind=kind, owner_country="col"
        )
        assert problems == [] and len(frame) >= 1
        assert frame["illustrative"].all() and frame["note"].str.contains("not intelligence").all()
        assert (frame["owner_country"] == "COL").all() and frame.crs.to_epsg() == 4326
        assert str(frame["valid_from"].iloc[0]) == "2014-01-01"


def test_bad_features_are_reported_by_row_and_the_rest_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.geojson",
        [
            _line({"nombre": "bien", "fuente": "x", "hasta": "2024-05-01"}, [[-75, 5], [-74, 6]]),
            {
                "type": "Feature",
                "properties": {"nombre": "punto"},
                "geometry": {"type": "Point", "coordinates": [-75, 5]},
            },
            _line({"nombre": "fecha", "desde": "el año pasado"}, [[-75, 5], [-74, 6]]),
            _line({"nombre": "al revés", "desde": "2024-01-01", "hasta": "2023-01-01"}, [[-75, 5], [-74, 6]]),
        ],
    )
    frame, problems = read_corridors(path, kind="fuel", owner_country="COL")
    assert frame["name"].tolist() == ["bien"] and frame["source"].tolist() == ["x"]
    assert sorted((p.row, p.field) for p in problems) == [(2, "geometry"), (3, "valid_from"), (4, "valid_to")]
    assert all(p.file == "c.geojson" and p.reason and p.reason_es for p in problems)
    with pytest.raises(InputError, match="--kind 'cocaine'"):
        read_corridors(path, kind="cocaine", owner_country="COL")


@pytest.fixture()
def no_corridors(engine: Engine) -> None:
    """No corridor layer in the store (other tests of the run may have loaded some)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM corridors"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))


@pytest.mark.usefixtures("no_corridors")
def test_corridors_stored_per_owner_and_hidden_from_other_offices(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    first = load_corridors(
        engine, DEMO / "corridors_demo_drug.geojson", settings=settings, kind="drug", country="COL"
    )
    path = _write(tmp_path / "fuel.gpkg.geojson", [_line({"name": "f"}, [[-72, 8], [-72, 9]])])
    load_corridors(engine, path, settings=settings, kind="fuel", country="PER")
    colombia = read_stored_corridors(engine, Scope(role="prosecutor", country="COL"))
    assert set(colombia["owner_country"]) == {"COL"} and len(colombia) == first.feature_count
    assert read_stored_corridors(engine, Scope(role="prosecutor", country="ECU")).empty
    shared = read_stored_corridors(
        engine, Scope(role="prosecutor", country="ECU", partners={"PER": "detail"})
    )
    assert shared["name"].tolist() == ["f"]
    assert set(read_stored_corridors(engine, Scope(role="admin"))["owner_country"]) == {"COL", "PER"}
    # loading the same kind and owner again replaces that layer only
    again = load_corridors(engine, path, settings=settings, kind="drug", country="COL")
    assert again.replaced_layer_id == first.layer_id
    assert sorted(read_stored_corridors(engine, Scope(role="admin"))["kind"]) == ["drug", "fuel"]
