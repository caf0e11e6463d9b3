"""Road networks: read road layers (OSM or any line layer), node them into a routable graph.

Every frame returned here is in EPSG:4326; lengths are geodesic metres on the WGS84
ellipsoid. Noding (snapping near-coincident endpoints, splitting at intersections) runs in
an azimuthal equidistant projection centred on the layer, where ``tolerance_m`` is metres.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS, Geod, Transformer
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sqlalchemy.engine import Engine

from geodata.errors import InputError

WGS84 = "EPSG:4326"
GEOD = Geod(ellps="WGS84")

#: Column names that may hold a road's class, name and country, in order of preference.
CLASS_COLUMNS = ("road_class", "highway", "fclass", "class", "type", "rtt", "clase", "tipo")
NAME_COLUMNS = ("name", "nam", "nombre", "nome", "ref")
COUNTRY_COLUMNS = ("country", "iso3", "iso_a3", "adm0_a3", "pais")

#: Global Map route-type codes (``rtt``) in words.
GLOBAL_MAP_RTT = {"14": "primary", "15": "secondary", "16": "other", "0": "unknown", "999": "other"}

OSM_SUFFIXES = (".osm", ".osm.bz2", ".osm.xml", ".pbf", ".osm.pbf")
EDGE_COLUMNS = ["source", "target", "length_m", "road_class", "name", "country", "geometry"]


@dataclass
class NodingReport:
    """What noding did to a road layer: counts a user can check."""

    lines_read: int = 0
    empty_dropped: int = 0
    invalid_dropped: int = 0
    multipart_exploded: int = 0
    duplicates_dropped: int = 0
    endpoints_snapped: int = 0
    edges: int = 0
    nodes: int = 0
    components: int = 0
    largest_component_share: float = 0.0
    reprojected_from: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON reports."""
        return dict(self.__dict__)


def local_metric_crs(lon: npt.ArrayLike, lat: npt.ArrayLike) -> CRS:
    """An azimuthal equidistant CRS (metres) centred on the middle of the given lon/lat degrees."""
    lon_a, lat_a = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    lon_0 = float((np.nanmin(lon_a) + np.nanmax(lon_a)) / 2)
    lat_0 = float((np.nanmin(lat_a) + np.nanmax(lat_a)) / 2)
    return CRS.from_proj4(f"+proj=aeqd +lat_0={lat_0:.6f} +lon_0={lon_0:.6f} +datum=WGS84 +units=m")


def transform_geoms(geoms: npt.NDArray[Any], src: CRS | str, dst: CRS | str) -> npt.NDArray[Any]:
    """Reproject an array of shapely geometries (vectorised over all their coordinates)."""
    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def _apply(xy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, _apply))


