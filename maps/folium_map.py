"""Interactive HTML risk map (folium / Leaflet), self-contained and usable offline.

Layers the reader switches on and off: the risk surface, a heatmap of events (from k-suppressed
cell counts, never from records), routes coloured by category with a popup of their figures,
corridors by kind, convergence zones, crossings and borders; a legend; a slider over the monthly
slices; labels in Spanish (default), English or Portuguese. Leaflet is inlined from Debian's
``libjs-leaflet`` and no base-map tiles are fetched, so the file opens from a case file with no
network and tells no tile server where the reader is looking.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import folium
import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import rasterio
import shapely
from branca.element import Element, Figure, MacroElement
from jinja2 import Template
from matplotlib import colormaps
from PIL import Image
from pyproj import Transformer
from rasterio import features
from rasterio.transform import from_bounds
from rasterio.warp import Resampling, calculate_default_transform, reproject

from maps.risk import BAND_RISK, HOT_CATEGORIES

LEAFLET_DIR = Path("/usr/share/javascript/leaflet")
LANGUAGES = ("es", "en", "pt")

LABELS: dict[str, dict[str, str]] = {
    "es": {
        "risk": "Superficie de riesgo",
        "heat": "Mapa de calor de eventos (celdas agregadas)",
        "routes": "Rutas",
        "corridors": "Corredores",
        "zones": "Zonas de convergencia",
        "crossings": "Pasos fronterizos",
        "borders": "Fronteras",
        "month": "Mes",
        "quarter": "Trimestre",
        "year": "Año",
        "all": "Todo el período",
        "legend": "Leyenda",
        "low": "bajo",
        "high": "alto",
        "category": "Categoría",
        "attribution": "Fuentes",
        "kind": "Tipo",
        "events": "eventos",
        "joint": "Candidatas a operaciones conjuntas",
        "joint_crossing": "en paso fronterizo",
        "joint_sector": "en sector de frontera",
        "withheld": "retenida (un conteo < k)",
    },
    "en": {
        "risk": "Risk surface",
        "heat": "Event heatmap (aggregated cells)",
        "routes": "Routes",
        "corridors": "Corridors",
        "zones": "Convergence zones",
        "crossings": "Border crossings",
        "borders": "Borders",
        "month": "Month",
        "quarter": "Quarter",
        "year": "Year",
        "all": "Whole period",
        "legend": "Legend",
        "low": "low",
        "high": "high",
        "category": "Category",
        "attribution": "Sources",
        "kind": "Kind",
        "events": "events",
        "joint": "Joint-operation candidates",
        "joint_crossing": "at a border crossing",
        "joint_sector": "along a border sector",
        "withheld": "withheld (a count < k)",
    },
    "pt": {
        "risk": "Superfície de risco",
        "heat": "Mapa de calor de eventos (células agregadas)",
        "routes": "Rotas",
        "corridors": "Corredores",
        "zones": "Zonas de convergência",
        "crossings": "Passagens de fronteira",
        "borders": "Fronteiras",
        "month": "Mês",
        "quarter": "Trimestre",
        "year": "Ano",
        "all": "Todo o período",
        "legend": "Legenda",
        "low": "baixo",
        "high": "alto",
        "category": "Categoria",
        "attribution": "Fontes",
        "kind": "Tipo",
        "events": "eventos",
        "joint": "Candidatas a operações conjuntas",
        "joint_crossing": "em passagem de fronteira",
        "joint_sector": "em setor de fronteira",
        "withheld": "retida (uma contagem < k)",
    },
}
#: Names of the route categories and corridor kinds in each language (both maps' legends).
CATEGORY_NAMES: dict[str, dict[str, str]] = {
    "es": {
        "new_hot": "nueva",
        "consecutive_hot": "consecutiva",
        "intensifying_hot": "en intensificación",
        "persistent_hot": "persistente",
        "diminishing_hot": "en disminución",
        "sporadic_hot": "esporádica",
        "oscillating_hot": "oscilante",
        "historical_hot": "histórica",
    },
    "en": {c: c.removesuffix("_hot") for c in HOT_CATEGORIES},
    "pt": {
        "new_hot": "nova",
        "consecutive_hot": "consecutiva",
        "intensifying_hot": "em intensificação",
        "persistent_hot": "persistente",
        "diminishing_hot": "em diminuição",
        "sporadic_hot": "esporádica",
        "oscillating_hot": "oscilante",
        "historical_hot": "histórica",
    },
}
KIND_NAMES: dict[str, dict[str, str]] = {
    "es": {"drug": "drogas", "fuel": "combustible", "arms": "armas", "other": "otros"},
    "en": {"drug": "drugs", "fuel": "fuel", "arms": "arms", "other": "other"},
    "pt": {"drug": "drogas", "fuel": "combustível", "arms": "armas", "other": "outros"},
}


def category_name(category: object, language: str) -> str:
    """The route category's name in ``language`` (``new_hot`` -> ``nueva``); unknown ones as they are."""
    return CATEGORY_NAMES[language].get(str(category), str(category))


