"""``run_pipeline`` on the real PostGIS: El Salvador's roads, planted routes stored as events."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.errors import InputError
from geodata.settings import Settings
from routes.analysis import AnalysisParams
from routes.pipeline import RunFilters, RunSummary, read_routes, run_pipeline
from routes.synthetic import Scenario
from tests.routes.store_scenario import insert_events, store_scenario

PARAMS = AnalysisParams(neighbour_km=20.0)


@pytest.fixture(scope="module")
def stored(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Scenario, dict[int, int], RunSummary]:
    scenario, ids = store_scenario(engine, settings, data_dir, tmp_path_factory.mktemp("roads"))
    runs = run_pipeline(engine, settings, PARAMS)
    assert len(runs) == 1
    return scenario, ids, runs[0]


def _covered(route: shapely.Geometry, scenario: Scenario, behaviour: str) -> float:
    """Share of the planted route's length within ~200 m (0.002 degrees) of ``route``."""
    planted = scenario.planted[scenario.planted["behaviour"] == behaviour].geometry.iloc[0]
    return float(planted.intersection(route.buffer(0.002)).length / planted.length)


def _best(routes: gpd.GeoDataFrame, scenario: Scenario, behaviour: str) -> int:
    """Index of the route covering most of the planted one."""
    return int(max(routes.index, key=lambda i: _covered(routes.geometry.loc[i], scenario, behaviour)))


def test_run_snaps_and_stores_the_planted_routes(
    engine: Engine, stored: tuple[Scenario, dict[int, int], RunSummary]
) -> None:
    scenario, ids, run = stored
    assert run.counts["snapping"]["pending"] == len(scenario.events)
    assert run.counts["events_analysed"] == len(scenario.events)
    with engine.connect() as conn:
        record = conn.execute(
            sa.text(
                "SELECT status, parameters, filters, code_version, counts, timings, finished_at "
                "FROM analysis_runs WHERE id = :id"
            ),
            {"id": run.run_id},
        ).one()
        routes = conn.execute(
            sa.text(
                "SELECT id, category, trend, segment_keys, event_count, countries, length_m, "
                "ST_GeometryType(geom) AS gtype, monthly_counts FROM routes WHERE run_id = :id"
            ),
            {"id": run.run_id},
        ).all()
        members: dict[int, int] = {
            int(r): int(n)
            for r, n in conn.execute(sa.text("SELECT route_id, count(*) FROM route_events GROUP BY 1"))
        }
    assert record.status == "succeeded" and record.finished_at is not None
    assert record.parameters["neighbour_km"] == 20.0 and record.parameters["segment_km"] == 10.0
    assert record.filters["crime_types"] == ["smuggling"]
    assert record.code_version.startswith(("git:", "rutas "))
    assert set(record.counts["layers"]) >= {"roads"}
    assert record.counts["routes"] == len(routes) >= 2
    assert {"snapping", "read", "cube", "gi_star_fdr", "routes", "write"} <= set(record.timings)
    assert all(r.gtype == "ST_MultiLineString" and r.countries == ["SLV"] for r in routes)
    assert all(members[r.id] == r.event_count == sum(r.monthly_counts.values()) for r in routes)

    # Snapping may put an event on a parallel edge of the same road, so compare places, not edge ids.
    stored_routes = read_routes(engine, [run.run_id])
    best_persistent = stored_routes.loc[_best(stored_routes, scenario, "persistent")]
    best_rising = stored_routes.loc[_best(stored_routes, scenario, "intensifying")]
    assert best_persistent["category"] == "persistent_hot"
    assert _covered(best_persistent.geometry, scenario, "persistent") >= 0.8
    assert best_rising["trend"] == "up"
    assert _covered(best_rising.geometry, scenario, "intensifying") >= 0.8
    # the stored events of the persistent route are mostly the planted ones (plus background on it)
    k = int(np.flatnonzero(scenario.planted["behaviour"].to_numpy() == "persistent")[0])
    planted_ids = {ids[int(i)] for i in np.flatnonzero(scenario.events["planted"].to_numpy() == k)}
    with engine.connect() as conn:
        on_route = {
            int(e)
            for (e,) in conn.execute(
                sa.text("SELECT event_id FROM route_events WHERE route_id = :r"),
                {"r": int(best_persistent["id"])},
            )
        }
    assert len(on_route & planted_ids) >= 0.75 * len(planted_ids)
    assert len(on_route & planted_ids) >= 0.85 * len(on_route)


def test_a_second_run_keeps_the_route_keys(
    engine: Engine, settings: Settings, stored: tuple[Scenario, dict[int, int], RunSummary]
) -> None:
    _, _, first = stored
    second = run_pipeline(engine, settings, PARAMS)[0]
    assert second.run_id != first.run_id
    assert second.counts["snapping"]["pending"] == 0
    before = read_routes(engine, [first.run_id])
    after = read_routes(engine, [second.run_id])
    assert sorted(after["route_key"]) == sorted(before["route_key"])
    assert after["seen_before"].all() and not before["seen_before"].any()
    latest = read_routes(engine)
    assert set(latest["run_id"]) == {second.run_id}


def test_crime_types_are_analysed_apart_and_a_failed_run_is_recorded(
    engine: Engine, settings: Settings, stored: tuple[Scenario, dict[int, int], RunSummary]
) -> None:
    scenario, _, _ = stored
    sample = scenario.events.iloc[:40]
    insert_events(
        engine,
        sample["lon"].to_numpy(),
        sample["lat"].to_numpy(),
        sample["occurred_at"].dt.strftime("%Y-%m-%d").tolist(),
        crime_type="trafficking",
    )
    runs = run_pipeline(engine, settings, PARAMS)
    assert [r.crime_types for r in runs] == [["smuggling"], ["trafficking"]]
    assert runs[1].counts["events_analysed"] == 40
    assert runs[0].counts["events_analysed"] == len(scenario.events)

    with pytest.raises(InputError) as caught:
        run_pipeline(engine, settings, PARAMS, RunFilters(crime_types=("both",)))
    with engine.connect() as conn:
        status, error = conn.execute(
            sa.text("SELECT status, error FROM analysis_runs ORDER BY id DESC LIMIT 1")
        ).one()
    assert status == "failed"
    assert error == str(caught.value) and "filters" in error


def test_bad_parameters_are_refused_before_any_run(engine: Engine, settings: Settings) -> None:
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM analysis_runs")).scalar_one()
    with pytest.raises(InputError, match="slice=fortnight"):
        run_pipeline(engine, settings, AnalysisParams(slice="fortnight"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM analysis_runs")).scalar_one() == before


def test_filters_that_leave_nothing_are_refused_without_a_run(
    engine: Engine, settings: Settings, stored: tuple[Scenario, dict[int, int], RunSummary]
) -> None:
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM analysis_runs")).scalar_one()
    for filters in (
        RunFilters(countries=("HND",)),
        RunFilters(kinds=("interception",)),
        RunFilters(since=pd.Timestamp("2030-01-01", tz="UTC")),
    ):
        with pytest.raises(InputError, match="No snapped event passes the filters"):
            run_pipeline(engine, settings, PARAMS, filters)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM analysis_runs")).scalar_one() == before
    # a period cut to the last year still finds routes, and the run records its filters
    (run,) = run_pipeline(
        engine,
        settings,
        PARAMS,
        RunFilters(since=pd.Timestamp("2025-01-01", tz="UTC"), crime_types=("smuggling",)),
    )
    assert run.filters["since"] == "2025-01-01T00:00:00+00:00"
    assert run.counts["slices"] == 6 and run.counts["routes"] >= 1
