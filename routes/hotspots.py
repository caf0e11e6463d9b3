"""Space-time Getis-Ord Gi* over the cube, with Benjamini-Hochberg false discovery rate control.

For bin (i, t) the neighbours are {(j, s): j = i or j a spatial neighbour of i, |s - t| <= step},
all with weight 1 (Getis & Ord 1995, G*_i with binary weights). The mean and standard
deviation are taken over every bin of the cube. This is the statistic of
``esda.G_Local(star=True, transform="B")`` on the flattened cube, computed as two sparse
products, ``(W_space + I) @ X @ W_time``, without building the space-time weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import sparse, stats

from geodata.errors import InputError


@dataclass
class GiStar:
    """Gi* of every bin: ``z`` and two-sided normal ``p`` (shape units x slices), and ``q``,
    the Benjamini-Hochberg adjusted p-values over all bins."""

    z: npt.NDArray[np.float64]
    p: npt.NDArray[np.float64]
    q: npt.NDArray[np.float64]

    def hot(self, alpha: float) -> npt.NDArray[np.bool_]:
        """Bins that are significant hot spots at false discovery rate ``alpha``."""
        return (self.q <= alpha) & (self.z > 0)

    def cold(self, alpha: float) -> npt.NDArray[np.bool_]:
        """Bins that are significant cold spots at false discovery rate ``alpha``."""
        return (self.q <= alpha) & (self.z < 0)


def time_window(n_slices: int, time_step: int) -> sparse.csr_matrix:
    """T x T 0/1 band matrix: slices s and t are neighbours when |s - t| <= time_step."""
    if time_step < 0:
        raise InputError(
            f"time_step must be 0 or more slices, got {time_step}.",
            f"time_step debe ser 0 o más intervalos, se recibió {time_step}.",
        )
    offsets = list(range(-time_step, time_step + 1))
    diagonals = [np.ones(n_slices - abs(k)) for k in offsets]
    return sparse.diags(diagonals, offsets, shape=(n_slices, n_slices), format="csr")


def gi_star(values: npt.NDArray[np.float64], w_space: sparse.spmatrix, time_step: int) -> GiStar:
    """Space-time Gi* z-scores, p-values and FDR q-values of every bin of the cube.

    Parameters
    ----------
    values
        Cube values, shape (n_units, n_slices).
    w_space
        n_units x n_units 0/1 spatial weights with an empty diagonal (each unit is added to
        its own neighbourhood here).
    time_step
        Slices on each side that are neighbours in time (0: the slice alone).
    """
    x = np.asarray(values, dtype=np.float64)
    n, t = x.shape
    if w_space.shape != (n, n):
        raise InputError(
            f"The spatial weights are {w_space.shape[0]} x {w_space.shape[1]} but the cube has {n} units.",
            f"Los pesos espaciales son {w_space.shape[0]} x {w_space.shape[1]} pero el cubo tiene {n} "
            "unidades.",
        )
    ws = sparse.csr_matrix(w_space, dtype=np.float64)
    ws.setdiag(0.0)
    ws.eliminate_zeros()
    ws = ws + sparse.identity(n, format="csr")
    wt = time_window(t, time_step)
    lag = np.asarray(ws @ x)
    lag = np.asarray((wt @ lag.T).T)
    n_bins = float(n * t)
    weight_sum = np.outer(np.asarray(ws.sum(axis=1)).ravel(), np.asarray(wt.sum(axis=0)).ravel())
    mean = x.mean()
    sd = x.std()
    z = np.zeros_like(x)
    if sd > 0 and n_bins > 1:
        spread = sd * np.sqrt(weight_sum * (n_bins - weight_sum) / (n_bins - 1.0))
        ok = spread > 0
        z[ok] = (lag[ok] - mean * weight_sum[ok]) / spread[ok]
    p = 2.0 * stats.norm.sf(np.abs(z))
    return GiStar(z=z, p=p, q=fdr_qvalues(p))


def fdr_qvalues(p: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (same shape as ``p``).

    A bin is significant at false discovery rate alpha when its q-value is <= alpha, which
    is the Benjamini-Hochberg step-up rule.
    """
    flat = np.asarray(p, dtype=np.float64).ravel()
    m = flat.size
    if m == 0:
        return np.asarray(p, dtype=np.float64).copy()
    order = np.argsort(flat, kind="stable")
    ranked = flat[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(m)
    q[order] = np.minimum(ranked, 1.0)
    return q.reshape(np.shape(p))