def kind_name(kind: object, language: str) -> str:
    """The corridor kind's name in ``language`` (``drug`` -> ``drogas``); unknown ones as they are."""
    return KIND_NAMES[language].get(str(kind), str(kind))


#: Colour of each route category (hot categories in warm colours).
CATEGORY_COLOURS = {
    "new_hot": "#b30000",
    "intensifying_hot": "#e34a33",
    "consecutive_hot": "#fc8d59",
    "persistent_hot": "#d7301f",
    "sporadic_hot": "#fdbb84",
    "oscillating_hot": "#ef6548",
    "diminishing_hot": "#fdd49e",
    "historical_hot": "#7f0000",
}
KIND_COLOURS = {"drug": "#6a3d9a", "fuel": "#1f78b4", "arms": "#33a02c", "other": "#666666"}
#: Figures shown in a route's popup, when the routes frame has them.
ROUTE_FIGURES = ("route_id", "category", "length_km", "event_count", "countries", "first_month", "last_month")
#: Attributes shown in a corridor's popup, when the corridors frame has them.
CORRIDOR_FIGURES = ("name", "kind", "source", "confidence", "valid_from", "valid_to", "illustrative", "note")
#: Colour of the joint-operation candidates: dots at crossings, thick lines along border sectors.
JOINT_COLOUR = "#00838f"
HEAT_CMAP = "inferno"
RISK_CMAP = "YlOrRd"


def labels(language: str) -> dict[str, str]:
    """The map's labels in ``language`` (es, en or pt)."""
    if language not in LABELS:
        raise ValueError(f"language must be one of {', '.join(LANGUAGES)}, got {language!r}")
    return LABELS[language]


def _root(fmap: folium.Map) -> Figure:
    root = fmap.get_root()
    assert isinstance(root, Figure)
    return root


def _png_data_url(rgba: npt.NDArray[np.uint8]) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colourise(
    values: npt.NDArray[np.float64], cmap: str, vmax: float, alpha: float
) -> npt.NDArray[np.uint8]:
    scaled = np.clip(np.nan_to_num(values, nan=0.0) / vmax, 0.0, 1.0) if vmax > 0 else np.zeros_like(values)
    rgba = colormaps[cmap](scaled)
    rgba[..., 3] = np.where(scaled > 0.02, alpha, 0.0)
    return (rgba * 255).astype(np.uint8)


def risk_overlay(
    path: Path, *, max_width_px: int = 1200
) -> tuple[npt.NDArray[np.float64], list[list[float]]]:
    """The ``risk`` band of a risk GeoTIFF reprojected to EPSG:3857 (as Leaflet draws) and its
    [[south, west], [north, east]] in degrees."""
    with rasterio.open(path) as src:
        band = list(src.descriptions).index(BAND_RISK) + 1
        scale = max(src.width / max_width_px, 1.0)
        transform, width, height = calculate_default_transform(
            src.crs,
            "EPSG:3857",
            src.width,
            src.height,
            *src.bounds,
            dst_width=int(src.width / scale),
            dst_height=int(src.height / scale),
        )
        out = np.zeros((height, width), dtype=np.float64)
        reproject(
            rasterio.band(src, band),
            out,
            dst_transform=transform,
            dst_crs="EPSG:3857",
            dst_nodata=0.0,
            resampling=Resampling.average,
        )
    to_degrees = Transformer.from_crs(3857, 4326, always_xy=True)
    west, north = to_degrees.transform(transform.c, transform.f)
    east, south = to_degrees.transform(transform.c + transform.a * width, transform.f + transform.e * height)
    return out, [[south, west], [north, east]]


