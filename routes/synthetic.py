"""Synthetic scenarios on a real road network: planted routes with known behaviour plus noise.

A scenario is a set of snapped events (the frame :func:`routes.cube.build_cube` takes) whose
truth is known: routes along real roads whose monthly activity is new, intensifying,
persistent, diminishing or sporadic, over a background of events spread uniformly over the
whole network (and a few off it). Tests check that the pipeline recovers the planted routes
and their categories; the benchmark uses it to build a large cube.

Geometries are EPSG:4326; lengths are metres along the roads (geodesic, WGS84).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import geopandas as gpd
import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd
import pyogrio
import shapely

from geodata.errors import InputError
from routes.segments import GEOD, geodesic_length_m

BEHAVIOURS = ("new", "intensifying", "persistent", "diminishing", "sporadic")
GLOBALMAP_FILE = Path("globalmap_roads") / "globalmap_roads_latam.gpkg"


def globalmap_edges(data_dir: Path, countries: Sequence[str], *, node_decimals: int = 4) -> gpd.GeoDataFrame:
    """A routable edges frame from the Global Map roads of ``countries`` (ISO3).

    Lines are exploded to single parts and noded at their endpoints only: endpoints that
    round to the same ``node_decimals`` decimal degrees (4: about 11 m) become one node.
    The columns are those of :func:`geodata.network.read_edges` (``id, source, target,
    length_m, road_class, name, country, geometry``), EPSG:4326.
    """
    path = data_dir / GLOBALMAP_FILE
    if not path.is_file():
        raise InputError(
            f"The Global Map roads file is missing: {path}. Set RUTAS_DATA_DIR to the shared data folder.",
            f"Falta el archivo de carreteras de Global Map: {path}. Defina RUTAS_DATA_DIR con la carpeta "
            "de datos compartidos.",
            code="not_found",
        )
    codes = [c for c in countries if c.isalpha() and len(c) == 3]
    if len(codes) != len(countries) or not codes:
        raise InputError(
            f"Countries must be ISO3 codes such as SLV or HND, got {list(countries)}.",
            f"Los países deben ser códigos ISO3 como SLV o HND, se recibió {list(countries)}.",
        )
    where = "country IN (" + ",".join(f"'{c.upper()}'" for c in codes) + ")"
    roads = pyogrio.read_dataframe(path, layer="roads", where=where, columns=["country", "rtt"])
    roads = roads.explode(index_parts=False, ignore_index=True)
    geoms = shapely.force_2d(np.asarray(roads.geometry.array, dtype=object))
    length = geodesic_length_m(geoms)
    keep = length > 0
    geoms, length, roads = geoms[keep], length[keep], roads.loc[keep].reset_index(drop=True)
    first = shapely.get_coordinates(shapely.get_point(geoms, 0))
    last = shapely.get_coordinates(shapely.get_point(geoms, -1))
    ends = np.round(np.vstack([first, last]), node_decimals)
    _, node = np.unique(ends, axis=0, return_inverse=True)
    node = node.ravel()
    n = len(geoms)
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, n + 1, dtype=np.int64),
            "source": node[:n].astype(np.int64) + 1,
            "target": node[n:].astype(np.int64) + 1,
            "length_m": length,
            "road_class": roads["rtt"].astype(str).to_numpy(),
            "name": pd.Series([None] * n, dtype=object),
            "country": roads["country"].to_numpy(),
        },
        geometry=geoms,
        crs="EPSG:4326",
    )


@dataclass
class Scenario:
    """Events of a synthetic scenario and its truth.

    ``events`` has the columns of snapped events (event_id, edge_id, fraction, lon, lat,
    occurred_at, kind, crime_type, owner_country, weight, planted); ``planted`` one row per
    planted route (name, behaviour, edge_ids, length_m, geometry EPSG:4326).
    """

    edges: gpd.GeoDataFrame
    events: pd.DataFrame
    planted: gpd.GeoDataFrame
    since: pd.Timestamp
    until: pd.Timestamp
    n_slices: int
    notes: list[str] = field(default_factory=list)


def activity(behaviour: str, n_slices: int, peak: float) -> npt.NDArray[np.float64]:
    """Expected events per slice of a planted route of the given behaviour.

    new: nothing until the final slice, then ``peak``; intensifying: from 0.4 peak rising to
    peak; persistent: peak/2 throughout; diminishing: from peak falling to 0.4 peak; sporadic:
    ``peak`` in every fourth slice counting back from the final one, nothing between.
    """
    t = np.arange(n_slices, dtype=np.float64)
    ramp = t / max(n_slices - 1, 1)
    if behaviour == "new":
        return np.where(t == n_slices - 1, peak, 0.0)
    if behaviour == "intensifying":
        return peak * (0.4 + 0.6 * ramp)
    if behaviour == "persistent":
        return np.full(n_slices, peak / 2)
    if behaviour == "diminishing":
        return peak * (1.0 - 0.6 * ramp)
    if behaviour == "sporadic":
        return np.where((n_slices - 1 - t) % 4 == 0, peak, 0.0)
    raise InputError(
        f"Unknown behaviour {behaviour!r}; use one of {', '.join(BEHAVIOURS)}.",
        f"Comportamiento desconocido {behaviour!r}; use uno de {', '.join(BEHAVIOURS)}.",
    )


def _pick_routes(edges: gpd.GeoDataFrame, count: int, route_km: float, separation_km: float,
                 rng: np.random.Generator) -> list[list[int]]:
    """Edge rows of ``count`` paths of about ``route_km``, pairwise farther apart than separation_km."""
    graph = nx.Graph()
    rows = np.arange(len(edges))
    src = edges["source"].to_numpy()
    tgt = edges["target"].to_numpy()
    length = edges["length_m"].to_numpy()
    # Keep the shortest of parallel edges; the edge row rides along for the way back.
    order = np.argsort(-length)
    graph.add_edges_from(
        (int(src[i]), int(tgt[i]), {"length_m": float(length[i]), "row": int(i)}) for i in rows[order]
    )
    # Routes run on connected parts of the network that can hold several of them.
    big = [c for c in nx.connected_components(graph)
           if graph.subgraph(c).size(weight="length_m") >= 4 * route_km * 1000]
    graph = graph.subgraph(set().union(*big)).copy() if big else graph
    nodes = np.array(sorted(graph.nodes))
    taken: set[int] = set()
    paths: list[list[int]] = []
    for _ in range(100 * count):
        if len(paths) == count:
            break
        start = int(rng.choice(nodes))
        if taken:
            near = nx.multi_source_dijkstra_path_length(graph, taken, cutoff=separation_km * 1000,
                                                        weight="length_m")
            if start in near:
                continue
        reach, way = nx.single_source_dijkstra(graph, start, cutoff=route_km * 1000, weight="length_m")
        far = [v for v, d in reach.items() if d >= 0.7 * route_km * 1000]
        if not far:
            continue
        end = far[int(rng.integers(len(far)))]
        path = way[end]
        if taken:
            near = nx.multi_source_dijkstra_path_length(graph, taken, cutoff=separation_km * 1000,
                                                        weight="length_m")
            if any(v in near for v in path):
                continue
        paths.append([int(graph.edges[a, b]["row"]) for a, b in pairwise(path)])
        taken.update(path)
    if len(paths) < count:
        raise InputError(
            f"Could not place {count} routes of {route_km} km at least {separation_km} km apart on this "
            "network: use a larger network, fewer or shorter routes.",
            f"No se pudieron ubicar {count} rutas de {route_km} km separadas al menos {separation_km} km "
            "en esta red: use una red mayor, menos rutas o rutas más cortas.",
        )
    return paths


def _place(edges: gpd.GeoDataFrame, rows: npt.NDArray[np.int64], rng: np.random.Generator,
           size: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Random positions on the given edge rows, uniform per metre: (edge rows, fractions)."""
    length = edges["length_m"].to_numpy()[rows]
    pick = rng.choice(rows, size=size, p=length / length.sum())
    return pick, rng.random(size)


