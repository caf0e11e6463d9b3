"""Benchmark of the emerging-route analysis against the tools an analyst would otherwise use.

    .venv/bin/python scripts/bench_emerging.py [--segments 100000] [--events 1000000] [--slices 36]

Builds a synthetic scenario on the Global Map roads of the whole region (segment length chosen
so the network has about ``--segments`` segments), runs the whole analysis (segments, cube,
network neighbours, Gi*, FDR, Mann-Kendall, categories, routes) and prints stage timings and
peak memory. Then it times the same building blocks with the reference tools on the same cube:
``esda.G_Local(star=True, transform="B")`` over the space-time weights and
``scipy.stats.kendalltau`` per unit (the test pymannkendall and ArcGIS users run). The esda
weights of the full cube would not fit in memory (their Kronecker structure is stored
explicitly), so the reference runs on a contiguous sample of units of the same cube and is
scaled linearly in stored weights; both figures are printed.
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import sparse, stats

from geodata.settings import get_settings
from routes.analysis import AnalysisParams, analyse
from routes.cube import CubeFilter
from routes.hotspots import gi_star, time_window
from routes.synthetic import globalmap_edges, make_scenario

COUNTRIES = ("MEX", "GTM", "BLZ", "SLV", "HND", "NIC", "PAN", "COL", "CHL", "BRA")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _segment_km_for(edges_km: np.ndarray, target: int) -> float:
    """Segment length (km) that cuts the edges into about ``target`` segments."""
    low, high = 0.1, 100.0
    for _ in range(40):
        mid = (low + high) / 2
        count = np.maximum(1, np.ceil(edges_km / mid)).sum()
        low, high = (mid, high) if count > target else (low, mid)
    return round(high, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--slices", type=int, default=36)
    parser.add_argument("--neighbour-km", type=float, default=50.0)
    parser.add_argument("--sample-units", type=int, default=4_000,
                        help="units of the cube the reference tools run on")
    args = parser.parse_args()
    settings = get_settings()
    if settings.data_dir is None:
        raise SystemExit("Set RUTAS_DATA_DIR to the shared data folder.")
    warnings.filterwarnings("ignore")

    t0 = time.perf_counter()
    edges = globalmap_edges(Path(settings.data_dir), COUNTRIES)
    segment_km = _segment_km_for(edges["length_m"].to_numpy() / 1000.0, args.segments)
    total_km = float(edges["length_m"].sum()) / 1000.0
    planted_share = 0.1
    background = args.events * (1 - planted_share) / args.slices / (total_km / 1000.0)
    behaviours = ("new", "intensifying", "persistent", "diminishing", "sporadic") * 4
    # Mean activity of the five behaviours is about 0.435 of their peak.
    peak = args.events * planted_share / args.slices / len(behaviours) / 0.435
    scenario = make_scenario(edges, behaviours=behaviours, n_slices=args.slices, route_km=80.0,
                             separation_km=150.0, peak=peak, background_per_1000km=background, seed=7)
    print(f"network: {len(edges):,} edges, {total_km:,.0f} km; segment_km={segment_km}; "
          f"events: {len(scenario.events):,} over {args.slices} monthly slices "
          f"(set-up {time.perf_counter() - t0:.1f} s)")

    params = AnalysisParams(segment_km=segment_km, neighbour_km=args.neighbour_km)
    period = CubeFilter(since=scenario.since, until=scenario.until)
    base_mib = _peak_mib()
    start = time.perf_counter()
    result = analyse(scenario.events, edges, params, filters=period, run_id="bench")
    total_s = time.perf_counter() - start
    peak_mib = _peak_mib()
    cube = result.cube
    w_space = result.weights
    per_unit = w_space.nnz / max(cube.n_units, 1)
    print(f"segments: {len(result.segments):,}; cube: {cube.n_units:,} units x {cube.n_slices} slices "
          f"({cube.n_segment_units:,} segments, {len(cube.cells):,} H3 cells); "
          f"spatial neighbours per unit: {per_unit:.1f}; routes: {len(result.routes):,}")
    for stage, seconds in result.timings_s.items():
        print(f"  {stage:<26}{seconds:8.2f} s")
    print(f"Rutas whole run: {total_s:.1f} s (target < 120 s); peak RSS {peak_mib:,.0f} MiB "
          f"(set-up alone {base_mib:,.0f} MiB)")

    # Reference tools on a contiguous sample of the same cube (units reached first from unit 0).
    order = sparse.csgraph.breadth_first_order(w_space, 0, directed=False, return_predecessors=False)
    rest = np.setdiff1d(np.arange(cube.n_units), order)
    sample = np.concatenate([order, rest])[: args.sample_units]
    x = cube.values[sample]
    ws = sparse.csr_matrix(w_space[sample][:, sample])
    n_slices = cube.n_slices
    full = sparse.kron(ws + sparse.identity(len(sample)), time_window(n_slices, params.time_step)).tocsr()
    full.setdiag(0)
    full.eliminate_zeros()

    import esda
    from libpysal import graph

    start = time.perf_counter()
    ours = gi_star(x, ws, params.time_step)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = esda.G_Local(x.ravel(), graph.Graph.from_sparse(full), transform="B", star=True, permutations=0)
    esda_s = time.perf_counter() - start
    agree = float(np.abs(ours.z.ravel() - ref.Zs).max())
    nnz_full = (w_space.nnz + cube.n_units) * float(time_window(n_slices, params.time_step).nnz)
    scale = nnz_full / max(full.nnz + full.shape[0], 1)
    print(f"\nGi* on a sample of {len(sample):,} units x {n_slices} slices "
          f"({full.nnz:,} space-time weights):")
    print(f"  Rutas gi_star            {ours_s:8.3f} s")
    print(f"  esda.G_Local(star=True)  {esda_s:8.3f} s   ratio esda/Rutas {esda_s / ours_s:8.1f}x   "
          f"max |z difference| {agree:.1e}")
    gi_full = result.timings_s["gi_star_fdr"]
    print(f"  whole cube: Rutas {gi_full:.2f} s measured; esda ~{esda_s * scale:,.0f} s scaled by stored "
          f"weights ({scale:,.0f}x the sample), ratio ~{esda_s * scale / max(gi_full, 1e-3):,.0f}x")

    start = time.perf_counter()
    t = np.arange(n_slices)
    for row in ours.z:
        stats.kendalltau(t, row)
    tau_s = time.perf_counter() - start
    from routes.emerging import mann_kendall

    start = time.perf_counter()
    mann_kendall(ours.z)
    mk_s = time.perf_counter() - start
    mk_full = tau_s * cube.n_units / len(sample)
    print(f"\nMann-Kendall on {len(sample):,} units:")
    print(f"  Rutas mann_kendall       {mk_s:8.3f} s")
    print(f"  scipy.stats.kendalltau   {tau_s:8.3f} s   ratio scipy/Rutas {tau_s / mk_s:8.1f}x "
          f"(whole cube: scipy ~{mk_full:,.0f} s)")
    print(f"\npeak RSS at the end (with the reference runs): {_peak_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
