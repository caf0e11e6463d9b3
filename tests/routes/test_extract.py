"""Routes from categorised segments: gap bridging, merged lines, attributes, H3 legs, stable keys."""

from __future__ import annotations

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import pandas as pd
import pytest
import shapely

from routes.cube import Cube
from routes.extract import RouteParams, extract_routes, match_routes
from routes.segments import cut_segments, geodesic_length_m

STEP_DEG = 0.0899  # about 10 km of longitude at the equator


def straight_road(n: int = 8) -> gpd.GeoDataFrame:
    geoms = np.array([shapely.LineString([(k * STEP_DEG, 0.0), ((k + 1) * STEP_DEG, 0.0)]) for k in range(n)])
    return gpd.GeoDataFrame(
        {"id": np.arange(101, 101 + n), "source": np.arange(n), "target": np.arange(1, n + 1),
         "length_m": geodesic_length_m(geoms), "road_class": "primary", "name": None,
         "country": ["SLV"] * 4 + ["HND"] * (n - 4)},
        geometry=geoms, crs="EPSG:4326")


def make_cube(units: np.ndarray, values: np.ndarray, cells: np.ndarray | None = None) -> Cube:
    """A cube whose unit k holds values[k]; one event per unit and slice with a count."""
    unit, slc = np.nonzero(values > 0)
    starts = pd.date_range("2024-01-01", periods=values.shape[1] + 1, freq="MS", tz="UTC")
    return Cube(
        values=values.astype(float), segments=units.astype(np.int64),
        cells=np.array([], dtype=np.int64) if cells is None else cells,
        slice_starts=pd.DatetimeIndex(starts), event_ids=np.arange(1, len(unit) + 1),
        event_unit=unit.astype(np.int64), event_slice=slc.astype(np.int64),
        event_time=(starts[:-1][slc] + pd.Timedelta(days=3)).to_numpy(dtype="datetime64[ns]"),
        h3_resolution=5)


CATS = np.array(["persistent_hot", "persistent_hot", "persistent_hot", "no_pattern", "no_pattern",
                 "new_hot", "new_hot", "no_pattern"])


def rising(n_units: int) -> np.ndarray:
    return np.tile(np.arange(1.0, 7.0), (n_units, 1))


def test_gap_of_two_segments_is_bridged() -> None:
    segments = cut_segments(straight_road(), 15.0)
    cube = make_cube(np.arange(8), rising(8))
    routes = extract_routes(segments, cube, CATS, RouteParams(gap_segments=2, run_id="run-1"))
    assert len(routes) == 1
    route = routes.iloc[0]
    assert route.segments == [0, 1, 2, 3, 4, 5, 6]
    assert route.geometry.geom_type == "LineString"
    assert route.length_m == np.float64(segments["length_m"][:7].sum())
    assert abs(route.length_m - 70_000) < 100
    assert route.category == "persistent_hot"  # 3 of 7 segments; new 2, bridges 2
    assert route.category_shares == {"bridge": round(2 / 7, 4), "new_hot": round(2 / 7, 4),
                                     "persistent_hot": round(3 / 7, 4)}
    assert route.counts == [7.0, 14.0, 21.0, 28.0, 35.0, 42.0]
    assert route.trend == "up" and route.tau > 0.9 and route.p_value < 0.05
    assert route.countries == ["HND", "SLV"]
    assert len(route.event_ids) == 7 * 6
    assert route.first_event == pd.Timestamp("2024-01-04", tz="UTC")
    assert route.last_event == pd.Timestamp("2024-06-04", tz="UTC")
    assert route.run_id == "run-1"


def test_gap_wider_than_allowed_splits_the_route() -> None:
    segments = cut_segments(straight_road(), 15.0)
    cube = make_cube(np.arange(8), rising(8))
    routes = extract_routes(segments, cube, CATS, RouteParams(gap_segments=1))
    assert sorted(map(tuple, routes["segments"])) == [(0, 1, 2), (5, 6)]
    by_first = routes.set_index(routes["segments"].map(min))
    assert by_first.loc[5, "category"] == "new_hot" and by_first.loc[5, "countries"] == ["HND"]
    none = extract_routes(segments, cube, np.full(8, "no_pattern"))
    assert len(none) == 0


def test_gap_of_one_segment() -> None:
    segments = cut_segments(straight_road(), 15.0)
    cube = make_cube(np.arange(8), rising(8))
    cats = CATS.copy()
    cats[4] = "sporadic_hot"  # the gap is now segment 3 alone
    bridged = extract_routes(segments, cube, cats, RouteParams(gap_segments=1))
    assert bridged["segments"].tolist() == [[0, 1, 2, 3, 4, 5, 6]]
    apart = extract_routes(segments, cube, cats, RouteParams(gap_segments=0))
    assert sorted(map(tuple, apart["segments"])) == [(0, 1, 2), (4, 5, 6)]


def test_bridge_runs_through_segments_without_events() -> None:
    segments = cut_segments(straight_road(), 15.0)
    units = np.array([0, 1, 2, 5, 6])  # segments 3 and 4 had no event: not units of the cube
    cube = make_cube(units, rising(5))
    cats = CATS[units]
    routes = extract_routes(segments, cube, cats, RouteParams(gap_segments=2))
    assert routes.iloc[0].segments == list(range(7))


