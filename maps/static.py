"""Static PNG risk map for reports and case files (matplotlib, no display needed).

The map is drawn in the risk surface's own equal-area CRS (metres), so the scale bar measures
true distances near the projection centre; it carries a title, the period, a legend, a scale
bar, a north arrow and the attribution of every source.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from maps.folium_map import CATEGORY_COLOURS, KIND_COLOURS, RISK_CMAP, labels
from maps.risk import BAND_RISK

#: Risk below this is left blank, so the map shows where risk is, not the faint proximity halo.
MIN_SHOWN_RISK = 0.02
_NICE_KM = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000)


def _scale_bar_km(width_m: float) -> int:
    """The largest round length (km) that fits in a fifth of the map's width."""
    target = width_m / 5000.0
    fitting = [k for k in _NICE_KM if k <= target]
    return fitting[-1] if fitting else _NICE_KM[0]


def render_png(
    path: Path,
    *,
    risk_path: Path,
    title: str,
    period: str,
    attribution: Sequence[str],
    routes: gpd.GeoDataFrame | None = None,
    corridors: gpd.GeoDataFrame | None = None,
    crossings: gpd.GeoDataFrame | None = None,
    borders: gpd.GeoDataFrame | None = None,
    language: str = "es",
    size_in: tuple[float, float] = (11.0, 8.5),
    dpi: int = 150,
) -> Path:
    """Write the PNG map of the ``risk`` band of ``risk_path`` with the vector layers over it.

    Vector layers are EPSG:4326 GeoDataFrames; they are drawn in the raster's CRS.
    """
    words = labels(language)
    with rasterio.open(risk_path) as src:
        band = list(src.descriptions).index(BAND_RISK) + 1
        scale = max(src.width / 2000, src.height / 2000, 1.0)
        risk = src.read(band, out_shape=(int(src.height / scale), int(src.width / scale)), masked=True)
        left, bottom, right, top = src.bounds
        crs = src.crs
    fig, ax = plt.subplots(figsize=size_in, dpi=dpi)
    image = ax.imshow(
        np.ma.masked_less(risk, MIN_SHOWN_RISK),
        extent=(left, right, bottom, top),
        cmap=RISK_CMAP,
        vmin=0,
        vmax=1,
    )
    handles: list[Line2D | Patch] = []
    if borders is not None and not borders.empty:
        borders.to_crs(crs).plot(ax=ax, color="#444444", linewidth=0.7, linestyle="--")
        handles.append(Line2D([], [], color="#444444", linestyle="--", label=words["borders"]))
    if corridors is not None and not corridors.empty:
        projected = corridors.to_crs(crs)
        for kind, group in projected.groupby("kind"):
            colour = KIND_COLOURS.get(str(kind), "#666666")
            group.plot(ax=ax, color=colour, linewidth=2.0, alpha=0.8)
            handles.append(Line2D([], [], color=colour, linewidth=2, label=f"{words['corridors']}: {kind}"))
    if routes is not None and not routes.empty:
        projected = routes.to_crs(crs)
        for category, group in projected.groupby("category"):
            colour = CATEGORY_COLOURS.get(str(category), "#999999")
            group.plot(ax=ax, color=colour, linewidth=2.5)
            handles.append(
                Line2D([], [], color=colour, linewidth=2.5, label=f"{words['routes']}: {category}")
            )
    if crossings is not None and not crossings.empty:
        crossings.to_crs(crs).plot(ax=ax, color="white", edgecolor="black", markersize=10, zorder=5)
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                color="none",
                markerfacecolor="white",
                markeredgecolor="black",
                label=words["crossings"],
            )
        )
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_yticks([])
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01, label=f"{words['risk']} (0-1)")
    if handles:
        ax.legend(handles=handles, loc="upper right", fontsize=7, framealpha=0.9, title=words["legend"])
    # scale bar (axis units are metres of the equal-area grid)
    bar_km = _scale_bar_km(right - left)
    x0, y0 = left + 0.04 * (right - left), bottom + 0.05 * (top - bottom)
    ax.plot([x0, x0 + bar_km * 1000], [y0, y0], color="black", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + bar_km * 500, y0 + 0.012 * (top - bottom), f"{bar_km} km", ha="center", fontsize=8)
    # north arrow: the grid is north-up along its central meridian
    ax.annotate(
        "N",
        xy=(0.05, 0.95),
        xytext=(0.05, 0.86),
        xycoords="axes fraction",
        ha="center",
        fontsize=12,
        fontweight="bold",
        arrowprops={"facecolor": "black", "width": 4, "headwidth": 10},
    )
    ax.set_title(f"{title}\n{period}", fontsize=12)
    credit = " | ".join(attribution)
    fig.text(0.01, 0.005, f"{words['attribution']}: {credit}", fontsize=5, wrap=True, va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path
