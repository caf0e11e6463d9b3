"""Formats other than CSV: Excel, GeoJSON, GeoPackage, KML/KMZ, zipped Shapefiles, API features."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import geopandas as gpd
import openpyxl
import pyarrow as pa
import pyogrio
import pytest
import shapely
from sqlalchemy.engine import Engine

from geodata.errors import InputError
from geodata.ingest import ingest_features
from geodata.settings import Settings
from tests.geodata.ingest_helpers import (
    CIUDAD_JUAREZ,
    MEXICO_CITY,
    TAPACHULA,
    codes,
    count,
    load,
    stored,
    unique_source,
    write,
)


def test_excel_with_merged_header_rows(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("xlsx")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Registro de incidentes 2021 - Fiscalía"])            # title row
    sheet.merge_cells("A1:E1")
    sheet.append(["Fecha", "Ubicación", None, "Personas", "Observaciones"])
    sheet.merge_cells("B2:C2")
    sheet.merge_cells("A2:A3")
    sheet.merge_cells("E2:E3")
    sheet.append([None, "Latitud", "Longitud", "Muertos", None])
    sheet.append([datetime(2021, 5, 4), TAPACHULA[0], TAPACHULA[1], 2, "río Suchiate"])
    sheet.append([None, None, None, None, None])                          # blank row left in the sheet
    sheet.append(["31/12/2021", MEXICO_CITY[0], MEXICO_CITY[1], None, None])
    sheet.append(["2021-02-30", MEXICO_CITY[0], MEXICO_CITY[1], 1, None])  # no 30 February
    path = tmp_path / "merged.xlsx"
    book.save(path)
    report = load(engine, settings, path, source=source)
    assert (report.rows_read, report.accepted, report.rejected) == (3, 2, 1)
    assert codes(report) == {4: {"bad_date"}}  # data rows counted from under the header
    first, second = stored(engine, source)
    assert (first["lat"], first["lon"], first["dead"]) == (pytest.approx(TAPACHULA[0]),
                                                           pytest.approx(TAPACHULA[1]), 2)
    assert first["occurred_at"] == datetime(2021, 5, 4, tzinfo=UTC)
    assert first["attributes"] == {"Observaciones": "río Suchiate"}
    assert second["occurred_at"] == datetime(2021, 12, 31, tzinfo=UTC) and second["dead"] is None


def test_geojson_with_polygons(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("geojson")
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"fecha": "2021-06-01", "id": "G1"},
         "geometry": {"type": "Point", "coordinates": [TAPACHULA[1], TAPACHULA[0]]}},
        {"type": "Feature", "properties": {"fecha": "2021-06-02", "id": "G2"},
         "geometry": {"type": "Polygon", "coordinates": [[[-99, 19], [-98, 19], [-98, 20], [-99, 19]]]}},
        {"type": "Feature", "properties": {"fecha": "2021-06-03", "id": "G3"}, "geometry": None},
        {"type": "Feature", "properties": {"fecha": "2021-06-04", "id": "G4"},
         "geometry": {"type": "MultiPoint", "coordinates": [[MEXICO_CITY[1], MEXICO_CITY[0]]]}},
    ]}
    report = load(engine, settings, write(tmp_path / "mixed.geojson", json.dumps(collection)), source=source)
    assert codes(report) == {2: {"not_a_point"}, 3: {"missing_coordinates"}}
    polygon = next(p for p in report.errors if p.row == 2)
    assert polygon.value == "Polygon" and "not a point" in polygon.reason
    assert [e["source_record_id"] for e in stored(engine, source)] == ["G1", "G4"]


def test_broken_json_is_refused_with_its_position(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("broken")
    text = '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"fecha": "2021'
    with pytest.raises(InputError) as error:
        load(engine, settings, write(tmp_path / "broken.geojson", text), source=source)
    assert error.value.code == "bad_file" and "broken.geojson" in error.value.message
    assert "line" in error.value.message.lower()
    assert count(engine, "ingest_batches", source) == 0


def test_zip_without_shapefile(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    path = tmp_path / "casos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("leeme.txt", "sin datos")
    with pytest.raises(InputError) as error:
        load(engine, settings, path)
    assert error.value.code == "no_shapefile" and "leeme.txt" in error.value.message


def test_zip_that_unpacks_beyond_the_limit(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    path = tmp_path / "bomba.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("casos.shp", b"\0" * 5_000_000)
    with pytest.raises(InputError) as error:
        load(engine, settings.model_copy(update={"ingest_max_file_bytes": 1_000_000}), path)
    assert error.value.code == "too_large" and "5 MB" in error.value.message


def test_zipped_shapefile_in_utm_is_reprojected(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("shp")
    frame = gpd.GeoDataFrame({"fecha": ["2021-07-01"], "victimas": [3]},
                             geometry=[shapely.Point(TAPACHULA[1], TAPACHULA[0])], crs=4326).to_crs(32615)
    folder = tmp_path / "shp"
    folder.mkdir()
    frame.to_file(folder / "casos.shp")
    path = tmp_path / "casos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for part in folder.iterdir():
            archive.write(part, part.name)
    report = load(engine, settings, path, source=source, kind="victim_identification")
    assert report.accepted == 1
    [event] = stored(engine, source)
    assert (event["lat"], event["lon"]) == (pytest.approx(TAPACHULA[0], abs=1e-6),
                                            pytest.approx(TAPACHULA[1], abs=1e-6))
    assert (event["kind"], event["victims"]) == ("victim_identification", 3)


def test_geopackage(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("gpkg")
    frame = gpd.GeoDataFrame({"data": ["2022-01-15", "2022-01-16"], "nacionalidade": ["Venezuela", "Haití"]},
                             geometry=[shapely.Point(CIUDAD_JUAREZ[1], CIUDAD_JUAREZ[0]),
                                       shapely.Point(0, 0)], crs=4326)
    path = tmp_path / "casos.gpkg"
    frame.to_file(path, driver="GPKG")
    report = load(engine, settings, path, source=source, kind="interception")
    assert codes(report) == {2: {"null_island"}}
    [event] = stored(engine, source)
    assert event["nationalities"] == ["VEN"] and event["kind"] == "interception"


KML_WITHOUT_POINTS = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document>
<Placemark><name>Caso 1</name><ExtendedData><Data name="fecha"><value>2021-03-01</value></Data>
</ExtendedData></Placemark>
<Placemark><name>Caso 2</name><ExtendedData><Data name="fecha"><value>2021-03-02</value></Data>
</ExtendedData></Placemark>
</Document></kml>
"""


