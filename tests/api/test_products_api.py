"""The analysis products over HTTP: route queryables, the latest run, a route's series, the risk at a
point and exports, against the seeded runs, routes and corridors in PostGIS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import rasterio
import sqlalchemy as sa
from fastapi.testclient import TestClient
from pyproj import Transformer
from rasterio.transform import from_origin
from sqlalchemy.engine import Engine

from api.app import create_app
from geodata.settings import Settings
from maps.kde import LATAM_LAEA
from maps.risk import BAND_NAMES, NODATA
from tests.api.conftest import Products, Record, bearer


def _ids(client: TestClient, key: str, **params: str) -> list[int]:
    response = client.get("/collections/routes/items", params=params, headers=bearer(key))
    assert response.status_code == 200, response.text
    return sorted(f["id"] for f in response.json()["features"])


def test_route_queryables_filter_in_postgis(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products
) -> None:
    key = keys[("analyst", None)]
    old, a, b = list(products.routes)
    assert _ids(client, key, latest="true") == products.latest_routes
    assert _ids(client, key, filter="category = 'intensifying_hot'") == [a]
    admin = keys[("admin", None)]
    assert _ids(client, admin, trend="up") == [a]
    # the analyst sees no record of a in detail and its months are under k: no trend to match
    assert _ids(client, key, trend="up") == []
    assert _ids(client, key, filter="countries LIKE '%VEN%'") == [a]
    assert _ids(client, key, filter=f"run_id = {products.old_run}") == [old]
    assert _ids(client, admin, filter="length_m > 12000 AND trend = 'none'") == [old, b]
    before = "first_event < TIMESTAMP('2100-01-01T00:00:00Z')"
    assert _ids(client, admin, filter=before, bbox="-72.19,7.5,-72.0,7.8") == [b]
    # the analyst may not see b's records in detail and no month of b holds k records: no dates
    assert _ids(client, key, filter=before, bbox="-72.19,7.5,-72.0,7.8") == []
    queryables = client.get("/collections/routes/queryables", headers=bearer(key)).json()["properties"]
    assert {"category", "trend", "countries", "length_m", "first_event", "last_event", "run_id"} <= set(
        queryables
    )
    bad = client.get("/collections/routes/items", params={"filter": "event_ids = 1"}, headers=bearer(key))
    assert bad.status_code == 400 and "event_ids" in bad.json()["description"]
    feature = client.get(f"/collections/routes/items/{a}", headers=bearer(admin)).json()
    props = feature["properties"]
    assert props["category"] == "intensifying_hot" and props["trend"] == "up"
    assert props["countries"] == ["COL", "PER", "VEN"] and props["latest"] is True
    assert feature["geometry"]["type"] == "MultiLineString"


def test_latest_run_summary(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products
) -> None:
    body = client.get("/runs/latest", headers=bearer(keys[("border_authority", "COL")])).json()
    assert body["id"] == products.latest_run and body["status"] == "succeeded"
    assert body["parameters"]["alpha"] == 0.05 and body["timings_s"]["total"] == 1.25
    assert body["counts"]["routes"] == 2 and body["routes_stored"] == 2
    assert body["newer_attempt"]["id"] == products.failed_run
    assert body["newer_attempt"]["status"] == "failed" and "tests" in body["newer_attempt"]["error"]
    assert client.get("/runs/latest").status_code == 401


def test_route_series_in_time_order(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products
) -> None:
    route = list(products.routes)[1]
    body = client.get(f"/routes/{route}/series", headers=bearer(keys[("admin", None)])).json()
    # stored as the pipeline does (slices with events only): the empty July is listed with 0
    assert [p["start"] for p in body["series"]] == ["2026-06-01", "2026-07-01", "2026-08-01", "2026-09-01"]
    assert [p["count"] for p in body["series"]] == [1, 0, 1, 2]
    # Peru sees only its own of the route's records in detail: the months (all below k) are withheld
    peru = client.get(f"/routes/{route}/series", headers=bearer(keys[("prosecutor", "PER")])).json()
    assert [p["start"] for p in peru["series"]] == ["2026-06-01", "2026-07-01", "2026-08-01", "2026-09-01"]
    assert [p["count"] for p in peru["series"]] == [None] * 4 and peru["counts_suppressed"] is True
    assert body["trend"] == "up" and body["tau"] == 0.8 and body["p_value"] == 0.01 and body["alpha"] == 0.05
    missing = client.get("/routes/999999/series", headers=bearer(keys[("analyst", None)]))
    assert missing.status_code == 404 and "/collections/routes/items" in missing.json()["description"]


def _risk_tif(path: Path, lon: float, lat: float) -> tuple[float, float]:
    """A small risk GeoTIFF laid out as maps.risk writes it (band names, LAEA metres, nodata) around
    (lon, lat); returns the (lon, lat) of its north-west cell, which holds no data."""
    x, y = Transformer.from_crs("EPSG:4326", LATAM_LAEA, always_xy=True).transform(lon, lat)
    size, res = 8, 5_000.0
    data = np.zeros((len(BAND_NAMES), size, size), dtype=np.float32)
    for i in range(len(BAND_NAMES)):
        data[i] = 0.1 * (i + 1)
    data[:, 0, 0] = NODATA
    transform = from_origin(x - size / 2 * res, y + size / 2 * res, res, res)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=len(BAND_NAMES),
                       dtype="float32", crs=LATAM_LAEA, transform=transform, nodata=NODATA) as dst:
        dst.write(data)
        for i, name in enumerate(BAND_NAMES):
            dst.set_band_description(i + 1, name)
        dst.update_tags(run_id="7")
    back = Transformer.from_crs(LATAM_LAEA, "EPSG:4326", always_xy=True)
    corner_lon, corner_lat = back.transform(x - (size / 2 - 0.5) * res, y + (size / 2 - 0.5) * res)
    return float(corner_lon), float(corner_lat)


def test_risk_at_a_point_withholds_bands_by_role(
    settings: Settings, keys: dict[tuple[str, str | None], str], tmp_path: Path
) -> None:
    path = tmp_path / "risk.tif"
    with TestClient(create_app(settings.model_copy(update={"api_risk_path": path}))) as client:
        params = {"lon": "-72.4", "lat": "7.6"}
        missing = client.get("/risk", params=params, headers=bearer(keys[("admin", None)]))
        assert missing.status_code == 404 and "rutas maps" in missing.json()["description"]
        corner_lon, corner_lat = _risk_tif(path, -72.4, 7.6)
        admin = client.get("/risk", params=params, headers=bearer(keys[("admin", None)])).json()
        assert list(admin["bands"]) == list(BAND_NAMES) and admin["withheld"] == []
        assert admin["bands"]["risk"] == np.float32(0.1 * len(BAND_NAMES)).round(6)
        assert admin["cell_m"] == 5000.0 and admin["run_id"] == "7"
        analyst = client.get("/risk", params=params, headers=bearer(keys[("analyst", None)])).json()
        assert set(analyst["withheld"]) == {"corridor_convergence", "risk"}
        assert "event_density" in analyst["bands"]
        prosecutor = client.get("/risk", params=params, headers=bearer(keys[("prosecutor", "COL")])).json()
        assert set(prosecutor["withheld"]) == {"corridor_convergence", "risk", "event_density"}
        assert prosecutor["bands"]["crossing_proximity"] is not None
        admin_key = bearer(keys[("admin", None)])
        nw = {"lon": str(corner_lon), "lat": str(corner_lat)}
        corner = client.get("/risk", params=nw, headers=admin_key)
        assert corner.status_code == 200 and all(v is None for v in corner.json()["bands"].values())
        outside = client.get("/risk", params={"lon": "-60", "lat": "7.6"}, headers=admin_key)
        assert outside.status_code == 404
        bad = client.get("/risk", params={"lon": "-200", "lat": "7.6"}, headers=admin_key)
        assert bad.status_code == 400 and "lon" in bad.json()["description"]


def test_exports_over_http_read_back_and_audited(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products, world: list[Record],
    engine: Engine, tmp_path: Path
) -> None:
    key = keys[("prosecutor", "COL")]
    response = client.get("/exports/routes", params={"format": "gpkg"}, headers=bearer(key))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geopackage+sqlite3"
    assert "routes.gpkg" in response.headers["content-disposition"]
    saved = tmp_path / "routes.gpkg"
    saved.write_bytes(response.content)
    frame = pyogrio.read_dataframe(saved)
    assert sorted(frame["id"]) == products.latest_routes
    assert set(frame["category"]) == {"intensifying_hot", "new_hot"}
    csv = client.get("/exports/events", params={"format": "csv", "since": "2000-01-01"}, headers=bearer(key))
    assert csv.status_code == 200 and csv.text.count("\n") - 1 == len(
        [r for r in world if r.owner == "COL" or (r.owner == "VEN" and r.kind != "victim_identification")])
    assert "SECRET" not in csv.text
    with engine.begin() as conn:
        logged = conn.execute(sa.text(
            "SELECT records, filter FROM audit_log WHERE action = 'export' AND collection = 'events' "
            "ORDER BY id DESC LIMIT 1")).one()
    assert logged.records == csv.text.count("\n") - 1 and logged.filter["format"] == "csv"
    unknown = client.get("/exports/boats", headers=bearer(key))
    assert unknown.status_code == 404 and "routes" in unknown.json()["description"]
    bad = client.get("/exports/routes", params={"format": "shp"}, headers=bearer(key))
    assert bad.status_code == 400 and "geojson" in bad.json()["description"]


def test_corridor_reads_are_audited(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products, engine: Engine
) -> None:
    key = keys[("prosecutor", "COL")]
    client.get("/collections/corridors/items", headers=bearer(key))
    with engine.begin() as conn:
        records = conn.execute(sa.text(
            "SELECT records FROM audit_log WHERE action = 'items' AND collection = 'corridors' "
            "AND country = 'COL' ORDER BY id DESC LIMIT 1")).scalar_one()
    assert records == 2  # its own and Venezuela's (detail agreement)


def test_border_sector_candidates_over_http(
    client: TestClient, keys: dict[tuple[str, str | None], str], products: Products, engine: Engine,
    settings: Settings, tmp_path: Path
) -> None:
    """The border-sector candidates: their own collection of lines, queryable, item by id, exported
    with the crossings, every read audited."""
    key, k = keys[("border_authority", "COL")], settings.k_anonymity
    first, second, old = sorted(products.sectors)

    def ids(**params: str) -> list[int]:
        response = client.get("/collections/joint-sectors/items", params=params, headers=bearer(key))
        assert response.status_code == 200, response.text
        return sorted(f["id"] for f in response.json()["features"])

    assert ids() == [first, second]
    assert ids(filter="country_a = 'COL' AND country_b = 'VEN'") == [first, second]
    assert ids(filter="candidate_type = 'crossing'") == []
    # a border authority reads no corridor, so no zone: 0.45 without the corridor term; the second
    # sector's score is withheld (a count under k) and not matched
    assert ids(filter="score >= 0") == ids(filter="score = 0.45") == [first]
    assert ids(latest="false") == [old]
    assert ids(bbox="-72.45,7.55,-72.35,7.65", latest="false") == [old]
    queryables = client.get("/collections/joint-sectors/queryables", headers=bearer(key)).json()["properties"]
    assert {"candidate_type", "border_segment_id", "country_a", "score", "period_start"} <= set(queryables)
    bad = client.get("/collections/joint-sectors/items", params={"filter": "crossing_ids = 1"},
                     headers=bearer(key))
    assert bad.status_code == 400 and "crossing_ids" in bad.json()["description"]
    one = client.get(f"/collections/joint-sectors/items/{second}", headers=bearer(key)).json()
    props = one["properties"]
    assert one["geometry"]["type"] == "MultiLineString" and props["candidate_type"] == "border_sector"
    assert props["records_by_country"] == {"VEN": f"<{k}", "PER": 15}
    assert (props["score"], props["base_score"], props["score_suppressed"]) == (None, None, True)
    assert props["border_segment_ids"] == [7, 8] and props["crossing_ids"] == [1]
    assert props["name"] == "Tramo tests" and props["route_ids"] == [list(products.routes)[1]]
    # a crossing candidate's id addresses the crossings' table only
    crossing = client.get(f"/collections/joint-operations/items/{second}", headers=bearer(key)).json()
    assert crossing["properties"]["candidate_type"] == "crossing" and crossing["geometry"]["type"] == "Point"
    missing = client.get("/collections/joint-sectors/items/999999", headers=bearer(key))
    assert missing.status_code == 404

    exported = client.get("/exports/joint-operations", params={"format": "gpkg"}, headers=bearer(key))
    assert exported.status_code == 200, exported.text
    saved = tmp_path / "joint.gpkg"
    saved.write_bytes(exported.content)
    frame = pyogrio.read_dataframe(saved)
    sectors = frame[frame["candidate_type"] == "border_sector"]
    assert len(frame) == 5 and len(sectors) == 2
    assert set(sectors.geometry.geom_type) == {"MultiLineString"}
    withheld = sectors[sectors["records_by_country"].str.contains(f"<{k}")]
    assert len(withheld) == 1 and withheld["score"].isna().all() and withheld["score_suppressed"].all()
    with engine.begin() as conn:
        logged = conn.execute(sa.text(
            "SELECT action, records FROM audit_log WHERE collection IN ('joint-sectors', 'joint-operations') "
            "AND country = 'COL' AND role = 'border_authority' ORDER BY seq")).all()
    assert {r.action for r in logged} >= {"items", "item", "export"}
    assert [r.records for r in logged if r.action == "export"][-1] == 5
