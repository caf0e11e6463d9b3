"""Space-time Gi* against esda.G_Local and a hand computation; Benjamini-Hochberg FDR."""

from __future__ import annotations

from pathlib import Path

import esda
import libpysal
import numpy as np
import pandas as pd
import pytest
from scipy import sparse, stats

from geodata.errors import InputError
from routes.cube import CubeFilter, build_cube
from routes.hotspots import fdr_qvalues, gi_star, time_window
from routes.segments import cut_segments, network_neighbours
from routes.synthetic import globalmap_edges, make_scenario


def space_time_weights(w_space: sparse.csr_matrix, n_slices: int, step: int) -> sparse.csr_matrix:
    """The Kronecker space-time weights of the flattened cube (bin k = unit * T + slice), no diagonal."""
    full = sparse.kron(w_space + sparse.identity(w_space.shape[0]), time_window(n_slices, step)).tocsr()
    full.setdiag(0)
    full.eliminate_zeros()
    return full


@pytest.mark.parametrize("step", [0, 1, 2])
def test_gi_star_matches_esda_on_a_real_network_cube(data_dir: Path, step: int) -> None:
    edges = globalmap_edges(data_dir, ["SLV"])
    scenario = make_scenario(edges, behaviours=("intensifying",), n_slices=8, route_km=40, peak=20,
                             background_per_1000km=100, seed=4)
    segments = cut_segments(edges, 10.0)
    cube = build_cube(scenario.events.dropna(subset=["edge_id"]), segments,
                      filters=CubeFilter(since=scenario.since, until=scenario.until))
    w = network_neighbours(segments, 30.0, cube.segments)
    ours = gi_star(cube.values, w, step)
    full = space_time_weights(w, cube.n_slices, step)
    lib_w = libpysal.weights.WSP(full).to_W(silence_warnings=True)
    ref = esda.G_Local(cube.values.ravel(), lib_w, transform="B", star=True, permutations=0)
    assert cube.values.size > 1000 and (ours.z.ravel() > 3).sum() > 10
    np.testing.assert_allclose(ours.z.ravel(), ref.Zs, rtol=0, atol=1e-8)


def test_gi_star_by_hand() -> None:
    # Three units in a chain (0-1-2), two slices, step 0.
    x = np.array([[4.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    w = sparse.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    got = gi_star(x, w, 0)
    n, mean, sd = 6, 8 / 6, np.sqrt((16 + 4 + 1 + 1) / 6 - (8 / 6) ** 2)
    # Unit 0, slice 0: itself and unit 1 -> 4 + 2, two weights.
    z00 = (6 - mean * 2) / (sd * np.sqrt((n * 2 - 4) / (n - 1)))
    # Unit 1, slice 1: units 0, 1, 2 -> 0 + 1 + 1, three weights.
    z11 = (2 - mean * 3) / (sd * np.sqrt((n * 3 - 9) / (n - 1)))
    assert got.z[0, 0] == pytest.approx(z00) and got.z[1, 1] == pytest.approx(z11)
    assert got.p[0, 0] == pytest.approx(2 * stats.norm.sf(abs(z00)))


def test_gi_star_time_window_reaches_neighbouring_slices() -> None:
    x = np.zeros((4, 7))
    x[0, 3] = 10.0
    x[1:, :] += 0.5
    lone = sparse.csr_matrix((4, 4))
    z0 = gi_star(x, lone, 0).z
    z1 = gi_star(x, lone, 1).z
    assert z0[0, 2] < 0 and z1[0, 2] > 0  # slice 2 sees slice 3 only with a time step of 1
    assert z1[0, 1] < 0  # two slices away is out of reach
    with pytest.raises(InputError, match="time_step"):
        gi_star(x, lone, -1)
    with pytest.raises(InputError, match="units"):
        gi_star(x, sparse.csr_matrix((3, 3)), 1)


def test_constant_cube_has_no_hot_spots() -> None:
    got = gi_star(np.ones((5, 6)), sparse.csr_matrix((5, 5)), 1)
    assert (got.z == 0).all() and not got.hot(0.05).any()


def test_fdr_matches_scipy_and_hand_example() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    # Sorted: 0.005, 0.01, 0.03, 0.04, 0.5 -> x5/k: 0.025, 0.025, 0.05, 0.05, 0.5.
    assert fdr_qvalues(p).tolist() == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])
    rng = np.random.default_rng(0)
    many = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-3, 50)]).reshape(50, 11)
    np.testing.assert_allclose(fdr_qvalues(many).ravel(), stats.false_discovery_control(many.ravel()))
    # Significance at q <= alpha is the step-up rule: the largest k with p_(k) <= k alpha / m.
    alpha = 0.05
    srt = np.sort(many.ravel())
    k = np.flatnonzero(srt <= alpha * np.arange(1, srt.size + 1) / srt.size).max() + 1
    assert (fdr_qvalues(many) <= alpha).sum() == k


def test_fdr_keeps_noise_quiet() -> None:
    rng = np.random.default_rng(1)
    x = rng.poisson(3.0, size=(300, 12)).astype(float)
    w = sparse.random(300, 300, density=0.02, random_state=2, format="csr")
    w = sparse.csr_matrix(((w + w.T) > 0).astype(float))
    got = gi_star(x, w, 1)
    raw = (got.p <= 0.05).sum()
    assert (got.q <= 0.05).sum() < raw and (got.q <= 0.05).sum() <= 0.01 * x.size
    assert pd.Series(got.z.ravel()).abs().max() < 6
