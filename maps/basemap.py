"""The base map of the static map: land cut to the view and country names placed without overlaps.

Natural Earth (public domain) is read from the data dir (``natural_earth/
ne_50m_admin_0_countries.geojson``, the file :mod:`geodata.countries` uses). Country names are
Natural Earth's English ones, given in Spanish or Portuguese for the countries of the region.
"""

from __future__ import annotations

import math
from pathlib import Path

import geopandas as gpd
import matplotlib.patheffects as pe
import numpy as np
import pyogrio
import shapely
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from pyproj import Transformer

from geodata.countries import COUNTRIES_FILE

#: Colour of the country names, and their halo.
LABEL = "#6f665b"
_TEXT_HALO = [pe.withStroke(linewidth=2.4, foreground="white", alpha=0.85)]
#: Credit line of the base map.
BASEMAP_CREDIT = "Base map: Natural Earth 1:50m countries (public domain)"

#: Names in Spanish and Portuguese where they differ from Natural Earth's English ``NAME``.
_NAMES: dict[str, tuple[str, str]] = {
    "USA": ("Estados Unidos", "Estados Unidos"),
    "CAN": ("Canadá", "Canadá"),
    "MEX": ("México", "México"),
    "BLZ": ("Belice", "Belize"),
    "PAN": ("Panamá", "Panamá"),
    "HTI": ("Haití", "Haiti"),
    "DOM": ("Rep. Dominicana", "Rep. Dominicana"),
    "BRA": ("Brasil", "Brasil"),
    "PER": ("Perú", "Peru"),
    "COL": ("Colombia", "Colômbia"),
    "VEN": ("Venezuela", "Venezuela"),
    "ECU": ("Ecuador", "Equador"),
    "BOL": ("Bolivia", "Bolívia"),
    "PRY": ("Paraguay", "Paraguai"),
    "URY": ("Uruguay", "Uruguai"),
    "SUR": ("Surinam", "Suriname"),
    "GUY": ("Guyana", "Guiana"),
    "TTO": ("Trinidad y Tobago", "Trinidad e Tobago"),
    "JAM": ("Jamaica", "Jamaica"),
    "BHS": ("Bahamas", "Bahamas"),
    "FLK": ("Islas Malvinas", "Ilhas Malvinas"),
    "CRI": ("Costa Rica", "Costa Rica"),
    "SLV": ("El Salvador", "El Salvador"),
    "GTM": ("Guatemala", "Guatemala"),
    "HND": ("Honduras", "Honduras"),
    "NIC": ("Nicaragua", "Nicarágua"),
    "CUB": ("Cuba", "Cuba"),
    "PRI": ("Puerto Rico", "Porto Rico"),
    "ARG": ("Argentina", "Argentina"),
    "CHL": ("Chile", "Chile"),
}


def countries_path(data_dir: Path | None) -> Path | None:
    """Natural Earth's countries file in ``data_dir``, or None when it is not there."""
    if data_dir is None:
        return None
    path = data_dir / COUNTRIES_FILE
    return path if path.is_file() else None


def read_land(path: Path, language: str = "es") -> gpd.GeoDataFrame:
    """Countries of ``path`` (EPSG:4326): ``code`` (ADM0_A3), ``name`` in ``language`` and geometry."""
    frame = pyogrio.read_dataframe(path, columns=["ADM0_A3", "NAME"])
    pick = {"es": 0, "pt": 1}.get(language)
    names = [
        _NAMES[code][pick] if pick is not None and code in _NAMES else str(name)
        for code, name in zip(frame["ADM0_A3"], frame["NAME"], strict=True)
    ]
    land = gpd.GeoDataFrame(
        {"code": frame["ADM0_A3"].astype(str), "name": names}, geometry=frame.geometry.values, crs=4326
    )
    return land[land.geometry.notna() & ~land.geometry.is_empty].reset_index(drop=True)


def land_in_view(
    land: gpd.GeoDataFrame, crs: object, view: tuple[float, float, float, float]
) -> gpd.GeoDataFrame:
    """Countries cut to the view (with a margin), in the map's CRS; far-away ones are left out first."""
    x0, y0, x1, y1 = view
    pad = 0.5 * max(x1 - x0, y1 - y0)
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    xs = np.linspace(x0 - pad, x1 + pad, 9)
    ys = np.linspace(y0 - pad, y1 + pad, 9)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = to_lonlat.transform(gx.ravel(), gy.ravel())
    lon, lat = np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    near = land.cx[lon[ok].min() - 5 : lon[ok].max() + 5, lat[ok].min() - 5 : lat[ok].max() + 5]
    if near.empty:
        return near
    projected = near.to_crs(crs)
    box = shapely.box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    projected = projected.assign(geometry=shapely.intersection(projected.geometry.values, box))
    return projected[~projected.geometry.is_empty]


def label_countries(
    fig: Figure, ax: Axes, land: gpd.GeoDataFrame, view: tuple[float, float, float, float]
) -> None:
    """Country names at the middle of their largest part in view, biggest first, never overlapping."""
    x0, y0, x1, y1 = view
    box = shapely.box(x0, y0, x1, y1)
    view_area = box.area
    candidates = []
    for name, geom in zip(land["name"], land.geometry, strict=True):
        inside = shapely.intersection(geom, box)
        if inside.is_empty:
            continue
        parts = list(getattr(inside, "geoms", [inside]))
        largest = max(parts, key=lambda p: p.area)
        share = largest.area / view_area
        if share >= 0.0004:
            candidates.append((share, str(name), largest.representative_point()))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[Bbox] = []
    for share, name, point in sorted(candidates, key=lambda c: -c[0]):
        size = float(np.clip(5.5 + 16.0 * math.sqrt(share), 5.5, 12.0))
        text = ax.text(
            point.x,
            point.y,
            name.upper(),
            fontsize=size,
            color=LABEL,
            ha="center",
            va="center",
            fontstyle="italic",
            zorder=7.5,  # above the crossings' markers, which would hide small countries' names
            path_effects=_TEXT_HALO,
            clip_on=True,
        )
        extent = text.get_window_extent(renderer=renderer).expanded(1.05, 1.2)
        if any(extent.overlaps(other) for other in placed):
            text.remove()
            continue
        placed.append(extent)
