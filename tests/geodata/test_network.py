"""Road networks: noding line layers into a routable graph, reading OSM, refusing bad road files."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Geod

from geodata.errors import InputError
from geodata.network import NodingReport, build_edges, geodesic_lengths_m, node_lines, read_road_lines
from tests.factories import country_roads_file

GEOD = Geod(ellps="WGS84")


def _lines(*coords: list[tuple[float, float]]) -> gpd.GeoDataFrame:
    n = len(coords)
    return gpd.GeoDataFrame(
        {"road_class": ["primary"] * n, "name": [None] * n, "country": ["SLV"] * n},
        geometry=[shapely.LineString(c) for c in coords],
        crs="EPSG:4326",
    )


def _offset(lon: float, lat: float, azimuth: float, metres: float) -> tuple[float, float]:
    x, y, _ = GEOD.fwd(lon, lat, azimuth, metres)
    return float(x), float(y)


def test_noding_splits_crossing_lines_and_joins_near_ends() -> None:
    # an X of two roads, a road ending 8 m short of the X's horizontal arm, one ending 60 m short
    near_end = _offset(-89.195, 13.70, 180, 8)
    far_end = _offset(-89.185, 13.70, 180, 60)
    lines = _lines(
        [(-89.20, 13.70), (-89.18, 13.70)],
        [(-89.19, 13.69), (-89.19, 13.71)],
        [(-89.195, 13.68), near_end],
        [(-89.185, 13.68), far_end],
        [(-89.20, 13.70), (-89.18, 13.70)],  # exact duplicate of the first
    )
    report = NodingReport()
    edges = node_lines(lines, tolerance_m=20.0, report=report)
    assert report.duplicates_dropped == 1
    # the horizontal arm is split at the X and at the joined end: 3 pieces; vertical 2; two spurs
    assert len(edges) == 7
    assert report.components == 2
    degree = np.bincount(np.concatenate([edges["source"], edges["target"]]))
    assert sorted(degree.tolist()) == [1] * 7 + [3, 4]  # one X node (4), one T node (3)
    # the total length is kept: the joined spur grew by ~8 m, nothing else changed
    original = geodesic_lengths_m(np.asarray(lines.geometry.values[:4])).sum()
    assert edges["length_m"].sum() == pytest.approx(original + 8.0, abs=0.1)


def test_global_map_el_salvador_becomes_a_routable_graph(data_dir: Path, tmp_path: Path) -> None:
    path = country_roads_file(data_dir, tmp_path, "SLV")
    report = NodingReport()
    edges = build_edges(path, tolerance_m=20.0, report=report)
    assert report.lines_read == 282
    assert len(edges) > report.lines_read  # split at intersections
    # SOURCE.md: 1,919 km of road in El Salvador; noding must not lose or invent length
    assert edges["length_m"].sum() / 1000 == pytest.approx(1919, rel=0.01)
    assert set(edges["road_class"]) <= {"primary", "secondary", "other", "unknown"}
    assert report.components >= 1 and 0.5 < report.largest_component_share <= 1.0
    graph = nx.MultiGraph()
    graph.add_weighted_edges_from(zip(edges["source"], edges["target"], edges["length_m"], strict=True))
    # San Salvador to La Hachadura (the Guatemalan border on the coast road) is reachable by road
    nodes = shapely.points(np.vstack([shapely.get_coordinates(shapely.get_point(edges.geometry.values, 0))]))
    sources = edges["source"].to_numpy()

    def node_near(lon: float, lat: float) -> int:
        return int(sources[np.argmin(shapely.distance(nodes, shapely.Point(lon, lat)))])

    metres = nx.shortest_path_length(
        graph, node_near(-89.19, 13.70), node_near(-90.09, 13.86), weight="weight"
    )
    assert 100_000 < metres < 160_000  # about 120 km by the CA-2/CA-8


def test_osm_xml_and_pbf_give_the_same_graph(data_dir: Path) -> None:
    folder = data_dir / "osm_sao_paulo_r5py"
    xml_report, pbf_report = NodingReport(), NodingReport()
    xml = build_edges(folder / "spo_osm.osm.bz2", tolerance_m=20.0, report=xml_report)
    pbf = build_edges(folder / "spo_osm.pbf", tolerance_m=20.0, report=pbf_report)
    assert len(xml) == len(pbf) > 10_000
    assert xml_report.nodes == pbf_report.nodes
    assert xml["length_m"].sum() == pytest.approx(pbf["length_m"].sum(), rel=1e-9)
    assert "Avenida Paulista" in set(xml["name"].dropna())
    assert {"primary", "secondary", "residential"} <= set(xml["road_class"].dropna())


def test_layer_in_another_crs_is_reprojected(tmp_path: Path) -> None:
    lines = _lines([(-89.20, 13.70), (-89.18, 13.70)]).to_crs("EPSG:32616")
    path = tmp_path / "utm.gpkg"
    lines.to_file(path)
    report = NodingReport()
    read = read_road_lines(path, report=report)
    assert report.reprojected_from is not None and "32616" in report.reprojected_from
    assert np.allclose(shapely.get_coordinates(read.geometry.values)[0], (-89.20, 13.70), atol=1e-7)


def _geojson(tmp_path: Path, name: str, features: list[dict[str, object]]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_bad_road_files_get_clear_errors(tmp_path: Path, data_dir: Path) -> None:
    points = _geojson(
        tmp_path,
        "points.geojson",
        [{"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [-89.2, 13.7]}}],
    )
    with pytest.raises(InputError) as caught:
        build_edges(points, tolerance_m=20.0)
    assert caught.value.code == "bad_geometry_type" and "Point" in caught.value.message

    broken = _geojson(
        tmp_path,
        "broken.geojson",
        [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "LineString", "coordinates": [[-89.2, 13.7]] * 2},
            },
            {"type": "Feature", "properties": {}, "geometry": None},
        ],
    )
    with pytest.raises(InputError) as caught:
        build_edges(broken, tolerance_m=20.0)
    assert caught.value.code == "no_roads" and "broken.geojson" in caught.value.message

    no_crs = tmp_path / "no_crs.shp"
    with pytest.warns(UserWarning, match="crs"):  # pyogrio warns that the file will have no CRS
        pyogrio.write_dataframe(
            _lines([(500000, 1500000), (501000, 1500000)]).set_crs(None, allow_override=True), no_crs
        )
    with pytest.raises(InputError) as caught:
        build_edges(no_crs, tolerance_m=20.0)
    assert caught.value.code == "no_crs" and "sistema de referencia" in caught.value.message_es

    no_ways = tmp_path / "empty.osm"
    no_ways.write_text('<?xml version="1.0"?><osm version="0.6"><node id="1" lat="13.7" lon="-89.2"/></osm>')
    with pytest.raises(InputError) as caught:
        build_edges(no_ways, tolerance_m=20.0)
    assert caught.value.code == "no_roads"


def test_multipart_lines_are_exploded(tmp_path: Path) -> None:
    path = _geojson(
        tmp_path,
        "multi.geojson",
        [
            {
                "type": "Feature",
                "properties": {"name": "CA-1"},
                "geometry": {
                    "type": "MultiLineString",
                    "coordinates": [[[-89.20, 13.70], [-89.18, 13.70]], [[-89.10, 13.70], [-89.08, 13.70]]],
                },
            }
        ],
    )
    report = NodingReport()
    edges = build_edges(path, tolerance_m=20.0, report=report)
    assert report.multipart_exploded == 1
    assert len(edges) == 2 and report.components == 2
    assert list(edges["name"]) == ["CA-1", "CA-1"]


def test_noding_by_tiles_gives_the_same_network(data_dir: Path, tmp_path: Path) -> None:
    lines = read_road_lines(country_roads_file(data_dir, tmp_path, "SLV"))
    whole, tiled = NodingReport(), NodingReport()
    one = node_lines(lines, tolerance_m=20.0, tile_km=10_000.0, report=whole)
    many = node_lines(lines, tolerance_m=20.0, tile_km=25.0, report=tiled)
    # tile edges only add nodes of degree 2 where a road crosses them: same roads, same junctions
    assert len(many) > len(one)
    assert many["length_m"].sum() == pytest.approx(one["length_m"].sum(), rel=1e-6)
    assert tiled.components == whole.components

    def not_through(edges: gpd.GeoDataFrame) -> int:
        degree = np.bincount(np.concatenate([edges["source"], edges["target"]]))
        return int((degree != 2).sum())

    assert not_through(many) == not_through(one)
