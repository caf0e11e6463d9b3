"""Map products from the store: privacy of victims' records, the HTML map in a real browser, the PNG."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import sqlalchemy as sa
from PIL import Image
from playwright.sync_api import sync_playwright
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors
from geodata.db import Scope
from geodata.settings import Settings
from maps.folium_map import build_map, save_map
from maps.privacy import event_cells, monthly_event_cells
from maps.products import ProductParams, make_products
from maps.risk import BAND_NAMES, RiskParams
from routes.export import ExportRequest, export
from tests.factories import make_events

#: Victims' places: distinctive coordinates that must never appear in another country's map.
VICTIM_FEW = (-74.123457, 4.654321)  # 5 records: under k, suppressed
VICTIM_MANY = (-75.987654, 6.246813)  # 12 records: shown only as a count in its cell
PERU = Scope(role="prosecutor", country="PER", partners={"COL": "aggregate"})
K = 11


@pytest.fixture(scope="module")
def store(engine: Engine) -> Iterator[Engine]:
    """Colombian incidents over two months and victim identifications, in a clean store."""
    import sqlalchemy as sa

    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, ingest_batches RESTART IDENTITY CASCADE"))
    rng = np.random.default_rng(3)
    for month, n in (("2024-03-10", 30), ("2024-04-12", 25)):
        points = list(zip(-74.05 + rng.normal(0, 0.01, n), 4.60 + rng.normal(0, 0.01, n), strict=True))
        make_events(engine, points, kind="incident", owner_country="COL", occurred_at=month)
    make_events(engine, [VICTIM_FEW] * 5, kind="victim_identification", owner_country="COL")
    make_events(engine, [VICTIM_MANY] * 12, kind="victim_identification", owner_country="COL")
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, ingest_batches RESTART IDENTITY CASCADE"))


def _coordinate_texts(lon: float, lat: float) -> list[str]:
    return [f"{v:.{d}f}" for v in (lon, lat) for d in (3, 4, 5, 6)]


def test_cells_suppress_under_k_and_hide_victims_places(store: Engine) -> None:
    cells = event_cells(store, PERU, cell_km=10.0, k=K)
    victims = cells[cells["kind"] == "victim_identification"]
    # the 12 victims are one count in one cell; the 5 are gone; no cell sits on a victim's point
    assert victims["n"].tolist() == [12]
    assert (cells["n"] >= K).all()
    assert not (
        (cells["lon"].round(4) == round(VICTIM_MANY[0], 4))
        & (cells["lat"].round(4) == round(VICTIM_MANY[1], 4))
    ).any()
    monthly = monthly_event_cells(store, PERU, cell_km=10.0, k=K)
    assert sorted(monthly["month"].dt.strftime("%Y-%m").unique()) == ["2024-03", "2024-04"]
    # a country with no agreement with Colombia sees nothing of its records
    assert event_cells(store, Scope(role="prosecutor", country="ECU"), cell_km=10.0, k=K).empty


@pytest.fixture
def params(settings: Settings) -> ProductParams:
    """The settings' products at 10 km cells, k = K and a 2 km risk surface."""
    return ProductParams.from_settings(
        settings, cell_km=10.0, k=K, risk=RiskParams(res_m=2_000.0, bandwidth_m=4_000.0)
    )


