"""Recency-weighted kernel density of events on a regular metric grid, computed in row windows.

The grid is in a projected CRS whose units are metres (by default a Lambert azimuthal
equal-area projection centred on Latin America, so a cell is the same area everywhere in the
region). Points are binned into cells and smoothed with a Gaussian kernel of standard deviation
``bandwidth_m``; the surface is built a band of rows at a time, each band binned with a halo of
the kernel's reach, so memory is bounded by the window, never by the whole grid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from affine import Affine
from pyproj import CRS, Transformer
from scipy import ndimage

#: Equal-area projection for Latin America and the Caribbean (metres).
LATAM_LAEA = "+proj=laea +lat_0=-5 +lon_0=-75 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
#: Gaussian kernel truncated at this many standard deviations (scipy's default).
TRUNCATE_SD = 4.0
SECONDS_PER_DAY = 86_400.0

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: top-left corner ``(x0, y1)`` and square cells of ``res_m`` metres.

    ``crs`` is any projected CRS in metres that pyproj understands (EPSG code, WKT or PROJ string).
    Row 0 is the northernmost row.
    """

    crs: str
    x0: float
    y1: float
    res_m: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        """The affine transform from (col, row) to the grid CRS (metres)."""
        return Affine(self.res_m, 0.0, self.x0, 0.0, -self.res_m, self.y1)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid CRS, metres."""
        return (self.x0, self.y1 - self.height * self.res_m, self.x0 + self.width * self.res_m, self.y1)

    @classmethod
    def covering(
        cls, lon: FloatArray, lat: FloatArray, res_m: float, *, crs: str = LATAM_LAEA, margin_m: float = 0.0
    ) -> Grid:
        """The smallest grid aligned on multiples of ``res_m`` that holds every (lon, lat) point.

        ``lon``/``lat`` are EPSG:4326 degrees; ``margin_m`` widens the extent on every side.
        """
        if res_m <= 0:
            raise ValueError(f"res_m must be positive, got {res_m!r}")
        x, y = to_grid_crs(np.asarray(lon, float), np.asarray(lat, float), crs)
        if x.size == 0:
            raise ValueError("no points: a grid needs at least one point to cover")
        left = np.floor((x.min() - margin_m) / res_m) * res_m
        right = np.ceil((x.max() + margin_m) / res_m) * res_m
        bottom = np.floor((y.min() - margin_m) / res_m) * res_m
        top = np.ceil((y.max() + margin_m) / res_m) * res_m
        width = max(round((right - left) / res_m), 1)
        height = max(round((top - bottom) / res_m), 1)
        return cls(crs=crs, x0=float(left), y1=float(top), res_m=float(res_m), width=width, height=height)

    def cell_of(self, x: FloatArray, y: FloatArray) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(row, col) of points given in the grid CRS (metres); outside cells are out of range."""
        col = np.floor((np.asarray(x) - self.x0) / self.res_m).astype(np.int64)
        row = np.floor((self.y1 - np.asarray(y)) / self.res_m).astype(np.int64)
        return row, col

    def centres(self, row0: int, row1: int) -> tuple[FloatArray, FloatArray]:
        """Cell-centre coordinates (x, y in metres) of rows ``row0:row1``, each (rows, width)."""
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.res_m
        ys = self.y1 - (np.arange(row0, row1) + 0.5) * self.res_m
        gx, gy = np.meshgrid(xs, ys)
        return gx, gy


def to_grid_crs(lon: FloatArray, lat: FloatArray, crs: str) -> tuple[FloatArray, FloatArray]:
    """EPSG:4326 lon/lat degrees to the grid CRS (metres)."""
    transformer = Transformer.from_crs(CRS.from_epsg(4326), CRS.from_user_input(crs), always_xy=True)
    x, y = transformer.transform(lon, lat)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def recency_weights(
    occurred_at: npt.NDArray[np.datetime64], reference: np.datetime64, half_life_days: float
) -> FloatArray:
    """Weight of each event: ``0.5 ** (age_days / half_life_days)``, age counted back from ``reference``.

    Events after ``reference`` weigh 1. ``half_life_days <= 0`` or infinite gives every event weight 1.
    """
    if not np.isfinite(half_life_days) or half_life_days <= 0:
        return np.ones(len(occurred_at), dtype=np.float64)
    age_s = (reference - occurred_at.astype("datetime64[s]")).astype("timedelta64[s]").astype(np.float64)
    age_days = np.clip(age_s / SECONDS_PER_DAY, 0.0, None)
    return np.asarray(0.5 ** (age_days / half_life_days), dtype=np.float64)


def kernel_radius_cells(bandwidth_m: float, res_m: float) -> int:
    """Reach of the truncated Gaussian kernel in cells (as scipy.ndimage computes it)."""
    sigma = bandwidth_m / res_m
    return int(TRUNCATE_SD * sigma + 0.5)


