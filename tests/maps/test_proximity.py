"""Nearest-crossing distances by blocks are exactly those of a k-d tree queried per cell, within reach."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from pyproj import Transformer
from scipy.spatial import cKDTree

from maps.kde import Grid
from maps.proximity import NearestPoint
from maps.risk import BAND_NAMES, RiskInputs, RiskParams, write_risk_surface


def test_block_distances_equal_the_per_cell_query() -> None:
    grid = Grid(crs="EPSG:3857", x0=0.0, y1=600_000.0, res_m=1_000.0, width=700, height=600)
    rng = np.random.default_rng(3)
    # a cluster in one corner and a few points scattered, some outside the grid
    x = np.concatenate([rng.uniform(0, 50_000, 30), rng.uniform(-100_000, 800_000, 7)])
    y = np.concatenate([rng.uniform(550_000, 600_000, 30), rng.uniform(-100_000, 700_000, 7)])
    nearest = NearestPoint(grid, x, y)
    got = nearest.distance_m(100, 290)  # a window that is not a whole number of blocks
    cx, cy = grid.centres(100, 290)
    expected, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([cx.ravel(), cy.ravel()]))
    np.testing.assert_allclose(got, expected.reshape(got.shape), rtol=0, atol=1e-6)


def test_cells_beyond_the_reach_get_no_distance_and_no_proximity(tmp_path: Path) -> None:
    grid = Grid(crs="EPSG:3857", x0=0.0, y1=600_000.0, res_m=1_000.0, width=700, height=600)
    x, y = np.array([50_000.0]), np.array([550_000.0])
    got = NearestPoint(grid, x, y).distance_m(0, 600, max_m=100_000.0)
    cx, cy = grid.centres(0, 600)
    exact = np.hypot(cx - x[0], cy - y[0])
    within = exact <= 100_000.0
    np.testing.assert_allclose(got[within], exact[within], atol=1e-6)
    assert np.isinf(got[exact > 300_000.0]).all()
    # in the risk surface the proximity band is 0 beyond the reach, exp(-d / scale) within it
    events = pd.DataFrame({"lon": [-70.0], "lat": [-20.0], "occurred_at": pd.to_datetime(["2024-01-01"])})
    crossing = gpd.GeoDataFrame(geometry=[shapely.Point(-70.0, -20.0)], crs=4326)
    params = RiskParams(res_m=5_000.0, margin_m=150_000.0, crossing_reach_m=60_000.0)
    report = write_risk_surface(
        tmp_path / "r.tif", RiskInputs(events, crossings=crossing), params, run_id="1"
    )
    with rasterio.open(report.path) as src:
        proximity = src.read(BAND_NAMES.index("crossing_proximity") + 1)
        px, py = Transformer.from_crs(4326, src.crs, always_xy=True).transform(-70.0, -20.0)
        gx, gy = np.meshgrid(
            src.bounds.left + (np.arange(src.width) + 0.5) * 5_000.0,
            src.bounds.top - (np.arange(src.height) + 0.5) * 5_000.0,
        )
    d = np.hypot(gx - px, gy - py)
    assert (proximity[d > 60_000.0] == 0).all()
    np.testing.assert_allclose(proximity[d <= 60_000.0], np.exp(-d[d <= 60_000.0] / 25_000.0), rtol=1e-4)
