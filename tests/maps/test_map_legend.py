"""Both maps name categories and kinds in the reader's language and draw joint-operation candidates:
dots at crossings, lines along border sectors."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from PIL import Image

from maps.folium_map import JOINT_COLOUR, build_map, save_map
from maps.risk import RiskInputs, RiskParams, write_risk_surface
from maps.static import MAP_BOX, render_png
from tests.maps.test_products import browser  # noqa: F401  (headless Chromium, reused)

ROUTE = shapely.LineString([(-89.2, 13.7), (-86.2, 15.0)])
SECTOR = shapely.MultiLineString([[(-88.0, 13.6), (-87.6, 14.6)]])


def _layers() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    routes = gpd.GeoDataFrame({"route_id": [1], "category": ["new_hot"]}, geometry=[ROUTE], crs=4326)
    corridors = gpd.GeoDataFrame(
        {"name": ["c"], "kind": ["drug"]},
        geometry=[shapely.LineString([(-90.5, 14.5), (-84.0, 12.0)])],
        crs=4326,
    )
    # a crossing candidate whose counts are shown, a sector one with a count under k (score withheld)
    joint = gpd.GeoDataFrame(
        {
            "candidate_type": ["crossing", "border_sector"],
            "name": ["Paso de prueba", "GTM-SLV sector 7"],
            "countries": ["GTM,SLV", "GTM,SLV"],
            "records_by_country": [{"GTM": 20, "SLV": 30}, {"GTM": "<11", "SLV": 30}],
            "score": [0.61, np.nan],
        },
        geometry=[shapely.Point(-87.5, 14.4), SECTOR],
        crs=4326,
    )
    return routes, corridors, joint


def _map(tmp_path: Path, language: str) -> Path:
    routes, corridors, joint = _layers()
    cells = pd.DataFrame(columns=["west", "south", "east", "north", "count"])
    fmap = build_map(cells=cells, routes=routes, corridors=corridors, joint=joint, language=language)
    return save_map(fmap, tmp_path / f"map_{language}.html")


#: Every feature Leaflet drew for the candidates: geometry type and Leaflet layer kind.
_DRAWN_JS = """() => {
  const map = Object.values(window).find(v => v instanceof L.Map);
  const out = [];
  map.eachLayer(l => { if (l.feature && l.feature.properties.records) {
    out.push([l.feature.properties.type, l.feature.geometry.type,
              l instanceof L.CircleMarker ? "dot" : (l instanceof L.Polyline ? "line" : "other"),
              l.feature.properties.score]); } });
  return out.sort();
}"""


def test_html_legend_names_categories_kinds_and_candidates_in_spanish(
    tmp_path: Path, browser: object  # noqa: F811
) -> None:
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(_map(tmp_path, "es").as_uri())
    page.wait_for_selector(".leaflet-control-layers", timeout=15_000)
    legend = page.locator("#rutas-legend").inner_text()
    assert "Rutas: nueva" in legend and "Corredores: drogas" in legend
    assert "Candidatas a operaciones conjuntas: en paso fronterizo" in legend
    assert "Candidatas a operaciones conjuntas: en sector de frontera" in legend
    assert "new_hot" not in legend and "drug" not in legend
    layers = [n.strip() for n in page.locator(".leaflet-control-layers-overlays label").all_inner_texts()]
    assert "Candidatas a operaciones conjuntas" in layers
    # the sector is a line, the crossing a dot; the sector's withheld score says so
    assert page.evaluate(_DRAWN_JS) == [
        ["Candidatas a operaciones conjuntas: en paso fronterizo", "Point", "dot", "0.61"],
        ["Candidatas a operaciones conjuntas: en sector de frontera", "MultiLineString", "line",
         "retenida (un conteo < k)"],
    ]
    page.close()
    assert errors == []


def test_html_legend_in_english_and_portuguese(tmp_path: Path) -> None:
    english = _map(tmp_path, "en").read_text(encoding="utf-8")
    assert "Routes: new" in english and "Corridors: drugs" in english
    assert "Joint-operation candidates: along a border sector" in english
    portuguese = _map(tmp_path, "pt").read_text(encoding="utf-8")
    assert "Rotas: nova" in portuguese and "Corredores: drogas" in portuguese
    assert "Candidatas a operações conjuntas: em setor de fronteira" in portuguese


def _joint_pixels(png: Path) -> int:
    """Pixels of the candidates' colour inside the map's frame (not the legend beside it)."""
    with Image.open(png) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    height, width = rgb.shape[:2]
    left, bottom, box_w, box_h = MAP_BOX  # fractions of the page, from its bottom left
    rows = slice(int(height * (1 - bottom - box_h)), int(height * (1 - bottom)))
    pixels = rgb[rows, int(width * left) : int(width * (left + box_w))].reshape(-1, 3)
    colour = np.array([int(JOINT_COLOUR[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - colour).sum(axis=1) < 30).sum())


def test_png_draws_the_candidates_sector_as_a_line(tmp_path: Path) -> None:
    routes, corridors, joint = _layers()
    events = pd.DataFrame(
        {"lon": np.full(30, -89.2), "lat": np.full(30, 13.7),
         "occurred_at": pd.to_datetime(["2024-05-01"] * 30)}
    )
    tif = write_risk_surface(
        tmp_path / "r.tif", RiskInputs(events, routes, corridors), RiskParams(res_m=5_000.0), run_id="1"
    ).path

    def png(name: str, candidates: gpd.GeoDataFrame | None) -> Path:
        return render_png(
            tmp_path / name, risk_path=tif, title="t", period="p", attribution=["a"],
            routes=routes, corridors=corridors, joint=candidates,
        )

    without = _joint_pixels(png("none.png", None))
    dot_only = _joint_pixels(png("dot.png", joint.iloc[:1]))
    both = _joint_pixels(png("both.png", joint))
    # a 110 km sector 5 points wide covers far more of the map than one marker
    assert without == 0 and dot_only > 0
    assert both - dot_only > 2 * dot_only