def test_no_raw_victim_coordinate_in_a_map_for_another_country(
    store: Engine, params: ProductParams, tmp_path: Path
) -> None:
    paths = make_products(
        store,
        tmp_path,
        scope=PERU,
        params=params,
        name="per",
    )
    page = paths.html.read_text(encoding="utf-8")
    assert len(page) > 10_000 and "leaflet" in page.lower()
    for lon, lat in (VICTIM_FEW, VICTIM_MANY):
        for text in _coordinate_texts(lon, lat):
            assert text not in page, f"victim coordinate {text} leaked into the map made for PER"
    # the HTML loads nothing from the network: Leaflet is inlined and there are no tile URLs
    assert not re.search(r'<(script|img)[^>]+src="http|<link[^>]+href="http', page)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    profile = tempfile.TemporaryDirectory(prefix="rutas-maps-chromium-", ignore_cleanup_errors=True)
    with sync_playwright() as play:
        context = play.chromium.launch_persistent_context(
            profile.name,
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield context
        context.close()
    profile.cleanup()


def test_html_map_opens_in_chromium_with_its_layers_and_no_errors(
    store: Engine, tmp_path: Path, browser: object
) -> None:
    cells = event_cells(store, PERU, cell_km=10.0, k=K)
    monthly = monthly_event_cells(store, PERU, cell_km=10.0, k=K)
    line = shapely.LineString([(-74.2, 4.5), (-75.9, 6.3)])
    routes = gpd.GeoDataFrame(
        {"route_id": [1], "category": ["new_hot"], "length_km": [280.0], "event_count": [55]},
        geometry=[line],
        crs=4326,
    )
    corridors = gpd.GeoDataFrame(
        {"name": ["ilustrativo"], "kind": ["drug"]},
        geometry=[shapely.LineString([(-74.5, 4.0), (-75.5, 6.8)])],
        crs=4326,
    )
    zones = gpd.GeoDataFrame({"score": [0.8]}, geometry=[shapely.Point(-75.0, 5.4).buffer(0.2)], crs=4326)
    crossings = gpd.GeoDataFrame({"name": ["Paso de prueba"]}, geometry=[shapely.Point(-75.0, 5.0)], crs=4326)
    borders = gpd.GeoDataFrame(geometry=[shapely.LineString([(-76.0, 5.0), (-73.0, 5.0)])], crs=4326)
    path = save_map(
        build_map(
            cells=cells,
            monthly_cells=monthly,
            routes=routes,
            corridors=corridors,
            zones=zones,
            crossings=crossings,
            borders=borders,
            attribution=["Test source"],
            language="en",
        ),
        tmp_path / "map.html",
    )
    page = browser.new_page()  # type: ignore[attr-defined]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    # the map works offline: nothing but the file itself and inline data is requested
    page.on("request", lambda req: None if req.url.startswith(("file:", "data:")) else errors.append(req.url))
    page.goto(path.as_uri())
    page.wait_for_selector(".leaflet-control-layers", timeout=15_000)
    layer_names = page.locator(".leaflet-control-layers-overlays label").all_inner_texts()
    assert [n.strip() for n in layer_names] == [
        "Event heatmap (aggregated cells)",
        "Borders",
        "Corridors",
        "Routes",
        "Convergence zones",
        "Border crossings",
    ]
    # the route is drawn (an SVG/canvas path exists) and the legend and the slider are there
    assert page.locator("#rutas-legend").inner_text().startswith("Legend")
    assert page.locator("#rutas-slider").is_visible()
    assert page.locator("#rutas-month-label").inner_text() == "Whole period"
    page.locator("#rutas-month").fill("0")
    assert page.locator("#rutas-month-label").inner_text() == "2024-03"
    assert page.evaluate("document.querySelectorAll('.leaflet-image-layer').length") == 2
    assert "Test source" in page.locator("#rutas-attribution").inner_text()
    page.close()
    assert errors == []


def test_products_write_a_georeferenced_tif_and_a_non_blank_png(
    store: Engine, params: ProductParams, tmp_path: Path
) -> None:
    paths = make_products(
        store,
        tmp_path,
        scope=PERU,
        params=replace(params, language="pt"),
        name="per",
    )
    with Image.open(paths.png) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    assert width >= 1000 and height >= 700
    assert len(np.unique(pixels, axis=0)) > 100  # risk colours, text, legend: not a blank canvas
    assert (pixels.std(axis=0) > 10).all()
    assert paths.tif.stat().st_size > 1000


def test_an_offices_corridors_reach_only_maps_its_scope_may_see(
    store: Engine, settings: Settings, params: ProductParams, tmp_path: Path
) -> None:
    # corridors other tests left loaded would fill the convergence band in every scope
    with store.begin() as conn:
        conn.execute(sa.text("DELETE FROM corridors"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))
    path = tmp_path / "secret.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", '
        '"properties": {"name": "secreto-COL-123"}, "geometry": {"type": "LineString", '
        '"coordinates": [[-74.3, 4.4], [-75.8, 6.4]]}}]}',
        encoding="utf-8",
    )
    load_corridors(store, path, settings=settings, kind="drug", country="COL")
    own = make_products(store, tmp_path / "col", scope=Scope(role="prosecutor", country="COL"), params=params)
    other = make_products(store, tmp_path / "per", scope=PERU, params=params)
    assert "secreto-COL-123" in own.html.read_text(encoding="utf-8")
    assert "secreto-COL-123" not in other.html.read_text(encoding="utf-8")
    # and the corridor feeds the convergence band only where it may be seen
    with rasterio.open(own.tif) as col_tif, rasterio.open(other.tif) as per_tif:
        band = BAND_NAMES.index("corridor_convergence") + 1
        assert col_tif.read(band).max() > per_tif.read(band).max()


def test_corridors_export_follows_the_readers_scope(
    store: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "own.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"name": "solo-COL"}, '
        '"geometry": {"type": "LineString", "coordinates": [[-74.3, 4.4], [-75.8, 6.4]]}}]}',
        encoding="utf-8",
    )
    load_corridors(store, path, settings=settings, kind="fuel", country="COL")
    own = export(
        store,
        "corridors",
        ExportRequest(
            format="geojson", out=tmp_path / "col.geojson", scope=Scope(role="prosecutor", country="COL")
        ),
    )
    other = export(
        store,
        "corridors",
        ExportRequest(
            format="geojson", out=tmp_path / "ecu.geojson", scope=Scope(role="prosecutor", country="ECU")
        ),
    )
    names = set(gpd.read_file(own.path)["name"])
    assert "solo-COL" in names and other.features == 0
