"""Nearest-crossing distances by blocks are exactly those of a k-d tree queried per cell."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from maps.kde import Grid
from maps.proximity import NearestPoint


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
