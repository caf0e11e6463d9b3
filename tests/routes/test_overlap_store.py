"""Overlap products stored per run by ``rutas run``, and read back only in the reader's scope."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import shapely.ops
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors, read_stored_corridors
from geodata.db import Scope, scoped
from geodata.settings import Settings
from maps.products import ProductParams, corridors_for_export, joint_operations_for_export
from routes.analysis import AnalysisParams
from routes.export import ExportRequest
from routes.overlap import route_corridor_overlap
from routes.overlap_store import (
    OverlapParams,
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
    engine: Engine, settings: Settings, stored: tuple[Scenario, RunSummary], tmp_path: Path
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
    params = ProductParams.from_settings(settings)
    assert corridors_for_export(engine, request, params).empty
    assert joint_operations_for_export(engine, request, params).empty
    # the export reads the stored figures of the latest run in the reader's scope
    request = ExportRequest(format="csv", out=tmp_path / "g.csv", scope=GTM)
    exported = corridors_for_export(engine, request, params)
    assert set(exported["owner_country"]) == {"GTM"}
    mine = read_corridor_overlaps(engine, runs, GTM)
    pd.testing.assert_series_equal(
        exported.dropna(subset=["route_id"])
        .sort_values("score", ascending=False)["shared_km"]
        .reset_index(drop=True),
        mine["shared_km"].reset_index(drop=True),
    )


def _swap_borders(conn: sa.Connection, line: shapely.LineString | None, restore: list[int]) -> list[int]:
    """Make ``line`` (GTM-SLV) the only active border segment, or (``line`` None) put ``restore`` back."""
    if line is None:
        conn.execute(
            sa.text("DELETE FROM reference_layers WHERE kind = 'borders' AND source = 'tests sector'")
        )
        conn.execute(
            sa.text("UPDATE reference_layers SET active = true WHERE id = ANY(CAST(:ids AS bigint[]))"),
            {"ids": restore},
        )
        return []
    retired = conn.execute(
        sa.text("UPDATE reference_layers SET active = false WHERE kind = 'borders' AND active RETURNING id")
    ).scalars()
    previous = [int(i) for i in retired]
    layer = conn.execute(
        sa.text(
            "INSERT INTO reference_layers (kind, source, file_name, sha256, feature_count, active) "
            "VALUES ('borders', 'tests sector', 'sector.geojson', 'x', 1, true) RETURNING id"
        )
    ).scalar_one()
    conn.execute(
        sa.text(
            "INSERT INTO border_segments (layer_id, country_a, country_b, geom) "
            "VALUES (:layer, 'GTM', 'SLV', ST_GeomFromText(:wkt, 4326))"
        ),
        {"layer": layer, "wkt": line.wkt},
    )
    return previous


def test_joint_operations_are_stored_with_counts_and_read_with_the_readers_zones(
    engine: Engine, settings: Settings, stored: tuple[Scenario, RunSummary]
) -> None:
    _, run = stored
    routes = read_routes(engine, [run.run_id])
    zones = read_convergence_zones(engine, [run.run_id], Scope(role="admin"))
    route = routes[routes["id"] == zones["route_id"].iloc[0]].iloc[0]
    # a crossing on the converging route, whose records come from two offices (14 and 3 records)
    point = zones.geometry.iloc[0].representative_point()
    point = shapely.ops.nearest_points(route.geometry, point)[0]
    crossings = gpd.GeoDataFrame({"id": [900001], "name": ["Paso de prueba"]}, geometry=[point], crs=4326)
    # and a 2.8 km border segment through that crossing: the border sector it lies in
    sector = shapely.LineString([(point.x - 0.01, point.y - 0.01), (point.x + 0.01, point.y + 0.01)])
    with engine.connect() as conn:
        members = [
            int(e)
            for (e,) in conn.execute(
                sa.text("SELECT event_id FROM route_events WHERE route_id = :r ORDER BY event_id"),
                {"r": int(route["id"])},
            )
        ]
    assert len(members) >= 17
    # the first 3 records (November) and the last 2 (March) are fewer than k: the stored period
    # is January, the only month holding 11 or more, not the exact first and last dates
    when = ["2023-11-03 08:00"] * 3 + ["2024-01-14 10:00"] * 12 + ["2024-03-29 23:00"] * 2
    events = pd.DataFrame(
        {
            "event_id": members[:17],
            "lon": point.x,
            "lat": point.y,
            "occurred_at": pd.to_datetime(when, utc=True),
            "owner_country": ["SLV"] * 14 + ["GTM"] * 3,
        }
    )
    one = routes[routes["id"] == route["id"]].assign(
        event_ids=[members[:17]],
        crossing_ids=[[900001]],
        first_event=pd.Timestamp(when[0], tz="UTC"),
        last_event=pd.Timestamp(when[-1], tz="UTC"),
    )
    with scoped(engine) as conn:
        run_id = int(
            conn.execute(
                sa.text(
                    "INSERT INTO analysis_runs (status, parameters, filters, code_version) "
                    "VALUES ('succeeded', '{}', '{}', 'tests') RETURNING id"
                )
            ).scalar_one()
        )
        previous = _swap_borders(conn, sector, [])
        segment_id = int(
            conn.execute(
                sa.text(
                    "SELECT b.id FROM border_segments b JOIN reference_layers l ON l.id = b.layer_id "
                    "WHERE l.active AND l.kind = 'borders'"
                )
            ).scalar_one()
        )
        params = OverlapParams.from_settings(settings)
        written = store_overlap_products(conn, run_id, one, events, crossings, params=params)
        _swap_borders(conn, None, previous)
    assert params.k == 11 and params.sector_reach_m == 25_000.0
    assert written["joint_operations"] == 1 and written["joint_sectors"] == 1
    assert written["convergence_zones"] >= 1
    admin = read_joint_operations(engine, [run_id], Scope(role="admin"), k=params.k)
    salvador = read_joint_operations(engine, [run_id], SLV, k=params.k)
    assert admin["candidate_type"].tolist() == ["crossing", "border_sector"]
    row, sector_row = admin.iloc[0], admin.iloc[1]
    assert row["name"] == "Paso de prueba" and row["countries"] == "GTM,SLV"
    assert row["crossing_id"] == 900001 and row["border_segment_id"] is None
    # Guatemala's 3 records are under k: stored as null, shown as <11 to every reader
    assert row["records_by_country"] == {"GTM": "<11", "SLV": 14}
    assert row["route_ids"] == [int(route["id"])]
    january = pd.Timestamp("2024-01-01", tz="UTC")
    for candidate in (row, sector_row):
        assert candidate["period_start"] == january and candidate["period_end"] == january
    with engine.connect() as conn:
        stored_periods = conn.execute(
            sa.text(
                "SELECT period_start, period_end FROM joint_operations WHERE run_id = :r UNION ALL "
                "SELECT period_start, period_end FROM joint_sectors WHERE run_id = :r"
            ),
            {"r": run_id},
        ).all()
    assert {tuple(pd.Timestamp(t) for t in p) for p in stored_periods} == {(january, january)}
    # the corridor term counts only for a reader who may see the convergence zone
    assert bool(row["in_convergence_zone"]) and not bool(salvador.iloc[0]["in_convergence_zone"])
    assert row["score"] == pytest.approx(salvador.iloc[0]["score"] + 0.15)
    # the sector: same routes, records and score as its crossing, which it lists
    assert sector_row["border_segment_id"] == segment_id and sector_row["crossing_id"] is None
    assert sector_row["name"] == f"GTM-SLV sector {segment_id}"
    assert sector_row["countries"] == "GTM,SLV"
    assert sector_row["records_by_country"] == {"GTM": "<11", "SLV": 14}
    assert sector_row["route_ids"] == [int(route["id"])] and sector_row["crossing_ids"] == [900001]
    assert sector_row["border_segment_ids"] == [segment_id] and row["border_segment_ids"] == []
    # the whole 2.8 km segment is within reach of the route, and lies in the zone
    assert sector_row.geometry.equals_exact(shapely.MultiLineString([sector]), 1e-7)  # 1 cm
    assert sector_row["score"] == pytest.approx(row["score"])
    by_type = salvador.set_index("candidate_type")
    assert not bool(by_type.at["border_sector", "in_convergence_zone"])
    assert by_type.at["border_sector", "score"] == pytest.approx(sector_row["score"] - 0.15)
    with scoped(engine) as conn:
        conn.execute(sa.text("DELETE FROM analysis_runs WHERE id = :r"), {"r": run_id})


def _run_with_sector(engine: Engine, settings: Settings, sector: shapely.LineString) -> RunSummary:
    """``rutas run`` with ``sector`` as the only active border segment (GTM-SLV), then the borders back."""
    with scoped(engine) as conn:
        previous = _swap_borders(conn, sector, [])
    try:
        runs = run_pipeline(engine, settings, PARAMS)
    finally:
        with scoped(engine) as conn:
            _swap_borders(conn, None, previous)
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def sector_run(
    engine: Engine, settings: Settings, stored: tuple[Scenario, RunSummary]
) -> tuple[RunSummary, shapely.LineString]:
    """A second run after a third of the records became Guatemala's and a GTM-SLV border segment
    of 2.8 km was laid across the middle of the planted intensifying route."""
    scenario, _ = stored
    planted = scenario.planted[scenario.planted["behaviour"] == "intensifying"].geometry.iloc[0]
    mid = planted.interpolate(0.5, normalized=True)
    sector = shapely.LineString([(mid.x - 0.01, mid.y + 0.01), (mid.x + 0.01, mid.y - 0.01)])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET owner_country = 'GTM' WHERE id % 3 = 0"))
    return _run_with_sector(engine, settings, sector), sector


def test_a_run_stores_the_border_sectors_its_routes_of_two_countries_reach_and_exports_them(
    engine: Engine, sector_run: tuple[RunSummary, shapely.LineString], tmp_path: Path
) -> None:
    from routes.export import export

    run, sector = sector_run
    assert run.counts["joint_sectors"] == 1 and run.parameters["overlap"]["sector_reach_m"] == 25_000.0
    # the answer by other means: routes within 25 km of the segment (PostGIS, geodesic), their
    # records per owner country counted in SQL, the score of the documented formula
    with engine.connect() as conn:
        reached = conn.execute(
            sa.text(
                "SELECT id, category FROM routes WHERE run_id = :r AND ST_DWithin(CAST(geom AS geography), "
                "CAST(ST_GeomFromText(:wkt, 4326) AS geography), 25000) ORDER BY id"
            ),
            {"r": run.run_id, "wkt": sector.wkt},
        ).all()
        ids = [int(r.id) for r in reached]
        counts = dict(
            conn.execute(
                sa.text(
                    "SELECT e.owner_country, count(*) FROM route_events re "
                    "JOIN events e ON e.id = re.event_id WHERE re.route_id = ANY(:ids) "
                    "GROUP BY e.owner_country"
                ),
                {"ids": ids},
            ).all()
        )
    assert ids and set(counts) == {"GTM", "SLV"} and min(counts.values()) >= 11
    weights = {"new_hot": 1.0, "intensifying_hot": 1.0, "consecutive_hot": 0.8, "persistent_hot": 0.6}
    emerging = max(weights.get(r.category, 0.0) for r in reached)
    first, second = sorted(counts.values(), reverse=True)
    base = 0.4 * min((first + second) / 100, 1) + 0.2 * second / first + 0.25 * emerging
    out = tmp_path / "joint.geojson"
    report = export(engine, "joint-operations", ExportRequest(format="geojson", out=out))
    features = json.loads(out.read_text(encoding="utf-8"))["features"]
    sectors = [f for f in features if f["properties"]["candidate_type"] == "border_sector"]
    assert report.features == len(features) and len(sectors) == 1
    props = sectors[0]["properties"]
    assert props["countries"] == "GTM,SLV" and json.loads(props["records_by_country"]) == counts
    assert props["route_ids"] == ids and props["crossing_ids"] == [] and props["crossing_id"] is None
    assert props["name"] == f"GTM-SLV sector {props['border_segment_id']}"
    # both offices' corridors converge on the planted route: the corridor term counts for the system
    assert props["in_convergence_zone"] and props["score"] == pytest.approx(base + 0.15)
    assert sectors[0]["geometry"]["type"] == "MultiLineString"
    # Guatemala's office cannot see Honduras' fuel corridor: no zone, no corridor term, same counts
    gtm = tmp_path / "joint_gtm.csv"
    export(engine, "joint-operations", ExportRequest(format="csv", out=gtm, scope=GTM))
    table = pd.read_csv(gtm)
    row = table[table["candidate_type"] == "border_sector"].iloc[0]
    assert row["score"] == pytest.approx(base) and not bool(row["in_convergence_zone"])
    assert json.loads(row["records_by_country"]) == counts and pd.isna(row["crossing_id"])
    # CSV writes WKT to 6 decimals
    assert shapely.from_wkt(row["geometry"]).equals_exact(shapely.MultiLineString([sector]), 1e-6)


def test_the_run_takes_the_overlap_distances_and_k_from_the_settings(
    engine: Engine, settings: Settings, sector_run: tuple[RunSummary, shapely.LineString]
) -> None:
    first, sector = sector_run
    changed = settings.model_copy(
        update={"overlap_buffer_km": 0.5, "convergence_km": 0.1, "border_near_km": 0.5, "k_anonymity": 1000}
    )
    run = _run_with_sector(engine, changed, sector)
    assert run.parameters["overlap"] == {
        "buffer_m": 500.0,
        "convergence_m": 100.0,
        "sector_reach_m": 500.0,
        "k": 1000,
    }
    admin = Scope(role="admin")
    # zones are the converging stretch buffered by convergence_m: 100 m instead of 25 km
    wide_zones = read_convergence_zones(engine, [first.run_id], admin).to_crs(32616)
    narrow_zones = read_convergence_zones(engine, [run.run_id], admin).to_crs(32616)
    assert narrow_zones.area.sum() < 0.1 * wide_zones.area.sum()
    # the stored overlaps are those of a 500 m buffer, not of the 5 km default
    routes = read_routes(engine, [run.run_id]).assign(route_id=lambda f: f["id"])
    corridors = read_stored_corridors(engine, admin)
    stored_km = read_corridor_overlaps(engine, [run.run_id], admin)["shared_km"].sort_values()
    for buffer_m, same in ((500.0, True), (5_000.0, False)):
        expected = route_corridor_overlap(routes, corridors, buffer_m=buffer_m)["shared_km"].sort_values()
        assert (len(expected) == len(stored_km) and np.allclose(expected, stored_km)) is same
    # every count is under k = 1000: stored as null, and shown with the run's k whatever the reader's
    joint = read_joint_operations(engine, [run.run_id], admin, k=11)
    assert run.counts["joint_sectors"] == 1
    assert set(joint.iloc[0]["records_by_country"].values()) == {"<1000"}


def test_the_upgrade_coarsens_the_periods_of_crossings_stored_before_it(
    engine: Engine, stored: tuple[Scenario, RunSummary]
) -> None:
    from alembic import command

    from geodata.db import alembic_config

    _, run = stored
    with scoped(engine) as conn:
        members = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT re.route_id, e.occurred_at FROM route_events re "
                    "JOIN events e ON e.id = re.event_id JOIN routes r ON r.id = re.route_id "
                    "WHERE r.run_id = :r"
                ),
                {"r": run.run_id},
            ).all(),
            columns=["route_id", "occurred_at"],
        )
    sizes = members["route_id"].value_counts()
    # every route of the run together, and the route with the fewest records alone
    candidates = [sorted(int(r) for r in sizes.index), [int(sizes.index[-1])]]
    expected = []
    for ids in candidates:
        mine = members[members["route_id"].isin(ids)]
        months = pd.DatetimeIndex(pd.to_datetime(mine["occurred_at"], utc=True).dt.tz_convert(None))
        per_month = pd.Series(1, index=months.to_period("M")).groupby(level=0).size()
        held = per_month[per_month >= 11].index
        expected.append(
            (held.min().to_timestamp().tz_localize("UTC"), held.max().to_timestamp().tz_localize("UTC"))
            if len(held)
            else (None, None)
        )
    assert expected[0][0] is not None
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            # rows as a run stored them before 0010: the routes' exact first and last event
            ids = [
                int(
                    conn.execute(
                        sa.text(
                            "INSERT INTO joint_operations (run_id, crossing_id, name, countries, "
                            "records_by_country, route_ids, period_start, period_end, base_score, geom) "
                            "VALUES (:run, 1, 'Paso', 'GTM,SLV', '{}', :routes, :start, :end, 0.5, "
                            "ST_SetSRID(ST_MakePoint(-89, 14), 4326)) RETURNING id"
                        ),
                        {
                            "run": run.run_id,
                            "routes": routes,
                            "start": members["occurred_at"].min().to_pydatetime(),
                            "end": members["occurred_at"].max().to_pydatetime(),
                        },
                    ).scalar_one()
                )
                for routes in candidates
            ]
            command.downgrade(alembic_config(conn), "0009")
            command.upgrade(alembic_config(conn), "head")
            periods = conn.execute(
                sa.text(
                    "SELECT period_start, period_end FROM joint_operations "
                    "WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id"
                ),
                {"ids": ids},
            ).all()
            role = conn.execute(sa.text("SELECT current_setting('rutas.role', true)")).scalar()
        finally:
            outer.rollback()
    got = [tuple(None if t is None else pd.Timestamp(t) for t in p) for p in periods]
    assert got == expected and role in (None, "")