def test_crossings_near_a_route_are_listed() -> None:
    segments = cut_segments(straight_road(), 15.0)
    cube = make_cube(np.arange(8), rising(8))
    crossings = gpd.GeoDataFrame(
        {"id": [1, 2, 3], "name": ["near", "far", "beside"]},
        geometry=[shapely.Point(0.15, 0.09), shapely.Point(0.15, 0.5),
                  shapely.Point(0.6, -0.05)],
        crs="EPSG:4326")
    routes = extract_routes(segments, cube, CATS, RouteParams(near_km=15.0), crossings)
    # 10 km and 5.6 km off the road are near; 55 km is not. Nearest first.
    assert routes.iloc[0].crossing_ids == [3, 1]


def test_hot_cell_next_to_a_route_joins_it() -> None:
    segments = cut_segments(straight_road(), 15.0)
    mid = shapely.get_coordinates(segments.geometry[6].interpolate(0.5, normalized=True))[0]
    home = h3i.latlng_to_cell(mid[1], mid[0], 5)
    beside = h3i.grid_ring(home, 1)[0]
    lonely = h3i.latlng_to_cell(5.0, -75.0, 5)
    cells = np.array([beside, lonely], dtype=np.uint64).astype(np.int64)
    cube = make_cube(np.arange(8), np.vstack([rising(8), rising(2)]), cells)
    cats = np.concatenate([CATS, ["sporadic_hot", "sporadic_hot"]])
    routes = extract_routes(segments, cube, cats, RouteParams(gap_segments=2))
    assert len(routes) == 1  # a single hot cell far from any route is no route
    route = routes.iloc[0]
    assert f"h3:{h3i.int_to_str(beside)}" in route.member_keys
    assert route.length_m > segments["length_m"][:7].sum() + 1_000
    assert "sporadic_hot" in route.category_shares
    assert route.counts[0] == 7 + 1


def test_route_keys_are_stable_across_runs() -> None:
    segments = cut_segments(straight_road(), 15.0)
    cube = make_cube(np.arange(8), rising(8))
    first = extract_routes(segments, cube, CATS, RouteParams(gap_segments=1))
    first = first.join(match_routes(first, None))
    assert not first["seen_before"].any() and first["route_key"].is_unique
    # Next run: the eastern stretch grew by one segment and a new route appeared nowhere else.
    later_cats = CATS.copy()
    later_cats[7] = "new_hot"
    second = extract_routes(segments, cube, later_cats, RouteParams(gap_segments=1))
    keys = match_routes(second, first[["route_key", "member_keys"]])
    east_before = first.loc[first["segments"].map(min) == 5, "route_key"].item()
    east_now = keys.loc[second["segments"].map(min) == 5]
    assert east_now["route_key"].item() == east_before and east_now["seen_before"].item()
    assert east_now["shared"].item() == 2.0  # two whole edges in common
    # The same members always give the same key, even on a first run.
    again = match_routes(first, None)
    assert again["route_key"].tolist() == first["route_key"].tolist()
    # A route sharing nothing with the previous run is new.
    fresh = match_routes(second, first.iloc[:0][["route_key", "member_keys"]])
    assert not fresh["seen_before"].any()


def test_adjacent_hot_cells_off_the_network_make_a_route() -> None:
    segments = cut_segments(straight_road(), 15.0)
    home = h3i.latlng_to_cell(5.0, -75.0, 5)
    cells = np.array([home, h3i.grid_ring(home, 1)[0]], dtype=np.uint64).astype(np.int64)
    cube = make_cube(np.array([], dtype=np.int64), rising(2), cells)
    routes = extract_routes(segments, cube, np.array(["new_hot", "sporadic_hot"]))
    assert len(routes) == 1
    route = routes.iloc[0]
    assert route.geometry.geom_type == "LineString" and 12_000 < route.length_m < 25_000
    assert route.segments == [] and len(route.member_keys) == 2
    assert route.counts == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]


def test_route_keys_survive_a_new_segment_length() -> None:
    edges = straight_road()
    coarse = cut_segments(edges, 15.0)  # one segment per 10 km edge
    fine = cut_segments(edges, 4.0)  # three per edge
    first = extract_routes(coarse, make_cube(np.arange(8), rising(8)), CATS, RouteParams(gap_segments=1))
    first = first.join(match_routes(first, None))
    # The same stretches in the finer cut: edges 0-2 and 5-6 hot.
    hot_edges = {101: "persistent_hot", 102: "persistent_hot", 103: "persistent_hot",
                 106: "new_hot", 107: "new_hot"}
    cats = fine["edge_id"].map(hot_edges).fillna("no_pattern").to_numpy().astype(str)
    second = extract_routes(fine, make_cube(np.arange(len(fine)), rising(len(fine))), cats,
                            RouteParams(gap_segments=1))
    keys = match_routes(second, first[["route_key", "member_keys"]])
    assert keys["seen_before"].all()
    assert sorted(keys["route_key"]) == sorted(first["route_key"])
    assert sorted(keys["shared"]) == pytest.approx([2.0, 3.0])
