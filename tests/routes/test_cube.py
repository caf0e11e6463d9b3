"""Segments and the space-time cube: cutting, placing events, network neighbours, slices, filters."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from scipy import sparse
from scipy.sparse import csgraph
from sqlalchemy.engine import Engine

from geodata.errors import InputError
from routes.cube import CubeFilter, build_cube, h3_neighbours, slice_starts
from routes.segments import (
    GEOD,
    assign_events,
    bounded_distances,
    cut_segments,
    geodesic_length_m,
    network_neighbours,
    segment_adjacency,
)
from routes.synthetic import globalmap_edges


def make_edges(lines: list[list[tuple[float, float]]], nodes: list[tuple[int, int]]) -> gpd.GeoDataFrame:
    """Edges frame from lon/lat vertex lists and (source, target) node ids."""
    geoms = np.array([shapely.LineString(c) for c in lines], dtype=object)
    return gpd.GeoDataFrame(
        {"id": np.arange(1, len(lines) + 1), "source": [a for a, _ in nodes], "target": [b for _, b in nodes],
         "length_m": geodesic_length_m(geoms), "road_class": "primary", "name": None, "country": "SLV"},
        geometry=geoms, crs="EPSG:4326")


def test_slices_are_calendar_aligned() -> None:
    months = slice_starts(pd.Timestamp("2024-01-15"), pd.Timestamp("2024-04-02"), "month")
    assert [d.strftime("%Y-%m-%d") for d in months] == [
        "2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01", "2024-05-01"]
    weeks = slice_starts(pd.Timestamp("2024-01-03"), pd.Timestamp("2024-01-15"), "week")
    # 2024-01-01 is a Monday; the 15th is a Monday too, so it opens no new week.
    assert [d.strftime("%Y-%m-%d") for d in weeks] == ["2024-01-01", "2024-01-08", "2024-01-15"]
    assert str(months.tz) == "UTC"
    with pytest.raises(InputError, match="week"):
        slice_starts(pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01"), "day")


def test_edges_are_cut_into_equal_pieces_with_continuous_nodes() -> None:
    # About 25 km due east along the equator, with a bend vertex.
    edges = make_edges([[(0.0, 0.0), (0.1, 0.0), (0.2246, 0.0)], [(0.2246, 0.0), (0.25, 0.0)]],
                       [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    first = seg[seg["edge_id"] == 1]
    assert len(first) == 3 and len(seg) == 4
    assert np.allclose(first["length_m"], edges["length_m"][0] / 3)
    assert np.allclose(geodesic_length_m(np.asarray(first.geometry.array)), first["length_m"], rtol=1e-6)
    # Pieces chain: each ends where the next starts, the first starts at the edge's start.
    coords = [shapely.get_coordinates(g) for g in first.geometry]
    assert np.allclose(coords[0][0], (0.0, 0.0)) and np.allclose(coords[2][-1], (0.2246, 0.0))
    assert all(np.allclose(coords[k][-1], coords[k + 1][0]) for k in range(2))
    assert first["node_a"].iloc[0] == 1 and first["node_b"].iloc[-1] == 2
    assert list(first["node_b"])[:2] == list(first["node_a"])[1:]
    assert list(first["key"]) == ["1:0/3", "1:1/3", "1:2/3"]
    with pytest.raises(InputError, match="segment_km"):
        cut_segments(edges, 0)


def test_events_fall_on_the_piece_holding_their_fraction() -> None:
    edges = make_edges([[(0.0, 0.0), (0.2246, 0.0)], [(0.2246, 0.0), (0.25, 0.0)]], [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    got = assign_events(seg, pd.array([1, 1, 1, 1, 2, None, 99], dtype="Int64"),
                        [0.0, 0.34, 0.99, 1.0, 0.5, np.nan, 0.5])
    assert got.tolist() == [0, 1, 2, 2, 3, -1, -1]


def test_neighbours_follow_the_roads_not_the_crow() -> None:
    # A hairpin: two parallel roads 2 km apart joined only at their far end, 60 km away.
    out = [(0.0, 0.0), (0.54, 0.0)]
    back = [(0.54, 0.0), (0.54, 0.018), (0.0, 0.018)]
    edges = make_edges([out, back], [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    w = network_neighbours(seg, 25.0)
    start_out = int(seg.index[(seg["edge_id"] == 1) & (seg["piece"] == 0)][0])
    end_back = int(seg.index[(seg["edge_id"] == 2) & (seg["piece"] == seg["pieces"] - 1)][0])
    # Two km apart as the crow flies, over 100 km along the road: not neighbours.
    assert w[start_out, end_back] == 0
    assert w[start_out, start_out + 1] == 1 and w[start_out, start_out + 2] == 1
    assert w[start_out, start_out + 3] == 0  # midpoints 27 km apart along the road
    assert (w != w.T).nnz == 0 and w.diagonal().sum() == 0


def test_bounded_distances_match_dijkstra() -> None:
    rng = np.random.default_rng(3)
    n = 400
    lonlat = np.column_stack([rng.uniform(-90, -85, n), rng.uniform(10, 15, n)])
    rows = rng.integers(0, n, 2400)
    cols = rng.integers(0, n, 2400)
    keep = rows != cols
    rows, cols = rows[keep], cols[keep]
    _, _, crow = GEOD.inv(lonlat[rows, 0], lonlat[rows, 1], lonlat[cols, 0], lonlat[cols, 1])
    # A road is never shorter than the straight line between its ends.
    w = sparse.coo_matrix((crow * rng.uniform(1, 1.5, len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    w = sparse.csr_matrix(w.maximum(w.T))
    want = csgraph.dijkstra(w, directed=False, limit=300_000.0)
    reached = np.isfinite(want)
    assert 5 * n < reached.sum() < n * n / 4
    for coords in (None, lonlat):
        got = bounded_distances(w, 300_000.0, lonlat=coords).toarray()
        assert np.allclose(got[reached], want[reached])
        assert (got[~reached] == 0).all()
    some = np.array([5, 17, 300])
    part = bounded_distances(w, 300_000.0, some, lonlat).toarray()
    assert np.allclose(part[np.isfinite(want[some])], want[some][np.isfinite(want[some])])


def test_network_neighbours_on_a_real_network(data_dir: Path) -> None:
    edges = globalmap_edges(data_dir, ["SLV", "HND"])
    seg = cut_segments(edges, 5.0)
    units = np.flatnonzero(np.arange(len(seg)) % 3 != 0)
    got = network_neighbours(seg, 30.0, units).toarray().astype(bool)
    full = csgraph.dijkstra(segment_adjacency(seg), directed=False, indices=units, limit=30_000.0)[:, units]
    want = np.isfinite(full)
    np.fill_diagonal(want, False)
    assert (got == want).all() and want.sum() > 10 * len(units)


def test_segments_agree_with_postgis(engine: Engine, data_dir: Path) -> None:
    """Pieces lie on their edge, have equal ST_Length(geography) and add up to the edge."""
    edges = globalmap_edges(data_dir, ["SLV"]).head(80)
    seg = cut_segments(edges, 5.0)
    rows = seg.merge(edges[["id", "geometry"]].rename(columns={"id": "edge_id", "geometry": "edge"}),
                     on="edge_id")
    sql = sa.text("""
        SELECT ST_Covers(ST_Buffer(e.g, 1e-9), p.g) AS on_edge, ST_Length(p.g::geography) AS length_m,
               ST_Length(e.g::geography) AS edge_m
        FROM (SELECT ST_GeomFromText(:edge, 4326) AS g) AS e,
             (SELECT ST_GeomFromText(:piece, 4326) AS g) AS p""")
    with engine.connect() as conn:
        got = [conn.execute(sql, {"edge": e.wkt, "piece": p.wkt}).one()
               for e, p in zip(rows["edge"], rows["geometry"], strict=True)]
    assert all(g.on_edge for g in got)
    length = np.array([g.length_m for g in got])
    edge_m = np.array([g.edge_m for g in got])
    assert np.allclose(length, edge_m / rows["pieces"].to_numpy(), rtol=2e-3)
    assert np.allclose(length, rows["length_m"], rtol=2e-3)
    assert (rows["pieces"] > 1).sum() > 20 and (seg["length_m"] <= 5000.0 + 1e-6).all()
    # An event snapped at 30 % of an edge's length in metres lands on the piece holding it.
    long_edge = edges.loc[edges["length_m"].idxmax()]
    on = assign_events(seg, [long_edge["id"]], [0.3])[0]
    assert seg.loc[on, "start_m"] <= 0.3 * long_edge["length_m"] < seg.loc[on, "end_m"]


def events_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "event_id": [1, 2, 3, 4, 5, 6],
        "edge_id": pd.array([1, 1, 1, 2, None, 1], dtype="Int64"),
        "fraction": [0.1, 0.15, 0.9, 0.5, np.nan, 0.1],
        "lon": [0.01, 0.02, 0.2, 0.24, -0.5, 0.01],
        "lat": [0.0, 0.0, 0.0, 0.0, 0.3, 0.0],
        "occurred_at": pd.to_datetime(["2024-01-05 10:00", "2024-03-31 23:59", "2024-03-01 00:00",
                                       "2024-02-10 08:30", "2024-02-11 12:00", "2023-12-31 23:00"], utc=True),
        "kind": ["incident", "incident", "interception", "incident", "incident", "incident"],
        "crime_type": ["smuggling"] * 5 + ["trafficking"],
        "owner_country": ["SLV", "SLV", "SLV", "HND", "SLV", "SLV"],
        "weight": [2.0, 3.0, np.nan, 1.0, 4.0, 1.0],
    })


def test_cube_counts_units_with_events_only() -> None:
    edges = make_edges([[(0.0, 0.0), (0.2246, 0.0)], [(0.2246, 0.0), (0.25, 0.0)]], [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    period = CubeFilter(since=pd.Timestamp("2024-01-01"), until=pd.Timestamp("2024-04-01"),
                        crime_types=("smuggling", "trafficking"))
    cube = build_cube(events_frame(), seg, filters=period)
    assert cube.n_slices == 3
    # Segment 1 (middle of edge 1) never had an event: it is not a unit.
    assert cube.segments.tolist() == [0, 2, 3] and len(cube.cells) == 1
    assert cube.values.tolist() == [[1, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]]
    assert sorted(cube.event_ids.tolist()) == [1, 2, 3, 4, 5]
    weighted = build_cube(events_frame(), seg, filters=period, weight="weight")
    # A missing weight counts as one event.
    assert weighted.values[0].tolist() == [2, 0, 3] and weighted.values[1].tolist() == [0, 0, 1]


def test_weekly_cube() -> None:
    edges = make_edges([[(0.0, 0.0), (0.2246, 0.0)], [(0.2246, 0.0), (0.25, 0.0)]], [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    cube = build_cube(events_frame(), seg, slice="week", filters=CubeFilter(
        since=pd.Timestamp("2024-02-01"), until=pd.Timestamp("2024-03-02"),
        crime_types=("smuggling",)))
    # Weeks start on Monday 2024-01-29; events of 10, 11 Feb and 1 Mar fall in weeks 1, 1 and 4.
    assert cube.slice_starts[0] == pd.Timestamp("2024-01-29", tz="UTC") and cube.n_slices == 5
    assert sorted(cube.event_slice.tolist()) == [1, 1, 4]
    assert cube.values.sum() == 3


def test_cube_filters() -> None:
    edges = make_edges([[(0.0, 0.0), (0.2246, 0.0)], [(0.2246, 0.0), (0.25, 0.0)]], [(1, 2), (2, 3)])
    seg = cut_segments(edges, 10.0)
    only = build_cube(events_frame(), seg, filters=CubeFilter(
        kinds=("incident",), owner_countries=("SLV",), crime_types=("smuggling",)))
    assert sorted(only.event_ids.tolist()) == [1, 2, 5]
    # Without a period the cube spans the first to the last event that passes the filters.
    assert only.slice_starts[0] == pd.Timestamp("2024-01-01", tz="UTC") and only.n_slices == 3
    trafficking = build_cube(events_frame(), seg, filters=CubeFilter(crime_types=("trafficking",)))
    assert trafficking.event_ids.tolist() == [6] and trafficking.values.tolist() == [[1.0]]
    with pytest.raises(InputError, match="No event"):
        build_cube(events_frame(), seg, filters=CubeFilter(owner_countries=("GTM",),
                                                            crime_types=("smuggling",)))
    with pytest.raises(InputError, match="fraction"):
        build_cube(events_frame().drop(columns="fraction"), seg)
    # Trafficking and smuggling are never merged unless both are asked for.
    with pytest.raises(InputError, match="several crime types"):
        build_cube(events_frame(), seg)
    both = build_cube(events_frame(), seg, filters=CubeFilter(
        crime_types=("smuggling", "trafficking")))
    assert len(both.event_ids) == 6


def test_h3_neighbours_by_ring() -> None:
    import h3.api.basic_int as h3i

    centre = h3i.latlng_to_cell(13.7, -89.2, 5)
    ring1 = [c for c in h3i.grid_ring(centre, 1)]
    ring3 = [c for c in h3i.grid_ring(centre, 3)]
    cells = np.array([centre, ring1[0], ring3[0]], dtype=np.uint64).astype(np.int64)
    near = h3_neighbours(cells, 5, 20.0).toarray()  # 20 km: one ring at resolution 5
    assert near.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]
    wide = h3_neighbours(cells, 5, 50.0).toarray()  # 50 km: three rings
    assert wide[0, 2] == 1 and wide[2, 0] == 1


def test_adjacency_weights_are_midpoint_distances() -> None:
    edges = make_edges([[(0.0, 0.0), (0.1, 0.0)], [(0.1, 0.0), (0.1, 0.05)], [(0.1, 0.0), (0.2, 0.0)]],
                       [(1, 2), (2, 3), (2, 4)])
    seg = cut_segments(edges, 50.0)
    adj = segment_adjacency(seg).toarray()
    half = seg["length_m"].to_numpy() / 2
    assert np.isclose(adj[0, 1], half[0] + half[1]) and np.isclose(adj[1, 2], half[1] + half[2])
    assert adj[0, 0] == 0