def test_kml_without_coordinates(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("kml")
    report = load(engine, settings, write(tmp_path / "casos.kml", KML_WITHOUT_POINTS), source=source)
    assert (report.rows_read, report.accepted) == (2, 0)
    assert codes(report) == {1: {"missing_coordinates"}, 2: {"missing_coordinates"}}
    assert count(engine, "events", source) == 0


def test_kmz_with_points(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("kmz")
    kml = KML_WITHOUT_POINTS.replace(
        "</ExtendedData></Placemark>",
        f"</ExtendedData><Point><coordinates>{TAPACHULA[1]},{TAPACHULA[0]},0</coordinates></Point></Placemark>")
    path = tmp_path / "casos.kmz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("doc.kml", kml)
    report = load(engine, settings, path, source=source)
    assert (report.rows_read, report.accepted, report.rejected) == (2, 2, 0)
    assert {e["attributes"].get("Name") for e in stored(engine, source)} == {"Caso 1", "Caso 2"}


def test_ingest_features_from_the_api(engine: Engine, settings: Settings) -> None:
    source = unique_source("api")
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"date": "2023-03-01", "crime_type": "trata de personas"},
         "geometry": {"type": "Point", "coordinates": [TAPACHULA[1], TAPACHULA[0]]}},
        {"type": "Feature", "properties": {"date": "2023-13-01"},
         "geometry": {"type": "Point", "coordinates": [TAPACHULA[1], TAPACHULA[0]]}},
    ]}
    seen: list[int] = []
    report = ingest_features(engine, collection, settings=settings, name="POST /collections/events/items",
                             kind="incident", owner_country="MEX", source=source,
                             on_loaded=lambda conn, batch: seen.append(batch))
    assert (report.accepted, report.rejected, seen) == (1, 1, [report.batch_id])
    assert report.errors[0].file == "POST /collections/events/items"
    assert stored(engine, source)[0]["crime_type"] == "trafficking"
    with pytest.raises(InputError):
        ingest_features(engine, {"type": "Feature"}, settings=settings, name="body", kind="incident",
                        owner_country="MEX")


