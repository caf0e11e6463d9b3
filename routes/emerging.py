"""Mann-Kendall trend of each unit's Gi* series and the 17 emerging hot-spot categories.

The categories follow the vocabulary of ArcGIS's Emerging Hot Spot Analysis. With "hot" a
bin whose Gi* is positive and significant (FDR q <= alpha), f the share of hot slices and
"trend" the Mann-Kendall test of the unit's z-scores (p <= alpha), the rules are checked in
this order:

1. final slice hot, no earlier hot slice: **new**;
2. final slice hot, one run of hot slices at the end, none before it, f < 90 %: **consecutive**;
3. final slice hot, f >= 90 %: **intensifying** (significant upward trend), **diminishing**
   (significant downward trend) or **persistent** (no significant trend);
4. final slice not hot, f >= 90 %: **historical** (this wins over persistent, which would
   otherwise also match: a unit no longer hot is historical);
5. final slice hot, f < 90 %: **oscillating** when some earlier slice is a significant cold
   spot, else **sporadic**.

Cold categories mirror these with cold slices (intensifying cold: significant downward trend
of z). A unit matching neither is **no pattern**.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

PATTERNS = ("new", "consecutive", "intensifying", "persistent", "diminishing",
            "sporadic", "oscillating", "historical")
HOT_CATEGORIES = tuple(f"{p}_hot" for p in PATTERNS)
COLD_CATEGORIES = tuple(f"{p}_cold" for p in PATTERNS)
NO_PATTERN = "no_pattern"
CATEGORIES = (*HOT_CATEGORIES, *COLD_CATEGORIES, NO_PATTERN)
PERSISTENT_SHARE = 0.9


@dataclass
class Trend:
    """Mann-Kendall test per unit: S, tie-corrected variance of S, Kendall's tau-b against time,
    z (with continuity correction unless disabled) and two-sided p."""

    s: npt.NDArray[np.float64]
    var_s: npt.NDArray[np.float64]
    tau: npt.NDArray[np.float64]
    z: npt.NDArray[np.float64]
    p: npt.NDArray[np.float64]


def mann_kendall(series: npt.NDArray[np.float64], *, continuity: bool = True) -> Trend:
    """Mann-Kendall trend test on each row of ``series`` (units x slices), vectorised over rows.

    S = sum over i < j of sign(x_j - x_i). Var(S) = [n(n-1)(2n+5) - sum_g t_g(t_g-1)(2t_g+5)] / 18
    where t_g are the sizes of groups of tied values in the row. tau is Kendall's tau-b
    between the series and time, S / sqrt(n0 (n0 - n1)) with n0 = n(n-1)/2 and n1 the tied
    pairs of the series (equal to ``scipy.stats.kendalltau(range(n), x)``). z = (S - sign(S)) /
    sqrt(Var S) with the continuity correction, S / sqrt(Var S) without it.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    m, n = x.shape
    s = np.zeros(m)
    for lag in range(1, n):
        s += np.sign(x[:, lag:] - x[:, :-lag]).sum(axis=1)
    # Tie groups: runs of equal values in each sorted row.
    srt = np.sort(x, axis=1)
    change = np.ones((m, n), dtype=bool)
    change[:, 1:] = srt[:, 1:] != srt[:, :-1]
    flat_start = np.flatnonzero(change.ravel())
    sizes = np.diff(np.append(flat_start, m * n)).astype(np.float64)
    row_of = flat_start // n
    tie_var = np.bincount(row_of, weights=sizes * (sizes - 1) * (2 * sizes + 5), minlength=m)
    tied_pairs = np.bincount(row_of, weights=sizes * (sizes - 1) / 2, minlength=m)
    var_s = (n * (n - 1) * (2 * n + 5) - tie_var) / 18.0
    n0 = n * (n - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = np.where(n0 - tied_pairs > 0, s / np.sqrt(n0 * (n0 - tied_pairs)), 0.0)
        num = s - np.sign(s) if continuity else s
        z = np.where(var_s > 0, num / np.sqrt(np.where(var_s > 0, var_s, 1.0)), 0.0)
    p = 2.0 * stats.norm.sf(np.abs(z))
    return Trend(s=s, var_s=var_s, tau=tau, z=z, p=p)


def _pattern(on: npt.NDArray[np.bool_], opposite: npt.NDArray[np.bool_], up: npt.NDArray[np.bool_],
             down: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
    """Index into PATTERNS (or -1) of every unit, given its on/opposite slices and trend."""
    m, n = on.shape
    out = np.full(m, -1, dtype=np.int64)
    share = on.sum(axis=1) / n
    last = on[:, -1]
    before = on[:, :-1].any(axis=1)
    # Length of the run of "on" slices that ends at the final slice.
    off_rev = ~on[:, ::-1]
    run = np.where(off_rev.any(axis=1), off_rev.argmax(axis=1), n)
    earlier = np.zeros(m, dtype=bool)
    inside = run < n
    for_rows = np.flatnonzero(inside)
    if len(for_rows):
        mask = np.arange(n)[None, :] < (n - run[for_rows])[:, None]
        earlier[for_rows] = (on[for_rows] & mask).any(axis=1)
    many = share >= PERSISTENT_SHARE - 1e-12
    opposite_before = opposite[:, :-1].any(axis=1)
    idx = {p: i for i, p in enumerate(PATTERNS)}
    rules: list[tuple[str, npt.NDArray[np.bool_]]] = [
        ("new", last & ~before),
        ("consecutive", last & (run >= 2) & ~earlier & ~many),
        ("intensifying", last & many & up),
        ("diminishing", last & many & down),
        ("persistent", last & many & ~up & ~down),
        ("historical", ~last & many),
        ("oscillating", last & ~many & opposite_before),
        ("sporadic", last & ~many & ~opposite_before),
    ]
    for name, hit in rules:
        out[(out < 0) & hit] = idx[name]
    return out


def categorise(hot: npt.NDArray[np.bool_], cold: npt.NDArray[np.bool_], trend: Trend,
               alpha: float) -> npt.NDArray[np.str_]:
    """The category of each unit (one of :data:`CATEGORIES`).

    Parameters
    ----------
    hot, cold
        Significant hot / cold bins, shape (n_units, n_slices).
    trend
        Mann-Kendall test of each unit's Gi* z-scores.
    alpha
        Significance level of the trend.
    """
    significant = trend.p <= alpha
    up = significant & (trend.s > 0)
    down = significant & (trend.s < 0)
    hot_p = _pattern(hot, cold, up, down)
    # Colder and colder is the cold spot's intensification: the trend of z is downward.
    cold_p = _pattern(cold, hot, down, up)
    names_hot = np.array(HOT_CATEGORIES)
    names_cold = np.array(COLD_CATEGORIES)
    out = np.full(hot.shape[0], NO_PATTERN, dtype=object)
    out[hot_p >= 0] = names_hot[hot_p[hot_p >= 0]]
    take_cold = (hot_p < 0) & (cold_p >= 0)
    out[take_cold] = names_cold[cold_p[take_cold]]
    return out.astype(str)
