"""Route-corridor overlap and convergence zones on hand-made geometries with known answers."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Geod

from routes.overlap import convergence_zones, route_corridor_overlap

GEOD = Geod(ellps="WGS84")
# along the equator one degree of longitude is 111.32 km
DEG_KM = GEOD.inv(-75.0, 0.0, -74.0, 0.0)[2] / 1000.0


def _routes() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {"route_id": [7], "category": ["new_hot"]},
        geometry=[shapely.LineString([(-75.0, 0.0), (-74.0, 0.0)])],
        crs=4326,
    )


def _corridors() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "corridor_id": [1, 2, 3],
            "kind": ["drug", "fuel", "arms"],
            "valid_from": ["2024-01-01", None, None],
            "valid_to": ["2024-06-30", None, None],
        },
        geometry=[
            shapely.LineString([(-74.5, 0.02), (-73.0, 0.02)]),  # parallel, 2.2 km north
            shapely.LineString([(-74.3, -0.5), (-74.3, 0.5)]),  # crosses the route at -74.3
            shapely.LineString([(-80.0, 5.0), (-79.0, 5.0)]),
        ],  # far away
        crs=4326,
    )


def test_shared_length_share_crossings_and_co_occurrence() -> None:
    crossings = gpd.GeoDataFrame(
        {"crossing_id": [10, 11]}, geometry=[shapely.Point(-74.2, 0.0), shapely.Point(-74.8, 0.0)], crs=4326
    )
    events = pd.DataFrame(
        {
            "route_id": [7, 7, 7],
            "lon": [-74.3, -74.3, -74.9],
            "lat": [0.0, 0.0, 0.0],
            "occurred_at": pd.to_datetime(["2024-03-01", "2023-03-01", "2024-03-01"]),
        }
    )
    overlap = route_corridor_overlap(
        _routes(), _corridors().iloc[:1], buffer_m=5_000.0, crossings=crossings, events=events
    )
    assert len(overlap) == 1
    row = overlap.iloc[0]
    offset_km = GEOD.inv(-74.5, 0.0, -74.5, 0.02)[2] / 1000.0
    # half the route plus the round end of the 5 km buffer where it cuts the route
    expected_km = DEG_KM / 2 + np.sqrt(5.0**2 - offset_km**2)
    assert row["shared_km"] == pytest.approx(expected_km, rel=0.01)
    assert row["route_km"] == pytest.approx(DEG_KM, rel=0.005)
    assert row["share"] == pytest.approx(expected_km / DEG_KM, rel=0.01)
    assert row["shared_crossings"] == 1  # -74.8 is on the route but outside the corridor's reach
    assert row["events_shared"] == 1 and row["co_occurrence"] == pytest.approx(1 / 3)  # one out of period
    expected_score = 0.4 * row["share"] + 0.3 * min(row["shared_km"] / 100, 1) + 0.2 * 0.5 + 0.1 / 3
    assert row["score"] == pytest.approx(expected_score)


def test_far_corridors_do_not_overlap() -> None:
    assert route_corridor_overlap(_routes(), _corridors().iloc[2:], buffer_m=5_000.0).empty


def test_convergence_zone_of_two_kinds_near_a_crossing_ranks_by_the_documented_score() -> None:
    crossing = gpd.GeoDataFrame({"crossing_id": [1]}, geometry=[shapely.Point(-74.3, 0.0)], crs=4326)
    zones = convergence_zones(_routes(), _corridors(), distance_m=25_000.0, crossings=crossing)
    assert len(zones) == 1
    zone = zones.iloc[0]
    assert zone["kinds"] == "drug,fuel" and zone["kind_count"] == 2
    # two of three kinds: 0.5 * 1/2; the crossing on the stretch: 0.3; a new route: 0.2
    assert zone["score"] == pytest.approx(0.25 + 0.3 + 0.2, abs=1e-3)
    assert zone.geometry.contains(shapely.Point(-74.3, 0.0))
    # one kind alone makes no zone
    assert convergence_zones(_routes(), _corridors().iloc[[0, 2]], distance_m=25_000.0).empty


def test_joint_operation_candidates_need_two_countries_and_rank_by_the_documented_score() -> None:
    from routes.overlap import joint_operation_candidates

    crossings = gpd.GeoDataFrame(
        {"crossing_id": [1, 2], "name": ["Paso A", "Paso B"]},
        geometry=[shapely.Point(-74.3, 0.0), shapely.Point(-70.0, 0.0)],
        crs=4326,
    )
    routes = pd.DataFrame(
        {
            "route_id": [7, 8],
            "category": ["new_hot", "persistent_hot"],
            "crossing_ids": [[1], [2]],
            "records_by_country": [{"COL": 30, "ECU": 20}, {"PER": 40}],
            "first_event": pd.to_datetime(["2024-01-05", "2024-02-01"]),
            "last_event": pd.to_datetime(["2024-06-30", "2024-05-01"]),
        }
    )
    zones = convergence_zones(_routes(), _corridors(), distance_m=25_000.0)
    found = joint_operation_candidates(routes, crossings, zones=zones)
    # crossing 2 carries one country's records only: no joint operation there
    assert found["crossing_id"].tolist() == [1] and found["candidate_type"].tolist() == ["crossing"]
    row = found.iloc[0]
    assert row["crossing_ids"] == [1] and row["border_segment_id"] is None
    assert row["countries"] == "COL,ECU" and row["records_by_country"] == {"COL": 30, "ECU": 20}
    assert row["route_ids"] == [7] and row["in_convergence_zone"]
    assert str(row["period_start"].date()) == "2024-01-05" and str(row["period_end"].date()) == "2024-06-30"
    assert row["score"] == pytest.approx(0.4 * 0.5 + 0.2 * 20 / 30 + 0.25 * 1.0 + 0.15)


def test_a_candidates_period_with_k_is_the_first_and_last_month_holding_k_records() -> None:
    from routes.overlap import joint_operation_candidates, joint_sector_candidates

    crossings = gpd.GeoDataFrame(
        {"crossing_id": [1, 2], "name": ["Paso A", "Paso B"]},
        geometry=[shapely.Point(-74.5, 0.0), shapely.Point(-70.0, 0.0)],
        crs=4326,
    )
    routes = gpd.GeoDataFrame(
        {
            "route_id": [7, 8, 9],
            "category": ["new_hot", "persistent_hot", "persistent_hot"],
            "crossing_ids": [[1], [1], [2]],
            "records_by_country": [{"COL": 28, "ECU": 12}, {"ECU": 9}, {"PER": 6, "BOL": 3}],
            # route 7's first records (3 in November) and last ones (2 in June) are under k = 11
            "first_event": pd.to_datetime(["2023-11-17", "2024-01-09", "2024-02-02"], utc=True),
            "last_event": pd.to_datetime(["2024-06-03", "2024-01-20", "2024-02-28"], utc=True),
            "monthly_counts": [
                {"2023-11-01": 3, "2023-12-01": 4, "2024-02-01": 12, "2024-04-01": 19, "2024-06-01": 2},
                {"2023-12-01": 7, "2024-01-01": 2},
                {"2024-02-01": 9},
            ],
        },
        geometry=[
            shapely.LineString([(-75.0, 0.0), (-74.0, 0.0)]),
            shapely.LineString([(-74.6, 0.05), (-74.4, 0.05)]),
            shapely.LineString([(-70.1, 0.0), (-69.9, 0.0)]),
        ],
        crs=4326,
    )
    exact = joint_operation_candidates(routes, crossings)
    assert exact.iloc[0]["period_start"] == pd.Timestamp("2023-11-17", tz="UTC")
    found = joint_operation_candidates(routes, crossings, k=11).set_index("crossing_id")
    # crossing 1: December holds 4 + 7 = 11 records of routes 7 and 8 together, April the last 19
    assert found.at[1, "period_start"] == pd.Timestamp("2023-12-01", tz="UTC")
    assert found.at[1, "period_end"] == pd.Timestamp("2024-04-01", tz="UTC")
    # crossing 2: no month holds 11 records, so no period at all
    assert pd.isna(found.at[2, "period_start"]) and pd.isna(found.at[2, "period_end"])
    sectors = gpd.GeoDataFrame(
        {"border_segment_id": [100], "country_a": ["COL"], "country_b": ["ECU"]},
        geometry=[shapely.LineString([(-74.5, -0.5), (-74.5, 0.5)])],
        crs=4326,
    )
    sector = joint_sector_candidates(routes.iloc[:1], sectors, reach_m=25_000.0, k=11).iloc[0]
    assert sector["period_start"] == pd.Timestamp("2024-02-01", tz="UTC")
    assert sector["period_end"] == pd.Timestamp("2024-04-01", tz="UTC")


def _sector_routes() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        {
            "route_id": [7, 8, 9],
            "category": ["new_hot", "persistent_hot", "diminishing_hot"],
            "crossing_ids": [[1, 2], [3], []],
            "records_by_country": [{"COL": 30, "ECU": 20}, {"PER": 40}, {"BOL": 10}],
            "first_event": pd.to_datetime(["2024-01-05", "2024-02-01", "2023-11-01"]),
            "last_event": pd.to_datetime(["2024-06-30", "2024-05-01", "2024-03-01"]),
        },
        geometry=[
            shapely.LineString([(-75.0, 0.0), (-74.0, 0.0)]),
            shapely.LineString([(-70.0, 0.0), (-69.0, 0.0)]),
            shapely.LineString([(-70.0, 0.05), (-69.6, 0.05)]),
        ],
        crs=4326,
    )


def test_joint_sectors_are_the_border_segments_routes_of_two_countries_reach() -> None:
    from routes.overlap import joint_sector_candidates

    sectors = gpd.GeoDataFrame(
        {
            "border_segment_id": [100, 101, 102, 103, 104, 105],
            "country_a": ["COL", "COL", "COL", "BOL", "BOL", "COL"],
            "country_b": ["ECU", "VEN", "ECU", "PER", "PER", None],
        },
        geometry=[
            shapely.LineString([(-74.5, -0.5), (-74.5, 0.5)]),  # across route 7
            shapely.LineString([(-73.0, -0.5), (-73.0, 0.5)]),  # 111 km past route 7's end
            shapely.LineString([(-75.0, 0.2), (-74.75, 0.2)]),  # 22.3 km north of route 7
            shapely.LineString([(-69.5, -0.5), (-69.5, 0.5)]),  # across routes 8 and 9
            shapely.LineString([(-69.2, -0.5), (-69.2, 0.5)]),  # across route 8, 44 km past route 9
            shapely.LineString([(-75.0, 0.25), (-74.75, 0.25)]),  # 27.8 km north of route 7
        ],
        crs=4326,
    )
    crossings = gpd.GeoDataFrame(
        {"crossing_id": [1, 2, 3, 4]},
        geometry=[
            shapely.Point(-74.5, 0.0),  # in sector 100, carried by route 7
            shapely.Point(-74.2, 0.0),  # 33 km from the nearest sector: in none
            shapely.Point(-69.5, 0.0),  # in sector 103, carried by route 8
            shapely.Point(-74.5, 0.4),  # in sector 100, carried by no route
        ],
        crs=4326,
    )
    zones = convergence_zones(_routes(), _corridors(), distance_m=25_000.0)
    found = joint_sector_candidates(
        _sector_routes(), sectors, reach_m=25_000.0, crossings=crossings, zones=zones
    )
    # 101 and 105 are out of reach; 104 is reached by route 8 only, one country's records
    assert found["border_segment_id"].tolist() == [100, 102, 103]
    assert set(found["candidate_type"]) == {"border_sector"} and found["crossing_id"].isna().all()
    first, second, third = (found.iloc[i] for i in range(3))
    assert first["name"] == "COL-ECU sector 100" and first["countries"] == "COL,ECU"
    assert first["records_by_country"] == {"COL": 30, "ECU": 20} and first["route_ids"] == [7]
    assert first["crossing_ids"] == [1] and second["crossing_ids"] == [] and third["crossing_ids"] == [3]
    # sector 100 crosses the convergence zone around -74.5..-74.1; sector 102 lies 33 km off it
    assert bool(first["in_convergence_zone"]) and not bool(second["in_convergence_zone"])
    assert first["score"] == pytest.approx(0.4 * 0.5 + 0.2 * 20 / 30 + 0.25 * 1.0 + 0.15)
    assert second["score"] == pytest.approx(0.4 * 0.5 + 0.2 * 20 / 30 + 0.25 * 1.0)
    # two routes at sector 103 add up: PER 40 and BOL 10, the persistent route's weight 0.6
    assert third["name"] == "BOL-PER sector 103" and third["route_ids"] == [8, 9]
    assert third["records_by_country"] == {"BOL": 10, "PER": 40}
    assert third["score"] == pytest.approx(0.4 * 0.5 + 0.2 * 10 / 40 + 0.25 * 0.6)
    assert str(third["period_start"].date()) == "2023-11-01"
    assert str(third["period_end"].date()) == "2024-05-01"
    # the stretch of sector 100 within 25 km of route 7: 50 km of the meridian -74.5, centred on it
    stretch_km = GEOD.geometry_length(first.geometry) / 1000.0
    assert stretch_km == pytest.approx(50.0, rel=0.005)
    lats = shapely.get_coordinates(first.geometry)[:, 1]
    assert lats.min() == pytest.approx(-lats.max(), abs=1e-4)
    assert shapely.get_coordinates(first.geometry)[:, 0] == pytest.approx(-74.5)
    # sector 102 lies whole within reach: its 0.25 degrees
    assert GEOD.geometry_length(second.geometry) / 1000.0 == pytest.approx(DEG_KM / 4, rel=0.005)


def test_contiguous_segments_of_one_border_reached_by_the_same_routes_make_one_sector() -> None:
    from routes.overlap import joint_sector_candidates

    # a COL-ECU border along the meridian -74.5 cut into five 11 km segments (1-5, south to north),
    # a COL-PER segment touching segments 1 and 2, and a COL-ECU segment apart on -74.2
    meridian = [(-0.15, -0.05), (-0.05, 0.05), (0.05, 0.15), (0.15, 0.25), (0.25, 0.35)]
    sectors = gpd.GeoDataFrame(
        {
            "border_segment_id": [1, 2, 3, 4, 5, 6, 7],
            "country_a": ["COL"] * 7,
            "country_b": ["ECU"] * 5 + ["PER", "ECU"],
        },
        geometry=[shapely.LineString([(-74.5, south), (-74.5, north)]) for south, north in meridian]
        + [
            shapely.LineString([(-74.5, -0.05), (-74.6, -0.05)]),
            shapely.LineString([(-74.2, -0.05), (-74.2, 0.05)]),
        ],
        crs=4326,
    )
    routes = gpd.GeoDataFrame(
        {
            "route_id": [7, 11],
            "category": ["new_hot", "persistent_hot"],
            "crossing_ids": [[1, 2, 3], []],
            "records_by_country": [{"COL": 30, "ECU": 20}, {"COL": 12, "ECU": 12}],
            "first_event": pd.to_datetime(["2024-01-05", "2024-02-01"]),
            "last_event": pd.to_datetime(["2024-06-30", "2024-05-01"]),
        },
        geometry=[
            shapely.LineString([(-75.0, 0.0), (-74.0, 0.0)]),  # reaches segments 1-3, 6 and 7
            shapely.LineString([(-74.45, 0.3), (-74.0, 0.3)]),  # reaches segments 4 and 5
        ],
        crs=4326,
    )
    crossings = gpd.GeoDataFrame(
        {"crossing_id": [1, 2, 3]},
        geometry=[shapely.Point(-74.5, 0.0), shapely.Point(-74.5, 0.12), shapely.Point(-74.2, 0.0)],
        crs=4326,
    )
    found = joint_sector_candidates(routes, sectors, reach_m=10_000.0, crossings=crossings)
    by_first = found.set_index("border_segment_id")
    # 1-3 merge; 4 touches 3 but is reached by another route; 6 is another border; 7 is apart
    assert sorted(map(tuple, found["border_segment_ids"])) == [(1, 2, 3), (4, 5), (6,), (7,)]
    merged = by_first.loc[1]
    assert merged["name"] == "COL-ECU sectors 1, 2, 3" and merged["route_ids"] == [7]
    assert merged["crossing_ids"] == [1, 2] and by_first.at[7, "crossing_ids"] == [3]
    assert merged["records_by_country"] == {"COL": 30, "ECU": 20}
    assert merged["score"] == pytest.approx(by_first.at[6, "score"]) == pytest.approx(by_first.at[7, "score"])
    assert by_first.at[6, "name"] == "COL-PER sector 6" and by_first.at[4, "route_ids"] == [11]
    # one line: the 20 km of the border within 10 km of route 7, across the three segments
    assert merged.geometry.geom_type == "LineString"
    assert GEOD.geometry_length(merged.geometry) / 1000.0 == pytest.approx(20.0, rel=0.005)
    assert shapely.get_coordinates(merged.geometry)[:, 1].max() == pytest.approx(0.0904, abs=2e-3)
