"""Risk surface: event density, emerging-route intensity, corridor convergence, crossing proximity
and their combination, written window by window as a Cloud-Optimised GeoTIFF.

Bands (all float32, grid CRS in metres, see :class:`maps.kde.Grid`):

``event_density``
    Kernel density of events (sd ``bandwidth_m``), each weighted ``0.5 ** (age_days /
    half_life_days)`` counted back from the end of the period: weighted events per km².
``emerging_<category>``
    One band per hot emerging category (``new_hot``, ``intensifying_hot``, ...): route lines of
    that category, weighted by their event count, smoothed with the same kernel.
``corridor_convergence``
    Share (0-1) of the layers present within ``convergence_m`` of the cell among a migrant route
    and every kind of trafficking corridor of the run (1 = a route and every kind meet there;
    0 everywhere when the reader sees no corridor).
``crossing_proximity``
    ``exp(-d / crossing_scale_m)``, d the distance in metres to the nearest border crossing, and 0
    beyond ``crossing_reach_m`` (10 scales by default, where it would be under 4.5e-5): the band
    is 0 far from every crossing, as the others are far from every event, route and corridor,
    so the file stores and compresses only where something is.
``risk``
    The combined risk in 0-1::

        risk = (w_d * s(density) + w_e * max_c(e_c * s(emerging_c)) + w_v * convergence
                + w_x * proximity) / (w_d + w_e + w_v + w_x)

    with ``s(v) = v / (v + m)``, ``m`` the mean of the band's positive cells (a cell at the
    band's mean scores 0.5), ``e_c`` the weight of emerging category ``c``
    (:data:`EMERGING_WEIGHTS`) and ``w_*`` the weights of :class:`RiskParams`.

The surface is computed in bands of rows: memory depends on the window and the kernel's reach,
not on the size of the grid, so a continent-wide surface at 1 km fits in a few hundred MB.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
from affine import Affine
from rasterio import features
from rasterio.windows import Window

from geodata.errors import InputError
from maps.cog import CogOptions, CogWriter
from maps.kde import (
    Grid,
    PointBins,
    density_windows,
    kernel_radius_cells,
    recency_weights,
    smooth_window,
    to_grid_crs,
)
from maps.proximity import NearestPoint

#: Hot emerging categories, in band order (the names of ``routes.emerging.HOT_CATEGORIES``).
HOT_CATEGORIES = (
    "new_hot",
    "consecutive_hot",
    "intensifying_hot",
    "persistent_hot",
    "diminishing_hot",
    "sporadic_hot",
    "oscillating_hot",
    "historical_hot",
)
#: How much each emerging category adds to the risk (new and intensifying routes count most).
EMERGING_WEIGHTS: Mapping[str, float] = {
    "new_hot": 1.0,
    "intensifying_hot": 1.0,
    "consecutive_hot": 0.8,
    "persistent_hot": 0.6,
    "sporadic_hot": 0.5,
    "oscillating_hot": 0.5,
    "diminishing_hot": 0.3,
    "historical_hot": 0.2,
}
NODATA = -9999.0
BAND_DENSITY = "event_density"
BAND_CONVERGENCE = "corridor_convergence"
BAND_PROXIMITY = "crossing_proximity"
BAND_RISK = "risk"
BAND_NAMES = (
    BAND_DENSITY,
    *(f"emerging_{c}" for c in HOT_CATEGORIES),
    BAND_CONVERGENCE,
    BAND_PROXIMITY,
    BAND_RISK,
)


@dataclass(frozen=True)
class RiskParams:
    """Parameters of the risk surface (distances in metres, times in days)."""

    res_m: float = 5_000.0
    bandwidth_m: float = 10_000.0
    half_life_days: float = 180.0
    convergence_m: float = 25_000.0
    crossing_scale_m: float = 25_000.0
    #: Beyond this distance of every crossing the proximity band is 0 (10 scales: exp(-10) = 4.5e-5)
    crossing_reach_m: float = 250_000.0
    weight_density: float = 0.35
    weight_emerging: float = 0.30
    weight_convergence: float = 0.20
    weight_proximity: float = 0.15
    emerging_weights: Mapping[str, float] = field(default_factory=lambda: dict(EMERGING_WEIGHTS))
    window_rows: int = 512
    margin_m: float = 50_000.0
    #: GDAL's block cache while writing (its default, 5 % of RAM, would dominate the memory used)
    gdal_cache_mb: int = 512
    #: compression of the written file (ZSTD level 1 with the floating-point predictor)
    cog: CogOptions = field(default_factory=CogOptions)


@dataclass
class RiskInputs:
    """What the surface is made of. Geometries and coordinates are EPSG:4326.

    ``events``: columns lon, lat, occurred_at (datetime64) and optional ``weight`` (a count, for
    events already aggregated into cells). ``routes``: geometry and ``category`` (optional
    ``event_count``). ``corridors``: geometry and ``kind``. ``crossings``: point geometries.
    """

    events: pd.DataFrame
    routes: gpd.GeoDataFrame | None = None
    corridors: gpd.GeoDataFrame | None = None
    crossings: gpd.GeoDataFrame | None = None
    period_end: np.datetime64 | None = None


@dataclass(frozen=True)
class RiskReport:
    """What was written: file, grid, band names and the half-saturation mean of each smoothed band."""

    path: Path
    grid: Grid
    bands: tuple[str, ...]
    band_means: dict[str, float]


def _lines_in_grid(frame: gpd.GeoDataFrame | None, grid: Grid) -> gpd.GeoDataFrame | None:
    if frame is None or frame.empty:
        return None
    return frame[~frame.geometry.is_empty & frame.geometry.notna()].to_crs(grid.crs)


def _rasterize(
    shapes: list[tuple[object, float]], grid: Grid, row0: int, row1: int
) -> npt.NDArray[np.float32]:
    """Burn (geometry, value) pairs, summing overlaps, into rows ``row0:row1`` (clipped to the grid)."""
    lo, hi = max(row0, 0), min(row1, grid.height)
    out = np.zeros((row1 - row0, grid.width), dtype=np.float32)
    if not shapes or hi <= lo:
        return out
    transform = grid.transform @ Affine.translation(0, lo)
    burnt = features.rasterize(
        shapes,
        out_shape=(hi - lo, grid.width),
        transform=transform,
        fill=0.0,
        all_touched=True,
        merge_alg=features.MergeAlg.add,
        dtype="float32",
    )
    out[lo - row0 : hi - row0] = burnt
    return out


class _BandMaker:
    """Computes every band but ``risk`` for one window of rows."""

    def __init__(self, grid: Grid, inputs: RiskInputs, params: RiskParams) -> None:
        self.grid, self.params = grid, params
        events = inputs.events
        x, y = to_grid_crs(events["lon"].to_numpy(float), events["lat"].to_numpy(float), grid.crs)
        end = (
            inputs.period_end
            if inputs.period_end is not None
            else (pd.Timestamp(events["occurred_at"].max()) if len(events) else pd.Timestamp.now())
        )
        weights = recency_weights(
            events["occurred_at"].to_numpy("datetime64[s]"),
            pd.Timestamp(end).to_datetime64(),
            params.half_life_days,
        )
        if "weight" in events:
            weights = weights * events["weight"].to_numpy(float)
        self.bins = PointBins(grid, x, y, weights)
        routes = _lines_in_grid(inputs.routes, grid)
        self.route_shapes: dict[str, list[tuple[object, float]]] = {c: [] for c in HOT_CATEGORIES}
        if routes is not None:
            counts = (
                routes["event_count"].to_numpy(float) if "event_count" in routes else np.ones(len(routes))
            )
            for category in HOT_CATEGORIES:
                mask = (routes["category"] == category).to_numpy()
                self.route_shapes[category] = list(zip(routes.geometry[mask], counts[mask], strict=True))
        corridors = _lines_in_grid(inputs.corridors, grid)
        # a route and each corridor kind are the layers whose meeting the convergence band counts
        self.reach_shapes: list[list[tuple[object, float]]] = []
        # without a corridor there is nothing to converge with: the band stays 0
        if routes is not None and corridors is not None and len(corridors):
            self.reach_shapes.append([(g, 1.0) for g in routes.geometry.buffer(params.convergence_m)])
        if corridors is not None:
            for _, group in corridors.groupby("kind"):
                self.reach_shapes.append([(g, 1.0) for g in group.geometry.buffer(params.convergence_m)])
        crossings = _lines_in_grid(inputs.crossings, grid)
        self.crossings = (
            None
            if crossings is None
            else NearestPoint(grid, crossings.geometry.x.to_numpy(), crossings.geometry.y.to_numpy())
        )
        self.halo = kernel_radius_cells(params.bandwidth_m, grid.res_m)

    def fill_smoothed(
        self, row0: int, row1: int, density: npt.NDArray[np.float32], out: npt.NDArray[np.float32]
    ) -> None:
        """The kernel-smoothed bands (density, then one per emerging category) of rows ``row0:row1``.

        ``out`` is (1 + len(HOT_CATEGORIES), rows, width); ``density`` the block of
        :func:`maps.kde.density_windows` for these rows.
        """
        grid, params, rows = self.grid, self.params, row1 - row0
        out[0] = density
        for i, category in enumerate(HOT_CATEGORIES, start=1):
            shapes = self.route_shapes[category]
            if not shapes:
                out[i] = 0.0
                continue
            lo, hi = max(row0 - self.halo, 0), min(row1 + self.halo, grid.height)
            smoothed = smooth_window(
                _rasterize(shapes, grid, lo, hi).astype(np.float64), params.bandwidth_m, grid.res_m
            )
            out[i] = smoothed[row0 - lo : row0 - lo + rows]

    def fill_layers(
        self, row0: int, row1: int, convergence: npt.NDArray[np.float32], proximity: npt.NDArray[np.float32]
    ) -> None:
        """The corridor-convergence and crossing-proximity bands of rows ``row0:row1``, each (rows, width)."""
        grid, params = self.grid, self.params
        convergence[:] = 0.0
        for shapes in self.reach_shapes:
            convergence += _rasterize(shapes, grid, row0, row1) > 0
        if self.reach_shapes:
            convergence /= len(self.reach_shapes)
        if self.crossings is None:
            proximity[:] = 0.0
        else:
            distance_m = self.crossings.distance_m(row0, row1, max_m=params.crossing_reach_m)
            distance_m[distance_m > params.crossing_reach_m] = np.inf  # exp(-inf) = 0
            proximity[:] = np.exp(-distance_m / params.crossing_scale_m)


#: The bands smoothed by the kernel, whose means the risk formula needs (the first of BAND_NAMES).
SMOOTHED_BANDS = BAND_NAMES[: 1 + len(HOT_CATEGORIES)]


def _smoothed_pass(maker: _BandMaker, work: Path, window_rows: int) -> dict[str, float]:
    """Write the smoothed bands of the whole grid to ``work``; returns each one's mean of positive cells.

    The bands are kept (ZSTD level 1, band-interleaved, so an empty band costs nothing) for the
    second pass to read instead of smoothing them again.
    """
    grid = maker.grid
    sums, counts = np.zeros(len(SMOOTHED_BANDS)), np.zeros(len(SMOOTHED_BANDS))
    stack = np.zeros((len(SMOOTHED_BANDS), window_rows, grid.width), np.float32)
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(SMOOTHED_BANDS),
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "interleave": "band",
        "compress": "zstd",
        "zstd_level": 1,
        "num_threads": "ALL_CPUS",
        "BIGTIFF": "YES",
    }
    with rasterio.open(work, "w", **profile) as dst:
        for row0, density in density_windows(maker.bins, maker.params.bandwidth_m, window_rows=window_rows):
            rows = density.shape[0]
            block = stack[:, :rows]
            maker.fill_smoothed(row0, row0 + rows, density, block)
            for i, band in enumerate(block):
                if i == 0 or maker.route_shapes[HOT_CATEGORIES[i - 1]]:
                    positive = band > 0
                    sums[i] += float(band[positive].sum(dtype=np.float64))
                    counts[i] += int(positive.sum())
            dst.write(block, window=Window(0, row0, grid.width, rows))  # type: ignore[no-untyped-call]
    return {name: float(s / c) if c else 0.0 for name, s, c in zip(SMOOTHED_BANDS, sums, counts, strict=True)}


def combined_risk(
    bands: Mapping[str, npt.NDArray[np.float32]], means: Mapping[str, float], params: RiskParams
) -> npt.NDArray[np.float32]:
    """The ``risk`` band (0-1) from the other bands by the formula in this module's docstring.

    A band whose mean is 0 (no positive cell anywhere) adds nothing and is not computed.
    """
    total = (
        params.weight_density + params.weight_emerging + params.weight_convergence + params.weight_proximity
    )
    if total <= 0:
        raise ValueError("the risk weights must add up to more than 0")

    def saturate(name: str) -> npt.NDArray[np.float32] | None:
        m = means.get(name, 0.0)
        if m <= 0:
            return None
        v = bands[name]
        return np.asarray(v / (v + np.float32(m)), dtype=np.float32)

    shape = bands[BAND_DENSITY].shape
    risk = np.zeros(shape, np.float32)
    emerging: npt.NDArray[np.float32] | None = None
    for category in HOT_CATEGORIES:
        weight = params.emerging_weights.get(category, 0.0)
        saturated = saturate(f"emerging_{category}") if weight > 0 else None
        if saturated is not None:
            saturated *= np.float32(weight)
            emerging = saturated if emerging is None else np.maximum(emerging, saturated, out=emerging)
    density = saturate(BAND_DENSITY)
    for weight, term in (
        (params.weight_density, density),
        (params.weight_emerging, emerging),
        (params.weight_convergence, bands[BAND_CONVERGENCE]),
        (params.weight_proximity, bands[BAND_PROXIMITY]),
    ):
        if term is not None and weight:
            risk += np.float32(weight / total) * term
    return np.clip(risk, 0.0, 1.0, out=risk)


def risk_grid(inputs: RiskInputs, params: RiskParams) -> Grid:
    """The grid covering the events, routes, corridors and crossings with ``params.margin_m`` around."""
    lon = [inputs.events["lon"].to_numpy(float)]
    lat = [inputs.events["lat"].to_numpy(float)]
    for frame in (inputs.routes, inputs.corridors):
        if frame is not None and not frame.empty:
            x0, y0, x1, y1 = frame.to_crs(4326).total_bounds
            lon.append(np.array([x0, x1]))
            lat.append(np.array([y0, y1]))
    lon_all, lat_all = np.concatenate(lon), np.concatenate(lat)
    if lon_all.size == 0:
        raise InputError(
            "Nothing to map: no event cell (with at least k records) and no route in the period and scope; "
            "widen the period or load records.",
            "Nada que cartografiar: ninguna celda de eventos (con al menos k registros) ni ruta en el "
            "período y el ámbito; amplíe el período o cargue registros.",
            code="empty_product",
        )
    return Grid.covering(lon_all, lat_all, params.res_m, margin_m=params.margin_m)


def write_risk_surface(
    path: Path, inputs: RiskInputs, params: RiskParams, *, run_id: str, grid: Grid | None = None
) -> RiskReport:
    """Compute every band window by window and write ``path`` as a Cloud-Optimised GeoTIFF.

    A first pass smooths the density and emerging bands into a temporary file and takes the
    mean of their positive cells (which the risk formula needs); a second reads them back,
    adds the convergence, proximity and ``risk`` bands and hands each window to
    :class:`maps.cog.CogWriter`, which averages the overviews on the fly and compresses the
    file once. The file carries the grid CRS (metres), nodata ``-9999``, a
    description per band (:data:`BAND_NAMES`) and the tags ``run_id``, ``risk_formula``,
    ``res_m``, ``bandwidth_m`` and ``half_life_days``.
    """
    grid = grid or risk_grid(inputs, params)
    maker = _BandMaker(grid, inputs, params)
    path.parent.mkdir(parents=True, exist_ok=True)
    tags = {
        "run_id": run_id,
        "risk_formula": _FORMULA,
        "res_m": str(grid.res_m),
        "bandwidth_m": str(params.bandwidth_m),
        "half_life_days": str(params.half_life_days),
    }
    if params.cog.significant_bits is not None:
        bits = params.cog.significant_bits
        tags["precision"] = f"values rounded to {bits} significant bits (relative error < {2.0**-bits:.1e})"
    with (
        # the block cache in bytes; tiles decoded on every core when the files are read back
        rasterio.Env(GDAL_CACHEMAX=params.gdal_cache_mb * 2**20, GDAL_NUM_THREADS="ALL_CPUS"),
        tempfile.TemporaryDirectory(dir=path.parent, prefix=".risk-") as tmp,
    ):
        writer = CogWriter(
            path,
            Path(tmp),
            width=grid.width,
            height=grid.height,
            count=len(BAND_NAMES),
            crs=grid.crs,
            transform=grid.transform,
            nodata=NODATA,
            options=params.cog,
        )
        # whole overview rows per window: a multiple of 2 ** (number of overview levels)
        multiple = writer.row_multiple
        window_rows = max(multiple, -(-params.window_rows // multiple) * multiple)
        smoothed = Path(tmp) / "smoothed.tif"
        means = _smoothed_pass(maker, smoothed, window_rows)
        stack = np.zeros((len(BAND_NAMES), window_rows, grid.width), np.float32)
        first = len(SMOOTHED_BANDS)
        with writer, rasterio.open(smoothed) as src:
            for row0 in range(0, grid.height, window_rows):
                rows = min(window_rows, grid.height - row0)
                block = stack[:, :rows]
                window = Window(0, row0, grid.width, rows)  # type: ignore[no-untyped-call]
                block[:first] = src.read(window=window)
                maker.fill_layers(row0, row0 + rows, block[first], block[first + 1])
                block[-1] = combined_risk(dict(zip(BAND_NAMES[:-1], block, strict=False)), means, params)
                writer.write(row0, block)
            writer.finish(BAND_NAMES, tags)
    return RiskReport(path=path, grid=grid, bands=BAND_NAMES, band_means=means)


_FORMULA = (
    "risk = (w_d*s(event_density) + w_e*max_c(e_c*s(emerging_c)) + w_v*corridor_convergence "
    "+ w_x*crossing_proximity) / (w_d+w_e+w_v+w_x); s(v) = v/(v+mean of positive cells)"
)
