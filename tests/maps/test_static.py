"""The static PNG map: fitted to the data, land shaded from Natural Earth, routes and corridors drawn."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image

from maps.basemap import countries_path, read_land
from maps.risk import RiskInputs, RiskParams, write_risk_surface
from maps.static import LAND, MARGIN_MIN_M, SEA, _data_extent, render_png


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def test_extent_holds_the_event_cells_and_lines_with_a_small_margin() -> None:
    density = np.zeros((100, 200), np.float32)
    density[40:45, 10:20] = 1.0  # raster of 1 km cells from (0, 0) to (200 km, 100 km)
    route = gpd.GeoDataFrame(geometry=[shapely.LineString([(150_000, 20_000), (180_000, 30_000)])])
    left, bottom, right, top = _data_extent(density, (0.0, 0.0, 200_000.0, 100_000.0), [route, None])
    # cells: x 10-20 km, y 55-60 km; route: x 150-180 km, y 20-30 km; margin max(4 %, 25 km)
    assert (left, bottom, right, top) == (
        10_000 - MARGIN_MIN_M,
        20_000 - MARGIN_MIN_M,
        180_000 + MARGIN_MIN_M,
        60_000 + MARGIN_MIN_M,
    )


def test_png_shades_land_and_sea_from_natural_earth(tmp_path: Path, data_dir: Path) -> None:
    events = pd.DataFrame(
        {
            "lon": np.full(30, -89.2),
            "lat": np.full(30, 13.7),
            "occurred_at": pd.to_datetime(["2024-05-01"] * 30),
        }
    )
    route = gpd.GeoDataFrame(
        {"category": ["new_hot"]}, geometry=[shapely.LineString([(-89.2, 13.7), (-86.2, 15.0)])], crs=4326
    )
    corridor = gpd.GeoDataFrame(
        {"kind": ["drug"]}, geometry=[shapely.LineString([(-90.5, 14.5), (-84.0, 12.0)])], crs=4326
    )
    tif = write_risk_surface(
        tmp_path / "r.tif", RiskInputs(events, route, corridor), RiskParams(res_m=5_000.0), run_id="9"
    ).path
    path = countries_path(data_dir)
    assert path is not None
    land = read_land(path, "es")
    assert "México" in set(land["name"]) and "Brasil" in set(land["name"])
    png = render_png(
        tmp_path / "m.png",
        risk_path=tif,
        title="t",
        period="2024-05",
        attribution=["tests"],
        routes=route,
        corridors=corridor,
        land=land,
        run_id="9",
    )
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    land_share = (np.abs(pixels - _rgb(LAND)).sum(axis=1) <= 3).mean()
    sea_share = (np.abs(pixels - _rgb(SEA)).sum(axis=1) <= 3).mean()
    # Central America from the Pacific to the Caribbean: both land and sea fill the map
    assert land_share > 0.1 and sea_share > 0.1
    # without the base map there is neither
    bare = render_png(
        tmp_path / "b.png", risk_path=tif, title="t", period="2024-05", attribution=["tests"], routes=route
    )
    with Image.open(bare) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    assert (np.abs(pixels - _rgb(LAND)).sum(axis=1) <= 3).mean() < 0.01