class PointBins:
    """Points sorted by grid row, ready to be binned window by window."""

    def __init__(self, grid: Grid, x: FloatArray, y: FloatArray, weights: FloatArray | None = None) -> None:
        row, col = grid.cell_of(x, y)
        w = np.ones(len(row)) if weights is None else np.asarray(weights, dtype=np.float64)
        keep = (row >= 0) & (row < grid.height) & (col >= 0) & (col < grid.width) & (w != 0)
        order = np.argsort(row[keep], kind="stable")
        self.grid = grid
        self.row = row[keep][order]
        self.col = col[keep][order]
        self.weight = w[keep][order]

    def binned(self, row0: int, row1: int) -> npt.NDArray[np.float64]:
        """Sum of weights per cell for rows ``row0:row1`` (clipped to the grid; zeros outside)."""
        lo, hi = np.searchsorted(self.row, [row0, row1])
        rows = row1 - row0
        flat = (self.row[lo:hi] - row0) * self.grid.width + self.col[lo:hi]
        counts = np.bincount(flat, weights=self.weight[lo:hi], minlength=rows * self.grid.width)
        return np.asarray(counts, dtype=np.float64).reshape(rows, self.grid.width)


#: Columns per chunk of the sparse smoothing: chunks with no weight within the kernel's reach are skipped.
CHUNK_COLS = 512


def smooth_window(raw: FloatArray, bandwidth_m: float, res_m: float) -> npt.NDArray[np.float32]:
    """Gaussian smoothing (sd ``bandwidth_m``) of a binned window; zeros beyond its edges.

    The same as ``scipy.ndimage.gaussian_filter(raw, sigma, mode="constant")`` (which filters
    down the columns, then along the rows), computed by chunks of :data:`CHUNK_COLS` columns:
    a chunk with no weight within the kernel's reach stays 0 without being filtered, so sparse
    windows (ocean, route lines) cost little.
    """
    sigma = bandwidth_m / res_m
    data = np.asarray(raw, dtype=np.float32)
    if sigma <= 0:
        return data.copy()
    out = np.zeros_like(data)
    occupied: npt.NDArray[np.bool_] = np.asarray(data.any(axis=0))
    if not occupied.any():
        return out
    width, reach = data.shape[1], kernel_radius_cells(bandwidth_m, res_m)
    down = np.zeros_like(data)
    for c0 in range(0, width, CHUNK_COLS):
        c1 = min(c0 + CHUNK_COLS, width)
        if occupied[c0:c1].any():
            down[:, c0:c1] = ndimage.gaussian_filter1d(
                data[:, c0:c1], sigma, axis=0, mode="constant", cval=0.0, truncate=TRUNCATE_SD
            )
    for c0 in range(0, width, CHUNK_COLS):
        c1 = min(c0 + CHUNK_COLS, width)
        lo, hi = max(c0 - reach, 0), min(c1 + reach, width)
        if not occupied[lo:hi].any():
            continue
        part = down[:, lo:hi]
        rows = np.flatnonzero(part.any(axis=1))
        if len(rows) == part.shape[0]:
            along = ndimage.gaussian_filter1d(
                part, sigma, axis=1, mode="constant", cval=0.0, truncate=TRUNCATE_SD
            )
            out[:, c0:c1] = along[:, c0 - lo : c1 - lo]
        else:
            along = ndimage.gaussian_filter1d(
                part[rows], sigma, axis=1, mode="constant", cval=0.0, truncate=TRUNCATE_SD
            )
            out[rows, c0:c1] = along[:, c0 - lo : c1 - lo]
    return out


def density_windows(
    bins: PointBins, bandwidth_m: float, *, window_rows: int = 512
) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """Kernel density of ``bins`` as (first row, block) pairs covering the grid top to bottom.

    Values are weighted events per km²: the smoothed weight per cell divided by the cell's
    area in km². Each block is binned with a halo of the kernel's reach, so the result is the
    same as smoothing the whole grid at once; memory is ``(window_rows + 2 * reach) * width``.
    """
    grid = bins.grid
    halo = kernel_radius_cells(bandwidth_m, grid.res_m)
    cell_km2 = (grid.res_m / 1000.0) ** 2
    for row0 in range(0, grid.height, window_rows):
        row1 = min(row0 + window_rows, grid.height)
        lo, hi = max(row0 - halo, 0), min(row1 + halo, grid.height)
        smoothed = smooth_window(bins.binned(lo, hi), bandwidth_m, grid.res_m)
        block = smoothed[row0 - lo : row0 - lo + (row1 - row0)]
        block /= cell_km2
        yield row0, block


def kernel_density(
    grid: Grid,
    x: FloatArray,
    y: FloatArray,
    weights: FloatArray | None,
    bandwidth_m: float,
    *,
    window_rows: int = 512,
) -> npt.NDArray[np.float32]:
    """The whole density grid (weighted events per km²) of points in the grid CRS (metres).

    Convenience for small grids; large ones should consume :func:`density_windows`.
    """
    out = np.zeros((grid.height, grid.width), dtype=np.float32)
    for row0, block in density_windows(PointBins(grid, x, y, weights), bandwidth_m, window_rows=window_rows):
        out[row0 : row0 + block.shape[0]] = block
    return out
