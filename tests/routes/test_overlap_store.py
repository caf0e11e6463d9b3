"""Overlap products stored per run by ``rutas run``, and read back only in the reader's scope."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors
from geodata.db import Scope
from geodata.settings import Settings
from maps.products import corridors_for_export, joint_operations_for_export
from routes.analysis import AnalysisParams
from routes.export import ExportRequest
from routes.overlap_store import read_convergence_zones, read_corridor_overlaps
from routes.pipeline import RunSummary, run_pipeline
from routes.synthetic import Scenario
from tests.routes.store_scenario import store_scenario

PARAMS = AnalysisParams(neighbour_km=20.0)
GTM = Scope(role="prosecutor", country="GTM")
GTM_WITH_HND = Scope(role="prosecutor", country="GTM", partners={"HND": "detail"})
SLV = Scope(role="prosecutor", country="SLV")


def _corridor_file(path: Path, line: shapely.LineString) -> Path:
    geometry = shapely.geometry.mapping(line)
    feature = {"type": "Feature", "properties": {"name": path.stem}, "geometry": geometry}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


@pytest.fixture(scope="module")
def stored(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Scenario, RunSummary]:
    tmp = tmp_path_factory.mktemp("overlap_store")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM corridors"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))
    scenario, _ = store_scenario(engine, settings, data_dir, tmp)
    planted = scenario.planted[scenario.planted["behaviour"] == "intensifying"].geometry.iloc[0]
    # a drug corridor of Guatemala's office on the planted route, a fuel one of Honduras' 1 km off
    load_corridors(engine, _corridor_file(tmp / "drug.geojson", planted), settings=settings,
                   kind="drug", country="GTM", source="tests")
    load_corridors(engine, _corridor_file(tmp / "fuel.geojson", shapely.affinity.translate(planted, 0, 0.01)),
                   settings=settings, kind="fuel", country="HND", source="tests")
    runs = run_pipeline(engine, settings, PARAMS)
    assert len(runs) == 1
    return scenario, runs[0]


def test_run_stores_its_overlaps_and_zones_and_counts_them(
    engine: Engine, stored: tuple[Scenario, RunSummary]
) -> None:
    _, run = stored
    with engine.connect() as conn:
        stored_counts = {
            table: int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE run_id = :r"),
                                    {"r": run.run_id}).scalar_one())
            for table in ("corridor_overlaps", "convergence_zones", "joint_operations")
        }
        recorded = conn.execute(sa.text("SELECT counts FROM analysis_runs WHERE id = :r"),
                                {"r": run.run_id}).scalar_one()
    assert {k: run.counts[k] for k in stored_counts} == stored_counts
    assert {k: recorded[k] for k in stored_counts} == stored_counts
    assert "overlap" in run.timings_s
    # both corridors follow the planted 40 km route: the route found there shares most of it
    overlaps = read_corridor_overlaps(engine, [run.run_id], Scope(role="admin"))
    best = overlaps.sort_values("shared_km").groupby("kind").tail(1).set_index("kind")
    assert set(best.index) == {"drug", "fuel"}
    assert (best["shared_km"] >= 30.0).all()
    assert best.loc["drug", "owner_country"] == "GTM" and best.loc["fuel", "owner_country"] == "HND"
    zones = read_convergence_zones(engine, [run.run_id], Scope(role="admin"))
    assert len(zones) >= 1 and set(zones["kinds"]) == {"drug,fuel"}
    assert zones["route_id"].isin(best["route_id"]).all()
    # no crossings are loaded, so no joint-operation candidate (and the run says so)
    assert stored_counts["joint_operations"] == 0


def test_another_office_does_not_read_corridor_derived_rows(
    engine: Engine, stored: tuple[Scenario, RunSummary], tmp_path: Path
) -> None:
    _, run = stored
    runs = [run.run_id]
    assert set(read_corridor_overlaps(engine, runs, GTM)["owner_country"]) == {"GTM"}
    # a zone mixes both offices' corridors: only a reader of both sees it
    assert read_convergence_zones(engine, runs, GTM).empty
    assert len(read_convergence_zones(engine, runs, GTM_WITH_HND)) == len(
        read_convergence_zones(engine, runs, Scope(role="admin"))
    )
    # El Salvador's office owns the records and routes, not the corridors: it reads none of them
    assert read_corridor_overlaps(engine, runs, SLV).empty
    assert read_convergence_zones(engine, runs, SLV).empty
    request = ExportRequest(format="csv", out=tmp_path / "c.csv", scope=SLV)
    assert corridors_for_export(engine, request).empty
    assert joint_operations_for_export(engine, request).empty
    # the export reads the stored figures of the latest run in the reader's scope
    exported = corridors_for_export(engine, ExportRequest(format="csv", out=tmp_path / "g.csv", scope=GTM))
    assert set(exported["owner_country"]) == {"GTM"}
    mine = read_corridor_overlaps(engine, runs, GTM)
    pd.testing.assert_series_equal(
        exported.dropna(subset=["route_id"]).sort_values("score", ascending=False)["shared_km"]
        .reset_index(drop=True),
        mine["shared_km"].reset_index(drop=True),
    )
