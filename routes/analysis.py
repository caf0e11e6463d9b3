"""The emerging-route analysis from snapped events to routes, as one pure function.

segments -> cube -> space-time Gi* with FDR -> Mann-Kendall of each unit's z-scores ->
categories -> routes. No I/O: the pipeline (``rutas run``) reads the store, calls
:func:`analyse` and writes what it returns.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from geodata.errors import InputError
from geodata.settings import Settings
from routes.cube import Cube, CubeFilter, build_cube, h3_neighbours
from routes.emerging import Trend, categorise, mann_kendall
from routes.extract import RouteParams, extract_routes, match_routes
from routes.hotspots import GiStar, gi_star
from routes.segments import cut_segments, network_neighbours


@dataclass(frozen=True)
class AnalysisParams:
    """Every parameter of a run, recorded with it. Defaults suit a regional network.

    Attributes
    ----------
    segment_km
        Longest network segment, km.
    neighbour_km
        Network distance within which segments are spatial neighbours, km.
    time_step
        Slices on each side that are neighbours in time.
    slice
        ``"month"`` or ``"week"``.
    alpha
        False discovery rate of hot and cold bins and significance level of trends.
    gap_segments
        Most segments a gap between two hot stretches may have and still be bridged.
    h3_resolution
        H3 resolution of the cells holding off-network events.
    """

    segment_km: float = 10.0
    neighbour_km: float = 50.0
    time_step: int = 1
    slice: str = "month"
    alpha: float = 0.05
    gap_segments: int = 2
    h3_resolution: int = 5

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> AnalysisParams:
        """The settings' values, with the options a user gave (None means "not given")."""
        values = {name: getattr(settings, name) for name in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def check(self) -> None:
        """Raise :class:`InputError` naming the first value out of range."""
        bad: list[tuple[str, Any, str, str]] = []
        if not self.segment_km > 0:
            bad.append(("segment_km", self.segment_km, "a positive number of km", "un número positivo de km"))
        if not self.neighbour_km >= 0:
            bad.append(("neighbour_km", self.neighbour_km, "0 or more km", "0 o más km"))
        if self.time_step < 0:
            bad.append(("time_step", self.time_step, "0 or more slices", "0 o más intervalos"))
        if self.slice not in ("month", "week"):
            bad.append(("slice", self.slice, "'month' or 'week'", "'month' o 'week'"))
        if not 0 < self.alpha < 1:
            bad.append(("alpha", self.alpha, "between 0 and 1, e.g. 0.05", "entre 0 y 1, p. ej. 0.05"))
        if self.gap_segments < 0:
            bad.append(("gap_segments", self.gap_segments, "0 or more segments", "0 o más segmentos"))
        if not 0 <= self.h3_resolution <= 15:
            bad.append(("h3_resolution", self.h3_resolution, "0 to 15", "de 0 a 15"))
        if bad:
            name, value, en, es = bad[0]
            raise InputError(f"{name}={value} is out of range: use {en}.",
                             f"{name}={value} está fuera de rango: use {es}.", code="bad_parameter")

    def as_record(self) -> dict[str, Any]:
        """Plain dict, as the run records it."""
        return asdict(self)


@dataclass
class Analysis:
    """Everything a run computed, for storage and inspection."""

    params: AnalysisParams
    segments: gpd.GeoDataFrame
    cube: Cube
    weights: sparse.csr_matrix
    gi: GiStar
    trend: Trend
    categories: npt.NDArray[np.str_]
    routes: gpd.GeoDataFrame
    timings_s: dict[str, float] = field(default_factory=dict)


def analyse(events: pd.DataFrame, edges: gpd.GeoDataFrame, params: AnalysisParams | None = None, *,
            filters: CubeFilter | None = None, weight: str | None = None,
            crossings: gpd.GeoDataFrame | None = None, near_km: float = 25.0,
            previous: pd.DataFrame | None = None, run_id: str | None = None,
            segments: gpd.GeoDataFrame | None = None) -> Analysis:
    """Emerging routes of the events on the road network.

    Segment units are neighbours along the network (``neighbour_km``); off-network H3 cells
    are neighbours of cells within the rings that cover ``neighbour_km``, not of segments.

    Parameters
    ----------
    events
        Snapped events (see :func:`routes.cube.build_cube`).
    edges
        Road edges (columns of :func:`geodata.network.read_edges`), EPSG:4326.
    params
        Run parameters (defaults when None).
    filters, weight
        What enters the cube and what a bin sums (see :func:`routes.cube.build_cube`).
    crossings, near_km
        Border crossings listed on the routes within ``near_km`` km.
    previous
        The previous run's routes (``route_key``, ``member_keys``) for stable route keys.
    run_id
        Id of the run, stored on each route.
    segments
        Segments already cut from ``edges`` with ``params.segment_km`` (recomputed when None).
    """
    params = params or AnalysisParams()
    params.check()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    if segments is None:
        segments = cut_segments(edges, params.segment_km)
    lap("segments")
    cube = build_cube(events, segments, slice=params.slice, filters=filters, weight=weight,
                      h3_resolution=params.h3_resolution)
    lap("cube")
    if cube.n_units == 0:
        raise InputError("No event falls in the period and filters given: widen them.",
                         "Ningún evento cae en el periodo y los filtros dados: amplíelos.", code="empty")
    w_net = network_neighbours(segments, params.neighbour_km, cube.segments)
    w_h3 = h3_neighbours(cube.cells, params.h3_resolution, params.neighbour_km)
    weights = sparse.csr_matrix(sparse.block_diag([w_net, w_h3], format="csr"),
                                shape=(cube.n_units, cube.n_units))
    lap("neighbours")
    gi = gi_star(cube.values, weights, params.time_step)
    lap("gi_star_fdr")
    trend = mann_kendall(gi.z)
    categories = categorise(gi.hot(params.alpha), gi.cold(params.alpha), trend, params.alpha)
    lap("mann_kendall_categories")
    routes = extract_routes(segments, cube, categories,
                            RouteParams(gap_segments=params.gap_segments, near_km=near_km,
                                        alpha=params.alpha, run_id=run_id),
                            crossings)
    keys = match_routes(routes, previous)
    routes = routes.join(keys)
    lap("routes")
    return Analysis(params=params, segments=segments, cube=cube, weights=weights, gi=gi, trend=trend,
                    categories=categories, routes=routes, timings_s=timings)
