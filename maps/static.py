"""Static PNG risk map for reports and case files (matplotlib, no display needed).

An A4-landscape page: the map on the left, fitted to the data (event cells, routes, corridors,
convergence zones) with a small margin, and a panel on the right with the legend, the risk
colour scale and a locator map of the region; title, period and run above, the attribution of
every source below. The map is drawn in the risk surface's own equal-area CRS (metres), so the
scale bar measures true distances near the projection centre; the north arrow points to the
local north at the map's centre. Land and country names come from Natural Earth when given.

Routes and corridors are told apart at a glance: routes are solid lines in warm colours (their
emerging category) with a dark casing, corridors dashed lines in cool colours (their kind) with a
light halo, drawn beneath the routes; convergence zones are hatched.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.patheffects as pe
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
import rasterio
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, LinearSegmentedColormap, PowerNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from pyproj import Transformer

from maps.basemap import label_countries, land_in_view
from maps.folium_map import (
    CATEGORY_COLOURS,
    JOINT_COLOUR,
    KIND_COLOURS,
    RISK_CMAP,
    category_name,
    joint_label,
    kind_name,
    labels,
)
from maps.risk import BAND_DENSITY, BAND_RISK

#: Risk below this is left blank, so the map shows where risk is, not the faint proximity halo.
MIN_SHOWN_RISK = 0.02
#: Risk colours: the scale's square root (most cells score low), from a yellow that shows on land.
RISK_GAMMA = 0.5
_NICE_KM = (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000)
#: Page (inches, A4 landscape) and where the map, the panel and the texts sit (figure fractions).
PAGE_IN = (11.69, 8.27)
MAP_BOX = (0.02, 0.115, 0.70, 0.775)
PANEL_BOX = (0.74, 0.115, 0.245, 0.775)
#: Share of the data's extent added on every side, and its floor in metres.
MARGIN_SHARE, MARGIN_MIN_M = 0.04, 25_000.0
SEA, LAND, LAND_EDGE = "#dbe7f0", "#f3efe6", "#a39a8c"
ZONE_COLOUR = "#212121"
_CASING = [pe.Stroke(linewidth=4.6, foreground="#1b1b1b"), pe.Normal()]
#: Corridors: coloured dashes on a continuous white band, so a gap never shows what lies beneath.
CORRIDOR_DASH, CORRIDOR_WIDTH = (0, (5, 2.5)), 3.0
_TEXT_HALO = [pe.withStroke(linewidth=2.4, foreground="white", alpha=0.85)]

_PAGE_WORDS: dict[str, dict[str, str]] = {
    "es": {
        "period": "Período",
        "run": "corrida",
        "region": "Región",
        "scale": "escala en el centro",
        "reading": "El riesgo combina la densidad de eventos (ponderada por antigüedad), las rutas "
        "emergentes, la convergencia con corredores y la cercanía a pasos fronterizos. Los eventos "
        "entran solo como celdas agregadas; las celdas con pocos registros se suprimen.",
    },
    "en": {
        "period": "Period",
        "run": "run",
        "region": "Region",
        "scale": "scale at the centre",
        "reading": "Risk combines event density (weighted by recency), emerging routes, convergence "
        "with corridors and closeness to border crossings. Events enter only as aggregated cells; "
        "cells with few records are suppressed.",
    },
    "pt": {
        "period": "Período",
        "run": "execução",
        "region": "Região",
        "scale": "escala no centro",
        "reading": "O risco combina a densidade de eventos (ponderada pela idade), as rotas "
        "emergentes, a convergência com corredores e a proximidade de passagens de fronteira. Os "
        "eventos entram só como células agregadas; células com poucos registros são suprimidas.",
    },
}


def _risk_colours() -> Colormap:
    """The risk colour map without its palest quarter, which would vanish on the land's colour."""
    base = plt.get_cmap(RISK_CMAP)
    return LinearSegmentedColormap.from_list("rutas_risk", base(np.linspace(0.2, 1.0, 256)))


def _scale_bar_km(width_m: float) -> int:
    """The largest round length (km) that fits in a fifth of the map's width."""
    target = width_m / 5000.0
    fitting = [k for k in _NICE_KM if k <= target]
    return fitting[-1] if fitting else _NICE_KM[0]


Extent = tuple[float, float, float, float]


def _projected(frame: gpd.GeoDataFrame | None, crs: object) -> gpd.GeoDataFrame | None:
    if frame is None or frame.empty:
        return None
    kept = frame[frame.geometry.notna() & ~frame.geometry.is_empty]
    return kept.to_crs(crs) if not kept.empty else None


