"""Loading over HTTP (Part 4 create and file upload): same checks and report as the CLI, scoped."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.auth import create_key
from tests.api.conftest import bearer, reset_events

#: Cúcuta (Colombia) and San Cristóbal (Venezuela), EPSG:4326 lon/lat.
CUCUTA = (-72.5078, 7.8939)
SAN_CRISTOBAL = (-72.2250, 7.7669)


@pytest.fixture(scope="module")
def loaders(engine: Engine) -> dict[str, str]:
    reset_events(engine)
    return {
        "steward": create_key(engine, "steward", "COL"),
        "ven": create_key(engine, "prosecutor", "VEN"),
        "col": create_key(engine, "prosecutor", "COL"),
        "admin": create_key(engine, "admin"),
    }


def _feature(lon: float, lat: float, date: str) -> dict[str, object]:
    return {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "properties": {"date": date, "crime_type": "tráfico de migrantes"},
    }


def test_create_one_feature_and_a_collection(client: TestClient, loaders: dict[str, str]) -> None:
    one = client.post(
        "/collections/events/items",
        params={"kind": "interception", "source": "api-test"},
        json=_feature(*CUCUTA, "2024-05-02"),
        headers=bearer(loaders["steward"]),
    )
    assert one.status_code == 201, one.text
    assert (one.json()["accepted"], one.json()["rejected"]) == (1, 0)
    many = client.post(
        "/collections/events/items",
        params={"kind": "interception", "source": "api-test"},
        json={
            "type": "FeatureCollection",
            "features": [
                _feature(*CUCUTA, "2024-05-02"),
                _feature(*CUCUTA, "2024-05-03"),
                _feature(*CUCUTA, "2024-13-01"),
            ],
        },
        headers=bearer(loaders["steward"]),
    )
    report = many.json()
    assert many.status_code == 201
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (1, 1, 1)
    assert report["errors"][0]["row"] == 3 and report["errors"][0]["reason_es"]
    # The records are Colombia's: Colombia's prosecutor sees them, Venezuela's does not.
    col = client.get("/collections/events/items", headers=bearer(loaders["col"])).json()["features"]
    ven = client.get("/collections/events/items", headers=bearer(loaders["ven"])).json()["features"]
    assert len(col) == 2 and {f["properties"]["owner_country"] for f in col} == {"COL"}
    assert ven == []
    assert all("attributes" not in f["properties"] for f in col)


def test_only_stewards_of_the_country_and_admins_load(client: TestClient, loaders: dict[str, str]) -> None:
    body = _feature(*SAN_CRISTOBAL, "2024-05-02")
    assert (
        client.post(
            "/collections/events/items",
            params={"kind": "incident"},
            json=body,
            headers=bearer(loaders["ven"]),
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/collections/events/items",
            params={"kind": "incident", "country": "VEN"},
            json=body,
            headers=bearer(loaders["steward"]),
        ).status_code
        == 403
    )
    assert client.post("/collections/events/items", params={"kind": "incident"}, json=body).status_code == 401
    bad = client.post(
        "/collections/events/items", params={"kind": "rumour"}, json=body, headers=bearer(loaders["steward"])
    )
    assert bad.status_code == 400 and "rumour" in bad.json()["description"]


def test_upload_a_csv_file_and_read_its_batch_report(client: TestClient, loaders: dict[str, str]) -> None:
    text = (
        "fecha,latitud,longitud,muertos\n"
        f"2024-03-01,{SAN_CRISTOBAL[1]},{SAN_CRISTOBAL[0]},1\n"
        f"2024-03-02,{SAN_CRISTOBAL[1]},{SAN_CRISTOBAL[0]},not-a-number\n"
    )
    response = client.post(
        "/ingest",
        files={"file": ("casos marzo.csv", text.encode(), "text/csv")},
        data={"kind": "incident", "country": "VEN", "source": "upload-test"},
        headers=bearer(loaders["admin"]),
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert report["file"] == "casos marzo.csv" and report["rows_read"] == 2 and report["accepted"] >= 1
    batch = client.get(f"/ingest/batches/{report['batch_id']}", headers=bearer(loaders["ven"]))
    assert batch.status_code == 200 and batch.json()["batch_id"] == report["batch_id"]
    # Another country's prosecutor cannot read the report.
    assert (
        client.get(f"/ingest/batches/{report['batch_id']}", headers=bearer(loaders["col"])).status_code == 404
    )
    wrong = client.post(
        "/ingest",
        files={"file": ("run.exe", b"MZ", "application/octet-stream")},
        data={"kind": "incident", "country": "VEN"},
        headers=bearer(loaders["admin"]),
    )
    assert wrong.status_code == 400 and ".exe" in wrong.json()["description"]


def test_bodies_over_the_limit_get_413(settings: object, loaders: dict[str, str]) -> None:
    from api.app import create_app
    from geodata.settings import Settings

    assert isinstance(settings, Settings)
    app = create_app(settings.model_copy(update={"api_max_body_bytes": 1000, "api_max_upload_bytes": 2000}))
    with TestClient(app) as small:
        big = {"type": "FeatureCollection", "features": [_feature(*CUCUTA, "2024-05-02")] * 50}
        response = small.post(
            "/collections/events/items",
            params={"kind": "incident"},
            json=big,
            headers=bearer(loaders["steward"]),
        )
        assert response.status_code == 413 and response.json()["code"] == "PayloadTooLarge"
        upload = small.post(
            "/ingest",
            files={"file": ("big.csv", b"x" * 5000, "text/csv")},
            data={"kind": "incident"},
            headers=bearer(loaders["steward"]),
        )
        assert upload.status_code == 413
