"""Corridor layers: reading with validation, storing per kind and owner, row-level security."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.corridors import load_corridors, read_corridors, read_stored_corridors
from geodata.db import Scope
from geodata.errors import InputError
from geodata.settings import CHECKOUT_DIR, Settings

DEMO = CHECKOUT_DIR / "geodata" / "illustrative"


def _write(path: Path, features: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), encoding="utf-8")
    return path


def _line(props: dict[str, object], coords: list[list[float]]) -> dict[str, object]:
    return {"type": "Feature", "properties": props, "geometry": {"type": "LineString", "coordinates": coords}}


def test_demo_layers_are_read_and_marked_illustrative() -> None:
    for kind in ("drug", "fuel", "arms"):
        frame, problems = read_corridors(
            DEMO / f"corridors_demo_{kind}.geojson", kind=kind, owner_country="col"
        )
        assert problems == [] and len(frame) >= 1
        assert frame["illustrative"].all() and frame["note"].str.contains("not intelligence").all()
        assert (frame["owner_country"] == "COL").all() and frame.crs.to_epsg() == 4326
        assert str(frame["valid_from"].iloc[0]) == "2014-01-01"


def test_bad_features_are_reported_by_row_and_the_rest_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "c.geojson",
        [
            _line({"nombre": "bien", "fuente": "x", "hasta": "2024-05-01"}, [[-75, 5], [-74, 6]]),
            {
                "type": "Feature",
                "properties": {"nombre": "punto"},
                "geometry": {"type": "Point", "coordinates": [-75, 5]},
            },
            _line({"nombre": "fecha", "desde": "el año pasado"}, [[-75, 5], [-74, 6]]),
            _line({"nombre": "al revés", "desde": "2024-01-01", "hasta": "2023-01-01"}, [[-75, 5], [-74, 6]]),
        ],
    )
    frame, problems = read_corridors(path, kind="fuel", owner_country="COL")
    assert frame["name"].tolist() == ["bien"] and frame["source"].tolist() == ["x"]
    assert sorted((p.row, p.field) for p in problems) == [(2, "geometry"), (3, "valid_from"), (4, "valid_to")]
    assert all(p.file == "c.geojson" and p.reason and p.reason_es for p in problems)
    with pytest.raises(InputError, match="--kind 'cocaine'"):
        read_corridors(path, kind="cocaine", owner_country="COL")


@pytest.fixture()
def no_corridors(engine: Engine) -> None:
    """No corridor layer in the store (other tests of the run may have loaded some)."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM corridors"))
        conn.execute(sa.text("DELETE FROM reference_layers WHERE kind = 'corridors'"))