def _data_extent(
    density: npt.NDArray[np.float32], raster_bounds: Extent, layers: Sequence[gpd.GeoDataFrame | None]
) -> Extent:
    """(left, bottom, right, top) holding every event cell and every route, corridor and zone."""
    left, bottom, right, top = raster_bounds
    boxes: list[Extent] = []
    rows, cols = np.nonzero(np.ma.filled(density, 0.0) > 0)
    if rows.size:
        dx, dy = (right - left) / density.shape[1], (top - bottom) / density.shape[0]
        boxes.append(
            (
                left + cols.min() * dx,
                top - (rows.max() + 1) * dy,
                left + (cols.max() + 1) * dx,
                top - rows.min() * dy,
            )
        )
    for frame in layers:
        if frame is not None and not frame.empty:
            x0, y0, x1, y1 = frame.total_bounds
            boxes.append((float(x0), float(y0), float(x1), float(y1)))
    if not boxes:
        return raster_bounds
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    margin = max(MARGIN_SHARE * max(x1 - x0, y1 - y0), MARGIN_MIN_M)
    return (x0 - margin, y0 - margin, x1 + margin, y1 + margin)


def _fit_aspect(extent: Extent, aspect: float) -> Extent:
    """``extent`` widened (never cut) on its short side to the width/height ratio ``aspect``."""
    x0, y0, x1, y1 = extent
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        grow = (h * aspect - w) / 2.0
        return (x0 - grow, y0, x1 + grow, y1)
    grow = (w / aspect - h) / 2.0
    return (x0, y0 - grow, x1, y1 + grow)


def _north_arrow(ax: Axes, crs: object, view: Extent) -> None:
    """An arrow to the local north at the view's centre (the grid is north-up on its central meridian)."""
    x0, y0, x1, y1 = view
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    to_map = Transformer.from_crs(4326, crs, always_xy=True)
    lon, lat = to_lonlat.transform(cx, cy)
    nx, ny = to_map.transform(lon, min(lat + 0.5, 89.9))
    angle = math.atan2(nx - cx, ny - cy)  # radians clockwise from the map's up
    ox, oy, length = 0.05, 0.83, 0.085
    tip = (ox + length * math.sin(angle) * (y1 - y0) / (x1 - x0), oy + length * math.cos(angle))
    ax.annotate(
        "",
        xy=tip,
        xytext=(ox, oy),
        xycoords="axes fraction",
        arrowprops={"facecolor": "#1b1b1b", "edgecolor": "white", "width": 4, "headwidth": 12},
        zorder=9,
    )
    ax.text(
        tip[0],
        tip[1] + 0.015,
        "N",
        transform=ax.transAxes,
        ha="center",
        va="bottom",
        fontsize=12,
        fontweight="bold",
        path_effects=_TEXT_HALO,
        zorder=9,
    )


def _scale_bar(ax: Axes, view: Extent, note: str) -> None:
    """Two-segment black and white scale bar in km, bottom left, on a white box."""
    x0, y0, x1, y1 = view
    bar_km = _scale_bar_km(x1 - x0)
    bar_m = bar_km * 1000.0
    bx, by, h = x0 + 0.035 * (x1 - x0), y0 + 0.045 * (y1 - y0), 0.008 * (y1 - y0)
    ax.add_patch(
        Rectangle(
            (bx - 0.012 * (x1 - x0), by - 0.028 * (y1 - y0)),
            bar_m + 0.05 * (x1 - x0),
            0.075 * (y1 - y0),
            facecolor="white",
            edgecolor="#999999",
            alpha=0.85,
            linewidth=0.5,
            zorder=8,
        )
    )
    for i in range(2):
        ax.add_patch(
            Rectangle(
                (bx + i * bar_m / 2, by),
                bar_m / 2,
                h,
                facecolor="#1b1b1b" if i == 0 else "white",
                edgecolor="#1b1b1b",
                linewidth=0.8,
                zorder=9,
            )
        )
    for frac, text in ((0.0, "0"), (0.5, f"{bar_km / 2:g}"), (1.0, f"{bar_km} km")):
        ax.text(bx + frac * bar_m, by + 1.6 * h, text, ha="center", va="bottom", fontsize=7.5, zorder=9)
    ax.text(bx, by - 0.7 * h, note, ha="left", va="top", fontsize=6, color="#555555", zorder=9)


