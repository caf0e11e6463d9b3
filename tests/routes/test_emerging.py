"""Mann-Kendall (hand-computed and scipy) and the 17 categories, boundaries included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from routes.emerging import CATEGORIES, Trend, categorise, mann_kendall


def test_mann_kendall_by_hand() -> None:
    got = mann_kendall(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    # S = 10 pairs all increasing; Var S = 5*4*15/18; z = (10 - 1) / sqrt(Var S).
    assert got.s[0] == 10 and got.var_s[0] == pytest.approx(50 / 3)
    assert got.z[0] == pytest.approx(9 / np.sqrt(50 / 3)) and got.tau[0] == pytest.approx(1.0)
    assert got.p[0] == pytest.approx(0.027486, abs=1e-5)
    tied = mann_kendall(np.array([[1.0, 1.0, 2.0, 2.0, 2.0, 3.0]]))
    # S: pairs (i<j) with x_j > x_i = 2*3 + 2*1 + 3*1 = 11, none decreasing.
    # Ties: a group of 2 and a group of 3 -> Var S = (6*5*17 - 2*1*9 - 3*2*11) / 18 = 426 / 18.
    assert tied.s[0] == 11 and tied.var_s[0] == pytest.approx(426 / 18)


def test_mann_kendall_matches_scipy_kendalltau() -> None:
    rng = np.random.default_rng(5)
    series = rng.integers(0, 6, size=(40, 18)).astype(float)  # many ties
    series[:10] += np.arange(18) * 0.4
    got = mann_kendall(series, continuity=False)
    t = np.arange(18)
    for row, tau, p in zip(series, got.tau, got.p, strict=True):
        ref = stats.kendalltau(t, row, method="asymptotic")
        assert tau == pytest.approx(ref.statistic, abs=1e-12)
        assert p == pytest.approx(ref.pvalue, abs=1e-12)
    corrected = mann_kendall(series)
    assert (corrected.p >= got.p - 1e-15).all()  # the continuity correction is conservative


def trend(up: bool = False, down: bool = False, n: int = 1) -> Trend:
    s = np.full(n, 50.0 if up else -50.0 if down else 1.0)
    p = np.full(n, 0.001 if (up or down) else 0.6)
    return Trend(s=s, var_s=np.ones(n), tau=s / 100, z=s, p=p)


def run(hot: str, cold: str = "", up: bool = False, down: bool = False) -> str:
    """Category of one unit from slice strings: 'H' hot, 'C' cold, '.' neither."""
    pattern = hot if not cold else "".join(c if c != "." else d for c, d in zip(hot, cold, strict=True))
    h = np.array([[c == "H" for c in pattern]])
    c = np.array([[ch == "C" for ch in pattern]])
    return str(categorise(h, c, trend(up, down), 0.05)[0])


CASES = [
    # (slices, trend up, trend down, expected)
    (".........H", False, False, "new_hot"),
    ("CC.......H", False, False, "new_hot"),
    (".......HHH", False, False, "consecutive_hot"),
    (".HHHHHHHHH", False, False, "persistent_hot"),  # exactly 90 %: no longer consecutive
    ("HHHHHHHHHH", True, False, "intensifying_hot"),
    (".HHHHHHHHH", True, False, "intensifying_hot"),  # exactly 90 %
    ("HHHHHHHHHH", False, False, "persistent_hot"),
    ("HHHH.HHHHH", False, True, "diminishing_hot"),
    ("H..HH...HH", False, False, "sporadic_hot"),
    ("..HHHHHH.H", False, False, "sporadic_hot"),  # 70 %, not one run at the end
    (".HHHHHHH.H", False, False, "sporadic_hot"),  # 80 %: under 90 %
    ("HHC.H...HH", False, False, "oscillating_hot"),
    ("HHHHHHHHH.", False, False, "historical_hot"),  # 90 %, final not hot
    ("HHHHHHHHH.", True, False, "historical_hot"),
    ("HHHHHHHH..", False, False, "no_pattern"),  # 80 %, final not hot
    ("..........", False, False, "no_pattern"),
    (".........C", False, False, "new_cold"),
    (".......CCC", False, False, "consecutive_cold"),
    ("CCCCCCCCCC", False, True, "intensifying_cold"),  # z falling: colder and colder
    (".CCCCCCCCC", False, False, "persistent_cold"),
    ("CCCCCCCCCC", True, False, "diminishing_cold"),
    ("C..CC...CC", False, False, "sporadic_cold"),
    ("CCH.C...CC", False, False, "oscillating_cold"),
    ("CCCCCCCCC.", False, False, "historical_cold"),
]


@pytest.mark.parametrize(("slices", "up", "down", "expected"), CASES)
def test_categories(slices: str, up: bool, down: bool, expected: str) -> None:
    h = np.array([[c == "H" for c in slices]])
    c = np.array([[ch == "C" for ch in slices]])
    assert str(categorise(h, c, trend(up, down), 0.05)[0]) == expected


def test_all_seventeen_categories_are_reached_at_once() -> None:
    h = np.array([[c == "H" for c in s] for s, *_ in CASES])
    c = np.array([[ch == "C" for ch in s] for s, *_ in CASES])
    s = np.array([50.0 if up else -50.0 if down else 1.0 for _, up, down, _ in CASES])
    p = np.where(s == 1.0, 0.6, 0.001)
    got = categorise(h, c, Trend(s=s, var_s=np.ones(len(s)), tau=s, z=s, p=p), 0.05)
    assert got.tolist() == [e for *_, e in CASES]
    assert set(got) == set(CATEGORIES) and len(CATEGORIES) == 17


def test_ninety_percent_boundary_on_twenty_slices() -> None:
    eighteen = "." * 2 + "H" * 18  # exactly 90 % and one run at the end
    seventeen = "." * 3 + "H" * 17  # 85 %
    h = np.array([[c == "H" for c in eighteen], [c == "H" for c in seventeen]])
    got = categorise(h, np.zeros_like(h), trend(n=2), 0.05)
    assert got.tolist() == ["persistent_hot", "consecutive_hot"]


def test_trend_alpha_decides_between_persistent_and_intensifying() -> None:
    h = np.ones((1, 12), dtype=bool)
    t = Trend(s=np.array([30.0]), var_s=np.ones(1), tau=np.ones(1), z=np.ones(1), p=np.array([0.03]))
    assert categorise(h, ~h, t, 0.05)[0] == "intensifying_hot"
    assert categorise(h, ~h, t, 0.01)[0] == "persistent_hot"
