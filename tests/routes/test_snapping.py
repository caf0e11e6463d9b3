"""Snapping: the nearest edge is the true nearest, distances are geodesic metres, the stage is incremental."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
import sqlalchemy as sa
from pyproj import Geod
from sqlalchemy.engine import Engine

from geodata import reference
from geodata.network import build_edges
from geodata.settings import Settings
from routes.snapping import build_network, load_network, nearest_lines, reach_for, snap_pending, snap_points
from tests.factories import country_roads_file, grid_edges, make_events

GEOD = Geod(ellps="WGS84")
BORDERS = "natural_earth/ne_10m_admin_0_boundary_lines_land_latam.geojson"


@pytest.fixture(scope="module")
def slv_edges(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> gpd.GeoDataFrame:
    edges = build_edges(country_roads_file(data_dir, tmp_path_factory.mktemp("slv"), "SLV"), tolerance_m=20.0)
    return edges.assign(id=np.arange(100, 100 + len(edges)))


def test_snapped_edge_is_the_true_nearest_edge(slv_edges: gpd.GeoDataFrame) -> None:
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(-90.2, -87.6, 3000), rng.uniform(13.1, 14.5, 3000)
    reach = 8_000.0
    snaps = snap_points(lon, lat, build_network(slv_edges), reach_m=reach, search_m=50_000.0)

    # brute force: distance from every point to every edge in UTM 16N (El Salvador's zone)
    utm = slv_edges.to_crs("EPSG:32616").geometry.values
    pts = gpd.GeoSeries(shapely.points(lon, lat), crs="EPSG:4326").to_crs("EPSG:32616").values
    matrix = shapely.distance(np.asarray(pts)[:, None], np.asarray(utm)[None, :])
    best = matrix.min(axis=1)
    ids = slv_edges["id"].to_numpy()

    on = ~snaps["off_network"].to_numpy()
    chosen = np.searchsorted(ids, snaps.loc[on, "edge_id"].to_numpy(dtype=np.int64))
    chosen_dist = matrix[np.flatnonzero(on), chosen]
    # same edge, or one exactly as near (ties at shared nodes); projections differ by < 0.05 %
    assert np.all(chosen_dist <= best[on] * 1.0005 + 0.01)
    assert np.allclose(snaps.loc[on, "distance_m"], best[on], rtol=0.002)
    # off-network exactly when no edge is within reach (a 0.2 % band left for the projections)
    clear = np.abs(best - reach) > reach * 0.002
    assert np.array_equal(~on[clear], (best > reach)[clear])
    assert 300 < on.sum() < 2900  # the sample has points on and off the network
    # the planar search alone finds the brute-force minimum; threads split the work, not the answers
    px, py = shapely.get_x(np.asarray(pts)), shapely.get_y(np.asarray(pts))
    one, one_dist = nearest_lines(px, py, np.asarray(utm), None)
    two, _ = nearest_lines(px, py, np.asarray(utm), None, workers=2)
    assert np.allclose(one_dist, best) and np.array_equal(one, two)

    # the snapped point lies on the chosen edge at the stated fraction of its length
    at = shapely.line_interpolate_point(
        np.asarray(utm)[chosen], snaps.loc[on, "fraction"].to_numpy(), normalized=True
    )
    snapped = (
        gpd.GeoSeries(
            shapely.points(snaps.loc[on, "snapped_lon"], snaps.loc[on, "snapped_lat"]), crs="EPSG:4326"
        )
        .to_crs("EPSG:32616")
        .values
    )
    assert np.max(shapely.distance(at, np.asarray(snapped))) < 2.0


@pytest.mark.parametrize(("lon", "lat"), [(-106.5, 31.7), (-75.5, 0.5), (-70.9, -53.2)])
def test_distances_are_geodesic_metres_from_mexico_to_chile(lon: float, lat: float) -> None:
    # a north-south road; events east of it at known geodesic distances
    road = gpd.GeoDataFrame(
        {"id": [1], "source": [0], "target": [1], "length_m": [0.0]},
        geometry=[shapely.LineString([(lon, lat - 0.5), (lon, lat + 0.5)])],
        crs="EPSG:4326",
    )
    crossing = gpd.GeoDataFrame({"id": [9]}, geometry=[shapely.Point(lon, lat)], crs="EPSG:4326")
    distances = np.array([150.0, 3_200.0, 4_900.0])
    ev_lon, ev_lat, _ = GEOD.fwd(np.full(3, lon), np.full(3, lat), np.full(3, 90.0), distances)
    snaps = snap_points(
        np.asarray(ev_lon),
        np.asarray(ev_lat),
        build_network(road, crossings=crossing),
        reach_m=5_000.0,
        search_m=10_000.0,
    )
    assert np.allclose(snaps["distance_m"], distances, rtol=0.005)
    assert np.allclose(snaps["crossing_distance_m"], distances, rtol=0.005)
    assert np.allclose(snaps["fraction"], 0.5, atol=0.01)


def test_events_without_geometry_and_beyond_reach() -> None:
    network = build_network(grid_edges(-89.20, 13.70))
    lon = np.array([np.nan, -89.195, -89.195, -89.195])
    lat = np.array([13.70, 13.7001, 13.75, 13.75])
    snaps = snap_points(
        lon, lat, network, reach_m=np.array([5_000.0, 5_000.0, 5_000.0, 1_000.0]), search_m=1e4
    )
    assert snaps["no_geometry"].tolist() == [True, False, False, False]
    # ~11 m from the grid: on it; ~2.2 km north of it: on it with 5 km reach, off with 1 km
    assert snaps["off_network"].tolist() == [True, False, False, True]
    assert snaps.loc[1, "distance_m"] == pytest.approx(11.06, abs=0.1)


def test_reach_follows_coordinate_precision(settings: Settings) -> None:
    reach = reach_for(np.array([np.nan, 10.0, 2_500.0, 50_000.0]), settings)
    assert reach.tolist() == [
        settings.snap_max_distance_m,
        settings.snap_min_distance_m,
        2_500.0,
        settings.snap_max_distance_m,
    ]


def test_nearest_lines_agrees_with_brute_force_on_ties() -> None:
    # four edges meeting at one node: a point on the diagonal is equally near two of them
    lines = np.array(
        [
            shapely.LineString([(0, 0), (10, 0)]),
            shapely.LineString([(0, 0), (0, 10)]),
            shapely.LineString([(0, 0), (-10, 0)]),
            shapely.LineString([(20, 20), (30, 30)]),
        ]
    )
    index, distance = nearest_lines(np.array([3.0, 25.0, 100.0]), np.array([3.0, 24.0, 100.0]), lines, 50.0)
    assert index.tolist() == [0, 3, -1]
    assert distance[0] == pytest.approx(3.0) and np.isnan(distance[2])
    # a single point, far from the origin, is ordered without numeric warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single, _ = nearest_lines(np.array([2.5e6]), np.array([-1.5e6]), lines, None)
    assert single.tolist() == [3]


def test_snap_pending_stores_incrementally_with_layer_versions(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path: Path, clean_events: None
) -> None:
    reference.load_roads(engine, country_roads_file(data_dir, tmp_path, "SLV"), settings=settings)
    reference.load_borders(engine, data_dir / BORDERS, settings=settings)
    ids = make_events(
        engine,
        [
            (-89.19, 13.70),  # San Salvador
            (-90.08, 13.86),  # near La Hachadura, on the Guatemalan border
            (-89.60, 12.50),  # Pacific Ocean, 100+ km from any road
        ],
        precision_m=[None, 100.0, None],
    )
    report = snap_pending(engine, settings)
    assert (report.pending, report.snapped, report.off_network) == (3, 2, 1)
    assert report.near_border == 1

    with engine.connect() as conn:
        rows = {
            r.event_id: r
            for r in conn.execute(
                sa.text(
                    "SELECT event_id, edge_id, off_network, distance_m, border_countries, "
                    "border_distance_m, layers, ST_Distance(snapped::geography, "
                    "(SELECT geom FROM events WHERE id = event_id)::geography) AS d "
                    "FROM event_snaps"
                )
            )
        }
        edge_count = conn.execute(
            sa.text("SELECT count(*) FROM road_edges WHERE id = :id"), {"id": rows[ids[0]].edge_id}
        ).scalar_one()
    assert edge_count == 1
    assert rows[ids[0]].distance_m == pytest.approx(rows[ids[0]].d, rel=0.005, abs=0.5)
    assert rows[ids[1]].border_countries == "GTM-SLV" and rows[ids[1]].border_distance_m < 25_000
    assert rows[ids[2]].off_network and rows[ids[2]].edge_id is None
    assert rows[ids[0]].layers == load_network(engine).layers

    # nothing to do the second time; a new event alone is snapped next
    assert snap_pending(engine, settings).pending == 0
    make_events(engine, [(-88.90, 13.50)])
    assert snap_pending(engine, settings).pending == 1

    # a new version of a layer makes every snap stale, and they are redone with it
    new = reference.load_borders(engine, data_dir / BORDERS, settings=settings)
    again = snap_pending(engine, settings)
    assert again.pending == 4
    with engine.connect() as conn:
        used = conn.execute(sa.text("SELECT DISTINCT layers FROM event_snaps")).scalars().all()
    assert len(used) == 1 and used[0]["borders"] == new.layer_id
    assert json.loads(json.dumps(used[0])) == load_network(engine).layers

    # after a change of the snapping settings, --all redoes every event once
    assert snap_pending(engine, settings, redo=True).pending == 4
    assert snap_pending(engine, settings).pending == 0
