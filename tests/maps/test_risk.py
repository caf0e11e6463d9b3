"""Kernel density and risk surface: windowed density equals scipy's, and the GeoTIFF is georeferenced."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import Transformer
from scipy import ndimage

from maps.kde import CHUNK_COLS, Grid, PointBins, kernel_density, recency_weights, smooth_window, to_grid_crs
from maps.risk import BAND_NAMES, RiskInputs, RiskParams, write_risk_surface


def test_windowed_density_equals_scipy_on_the_whole_grid() -> None:
    rng = np.random.default_rng(1)
    lon, lat = rng.uniform(-80, -78, 500), rng.uniform(0, 2, 500)
    weights = rng.uniform(0.1, 2.0, 500)
    grid = Grid.covering(lon, lat, 2_000.0, margin_m=20_000.0)
    x, y = to_grid_crs(lon, lat, grid.crs)
    windowed = kernel_density(grid, x, y, weights, 6_000.0, window_rows=7)
    raw = PointBins(grid, x, y, weights).binned(0, grid.height)
    reference = ndimage.gaussian_filter(raw, sigma=3.0, mode="constant") / 4.0  # 2 km cells: 4 km²
    np.testing.assert_allclose(windowed, reference, rtol=1e-4, atol=1e-7)
    # nothing is lost at the edges with the margin: density integrates to the total weight
    assert windowed.sum() * 4.0 == pytest.approx(weights.sum(), rel=1e-4)


def test_recency_weight_halves_every_half_life() -> None:
    when = np.array(["2024-06-30", "2024-01-01", "2023-07-04"], dtype="datetime64[s]")
    w = recency_weights(when, np.datetime64("2024-06-30", "s"), 181.0)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25], rtol=1e-9)


def test_risk_geotiff_is_georeferenced_and_tagged(tmp_path: Path) -> None:
    # 40 events at one place, a crossing elsewhere: the density peak must be in the cell holding
    # the events' coordinate, the proximity peak in the crossing's cell
    events = pd.DataFrame(
        {
            "lon": np.full(40, -89.2),
            "lat": np.full(40, 13.7),
            "occurred_at": pd.to_datetime(["2024-05-01"] * 40),
        }
    )
    crossing = gpd.GeoDataFrame(geometry=[shapely.Point(-88.0, 14.5)], crs=4326)
    route = gpd.GeoDataFrame(
        {"category": ["new_hot"]}, geometry=[shapely.LineString([(-89.2, 13.7), (-88.0, 14.5)])], crs=4326
    )
    corridors = gpd.GeoDataFrame(
        {"kind": ["drug", "fuel"]},
        crs=4326,
        geometry=[
            shapely.LineString([(-89.0, 13.0), (-88.9, 15.0)]),
            shapely.LineString([(-90.0, 14.0), (-87.0, 14.2)]),
        ],
    )
    params = RiskParams(res_m=5_000.0, bandwidth_m=5_000.0, window_rows=5, margin_m=60_000.0)
    report = write_risk_surface(
        tmp_path / "risk.tif", RiskInputs(events, route, corridors, crossing), params, run_id="run-42"
    )
    with rasterio.open(report.path) as src:
        assert src.driver == "GTiff" and src.crs.to_dict()["proj"] == "laea"
        assert src.descriptions == BAND_NAMES and src.nodata == -9999.0
        assert src.tags()["run_id"] == "run-42" and "risk =" in src.tags()["risk_formula"]
        assert src.res == (5_000.0, 5_000.0)
        # the bounds hold every input with the margin
        to_grid = Transformer.from_crs(4326, src.crs, always_xy=True)
        ex, ey = to_grid.transform(-89.2, 13.7)
        assert src.bounds.left <= ex - 60_000 and src.bounds.top >= ey + 60_000
        density = src.read(1)
        assert src.index(ex, ey) == np.unravel_index(density.argmax(), density.shape)
        proximity = src.read(BAND_NAMES.index("crossing_proximity") + 1)
        cx, cy = to_grid.transform(-88.0, 14.5)
        assert src.index(cx, cy) == np.unravel_index(proximity.argmax(), proximity.shape)
        risk = src.read(BAND_NAMES.index("risk") + 1)
        assert risk.min() >= 0.0 and risk.max() <= 1.0
        # where a route and both corridor kinds meet, convergence is 1 (3 layers of 3)
        convergence = src.read(BAND_NAMES.index("corridor_convergence") + 1)
        mx, my = to_grid.transform(-88.93, 14.17)
        assert convergence[src.index(mx, my)] == pytest.approx(1.0)
        assert risk[src.index(ex, ey)] > np.median(risk)
        assert src.overviews(1) is not None  # a COG has its overview list (possibly empty when tiny)


def test_sparse_smoothing_equals_scipy_where_chunks_are_empty() -> None:
    # two short lines far apart and a lone cell within the kernel's reach of an empty chunk:
    # empty chunks are skipped, the neighbours of occupied ones still get the kernel's tail
    raw = np.zeros((90, 1_700))
    raw[40, 100:140] = 3.0
    raw[10:30, 1_300] = 1.0
    raw[60, CHUNK_COLS - 2] = 5.0  # spills into the next chunk, which holds nothing itself
    got = smooth_window(raw, 5_000.0, 1_000.0)
    expected = ndimage.gaussian_filter(raw.astype(np.float32), sigma=5.0, mode="constant", truncate=4.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    assert got[60, CHUNK_COLS + 5] > 0