def make_scenario(edges: gpd.GeoDataFrame, *, behaviours: Sequence[str] = BEHAVIOURS,
                  n_slices: int = 24, start: str = "2024-01-01", route_km: float = 60.0,
                  separation_km: float = 150.0, peak: float = 60.0,
                  background_per_1000km: float = 20.0, off_network_share: float = 0.05,
                  seed: int = 0) -> Scenario:
    """A scenario of monthly slices on ``edges`` with one planted route per behaviour.

    Parameters
    ----------
    edges
        Road edges (columns of :func:`geodata.network.read_edges`), EPSG:4326.
    behaviours
        Behaviour of each planted route (see :func:`activity`).
    n_slices
        Number of calendar months from ``start``.
    route_km
        Approximate network length of each planted route, in kilometres.
    separation_km
        Least network distance between two planted routes, in kilometres.
    peak
        Events per slice of a route at its busiest (Poisson mean).
    background_per_1000km
        Background events per slice per 1,000 km of road (Poisson), uniform over the network.
    off_network_share
        Share of background events placed off the network (no edge), jittered 2-20 km.
    seed
        Seed of the random generator: the same seed gives the same scenario.
    """
    rng = np.random.default_rng(seed)
    since = pd.Timestamp(start, tz="UTC")
    bounds = pd.date_range(since, periods=n_slices + 1, freq="MS", tz="UTC")
    paths = _pick_routes(edges, len(behaviours), route_km, separation_km, rng)
    edge_rows: list[npt.NDArray[np.int64]] = []
    slice_of: list[npt.NDArray[np.int64]] = []
    planted_of: list[npt.NDArray[np.int64]] = []
    for k, (behaviour, path) in enumerate(zip(behaviours, paths, strict=True)):
        counts = rng.poisson(activity(behaviour, n_slices, peak))
        rows, _ = _place(edges, np.asarray(path), rng, int(counts.sum()))
        edge_rows.append(rows)
        slice_of.append(np.repeat(np.arange(n_slices), counts))
        planted_of.append(np.full(len(rows), k))
    total_km = edges["length_m"].sum() / 1000.0
    noise = rng.poisson(background_per_1000km * total_km / 1000.0, size=n_slices)
    rows, _ = _place(edges, np.arange(len(edges)), rng, int(noise.sum()))
    edge_rows.append(rows)
    slice_of.append(np.repeat(np.arange(n_slices), noise))
    planted_of.append(np.full(len(rows), -1))
    row = np.concatenate(edge_rows)
    slc = np.concatenate(slice_of)
    planted = np.concatenate(planted_of)
    fraction = rng.random(len(row))
    points = shapely.line_interpolate_point(np.asarray(edges.geometry.array)[row], fraction, normalized=True)
    xy = shapely.get_coordinates(points)
    edge_id = pd.array(edges["id"].to_numpy()[row], dtype="Int64")
    off = (planted < 0) & (rng.random(len(row)) < off_network_share)
    # Off-network events: moved 2-20 km away from the road, with no edge.
    bearing = rng.uniform(0, 360, int(off.sum()))
    dist = rng.uniform(2_000, 20_000, int(off.sum()))
    lon2, lat2, _ = GEOD.fwd(xy[off, 0], xy[off, 1], bearing, dist)
    xy[off, 0], xy[off, 1] = lon2, lat2
    edge_id[off] = pd.NA
    frac_out = np.where(off, np.nan, fraction)
    span = (bounds[1:] - bounds[:-1]).total_seconds().to_numpy()
    offset_s = rng.random(len(row)) * span[slc]
    occurred = bounds[:-1][slc] + pd.to_timedelta(offset_s, unit="s")
    events = pd.DataFrame({
        "event_id": np.arange(1, len(row) + 1, dtype=np.int64),
        "edge_id": edge_id,
        "fraction": frac_out,
        "lon": xy[:, 0],
        "lat": xy[:, 1],
        "occurred_at": occurred,
        "kind": rng.choice(["incident", "interception"], len(row)),
        "crime_type": "smuggling",
        "owner_country": edges["country"].to_numpy()[row] if "country" in edges.columns else "UNK",
        "weight": rng.integers(1, 6, len(row)).astype(np.float64),
        "planted": planted,
    })
    geoms = np.asarray(edges.geometry.array)
    planted_frame = gpd.GeoDataFrame(
        {
            "name": [f"{b}-{k}" for k, b in enumerate(behaviours)],
            "behaviour": list(behaviours),
            "edge_ids": [edges["id"].to_numpy()[p].tolist() for p in paths],
            "length_m": [float(edges["length_m"].to_numpy()[p].sum()) for p in paths],
        },
        geometry=[shapely.line_merge(shapely.multilinestrings(geoms[p])) for p in paths],
        crs="EPSG:4326",
    )
    return Scenario(edges=edges, events=events, planted=planted_frame, since=since, until=bounds[-1],
                    n_slices=n_slices)
