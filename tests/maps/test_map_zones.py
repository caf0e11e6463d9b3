"""The maps draw the convergence zones the run stored, in the reader's scope, not recomputed ones."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import Scope
from geodata.settings import Settings
from maps.products import ProductParams, make_products, read_layers
from maps.risk import RiskParams
from routes.pipeline import RunSummary
from routes.synthetic import Scenario
from tests.maps.test_joint_export import stored_before_0008
from tests.routes.test_overlap_store import stored  # noqa: F401  (the stored run, reused)

ADMIN = Scope(role="admin")
GTM = Scope(role="prosecutor", country="GTM")
GTM_WITH_HND = Scope(role="prosecutor", country="GTM", partners={"HND": "detail"})
#: A score no computation gives: the maps must show it if they read the stored zones.
STORED_SCORE = 0.4321


@pytest.fixture(scope="module")
def stored_run(engine: Engine, stored: tuple[Scenario, RunSummary]) -> RunSummary:  # noqa: F811
    """The run of the overlap-store tests (a route meeting a drug corridor of Guatemala's office and
    a fuel one of Honduras'), its stored zones given a score no computation gives."""
    _, run = stored
    assert run.counts["convergence_zones"] >= 1
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE convergence_zones SET score = :s WHERE run_id = :r"),
            {"s": STORED_SCORE, "r": run.run_id},
        )
    return run


@pytest.fixture
def params(settings: Settings) -> ProductParams:
    """The settings' products at 10 km cells, k = 1 and a 5 km risk surface."""
    return ProductParams.from_settings(settings, cell_km=10.0, k=1, risk=RiskParams(res_m=5_000.0))


def test_maps_read_the_stored_zones_in_the_readers_scope(
    engine: Engine, stored_run: RunSummary, params: ProductParams
) -> None:
    zones = read_layers(engine, ADMIN, params).zones
    assert len(zones) == stored_run.counts["convergence_zones"]
    assert (zones["score"] == STORED_SCORE).all()  # read back, not recomputed
    # a zone mixes both offices' corridors: only a reader of both sees it
    assert read_layers(engine, GTM, params).zones.empty
    assert len(read_layers(engine, GTM_WITH_HND, params).zones) == len(zones)


def test_html_map_shows_the_stored_zones_only_to_a_reader_of_every_corridor(
    engine: Engine, stored_run: RunSummary, params: ProductParams, tmp_path: Path
) -> None:
    both = make_products(engine, tmp_path / "both", scope=GTM_WITH_HND, params=params, name="both")
    html = both.html.read_text(encoding="utf-8")
    assert "Zonas de convergencia" in html and str(STORED_SCORE) in html
    alone = make_products(engine, tmp_path / "gtm", scope=GTM, params=params, name="gtm")
    assert str(STORED_SCORE) not in alone.html.read_text(encoding="utf-8")
    assert alone.png.stat().st_size > 0 and both.png.stat().st_size > 0


def test_zones_of_a_run_stored_before_them_follow_the_settings_distance(
    engine: Engine, settings: Settings, stored_run: RunSummary
) -> None:
    def zones(convergence_km: float) -> gpd.GeoDataFrame:
        changed = settings.model_copy(update={"convergence_km": convergence_km})
        params = ProductParams.from_settings(changed, cell_km=10.0, k=1)
        return read_layers(engine, ADMIN, params).zones

    # a run of before migration 0008 stored no zones: the maps compute them, RUTAS_CONVERGENCE_KM apart
    with stored_before_0008(engine, stored_run.run_id):
        wide, narrow = zones(25.0), zones(0.1)
    assert len(wide) >= 1 and STORED_SCORE not in set(wide["score"])  # computed, not read
    # zones are the converging stretch buffered by the distance: 100 m instead of 25 km
    assert narrow.to_crs(32616).area.sum() < 0.1 * wide.to_crs(32616).area.sum()
