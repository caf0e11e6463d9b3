"""Overlap products stored per run by ``rutas run``, and read back only in the reader's scope."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely
import shapely.ops
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors
from geodata.db import Scope, scoped
from geodata.settings import Settings
from maps.products import corridors_for_export, joint_operations_for_export
from routes.analysis import AnalysisParams
from routes.export import ExportRequest
from routes.overlap_store import (
    read_convergence_zones,
    read_corridor_overlaps,
    read_joint_operations,
    store_overlap_products,
)
from routes.pipeline import RunSummary, read_routes, run_pipeline
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
    load_corridors(
        engine,
        _corridor_file(tmp / "drug.geojson", planted),
        settings=settings,
        kind="drug",
        country="GTM",
        source="tests",
    )
    load_corridors(
        engine,
        _corridor_file(tmp / "fuel.geojson", shapely.affinity.translate(planted, 0, 0.01)),
        settings=settings,
        kind="fuel",
        country="HND",
        source="tests",
    )
    runs = run_pipeline(engine, settings, PARAMS)
    assert len(runs) == 1
    return scenario, runs[0]


def test_run_stores_its_overlaps_and_zones_and_counts_them(
    engine: Engine, stored: tuple[Scenario, RunSummary]
) -> None:
    _, run = stored
    with engine.connect() as conn:
        stored_counts = {
            table: int(
                conn.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE run_id = :r"), {"r": run.run_id}
                ).scalar_one()
            )
            for table in ("corridor_overlaps", "convergence_zones", "joint_operations")
        }
        recorded = conn.execute(
            sa.text("SELECT counts FROM analysis_runs WHERE id = :r"), {"r": run.run_id}
        ).scalar_one()
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
        exported.dropna(subset=["route_id"])
        .sort_values("score", ascending=False)["shared_km"]
        .reset_index(drop=True),
        mine["shared_km"].reset_index(drop=True),
    )


def test_joint_operations_are_stored_with_counts_and_read_with_the_readers_zones(
    engine: Engine, stored: tuple[Scenario, RunSummary]
) -> None:
    _, run = stored
    routes = read_routes(engine, [run.run_id])
    zones = read_convergence_zones(engine, [run.run_id], Scope(role="admin"))
    route = routes[routes["id"] == zones["route_id"].iloc[0]].iloc[0]
    # a crossing on the converging route, whose records come from two offices (14 and 3 records)
    point = zones.geometry.iloc[0].representative_point()
    point = shapely.ops.nearest_points(route.geometry, point)[0]
    crossings = gpd.GeoDataFrame({"id": [900001], "name": ["Paso de prueba"]}, geometry=[point], crs=4326)
    with engine.connect() as conn:
        members = [
            int(e)
            for (e,) in conn.execute(
                sa.text("SELECT event_id FROM route_events WHERE route_id = :r ORDER BY event_id"),
                {"r": int(route["id"])},
            )
        ]
    assert len(members) >= 17
    events = pd.DataFrame(
        {
            "event_id": members[:17],
            "lon": point.x,
            "lat": point.y,
            "occurred_at": pd.Timestamp("2024-01-01", tz="UTC"),
            "owner_country": ["SLV"] * 14 + ["GTM"] * 3,
        }
    )
    one = routes[routes["id"] == route["id"]].assign(event_ids=[members[:17]], crossing_ids=[[900001]])
    with scoped(engine) as conn:
        run_id = int(
            conn.execute(
                sa.text(
                    "INSERT INTO analysis_runs (status, parameters, filters, code_version) "
                    "VALUES ('succeeded', '{}', '{}', 'tests') RETURNING id"
                )
            ).scalar_one()
        )
        written = store_overlap_products(conn, run_id, one, events, crossings, k=11)
    assert written["joint_operations"] == 1 and written["convergence_zones"] >= 1
    admin = read_joint_operations(engine, [run_id], Scope(role="admin"))
    salvador = read_joint_operations(engine, [run_id], SLV)
    row = admin.iloc[0]
    assert row["name"] == "Paso de prueba" and row["countries"] == "GTM,SLV"
    # Guatemala's 3 records are under k: stored as null, shown as <11 to every reader
    assert row["records_by_country"] == {"GTM": "<11", "SLV": 14}
    assert row["route_ids"] == [int(route["id"])]
    # the corridor term counts only for a reader who may see the convergence zone
    assert bool(row["in_convergence_zone"]) and not bool(salvador.iloc[0]["in_convergence_zone"])
    assert row["score"] == pytest.approx(salvador.iloc[0]["score"] + 0.15)
    with scoped(engine) as conn:
        conn.execute(sa.text("DELETE FROM analysis_runs WHERE id = :r"), {"r": run_id})
