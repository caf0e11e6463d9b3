"""The risk GeoTIFF is a Cloud-Optimised GeoTIFF whose overviews are the means of the cells below."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from maps.cog import CogWriter, overview_shapes, round_significant
from maps.risk import BAND_NAMES, RiskInputs, RiskParams, write_risk_surface


def _block_means(full: np.ndarray) -> np.ndarray:
    """Mean of each 2 x 2 cells (bands, rows, cols), edge cells of an odd side averaging what exists."""
    bands, h, w = full.shape
    padded = np.full((bands, h + h % 2, w + w % 2), np.nan)
    padded[:, :h, :w] = full
    return np.nanmean(padded.reshape(bands, (h + 1) // 2, 2, (w + 1) // 2, 2), axis=(2, 4))


def test_risk_surface_is_a_cog_with_averaged_overviews(tmp_path: Path) -> None:
    # events spread over ~3,000 km at 5 km cells: a grid larger than one 512-cell tile
    rng = np.random.default_rng(5)
    events = pd.DataFrame(
        {
            "lon": rng.uniform(-80, -55, 3_000),
            "lat": rng.uniform(-30, 0, 3_000),
            "occurred_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, 3_000), "D"),
        }
    )
    report = write_risk_surface(
        tmp_path / "risk.tif", RiskInputs(events), RiskParams(res_m=5_000.0), run_id="run-7"
    )
    assert max(report.grid.width, report.grid.height) > 512
    with rasterio.open(report.path) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.block_shapes[0] == (512, 512)
        assert src.descriptions == BAND_NAMES and src.nodata == -9999.0
        assert src.tags()["run_id"] == "run-7" and "16 significant bits" in src.tags()["precision"]
        expected = overview_shapes(src.width, src.height, 512)
        assert len(src.overviews(1)) == len(expected) >= 1
        full = src.read().astype(np.float64)
    with rasterio.open(report.path, overview_level=0) as ov:
        assert (ov.width, ov.height) == expected[0]
        first = ov.read().astype(np.float64)
    np.testing.assert_allclose(first, _block_means(full), rtol=1e-4, atol=1e-9)
    # the temporary files are gone
    assert [p.name for p in tmp_path.iterdir()] == ["risk.tif"]


def test_writer_refuses_windows_out_of_order(tmp_path: Path) -> None:
    writer = CogWriter(
        tmp_path / "x.tif",
        tmp_path,
        width=1_100,
        height=1_100,
        count=1,
        crs="EPSG:3857",
        transform=Affine(1000.0, 0, 0, 0, -1000.0, 0),
        nodata=-9999.0,
    )
    assert writer.row_multiple == 4  # 1100 -> 550 -> 275: two overview levels
    with writer, pytest.raises(ValueError, match="multiples of 4"):
        writer.write(0, np.zeros((1, 6, 1_100), np.float32))
        writer.write(6, np.zeros((1, 6, 1_100), np.float32))


def test_rounding_keeps_the_relative_error_under_two_to_the_minus_bits() -> None:
    rng = np.random.default_rng(2)
    values = (10.0 ** rng.uniform(-12, 6, 100_000)).astype(np.float32)
    rounded = round_significant(values.copy(), 16)
    relative = np.abs(rounded.astype(np.float64) - values) / values
    assert relative.max() <= 2.0**-16
    assert relative.max() > 2.0**-18  # it does round
    # exact values with few bits stay exact, 0 stays 0
    exact = np.array([0.0, 1.0, 0.5, 0.75, 1000.0], np.float32)
    np.testing.assert_array_equal(round_significant(exact.copy(), 16), exact)