def geodesic_lengths_m(lines: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Geodesic length in metres of each EPSG:4326 line (sum of its segments on WGS84)."""
    coords, index = shapely.get_coordinates(lines, return_index=True)
    out = np.zeros(len(lines))
    if len(coords) < 2:
        return out
    same = index[1:] == index[:-1]
    _, _, seg = GEOD.inv(coords[:-1, 0][same], coords[:-1, 1][same], coords[1:, 0][same], coords[1:, 1][same])
    np.add.at(out, index[1:][same], np.asarray(seg))
    return out


def read_road_lines(
    path: Path, *, layer: str | None = None, report: NodingReport | None = None
) -> gpd.GeoDataFrame:
    """Read a line layer (GeoJSON, GeoPackage, Shapefile...) as road lines in EPSG:4326.

    Returns columns ``road_class``, ``name``, ``country`` (when found) and ``geometry``
    (LineStrings; multi-part lines exploded, empty and broken ones dropped and counted).

    Raises
    ------
    InputError
        The file cannot be read, has no CRS, holds no lines, or no usable line at all.
    """
    report = report if report is not None else NodingReport()
    try:
        frame = pyogrio.read_dataframe(path, layer=layer)
    except Exception as exc:  # pyogrio raises several DataSource errors
        raise InputError(
            f"{path.name}: cannot be read as a vector layer ({type(exc).__name__}). "
            "Give a GeoJSON, GeoPackage, Shapefile or OSM file.",
            f"{path.name}: no se puede leer como capa vectorial. Use GeoJSON, GeoPackage, Shapefile u OSM.",
            code="bad_file",
        ) from exc
    frame = to_wgs84(frame, path)
    report.reprojected_from = None if frame.attrs.get("source_crs") is None else frame.attrs["source_crs"]
    report.lines_read = len(frame)
    geoms = np.asarray(frame.geometry.values)
    kinds = shapely.get_type_id(geoms)
    is_line = np.isin(kinds, (1, 2, 5))  # LineString, LinearRing, MultiLineString
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if not (is_line | empty).any() or (~is_line & ~empty).sum() > 0.5 * len(geoms):
        found = sorted(set(frame.geometry.geom_type.dropna()))
        raise InputError(
            f"{path.name}: a road layer must hold lines, but it holds {', '.join(found) or 'no geometry'}.",
            f"{path.name}: una capa de carreteras debe tener líneas, pero tiene "
            f"{', '.join(found) or 'ninguna geometría'}.",
            code="bad_geometry_type",
        )
    report.empty_dropped = int(empty.sum())
    keep = is_line & ~empty
    frame = frame.loc[keep].copy()
    attrs = _road_attributes(frame)
    exploded = attrs.explode(index_parts=False, ignore_index=True)
    report.multipart_exploded = max(0, len(exploded) - len(attrs))
    lines = np.asarray(exploded.geometry.values)
    ok = (shapely.get_num_coordinates(lines) >= 2) & shapely.is_valid(lines) & (shapely.length(lines) > 0)
    report.invalid_dropped = int((~ok).sum()) + int((~is_line & ~empty).sum())
    exploded = exploded.loc[ok].reset_index(drop=True)
    if exploded.empty:
        raise InputError(
            f"{path.name}: no usable road line (read {report.lines_read}, all empty or broken).",
            f"{path.name}: ninguna línea de carretera utilizable (leídas {report.lines_read}, "
            "todas vacías o rotas).",
            code="no_roads",
        )
    return exploded


def to_wgs84(frame: gpd.GeoDataFrame, path: Path) -> gpd.GeoDataFrame:
    """The frame in EPSG:4326; refuses a layer without a CRS (we cannot guess its units)."""
    if frame.crs is None:
        raise InputError(
            f"{path.name}: the layer has no coordinate reference system, so its coordinates cannot be "
            "placed. Add one (e.g. a .prj file, or `ogr2ogr -a_srs EPSG:4326`) and load it again.",
            f"{path.name}: la capa no tiene sistema de referencia de coordenadas. Añada uno (p. ej. un "
            "archivo .prj, u `ogr2ogr -a_srs EPSG:4326`) y cárguela de nuevo.",
            code="no_crs",
        )
    if CRS.from_user_input(frame.crs).equals(CRS.from_epsg(4326)):
        return frame
    source = CRS.from_user_input(frame.crs).to_string()
    out = frame.to_crs(WGS84)
    out.attrs["source_crs"] = source
    return out


def _road_attributes(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    lower = {str(c).lower(): c for c in frame.columns if c != frame.geometry.name}

    def pick(options: tuple[str, ...]) -> pd.Series:
        for option in options:
            if option in lower:
                return pd.Series(frame[lower[option]])
        return pd.Series([None] * len(frame), index=frame.index, dtype=object)

    road_class = pick(CLASS_COLUMNS)
    if "rtt" in lower and not any(c in lower for c in CLASS_COLUMNS[:-3]):
        road_class = road_class.astype("string").map(lambda v: GLOBAL_MAP_RTT.get(str(v), f"rtt {v}"))
    out = gpd.GeoDataFrame(
        {
            "road_class": road_class.astype(object).where(road_class.notna(), None),
            "name": pick(NAME_COLUMNS).astype(object),
            "country": pick(COUNTRY_COLUMNS).astype(object),
        },
        geometry=frame.geometry.values,
        crs=WGS84,
    )
    out["name"] = out["name"].where(out["name"].notna(), None)
    out["country"] = out["country"].map(lambda v: str(v)[:3].upper() if isinstance(v, str) and v else None)
    return out


def node_lines(
    lines: gpd.GeoDataFrame,
    *,
    tolerance_m: float,
    tile_km: float = 500.0,
    report: NodingReport | None = None,
) -> gpd.GeoDataFrame:
    """Node road lines into graph edges: snap close endpoints, split at intersections, number nodes.

    Parameters
    ----------
    lines
        LineStrings in EPSG:4326 with optional ``road_class``, ``name``, ``country``.
    tolerance_m
        Endpoints closer than this (metres) are merged into one node; a dangling endpoint this
        close to another line is moved onto it, so the two are joined.
    tile_km
        Lines are split at intersections tile by tile (squares of this side, in kilometres), so
        memory follows the densest tile rather than the whole layer; a line crossing a tile
        edge gets a node there.

    Returns
    -------
    GeoDataFrame
        Columns ``source``, ``target`` (0-based node numbers), ``length_m`` (geodesic metres),
        ``road_class``, ``name``, ``country``, ``geometry`` (EPSG:4326 LineStrings).
    """
    report = report if report is not None else NodingReport()
    geoms4326 = np.asarray(lines.geometry.values)
    bounds = shapely.bounds(geoms4326)
    crs = local_metric_crs(bounds[:, [0, 2]].ravel(), bounds[:, [1, 3]].ravel())
    metric = transform_geoms(geoms4326, WGS84, crs)

    # exact duplicates (same vertices, either direction) are dropped and counted
    keys = shapely.to_wkb(shapely.normalize(shapely.set_precision(metric, 0.01)))
    _, first = np.unique(keys, return_index=True)
    first.sort()
    report.duplicates_dropped = len(metric) - len(first)
    metric = metric[first]
    attrs = lines.iloc[first].reset_index(drop=True)

    metric, report.endpoints_snapped = _snap_endpoints(metric, tolerance_m)
    grid = 0.01  # metres: fixed-precision noding is robust, and moves vertices by < 1 cm
    noded = _node_by_tiles(metric, tile_km * 1000.0, grid)

    # each piece takes the attributes of the line it came from (nearest to its midpoint)
    tree = shapely.STRtree(metric)
    mid = shapely.line_interpolate_point(noded, 0.5, normalized=True)
    _, origin = tree.query_nearest(mid, all_matches=False)

    # endpoints are exact after fixed-precision noding: equal coordinates are the same node
    ends = np.column_stack(
        [
            shapely.get_coordinates(shapely.get_point(noded, 0)),
            shapely.get_coordinates(shapely.get_point(noded, -1)),
        ]
    )
    xy = np.round(np.concatenate([ends[:, :2], ends[:, 2:]]) / grid).astype(np.int64)
    _, node_of = np.unique(xy, axis=0, return_inverse=True)
    node_of = node_of.ravel()
    n = len(noded)
    source, target = node_of[:n], node_of[n:]

    edges4326 = transform_geoms(noded, crs, WGS84)
    edges = gpd.GeoDataFrame(
        {
            "source": source.astype(np.int64),
            "target": target.astype(np.int64),
            "length_m": geodesic_lengths_m(edges4326),
            "road_class": attrs["road_class"].to_numpy()[origin] if "road_class" in attrs else None,
            "name": attrs["name"].to_numpy()[origin] if "name" in attrs else None,
            "country": attrs["country"].to_numpy()[origin] if "country" in attrs else None,
        },
        geometry=edges4326,
        crs=WGS84,
    )
    _count_components(edges, report)
    return edges


def _node_by_tiles(metric: npt.NDArray[Any], tile_m: float, grid: float) -> npt.NDArray[Any]:
    """Split lines at every intersection, one square tile at a time (fixed-precision union)."""
    bounds = shapely.bounds(metric)
    x0, y0 = bounds[:, 0].min(), bounds[:, 1].min()
    ix0, iy0 = (
        ((bounds[:, 0] - x0) // tile_m).astype(np.int64),
        ((bounds[:, 1] - y0) // tile_m).astype(np.int64),
    )
    ix1, iy1 = (
        ((bounds[:, 2] - x0) // tile_m).astype(np.int64),
        ((bounds[:, 3] - y0) // tile_m).astype(np.int64),
    )
    # one row per (line, tile its box touches)
    nx_, ny_ = ix1 - ix0 + 1, iy1 - iy0 + 1
    per_line = nx_ * ny_
    line = np.repeat(np.arange(len(metric)), per_line)
    k = np.arange(len(line)) - np.repeat(np.cumsum(per_line) - per_line, per_line)
    tx, ty = ix0[line] + k % nx_[line], iy0[line] + k // nx_[line]
    order = np.lexsort((line, ty, tx))
    line, tx, ty = line[order], tx[order], ty[order]
    starts = np.flatnonzero(np.r_[True, (tx[1:] != tx[:-1]) | (ty[1:] != ty[:-1])])
    pieces: list[npt.NDArray[Any]] = []
    for start, stop in zip(starts, np.r_[starts[1:], len(line)], strict=True):
        members = line[start:stop]
        xmin, ymin = x0 + tx[start] * tile_m, y0 + ty[start] * tile_m
        inside = per_line[members] == 1
        geoms = metric[members].copy()
        geoms[~inside] = shapely.clip_by_rect(geoms[~inside], xmin, ymin, xmin + tile_m, ymin + tile_m)
        parts = shapely.get_parts(shapely.union_all(geoms, grid_size=grid))
        pieces.append(parts[(shapely.get_type_id(parts) == 1) & (shapely.length(parts) > 0)])
    noded = np.concatenate(pieces) if pieces else np.zeros(0, dtype=object)
    # a stretch of line lying exactly on a tile edge comes out of both tiles: keep it once
    _, first = np.unique(shapely.to_wkb(shapely.normalize(noded)), return_index=True)
    return np.asarray(noded[np.sort(first)])


def _snap_endpoints(metric: npt.NDArray[Any], tolerance_m: float) -> tuple[npt.NDArray[Any], int]:
    """Move endpoints within ``tolerance_m`` onto a common node or onto a nearby line."""
    coords, index = shapely.get_coordinates(metric, return_index=True)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    stops = np.r_[starts[1:], len(coords)] - 1
    end_pos = np.concatenate([starts, stops])
    owner = np.concatenate([index[starts], index[stops]])
    points = shapely.points(coords[end_pos])
    n = len(points)

    # 1. clusters of endpoints within tolerance become one node at their mean position
    left, right = shapely.STRtree(points).query(points, predicate="dwithin", distance=tolerance_m)
    graph = coo_matrix((np.ones(len(left)), (left, right)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    size = np.bincount(label)
    mean_x = np.bincount(label, coords[end_pos, 0]) / size
    mean_y = np.bincount(label, coords[end_pos, 1]) / size
    new = np.column_stack([mean_x[label], mean_y[label]])
    moved = int((np.hypot(*(new - coords[end_pos]).T) > 0).sum())

    # 2. a dangling endpoint (alone in its cluster) near another line is moved onto that line
    lone = np.flatnonzero(size[label] == 1)
    if len(lone):
        pt_i, line_i = shapely.STRtree(metric).query(points[lone], predicate="dwithin", distance=tolerance_m)
        other = line_i != owner[lone][pt_i]
        pt_i, line_i = pt_i[other], line_i[other]
        dist = shapely.distance(points[lone][pt_i], metric[line_i])
        order = np.lexsort((dist, pt_i))
        pt_i, line_i, dist = pt_i[order], line_i[order], dist[order]
        first = np.r_[True, pt_i[1:] != pt_i[:-1]] if len(pt_i) else np.zeros(0, dtype=bool)
        pt_i, line_i, dist = pt_i[first], line_i[first], dist[first]
        target = shapely.line_interpolate_point(
            metric[line_i], shapely.line_locate_point(metric[line_i], points[lone][pt_i])
        )
        new[lone[pt_i]] = shapely.get_coordinates(target)
        moved += int((dist > 0).sum())
    coords = coords.copy()
    coords[end_pos] = new
    return np.asarray(shapely.set_coordinates(metric.copy(), coords)), moved


def _count_components(edges: gpd.GeoDataFrame, report: NodingReport) -> None:
    nodes = int(max(edges["source"].max(), edges["target"].max()) + 1) if len(edges) else 0
    report.edges, report.nodes = len(edges), nodes
    if not nodes:
        return
    graph = coo_matrix((np.ones(len(edges)), (edges["source"], edges["target"])), shape=(nodes, nodes))
    count, label = connected_components(graph, directed=False)
    length = np.bincount(label[edges["source"].to_numpy()], edges["length_m"].to_numpy(), minlength=count)
    report.components = int(count)
    report.largest_component_share = round(float(length.max() / length.sum()), 4) if length.sum() else 0.0


def read_osm(path: Path, *, report: NodingReport | None = None) -> gpd.GeoDataFrame:
    """Road edges of an OpenStreetMap file (``.osm``, ``.osm.bz2``, ``.pbf``) with OSM's own topology.

    Returns the same columns as :func:`node_lines` (EPSG:4326, geodesic metres); each
    two-way road appears once. ``.pbf`` files are converted to OSM XML with osmium first.
    """
    import osmnx as ox

    report = report if report is not None else NodingReport()
    name = path.name.lower()
    try:
        if name.endswith(".pbf"):
            with tempfile.TemporaryDirectory() as tmp:
                xml = Path(tmp) / "extract.osm"
                _pbf_to_xml(path, xml)
                graph = ox.graph_from_xml(xml, simplify=True, retain_all=True)
        else:
            graph = ox.graph_from_xml(path, simplify=True, retain_all=True)
        nodes, raw = ox.convert.graph_to_gdfs(ox.convert.to_undirected(graph))
    except Exception as exc:  # osmnx raises ValueError/KeyError/ParseError on bad files
        raise InputError(
            f"{path.name}: no road network could be built from this OpenStreetMap file "
            f"({type(exc).__name__}: it has no highway ways, or it is not OSM XML/PBF).",
            f"{path.name}: no se pudo construir una red vial con este archivo OpenStreetMap "
            "(no tiene vías 'highway' o no es OSM XML/PBF).",
            code="no_roads",
        ) from exc
    report.lines_read = len(raw)
    raw = raw.reset_index()

    def text(column: str) -> pd.Series:
        if column not in raw:
            return pd.Series([None] * len(raw), dtype=object)
        return pd.Series(raw[column].map(lambda v: ";".join(map(str, v)) if isinstance(v, list) else v))

    node_ids = pd.Index(nodes.index)
    edges = gpd.GeoDataFrame(
        {
            "source": node_ids.get_indexer(raw["u"]).astype(np.int64),
            "target": node_ids.get_indexer(raw["v"]).astype(np.int64),
            "road_class": text("highway").astype(object),
            "name": text("name").astype(object),
            "country": None,
        },
        geometry=raw.geometry.values,
        crs=WGS84,
    )
    edges["name"] = edges["name"].where(edges["name"].notna(), None)
    edges["length_m"] = geodesic_lengths_m(np.asarray(edges.geometry.values))
    edges = edges[EDGE_COLUMNS]
    _count_components(edges, report)
    return edges


def _pbf_to_xml(pbf: Path, xml: Path) -> None:
    import osmium

    with osmium.SimpleWriter(str(xml)) as writer:
        for obj in osmium.FileProcessor(str(pbf)):
            writer.add(obj)


def build_edges(
    path: Path, *, tolerance_m: float, layer: str | None = None, report: NodingReport | None = None
) -> gpd.GeoDataFrame:
    """Graph edges from any road file: OSM files keep their topology, line layers are noded."""
    report = report if report is not None else NodingReport()
    if path.name.lower().endswith(OSM_SUFFIXES):
        return read_osm(path, report=report)
    lines = read_road_lines(path, layer=layer, report=report)
    return node_lines(lines, tolerance_m=tolerance_m, report=report)


def read_edges(engine: Engine) -> gpd.GeoDataFrame:
    """The active road layer's edges: id, source, target, length_m, road_class, name, country, geometry.

    Geometry in EPSG:4326, ``length_m`` in geodesic metres; empty frame when no road layer is loaded.
    """
    sql = (
        "SELECT e.id, e.source, e.target, e.length_m, e.road_class, e.name, e.country, e.geom "
        "FROM road_edges e JOIN reference_layers l ON l.id = e.layer_id "
        "WHERE l.active AND l.kind = 'roads' ORDER BY e.id"
    )
    with engine.connect() as conn:
        frame = gpd.read_postgis(sql, conn, geom_col="geom", crs=WGS84)
    return frame.rename_geometry("geometry")


def to_graph(edges: gpd.GeoDataFrame) -> nx.MultiGraph:
    """Undirected multigraph of the edges: nodes are node ids, edge key = edge id, attribute length_m."""
    graph: nx.MultiGraph = nx.MultiGraph()
    graph.add_edges_from(
        (int(s), int(t), int(k), {"length_m": float(w)})
        for s, t, k, w in zip(edges["source"], edges["target"], edges["id"], edges["length_m"], strict=True)
    )
    return graph
