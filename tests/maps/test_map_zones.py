"""The maps draw the convergence zones the run stored, in the reader's scope, not recomputed ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors
from geodata.db import Scope
from geodata.settings import Settings
from maps.products import ProductParams, make_products, read_layers
from maps.risk import RiskParams
from routes.analysis import AnalysisParams
from routes.pipeline import RunSummary, run_pipeline
from tests.routes.store_scenario import store_scenario

ADMIN = Scope(role="admin")
GTM = Scope(role="prosecutor", country="GTM")
GTM_WITH_HND = Scope(role="prosecutor", country="GTM", partners={"HND": "detail"})
PARAMS = ProductParams(cell_km=10.0, k=1, risk=RiskParams(res_m=5_000.0))
#: A score no computation gives: the maps must show it if they read the stored zones.
STORED_SCORE = 0.4321


def _corridor_file(path: Path, line: shapely.LineString) -> Path:
    feature = {
        "type": "Feature",
        "properties": {"name": path.stem},
        "geometry": shapely.geometry.mapping(line),
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


@pytest.fixture(scope="module")
def stored_run(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> RunSummary:
    """A run whose route meets a drug corridor of Guatemala's office and a fuel one of Honduras'."""
    tmp = tmp_path_factory.mktemp("map_zones")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM corridors"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))
    scenario, _ = store_scenario(engine, settings, data_dir, tmp)
    planted = scenario.planted[scenario.planted["behaviour"] == "intensifying"].geometry.iloc[0]
    for kind, country, line in (
        ("drug", "GTM", planted),
        ("fuel", "HND", shapely.affinity.translate(planted, 0, 0.01)),
    ):
        load_corridors(
            engine,
            _corridor_file(tmp / f"{kind}.geojson", line),
            settings=settings,
            kind=kind,
            country=country,
            source="tests",
        )
    runs = run_pipeline(engine, settings, AnalysisParams(neighbour_km=20.0))
    assert len(runs) == 1 and runs[0].counts["convergence_zones"] >= 1
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE convergence_zones SET score = :s WHERE run_id = :r"),
            {"s": STORED_SCORE, "r": runs[0].run_id},
        )
    return runs[0]


def test_maps_read_the_stored_zones_in_the_readers_scope(engine: Engine, stored_run: RunSummary) -> None:
    zones = read_layers(engine, ADMIN, PARAMS).zones
    assert len(zones) == stored_run.counts["convergence_zones"]
    assert (zones["score"] == STORED_SCORE).all()  # read back, not recomputed
    # a zone mixes both offices' corridors: only a reader of both sees it
    assert read_layers(engine, GTM, PARAMS).zones.empty
    assert len(read_layers(engine, GTM_WITH_HND, PARAMS).zones) == len(zones)


def test_html_map_shows_the_stored_zones_only_to_a_reader_of_every_corridor(
    engine: Engine, stored_run: RunSummary, tmp_path: Path
) -> None:
    both = make_products(engine, tmp_path / "both", scope=GTM_WITH_HND, params=PARAMS, name="both")
    html = both.html.read_text(encoding="utf-8")
    assert "Zonas de convergencia" in html and str(STORED_SCORE) in html
    alone = make_products(engine, tmp_path / "gtm", scope=GTM, params=PARAMS, name="gtm")
    assert str(STORED_SCORE) not in alone.html.read_text(encoding="utf-8")
    assert alone.png.stat().st_size > 0 and both.png.stat().st_size > 0