def _locator(fig: Figure, land: gpd.GeoDataFrame | None, crs: object, view: Extent, title: str) -> None:
    """A small map of the region with the mapped area outlined, at the bottom of the panel."""
    left, bottom, width, _ = PANEL_BOX
    ax = fig.add_axes((left + 0.02, bottom, width - 0.04, 0.24))
    ax.set_facecolor(SEA)
    region = (-120.0, -57.0, -30.0, 34.0)
    if land is not None and not land.empty:
        near = land.cx[region[0] : region[2], region[1] : region[3]].to_crs(crs)
        near.plot(ax=ax, color=LAND, edgecolor=LAND_EDGE, linewidth=0.2)
    to_map = Transformer.from_crs(4326, crs, always_xy=True)
    rx, ry = to_map.transform([region[0], region[2], -75.0, -75.0], [-5.0, -5.0, region[1], region[3]])
    x0, y0, x1, y1 = view
    ax.add_patch(
        Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor="none", edgecolor="#c0392b", linewidth=1.4, zorder=5)
    )
    ax.set_xlim(min(min(rx), x0), max(max(rx), x1))
    ax.set_ylim(min(min(ry), y0), max(max(ry), y1))
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(title, fontsize=8, loc="left")


def render_png(
    path: Path,
    *,
    risk_path: Path,
    title: str,
    period: str,
    attribution: Sequence[str],
    routes: gpd.GeoDataFrame | None = None,
    corridors: gpd.GeoDataFrame | None = None,
    zones: gpd.GeoDataFrame | None = None,
    crossings: gpd.GeoDataFrame | None = None,
    borders: gpd.GeoDataFrame | None = None,
    joint: gpd.GeoDataFrame | None = None,
    land: gpd.GeoDataFrame | None = None,
    run_id: str | None = None,
    language: str = "es",
    dpi: int = 150,
) -> Path:
    """Write the PNG map of the ``risk`` band of ``risk_path`` with the vector layers over it.

    Vector layers are EPSG:4326 GeoDataFrames (``land``: countries with a ``name``, see
    :func:`maps.basemap.read_land`); they are drawn in the raster's CRS (metres). ``borders``
    are drawn only without ``land``, whose outlines already show them. ``joint``: joint-operation
    candidates (``candidate_type``; points at crossings, lines along border sectors).
    """
    words, page = labels(language), _PAGE_WORDS[language]
    with rasterio.open(risk_path) as src:
        names = list(src.descriptions)
        scale = max(src.width / 2000, src.height / 2000, 1.0)
        shape = (max(int(src.height / scale), 1), max(int(src.width / scale), 1))
        risk = src.read(names.index(BAND_RISK) + 1, out_shape=shape, masked=True)
        density = src.read(names.index(BAND_DENSITY) + 1, out_shape=shape, masked=True)
        raster_bounds = (src.bounds.left, src.bounds.bottom, src.bounds.right, src.bounds.top)
        crs = src.crs
    p_routes, p_corridors = _projected(routes, crs), _projected(corridors, crs)
    p_zones, p_crossings = _projected(zones, crs), _projected(crossings, crs)
    fig = plt.figure(figsize=PAGE_IN, dpi=dpi)
    ax = fig.add_axes(MAP_BOX)
    aspect = (MAP_BOX[2] * PAGE_IN[0]) / (MAP_BOX[3] * PAGE_IN[1])
    view = _fit_aspect(_data_extent(density, raster_bounds, [p_routes, p_corridors, p_zones]), aspect)
    x0, y0, x1, y1 = view
    ax.set_facecolor(SEA if land is not None else "white")
    visible_land = land_in_view(land, crs, view) if land is not None and not land.empty else None
    if visible_land is not None and not visible_land.empty:
        visible_land.plot(ax=ax, color=LAND, edgecolor=LAND_EDGE, linewidth=0.6, zorder=1)
    elif borders is not None and not borders.empty:
        borders.to_crs(crs).plot(ax=ax, color="#777777", linewidth=0.7, linestyle="--", zorder=1)
    left, bottom, right, top = raster_bounds
    image = ax.imshow(
        np.ma.masked_less(risk, MIN_SHOWN_RISK),
        extent=(left, right, bottom, top),
        cmap=_risk_colours(),
        norm=PowerNorm(RISK_GAMMA, vmin=0.0, vmax=1.0),
        alpha=0.85,
        zorder=2,
        interpolation="nearest",
    )
    handles: list[Line2D | Patch] = []
    if p_zones is not None:
        p_zones.plot(
            ax=ax, facecolor="none", edgecolor=ZONE_COLOUR, hatch="////", linewidth=1.0, alpha=0.9, zorder=4
        )
        handles.append(Patch(facecolor="none", edgecolor=ZONE_COLOUR, hatch="////", label=words["zones"]))
    if p_corridors is not None:
        for kind, group in p_corridors.groupby("kind"):
            colour = KIND_COLOURS.get(str(kind), "#666666")
            group.plot(ax=ax, color="white", linewidth=CORRIDOR_WIDTH + 2.0, alpha=0.95, zorder=5)
            group.plot(ax=ax, color=colour, linewidth=CORRIDOR_WIDTH, linestyle=CORRIDOR_DASH, zorder=5.1)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=colour,
                    linewidth=CORRIDOR_WIDTH,
                    linestyle=CORRIDOR_DASH,
                    label=f"{words['corridors']}: {kind_name(kind, language)}",
                )
            )
    if p_routes is not None:
        for category, group in p_routes.groupby("category"):
            colour = CATEGORY_COLOURS.get(str(category), "#999999")
            group.plot(ax=ax, color=colour, linewidth=2.6, zorder=6, path_effects=_CASING)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=colour,
                    linewidth=2.6,
                    path_effects=_CASING,
                    label=f"{words['routes']}: {category_name(category, language)}",
                )
            )
    p_joint = _projected(joint, crs)
    if p_joint is not None:
        for candidate_type, group in p_joint.groupby("candidate_type", sort=False):
            # two lines: the panel is narrow
            label = "\n".join(textwrap.wrap(joint_label(candidate_type, words), 30))
            if candidate_type == "border_sector":
                # solid, on a white band, so it reads over the risk colours and the routes' casing
                group.plot(ax=ax, color="white", linewidth=7.0, zorder=6.4)
                group.plot(ax=ax, color=JOINT_COLOUR, linewidth=5.0, zorder=6.5)
                handles.append(Line2D([], [], color=JOINT_COLOUR, linewidth=5.0, label=label))
            else:
                group.plot(
                    ax=ax, color=JOINT_COLOUR, edgecolor="white", marker="D", markersize=50, zorder=7.5
                )
                handles.append(
                    Line2D([], [], marker="D", color="none", markerfacecolor=JOINT_COLOUR,
                           markeredgecolor="white", label=label)
                )
    if p_crossings is not None:
        inside = p_crossings.cx[x0:x1, y0:y1]
        if not inside.empty:
            inside.plot(ax=ax, color="white", edgecolor="#1b1b1b", markersize=16, linewidth=0.8, zorder=7)
            handles.append(
                Line2D(
                    [],
                    [],
                    marker="o",
                    color="none",
                    markerfacecolor="white",
                    markeredgecolor="#1b1b1b",
                    label=words["crossings"],
                )
            )
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.set_ylabel("")
    for spine in ax.spines.values():
        spine.set_edgecolor("#555555")
    if visible_land is not None and not visible_land.empty:
        label_countries(fig, ax, visible_land, view)
    _north_arrow(ax, crs, view)
    _scale_bar(ax, view, page["scale"])
    # the panel: legend, risk scale, locator
    panel = fig.add_axes(PANEL_BOX)
    panel.axis("off")
    legend_bottom = PANEL_BOX[1] + PANEL_BOX[3]
    if handles:
        legend = panel.legend(
            handles=handles,
            loc="upper left",
            fontsize=8,
            title=words["legend"],
            title_fontsize=10,
            frameon=False,
            handlelength=3.2,
            borderaxespad=0.0,
        )
        legend._legend_box.align = "left"  # type: ignore[attr-defined]
        box = legend.get_window_extent(renderer=fig.canvas.get_renderer())  # type: ignore[attr-defined]
        legend_bottom = fig.transFigure.inverted().transform((0.0, box.y0))[1]
    bar_bottom = max(legend_bottom - 0.075, PANEL_BOX[1] + 0.31)
    bar_ax = fig.add_axes((PANEL_BOX[0] + 0.01, bar_bottom, PANEL_BOX[2] - 0.03, 0.018))
    fig.colorbar(image, cax=bar_ax, orientation="horizontal", ticks=[0.0, 0.05, 0.2, 0.5, 1.0])
    bar_ax.set_title(f"{words['risk']} (0-1)", fontsize=8, loc="left")
    bar_ax.tick_params(labelsize=7)
    fig.text(
        PANEL_BOX[0] + 0.01,
        bar_bottom - 0.04,
        "\n".join(textwrap.wrap(page["reading"], width=52)),
        fontsize=6.8,
        color="#444444",
        va="top",
    )
    _locator(fig, land, crs, view, page["region"])
    # title, period and run above; every source below
    fig.text(0.02, 0.965, title, fontsize=15, fontweight="bold", va="top")
    subtitle = f"{page['period']}: {period}" + (f"  ·  {page['run']} {run_id}" if run_id else "")
    fig.text(0.02, 0.925, subtitle, fontsize=10, color="#333333", va="top")
    credit = f"{words['attribution']}: " + " | ".join(attribution)
    fig.text(
        0.02, 0.095, "\n".join(textwrap.wrap(credit, width=235)), fontsize=5.6, va="top", color="#333333"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    plt.close(fig)
    return path
