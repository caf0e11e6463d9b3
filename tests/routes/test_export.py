"""``routes.export``: every format written and read back with pyogrio/geopandas, on the real PostGIS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import shapely
from sqlalchemy.engine import Engine

from geodata.db import Scope
from geodata.errors import InputError
from geodata.settings import Settings
from routes.analysis import AnalysisParams
from routes.export import EVENT_COLUMNS, VECTOR_FORMATS, ExportRequest, export
from routes.pipeline import RunSummary, run_pipeline
from routes.synthetic import Scenario
from tests.routes.store_scenario import store_scenario


@pytest.fixture(scope="module")
def stored(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Scenario, RunSummary]:
    scenario, _ = store_scenario(engine, settings, data_dir, tmp_path_factory.mktemp("roads"))
    return scenario, run_pipeline(engine, settings, AnalysisParams(neighbour_km=20.0))[0]


def _read(path: Path, fmt: str) -> gpd.GeoDataFrame:
    frame: gpd.GeoDataFrame
    if fmt == "parquet":
        frame = gpd.read_parquet(path)
    elif fmt == "csv":
        table = pd.read_csv(path)
        frame = gpd.GeoDataFrame(
            table, geometry=gpd.GeoSeries.from_wkt(table.pop("geometry")), crs="EPSG:4326"
        )
    else:
        frame = pyogrio.read_dataframe(path, driver="LIBKML" if fmt == "kml" else None)
    return frame


@pytest.mark.parametrize("fmt", VECTOR_FORMATS)
def test_routes_round_trip(
    engine: Engine, stored: tuple[Scenario, RunSummary], tmp_path: Path, fmt: str
) -> None:
    _, run = stored
    out = tmp_path / f"routes.{fmt}"
    report = export(engine, "routes", ExportRequest(format=fmt, out=out))
    assert report.features == len(run.routes) >= 2
    back = _read(out, fmt)
    assert len(back) == report.features
    expected = {r["route_key"]: r for r in run.routes}
    for row in back.to_dict("records"):
        route = expected[str(row["route_key"])]
        assert row["category"] == route["category"]
        assert float(row["length_km"]) == pytest.approx(route["length_km"], abs=0.1)
        assert int(row["event_count"]) == route["events"]
        assert row["trend"] == route["trend"]
        # every geometry comes back as lines in lon/lat over El Salvador
        geom: Any = row["geometry"]
        assert shapely.get_type_id(geom) in (1, 5)
        minx, miny, maxx, maxy = geom.bounds
        assert -90.2 < minx < maxx < -87.6 and 13.1 < miny < maxy < 14.5
    if fmt == "kml":
        # placemarks are named after their category, as Google Earth lists them
        assert list(back["Name"]) == list(back["category"])
    first = back.iloc[0]
    shares = first["category_shares"]
    assert json.loads(shares) if isinstance(shares, str) else shares


def test_geojson_keeps_lists_as_arrays(
    engine: Engine, stored: tuple[Scenario, RunSummary], tmp_path: Path
) -> None:
    out = tmp_path / "routes.geojson"
    export(engine, "routes", ExportRequest(format="geojson", out=out))
    features = json.loads(out.read_text())["features"]
    assert all(f["properties"]["countries"] == ["SLV"] for f in features)
    assert all(isinstance(f["properties"]["monthly_counts"], str) for f in features)
    assert all(f["properties"]["category"] for f in features)


@pytest.mark.parametrize("fmt", VECTOR_FORMATS)
def test_events_round_trip_without_personal_fields(
    engine: Engine, stored: tuple[Scenario, RunSummary], tmp_path: Path, fmt: str
) -> None:
    scenario, _ = stored
    out = tmp_path / f"events.{fmt}"
    report = export(engine, "events", ExportRequest(format=fmt, out=out))
    assert report.features == len(scenario.events)
    back = _read(out, fmt)
    assert len(back) == len(scenario.events)
    assert {"kind", "crime_type", "occurred_at", "owner_country"} <= set(back.columns)
    assert not {"attributes", "nationalities", "source_record_id", "dedupe_key"} & set(back.columns)
    assert set(back["crime_type"]) == {"smuggling"}


def test_events_export_follows_the_scope(
    engine: Engine, stored: tuple[Scenario, RunSummary], tmp_path: Path
) -> None:
    scenario, _ = stored
    honduras = Scope(role="prosecutor", country="HND")
    assert (
        export(
            engine, "events", ExportRequest(format="gpkg", out=tmp_path / "hnd.gpkg", scope=honduras)
        ).features
        == 0
    )
    salvador = Scope(role="prosecutor", country="SLV")
    assert export(
        engine, "events", ExportRequest(format="gpkg", out=tmp_path / "slv.gpkg", scope=salvador)
    ).features == len(scenario.events)
    in_2025 = ExportRequest(
        format="csv", out=tmp_path / "2025.csv", since=pd.Timestamp("2025-01-01", tz="UTC")
    )
    expected = int((scenario.events["occurred_at"] >= pd.Timestamp("2025-01-01", tz="UTC")).sum())
    assert export(engine, "events", in_2025).features == expected
    assert "id" in EVENT_COLUMNS


def test_unknown_product_and_format_are_refused(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="rutes"):
        export(engine, "rutes", ExportRequest(format="gpkg", out=tmp_path / "x.gpkg"))
    with pytest.raises(InputError, match="'tif'"):
        export(engine, "routes", ExportRequest(format="tif", out=tmp_path / "x.tif"))