def test_impossible_dates_are_rejected_in_every_format(tmp_path: Path, engine: Engine,
                                                       settings: Settings) -> None:
    # GDAL types GeoJSON and DBF dates and rolls 2024-02-31 over to 2 March unless read as text.
    point = {"type": "Point", "coordinates": [TAPACHULA[1], TAPACHULA[0]]}
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"fecha": "2024-02-31"}, "geometry": point},
        {"type": "Feature", "properties": {"fecha": "2024-02-29"}, "geometry": point},
    ]}
    source = unique_source("api-feb")
    report = ingest_features(engine, collection, settings=settings, name="POST /collections/events/items",
                             kind="incident", owner_country="MEX", source=source)
    assert (report.accepted, codes(report)) == (1, {1: {"bad_date"}})
    assert (report.errors[0].field, report.errors[0].value) == ("fecha", "2024-02-31")
    assert [e["occurred_text"] for e in stored(engine, source)] == ["2024-02-29"]

    source = unique_source("geojson-feb")
    report = load(engine, settings, write(tmp_path / "casos.geojson", json.dumps(collection)), source=source)
    assert (report.accepted, codes(report)) == (1, {1: {"bad_date"}})

    # A Shapefile whose DBF date field (type D) holds 20240231, as a case system may write it.
    table = pa.table({"fecha": pa.array([date(2024, 2, 27), date(2024, 2, 28)], pa.date32()),
                      "geometry": shapely.to_wkb(shapely.points([[TAPACHULA[1], TAPACHULA[0]]] * 2))})
    folder = tmp_path / "shp"
    folder.mkdir()
    pyogrio.write_arrow(table, folder / "casos.shp", geometry_name="geometry", geometry_type="Point",
                        crs="EPSG:4326")
    dbf = (folder / "casos.dbf").read_bytes()
    assert dbf.count(b"20240227") == 1
    (folder / "casos.dbf").write_bytes(dbf.replace(b"20240227", b"20240231"))
    path = tmp_path / "casos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for part in folder.iterdir():
            archive.write(part, part.name)
    source = unique_source("shp-feb")
    report = load(engine, settings, path, source=source)
    assert (report.accepted, codes(report)) == (1, {1: {"bad_date"}})
    assert [e["occurred_at"] for e in stored(engine, source)] == [datetime(2024, 2, 28, tzinfo=UTC)]


def test_geopackage_date_field_with_quotes_in_its_name(tmp_path: Path, engine: Engine,
                                                       settings: Settings) -> None:
    # Date fields are read through OGR SQL; odd field and layer names must not break the query.
    table = pa.table({'fecha "del caso"': pa.array([date(2024, 2, 29)], pa.date32()),
                      "nota\\": ["a pie"],
                      "geometry": shapely.to_wkb(shapely.points([[TAPACHULA[1], TAPACHULA[0]]]))})
    path = tmp_path / "casos.gpkg"
    pyogrio.write_arrow(table, path, layer='capa "rara"', driver="GPKG", geometry_name="geometry",
                        geometry_type="Point", crs="EPSG:4326")
    source = unique_source("gpkg-quotes")
    mapping = write(tmp_path / "mapping.json", json.dumps({"columns": {"date": 'fecha "del caso"'}}))
    report = load(engine, settings, path, source=source, mapping=mapping)
    assert (report.accepted, report.rejected) == (1, 0)
    [event] = stored(engine, source)
    assert event["occurred_at"] == datetime(2024, 2, 29, tzinfo=UTC)
    assert event["attributes"].get("nota\\") == "a pie"