@pytest.mark.usefixtures("no_corridors")
def test_corridors_stored_per_owner_and_hidden_from_other_offices(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    first = load_corridors(
        engine, DEMO / "corridors_demo_drug.geojson", settings=settings, kind="drug", country="COL"
    )
    path = _write(tmp_path / "fuel.gpkg.geojson", [_line({"name": "f"}, [[-72, 8], [-72, 9]])])
    load_corridors(engine, path, settings=settings, kind="fuel", country="PER")
    colombia = read_stored_corridors(engine, Scope(role="prosecutor", country="COL"))
    assert set(colombia["owner_country"]) == {"COL"} and len(colombia) == first.feature_count
    assert read_stored_corridors(engine, Scope(role="prosecutor", country="ECU")).empty
    shared = read_stored_corridors(
        engine, Scope(role="prosecutor", country="ECU", partners={"PER": "detail"})
    )
    assert shared["name"].tolist() == ["f"]
    assert set(read_stored_corridors(engine, Scope(role="admin"))["owner_country"]) == {"COL", "PER"}
    # loading the same kind and owner again replaces that layer only
    again = load_corridors(engine, path, settings=settings, kind="drug", country="COL")
    assert again.replaced_layer_id == first.layer_id
    assert sorted(read_stored_corridors(engine, Scope(role="admin"))["kind"]) == ["drug", "fuel"]


def _gdf(rows: list[dict[str, object]], geoms: list[shapely.Geometry]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(pd.DataFrame(rows), geometry=geoms, crs=4326)


def _values(column: pd.Series) -> list[object]:
    """The column's values with missing ones (NaN, NaT, None) as None."""
    return [None if pd.isna(v) else v for v in column]


LINE = shapely.LineString([(-75.5, 6.2), (-74.1, 4.6)])  # Medellín - Bogotá
SQUARE = shapely.Polygon([(-72.5, 7.0), (-72.0, 7.0), (-72.0, 7.5), (-72.5, 7.5)])  # near Cúcuta


@pytest.mark.usefixtures("no_corridors")
def test_geopackage_layers_of_lines_and_polygons_keep_their_attributes(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "corredores.gpkg"
    lines = _gdf(
        [
            {
                "nombre": "Medellín-Bogotá",
                "fuente": "Fiscalía",
                "confianza": "alta",
                "desde": pd.Timestamp("2021-03-01"),
                "hasta": "2024-12-31",
            },
            {"nombre": None, "fuente": None, "confianza": None, "desde": pd.NaT, "hasta": None},
        ],
        [LINE, shapely.LineString([(-75.0, 6.0), (-74.9, 6.1)])],
    ).to_crs(32618)  # a projected layer: read back in degrees
    pyogrio.write_dataframe(lines, path, layer="rutas")
    zones = _gdf([{"name": "Catatumbo", "source": "UNODC", "confidence": "media"}], [SQUARE])
    pyogrio.write_dataframe(zones, path, layer="zonas")
    pyogrio.write_dataframe(_gdf([{"name": "punto"}], [shapely.Point(-74, 5)]), path, layer="puntos")
    frame, problems = read_corridors(path, kind="drug", owner_country="COL")
    assert [(p.file, p.row, p.field, p.value) for p in problems] == [
        ("corredores.gpkg:puntos", 1, "geometry", "Point")
    ]
    assert frame["name"].tolist() == ["Medellín-Bogotá", None, "Catatumbo"]
    assert frame["source"].tolist() == ["Fiscalía", None, "UNODC"]
    assert frame["confidence"].tolist() == ["alta", None, "media"]
    assert frame["valid_from"].tolist() == [date(2021, 3, 1), None, None]
    assert frame["valid_to"].tolist() == [date(2024, 12, 31), None, None]
    assert [p["layer"] for p in frame["properties"]] == ["rutas", "rutas", "zonas"]
    assert frame.geometry.iloc[0].equals_exact(LINE, 1e-6) and frame.geometry.iloc[2].equals(SQUARE)
    # and so they are stored: no feature without a name or a date is lost on the way
    report = load_corridors(engine, path, settings=settings, kind="drug", country="COL")
    assert report.feature_count == 3 and report.details["refused"] == 1
    stored = read_stored_corridors(engine, Scope(role="admin")).sort_values("corridor_id")
    assert _values(stored["name"]) == ["Medellín-Bogotá", None, "Catatumbo"]
    assert _values(stored["valid_from"]) == [date(2021, 3, 1), None, None]
    assert stored.geom_type.tolist() == ["LineString", "LineString", "Polygon"]


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2"><Document><name>Corredores</name>
<Folder><name>cocaina</name>
 <Placemark><name>Tumaco-Pasto</name>
  <TimeSpan><begin>2022-01-01</begin><end>2023-06-30</end></TimeSpan>
  <ExtendedData><Data name="fuente"><value>InSight Crime</value></Data>
   <Data name="confianza"><value>baja</value></Data></ExtendedData>
  <LineString><coordinates>-78.8,1.8 -77.3,1.2</coordinates></LineString></Placemark>
 <Placemark><LineString><coordinates>-78.0,1.0 -77.9,1.1</coordinates></LineString></Placemark>
</Folder>
<Folder><name>gasolina</name>
 <Placemark><name>Catatumbo</name><Polygon><outerBoundaryIs><LinearRing>
  <coordinates>-72.5,7.0 -72.0,7.0 -72.0,7.5 -72.5,7.5 -72.5,7.0</coordinates>
 </LinearRing></outerBoundaryIs></Polygon></Placemark>
 <Placemark><name>Cúcuta</name><Point><coordinates>-72.5,7.9</coordinates></Point></Placemark>
</Folder></Document></kml>
"""


@pytest.mark.parametrize("suffix", [".kml", ".kmz"])
@pytest.mark.usefixtures("no_corridors")
def test_kml_folders_timespans_and_extended_data_are_read_and_stored(
    engine: Engine, settings: Settings, tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"corredores{suffix}"
    if suffix == ".kml":
        path.write_text(KML, encoding="utf-8")
    else:
        with zipfile.ZipFile(path, "w") as kmz:
            kmz.writestr("doc.kml", KML)
    frame, problems = read_corridors(path, kind="fuel", owner_country="col")
    assert [(p.file, p.row, p.field, p.value) for p in problems] == [
        (f"corredores{suffix}:gasolina", 2, "geometry", "Point")
    ]
    assert frame["name"].tolist() == ["Tumaco-Pasto", None, "Catatumbo"]
    assert frame["source"].tolist() == ["InSight Crime", None, None]
    assert frame["confidence"].tolist() == ["baja", None, None]
    # the placemark's TimeSpan is the validity period
    assert frame["valid_from"].tolist() == [date(2022, 1, 1), None, None]
    assert frame["valid_to"].tolist() == [date(2023, 6, 30), None, None]
    assert frame.geom_type.tolist() == ["LineString", "LineString", "Polygon"]
    # GDAL's KML bookkeeping (tessellate, extrude, ...) is not kept as an attribute
    assert set(frame["properties"].iloc[0]) <= {"description", "layer"}
    report = load_corridors(engine, path, settings=settings, kind="fuel", country="COL")
    assert report.feature_count == 3
    stored = read_stored_corridors(engine, Scope(role="admin")).sort_values("corridor_id")
    assert _values(stored["name"]) == ["Tumaco-Pasto", None, "Catatumbo"]
    assert _values(stored["valid_to"]) == [date(2023, 6, 30), None, None]


@pytest.mark.usefixtures("no_corridors")
def test_zipped_shapefiles_of_lines_and_polygons_are_read_and_stored(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    lines = _gdf(
        [
            {
                "name": "Medellín-Bogotá",
                "source": "Fiscalía",
                "confidence": "alta",
                "valid_from": "2020-01-01",
                "valid_to": "2022-12-31",
            }
        ],
        [LINE],
    ).to_crs(32618)
    pyogrio.write_dataframe(lines, tmp_path / "lineas.shp", encoding="UTF-8")
    # no .prj: coordinates in degrees are taken as EPSG:4326
    polygons = gpd.GeoDataFrame({"nombre": ["Catatumbo"], "fuente": ["UNODC"]}, geometry=[SQUARE])
    pyogrio.write_dataframe(polygons, tmp_path / "zonas.shp", encoding="UTF-8")
    path = tmp_path / "corredores.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for part in sorted(tmp_path.glob("*.*")):
            if part.suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                archive.write(part, part.name)
    assert "zonas.prj" not in zipfile.ZipFile(path).namelist()
    frame, problems = read_corridors(path, kind="arms", owner_country="COL")
    assert problems == []
    by_layer = {p["layer"]: i for i, p in enumerate(frame["properties"])}
    line, zone = frame.iloc[by_layer["lineas"]], frame.iloc[by_layer["zonas"]]
    assert (line["name"], line["source"], line["confidence"]) == ("Medellín-Bogotá", "Fiscalía", "alta")
    assert (line["valid_from"], line["valid_to"]) == (date(2020, 1, 1), date(2022, 12, 31))
    assert (zone["name"], zone["source"], zone["confidence"], zone["valid_from"]) == (
        "Catatumbo",
        "UNODC",
        None,
        None,
    )
    assert line.geometry.equals_exact(LINE, 1e-6) and zone.geometry.equals(SQUARE)
    report = load_corridors(engine, path, settings=settings, kind="arms", country="COL")
    assert report.feature_count == 2
    stored = read_stored_corridors(engine, Scope(role="admin"))
    assert sorted(stored.geom_type) == ["LineString", "Polygon"]


def test_unreadable_geometries_and_out_of_range_coordinates_are_refused_by_feature(tmp_path: Path) -> None:
    features = [
        _line({"name": "bien"}, [[-75, 5], [-74, 6]]),
        _line({"name": "un punto"}, [[-75, 5]]),
        {
            "type": "Feature",
            "properties": {"name": "anillo abierto"},
            "geometry": {"type": "Polygon", "coordinates": [[[-75, 5], [-74, 5], [-74, 6]]]},
        },
        _line({"name": "latitud 95"}, [[-75, 95], [-74, 96]]),
    ]
    frame, problems = read_corridors(
        _write(tmp_path / "malos.geojson", features), kind="drug", owner_country="COL"
    )
    assert frame["name"].tolist() == ["bien"]
    assert [(p.file, p.row, p.field) for p in problems] == [
        ("malos.geojson", 2, "geometry"),
        ("malos.geojson", 3, "geometry"),
        ("malos.geojson", 4, "geometry"),
    ]
    assert "one point" in problems[0].reason and "un solo punto" in problems[0].reason_es
    assert "out of range" in problems[2].reason and problems[2].value == "-75 95, -74 96"
    kml = tmp_path / "malos.kml"
    kml.write_text(
        KML.replace("-78.0,1.0 -77.9,1.1", "-78.0,1.0").replace("-78.8,1.8", "-78.8,91.8"),
        encoding="utf-8",
    )
    frame, problems = read_corridors(kml, kind="drug", owner_country="COL")
    assert frame["name"].tolist() == ["Catatumbo"]
    assert [(p.file, p.row) for p in problems] == [
        ("malos.kml:cocaina", 2),
        ("malos.kml:cocaina", 1),
        ("malos.kml:gasolina", 2),
    ]


def _truncated_gpkg(path: Path) -> None:
    pyogrio.write_dataframe(_gdf([{"name": "a"}], [LINE]), path)
    path.write_bytes(path.read_bytes()[:3000])


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("vacio.geojson", lambda p: p.write_bytes(b"")),
        ("cortado.gpkg", _truncated_gpkg),
        ("roto.kml", lambda p: p.write_text("<kml><Document><Placemark><name>a</name>", encoding="utf-8")),
        ("sin_shp.zip", lambda p: zipfile.ZipFile(p, "w").writestr("LEAME.txt", "hola")),
        ("no_es_zip.zip", lambda p: p.write_bytes(b"PK\x03\x04 no es un zip")),
    ],
)
def test_files_that_cannot_be_read_are_refused_naming_the_file_without_internals(
    tmp_path: Path, name: str, make: Callable[[Path], object]
) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(InputError) as refused:
        read_corridors(path, kind="drug", owner_country="COL")
    error = refused.value
    assert error.code == "bad_file" and error.message.startswith(f"{name}: cannot be read")
    assert error.message_es.startswith(f"{name}: no se puede leer")
    assert "Shapefile" in error.message and str(tmp_path) not in str(error)
    for internal in ("vsizip", "sqlite", "GDAL", "OGR", "Error", "driver"):
        assert internal not in str(error)


def test_a_projected_layer_without_crs_is_refused_naming_the_file(tmp_path: Path) -> None:
    projected = gpd.GeoDataFrame({"name": ["a"]}, geometry=[LINE], crs=4326).to_crs(32618)
    pyogrio.write_dataframe(projected.set_crs(None, allow_override=True), tmp_path / "utm.shp")
    with pytest.raises(InputError, match=r"utm.shp: the layer has no CRS and its coordinates are not deg"):
        read_corridors(tmp_path / "utm.shp", kind="drug", owner_country="COL")
