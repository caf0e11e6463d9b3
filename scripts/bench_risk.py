"""Benchmark: risk surface of 1,000,000 events over Latin America at 1 km, and the HTML map's size.

Prints, side by side: the windowed recency-weighted kernel density of :mod:`maps.kde` against
the direct numpy + scipy baseline a user would write (``np.histogram2d`` of the whole grid then
``scipy.ndimage.gaussian_filter`` of the same bandwidth), as a ratio; the whole risk GeoTIFF
(every band, COG with overviews) with its peak memory, from the events alone or with synthetic
routes, corridors and crossings (``--layers``); and the size of the folium HTML map of the same
events aggregated into 25 km cells with monthly slices. Never run by the tests.

    .venv/bin/python scripts/bench_risk.py [--events 1000000] [--res-km 1] [--layers] [--risk-only]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy import ndimage

from maps.folium_map import build_map, save_map
from maps.kde import LATAM_LAEA, Grid, PointBins, density_windows, recency_weights, to_grid_crs
from maps.risk import RiskInputs, RiskParams, write_risk_surface

#: Latin America and the Caribbean, EPSG:4326 (west, south, east, north).
LATAM = (-118.0, -56.0, -34.0, 33.0)


def _events(n: int, seed: int = 7) -> pd.DataFrame:
    """Clustered events over Latin America: 200 hot spots with a 50 km spread, over 24 months."""
    rng = np.random.default_rng(seed)
    centres_lon = rng.uniform(-110, -40, 200)
    centres_lat = rng.uniform(-50, 30, 200)
    pick = rng.integers(0, 200, n)
    lon = np.clip(centres_lon[pick] + rng.normal(0, 0.45, n), LATAM[0], LATAM[2])
    lat = np.clip(centres_lat[pick] + rng.normal(0, 0.45, n), LATAM[1], LATAM[3])
    days = rng.integers(0, 730, n)
    occurred = np.datetime64("2023-01-01", "s") + days.astype("timedelta64[D]")
    return pd.DataFrame({"lon": lon, "lat": lat, "occurred_at": occurred})


def _layers(n_routes: int = 60, n_corridors: int = 30, n_crossings: int = 400, seed: int = 11) -> RiskInputs:
    """Synthetic routes (4 hot categories), corridors (3 kinds) and border crossings over the region.

    Routes and corridors are 5-vertex lines of about 1,500 km between random places of the
    region; crossings are random points. Only their number and spread matter for the timing.
    """
    rng = np.random.default_rng(seed)

    def lines(n: int) -> list[shapely.LineString]:
        start = np.column_stack([rng.uniform(-110, -40, n), rng.uniform(-50, 30, n)])
        steps = rng.normal(0, 3.0, (n, 4, 2))
        vertices = np.concatenate([start[:, None, :], start[:, None, :] + np.cumsum(steps, axis=1)], axis=1)
        return [shapely.LineString(v) for v in vertices]

    categories = ["new_hot", "intensifying_hot", "persistent_hot", "sporadic_hot"]
    routes = gpd.GeoDataFrame(
        {
            "category": [categories[i % 4] for i in range(n_routes)],
            "event_count": rng.integers(20, 500, n_routes),
        },
        geometry=lines(n_routes),
        crs=4326,
    )
    kinds = ["drug", "fuel", "arms"]
    corridors = gpd.GeoDataFrame(
        {"kind": [kinds[i % 3] for i in range(n_corridors)]}, geometry=lines(n_corridors), crs=4326
    )
    crossings = gpd.GeoDataFrame(
        geometry=shapely.points(rng.uniform(-110, -40, n_crossings), rng.uniform(-50, 30, n_crossings)),
        crs=4326,
    )
    return RiskInputs(events=pd.DataFrame(), routes=routes, corridors=corridors, crossings=crossings)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cells(events: pd.DataFrame, cell_km: float) -> pd.DataFrame:
    """The same aggregation as ``rutas_event_cells`` (square EPSG:3857 cells, per month), in numpy."""
    x = np.radians(events["lon"].to_numpy()) * 6378137.0
    y = np.log(np.tan(np.pi / 4 + np.radians(events["lat"].to_numpy()) / 2)) * 6378137.0
    size = cell_km * 1000.0
    frame = pd.DataFrame(
        {
            "gx": np.floor(x / size),
            "gy": np.floor(y / size),
            "month": events["occurred_at"].to_numpy("datetime64[M]"),
        }
    )
    counts = frame.groupby(["gx", "gy", "month"]).size().rename("n").reset_index()
    counts = counts[counts["n"] >= 11]
    lon = np.degrees((counts["gx"] + 0.5) * size / 6378137.0)
    lat = np.degrees(2 * np.arctan(np.exp((counts["gy"] + 0.5) * size / 6378137.0)) - np.pi / 2)
    west = np.degrees(counts["gx"] * size / 6378137.0)
    east = np.degrees((counts["gx"] + 1) * size / 6378137.0)
    south = np.degrees(2 * np.arctan(np.exp(counts["gy"] * size / 6378137.0)) - np.pi / 2)
    north = np.degrees(2 * np.arctan(np.exp((counts["gy"] + 1) * size / 6378137.0)) - np.pi / 2)
    return pd.DataFrame(
        {
            "lon": lon,
            "lat": lat,
            "west": west,
            "south": south,
            "east": east,
            "north": north,
            "kind": "incident",
            "n": counts["n"].to_numpy(),
            "month": pd.to_datetime(counts["month"]),
        }
    )


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--res-km", type=float, default=1.0)
    parser.add_argument("--bandwidth-km", type=float, default=10.0)
    parser.add_argument("--risk-only", action="store_true", help="only the risk GeoTIFF")
    parser.add_argument(
        "--layers",
        action="store_true",
        help="add 60 routes in 4 hot categories, 30 corridors of 3 kinds and 400 border crossings",
    )
    args = parser.parse_args()
    events = _events(args.events)
    res_m, bandwidth_m = args.res_km * 1000.0, args.bandwidth_km * 1000.0
    corners_lon = np.array([LATAM[0], LATAM[2], LATAM[0], LATAM[2], -75.0, -75.0])
    corners_lat = np.array([LATAM[1], LATAM[1], LATAM[3], LATAM[3], LATAM[1], LATAM[3]])
    grid = Grid.covering(corners_lon, corners_lat, res_m, crs=LATAM_LAEA)
    print(
        f"{args.events:,} events; grid {grid.width:,} x {grid.height:,} cells of {args.res_km:g} km "
        f"({grid.width * grid.height / 1e6:.0f} M cells); Gaussian kernel sd {args.bandwidth_km:g} km"
    )
    inputs = RiskInputs(events=events)
    if args.layers:
        layers = _layers()
        inputs = RiskInputs(
            events=events, routes=layers.routes, corridors=layers.corridors, crossings=layers.crossings
        )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        report = write_risk_surface(
            Path(tmp) / "risk.tif",
            inputs,
            RiskParams(res_m=res_m, bandwidth_m=bandwidth_m, window_rows=512),
            run_id="bench",
            grid=grid,
        )
        risk_s = time.perf_counter() - start
        size_mb = report.path.stat().st_size / 1e6
        what = "with 60 routes, 30 corridors, 400 crossings" if args.layers else "events only"
        print(
            f"risk GeoTIFF (12 bands, {what}, COG with overviews): {risk_s:6.1f} s, {size_mb:,.0f} MB, "
            "(measured first: the peak is the risk stage's) "
            f"peak RSS {_peak_rss_mb():,.0f} MB"
        )

        cells = _cells(events, 25.0)
        keys = ["lon", "lat", "west", "south", "east", "north", "kind"]
        whole = pd.DataFrame(cells.groupby(keys, as_index=False)["n"].sum())
        start = time.perf_counter()
        html = save_map(
            build_map(cells=whole, monthly_cells=cells, risk_path=report.path, attribution=["bench"]),
            Path(tmp) / "map.html",
        )
        map_s = time.perf_counter() - start
        print(
            f"HTML map of {args.events:,} events (25 km cells, {cells['month'].nunique()} monthly slices, "
            f"risk overlay): {html.stat().st_size / 1e6:.1f} MB in {map_s:.1f} s "
            f"(raw points as GeoJSON would be about {args.events * 60 / 1e6:.0f} MB)"
        )

    if args.risk_only:
        return
    x, y = to_grid_crs(events["lon"].to_numpy(), events["lat"].to_numpy(), grid.crs)
    weights = recency_weights(
        events["occurred_at"].to_numpy("datetime64[s]"), np.datetime64("2024-12-31", "s"), 180.0
    )

    start = time.perf_counter()
    total = 0.0
    for _, block in density_windows(PointBins(grid, x, y, weights), bandwidth_m, window_rows=512):
        total += float(block.sum(dtype=np.float64))
    ours_s = time.perf_counter() - start
    ours_rss = _peak_rss_mb()

    start = time.perf_counter()
    left, _, _, top = grid.bounds
    binned, _, _ = np.histogram2d(
        top - y,
        x - left,
        bins=(grid.height, grid.width),
        range=((0, grid.height * res_m), (0, grid.width * res_m)),
        weights=weights,
    )
    baseline = ndimage.gaussian_filter(binned, sigma=bandwidth_m / res_m, mode="constant")
    base_s = time.perf_counter() - start
    base_total = float(baseline.sum()) / (res_m / 1000.0) ** 2
    del binned, baseline
    base_rss = _peak_rss_mb()
    print(
        f"kernel density   maps.kde (windowed) {ours_s:6.1f} s | numpy histogram2d + scipy gaussian_filter "
        f"{base_s:6.1f} s | ratio baseline/ours {base_s / ours_s:4.2f}x | mass agrees: "
        f"{abs(total - base_total) / base_total:.1e} relative"
    )
    print(f"peak RSS after ours {ours_rss:,.0f} MB; after the whole-grid baseline {base_rss:,.0f} MB")


if __name__ == "__main__":
    main()