def _mercator_y(lat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rad = np.radians(np.clip(lat, -85.0, 85.0))
    return np.asarray(np.log(np.tan(np.pi / 4 + rad / 2)), dtype=np.float64)


def _heat_image(
    cells: pd.DataFrame, bounds: tuple[float, float, float, float], size_px: int
) -> npt.NDArray[np.float64]:
    """Counts per km² of each cell, painted over the cell's whole square, on an image of the extent
    ``bounds`` (degrees) with rows evenly spaced in Web Mercator, as Leaflet stretches an overlay."""
    west, south, east, north = bounds
    y_south, y_north = _mercator_y(np.array([south, north]))
    width = size_px
    height = max(int(size_px * (y_north - y_south) / max(np.radians(east - west), 1e-9)), 1)
    if cells.empty:
        return np.zeros((height, width))
    # x in radians of longitude and y in Mercator units share one scale, so boxes stay square
    boxes = shapely.box(
        np.radians(cells["west"].to_numpy(float)),
        _mercator_y(cells["south"].to_numpy(float)),
        np.radians(cells["east"].to_numpy(float)),
        _mercator_y(cells["north"].to_numpy(float)),
    )
    transform = from_bounds(np.radians(west), y_south, np.radians(east), y_north, width, height)
    area = shapely.area(boxes)
    density = cells["n"].to_numpy(float) / np.where(area > 0, area, 1.0)
    return np.asarray(
        features.rasterize(
            list(zip(boxes, density, strict=True)),
            out_shape=(height, width),
            transform=transform,
            fill=0.0,
            all_touched=True,
            merge_alg=features.MergeAlg.add,
            dtype="float64",
        ),
        dtype=np.float64,
    )


class _Legend(MacroElement):  # type: ignore[misc]
    _template = Template("""{% macro html(this, kwargs) %}
<div id="rutas-legend" style="position:absolute;bottom:24px;left:10px;z-index:1000;background:#fff;
     padding:6px 8px;border:1px solid #999;font:12px sans-serif;max-width:260px">
<b>{{ this.title }}</b>{{ this.body }}</div>
{% endmacro %}""")

    def __init__(self, title: str, body: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "RutasLegend"
        self.title, self.body = html.escape(title), body


def joint_label(candidate_type: object, words: dict[str, str]) -> str:
    """A candidate's kind as the maps name it: "<candidates> <at a crossing | along a sector>"."""
    where = words["joint_sector"] if candidate_type == "border_sector" else words["joint_crossing"]
    return f"{words['joint']}: {where}"


def _joint_features(joint: gpd.GeoDataFrame, words: dict[str, str]) -> gpd.GeoDataFrame:
    """The candidates' popup fields, in the map's language (a withheld score says so)."""
    score = joint["score"].astype(float)
    shown = {
        "type": [joint_label(t, words) for t in joint["candidate_type"]],
        "name": joint["name"].astype(str),
        "countries": joint["countries"].astype(str),
        "records": [json.dumps(r, sort_keys=True) for r in joint["records_by_country"]],
        "score": [words["withheld"] if pd.isna(s) else f"{s:.2f}" for s in score],
    }
    return gpd.GeoDataFrame(shown, geometry=joint.geometry.to_numpy(), crs=joint.crs)


def _legend_body(
    words: dict[str, str],
    categories: Sequence[str],
    kinds: Sequence[str],
    language: str,
    joint_types: Sequence[str] = (),
) -> str:
    swatch = (
        '<div><span style="display:inline-block;width:14px;height:4px;background:{};margin-right:4px;'
        'vertical-align:middle"></span>{}</div>'
    )
    parts = [
        f'<div>{html.escape(words["risk"])}: <span style="background:linear-gradient(90deg,#ffffb2,#bd0026);'
        f'display:inline-block;width:80px;height:8px"></span> {words["low"]} → {words["high"]}</div>'
    ]
    parts += [
        swatch.format(
            CATEGORY_COLOURS.get(c, "#999"), html.escape(f"{words['routes']}: {category_name(c, language)}")
        )
        for c in categories
    ]
    parts += [
        swatch.format(
            KIND_COLOURS.get(k, "#666"), html.escape(f"{words['corridors']}: {kind_name(k, language)}")
        )
        for k in kinds
    ]
    parts += [swatch.format(JOINT_COLOUR, html.escape(joint_label(t, words))) for t in joint_types]
    return "".join(parts)


_SLIDER = """<div id="rutas-slider" style="position:absolute;top:10px;left:60px;z-index:1000;background:#fff;
padding:4px 8px;border:1px solid #999;font:12px sans-serif">{label}:
<input id="rutas-month" type="range" min="0" max="{last}" value="{last}" step="1">
<span id="rutas-month-label"></span></div>
<script>
window.addEventListener("load", function () {{
  var months = {months};
  var overlays = {overlays};
  var map = {map_name};
  var current = null;
  var input = document.getElementById("rutas-month");
  var text = document.getElementById("rutas-month-label");
  function show(i) {{
    if (current) {{ map.removeLayer(current); }}
    current = overlays[i];
    if (i < months.length - 1) {{ map.addLayer(current); }}
    text.textContent = months[i];
  }}
  input.addEventListener("input", function () {{ show(parseInt(input.value, 10)); }});
  show(months.length - 1);
}});
</script>"""


def build_map(
    *,
    cells: pd.DataFrame,
    monthly_cells: pd.DataFrame | None = None,
    slice: str = "month",
    routes: gpd.GeoDataFrame | None = None,
    corridors: gpd.GeoDataFrame | None = None,
    zones: gpd.GeoDataFrame | None = None,
    crossings: gpd.GeoDataFrame | None = None,
    borders: gpd.GeoDataFrame | None = None,
    joint: gpd.GeoDataFrame | None = None,
    risk_path: Path | None = None,
    attribution: Sequence[str] = (),
    title: str = "Rutas",
    language: str = "es",
    heat_px: int = 800,
) -> folium.Map:
    """The interactive map. ``cells`` (and ``monthly_cells``, one slice of ``slice`` each: month,
    quarter or year, dated by the ``month`` column) come from :mod:`maps.privacy`.

    Vector layers are EPSG:4326 GeoDataFrames; ``joint`` holds joint-operation candidates
    (:data:`routes.overlap.JOINT_COLUMNS`: points at crossings, lines along border sectors, score
    NaN where withheld). The heatmap and each month of the slider are
    images of the cell counts; no record's coordinates reach the page.
    """
    words = labels(language)
    extents = [cells[["west", "south", "east", "north"]].to_numpy(float)] if not cells.empty else []
    for frame in (routes, corridors, zones, crossings):
        if frame is not None and not frame.empty:
            extents.append(np.asarray([frame.total_bounds]))
    stacked = np.vstack(extents) if extents else np.array([[-118.0, -56.0, -34.0, 33.0]])
    bounds = (
        float(stacked[:, 0].min()),
        float(stacked[:, 1].min()),
        float(stacked[:, 2].max()),
        float(stacked[:, 3].max()),
    )
    fmap = folium.Map(tiles=None, control_scale=True, prefer_canvas=True)
    fmap.default_js, fmap.default_css = [], []
    leaflet_js = (LEAFLET_DIR / "leaflet.min.js").read_text(encoding="utf-8")
    leaflet_css = (LEAFLET_DIR / "leaflet.css").read_text(encoding="utf-8")
    _root(fmap).header.add_child(
        Element(f"<style>{leaflet_css}</style><script>{leaflet_js}</script>"), name="leaflet_inline"
    )
    _root(fmap).header.add_child(Element(f"<title>{html.escape(title)}</title>"), name="title")
    fmap.fit_bounds([[bounds[1], bounds[0]], [bounds[3], bounds[2]]])
    credit = " | ".join(attribution)
    _root(fmap).html.add_child(
        Element(
            '<div id="rutas-attribution" style="position:absolute;bottom:0;right:0;z-index:1000;'
            f"background:#fffc;"
            f'font:10px sans-serif;max-width:60%;padding:2px 4px">{html.escape(words["attribution"])}: '
            f"{html.escape(credit)}</div>"
        )
    )

    if risk_path is not None:
        values, overlay_bounds = risk_overlay(risk_path)
        folium.raster_layers.ImageOverlay(
            _png_data_url(_colourise(values, RISK_CMAP, 1.0, 0.6)),
            overlay_bounds,
            mercator_project=False,
            name=words["risk"],
            pixelated=False,
        ).add_to(fmap)
    heat = _heat_image(cells, bounds, heat_px)
    heat_bounds = [[bounds[1], bounds[0]], [bounds[3], bounds[2]]]
    vmax = float(np.quantile(heat[heat > 0], 0.99)) if (heat > 0).any() else 1.0
    folium.raster_layers.ImageOverlay(
        _png_data_url(_colourise(heat, HEAT_CMAP, vmax, 0.75)),
        heat_bounds,
        name=words["heat"],
        pixelated=True,
    ).add_to(fmap)
    if borders is not None and not borders.empty:
        folium.GeoJson(
            borders[["geometry"]].to_json(),
            name=words["borders"],
            style_function=lambda _: {"color": "#444", "weight": 1.2, "dashArray": "4 3"},
        ).add_to(fmap)
    if corridors is not None and not corridors.empty:
        kept = [c for c in CORRIDOR_FIGURES if c in corridors]
        folium.GeoJson(
            corridors[[*kept, "geometry"]].to_json(default=str),
            name=words["corridors"],
            style_function=lambda f: {
                "color": KIND_COLOURS.get(f["properties"].get("kind"), "#666"),
                "weight": 3,
                "opacity": 0.8,
                "fillOpacity": 0.15,
            },
            popup=folium.GeoJsonPopup(fields=kept) if kept else None,
        ).add_to(fmap)
    if routes is not None and not routes.empty:
        kept = [c for c in ROUTE_FIGURES if c in routes]
        folium.GeoJson(
            routes[[*kept, "geometry"]].to_json(default=str),
            name=words["routes"],
            style_function=lambda f: {
                "color": CATEGORY_COLOURS.get(f["properties"].get("category"), "#999"),
                "weight": 4,
            },
            popup=folium.GeoJsonPopup(fields=kept) if kept else None,
        ).add_to(fmap)
    if zones is not None and not zones.empty:
        kept = [c for c in zones.columns if c != "geometry"]
        folium.GeoJson(
            zones.to_json(default=str),
            name=words["zones"],
            style_function=lambda _: {
                "color": "#000",
                "weight": 2,
                "fillColor": "#ff00ff",
                "fillOpacity": 0.3,
            },
            popup=folium.GeoJsonPopup(fields=kept) if kept else None,
        ).add_to(fmap)
    if crossings is not None and not crossings.empty:
        kept = [c for c in ("name", "country_a", "country_b", "official") if c in crossings]
        folium.GeoJson(
            crossings[[*kept, "geometry"]].to_json(default=str),
            name=words["crossings"],
            marker=folium.CircleMarker(
                radius=3, color="#000", fill=True, fill_color="#fff", fill_opacity=1.0
            ),
            tooltip=folium.GeoJsonTooltip(fields=kept[:1]) if kept else None,
        ).add_to(fmap)
    joint_types: list[str] = []
    if joint is not None and not joint.empty:
        folium.GeoJson(
            _joint_features(joint, words).to_json(),
            name=words["joint"],
            style_function=lambda _: {"color": JOINT_COLOUR, "weight": 7, "opacity": 0.85,
                                      "fillColor": JOINT_COLOUR, "fillOpacity": 0.9},
            marker=folium.CircleMarker(radius=7, fill=True),
            popup=folium.GeoJsonPopup(fields=["type", "name", "countries", "records", "score"]),
        ).add_to(fmap)
        joint_types = sorted(set(joint["candidate_type"]), reverse=True)
    if monthly_cells is not None and not monthly_cells.empty:
        _add_slider(fmap, monthly_cells, bounds, heat_px, words, slice)
    folium.LayerControl(collapsed=False).add_to(fmap)
    categories = sorted(set(routes["category"])) if routes is not None and "category" in routes else []
    kinds = sorted(set(corridors["kind"])) if corridors is not None and "kind" in corridors else []
    fmap.add_child(_Legend(words["legend"], _legend_body(words, categories, kinds, language, joint_types)))
    return fmap


def _add_slider(
    fmap: folium.Map,
    monthly: pd.DataFrame,
    bounds: tuple[float, float, float, float],
    heat_px: int,
    words: dict[str, str],
    slice: str,
) -> None:
    """One heat image per slice, shown one at a time by a range input (last position: none)."""
    months = sorted(pd.to_datetime(monthly["month"]).unique())
    stack = [_heat_image(monthly[pd.to_datetime(monthly["month"]) == m], bounds, heat_px) for m in months]
    positive = np.concatenate([s[s > 0] for s in stack]) if stack else np.array([])
    vmax = float(np.quantile(positive, 0.99)) if positive.size else 1.0
    heat_bounds = [[bounds[1], bounds[0]], [bounds[3], bounds[2]]]
    names = []
    for image in stack:
        overlay = folium.raster_layers.ImageOverlay(
            _png_data_url(_colourise(image, HEAT_CMAP, vmax, 0.8)),
            heat_bounds,
            pixelated=True,
            control=False,
            show=False,
        )
        fmap.add_child(overlay)
        names.append(overlay.get_name())
    formats = {"month": "%Y-%m", "quarter": "%Y-%m", "year": "%Y"}
    month_labels: list[Any] = [pd.Timestamp(m).strftime(formats[slice]) for m in months] + [words["all"]]
    script = _SLIDER.format(
        label=html.escape(words[slice]),
        last=len(months),
        months=json.dumps(month_labels),
        overlays="[" + ", ".join(names) + ", null]",
        map_name=fmap.get_name(),
    )
    _root(fmap).html.add_child(Element(script))


def save_map(fmap: folium.Map, path: Path) -> Path:
    """Write the map as one self-contained HTML file and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmap.save(str(path))
    return path
