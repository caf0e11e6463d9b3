"""Reference layers in the store: provenance, replacement in one transaction, borders and crossings."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata import reference
from geodata.errors import InputError
from geodata.network import read_edges, to_graph
from geodata.settings import Settings
from tests.factories import country_roads_file

BORDERS = "natural_earth/ne_10m_admin_0_boundary_lines_land_latam.geojson"
PORTS = "bts_border_crossing_ports/us_land_ports_of_entry.geojson"


def _state(engine: Engine) -> dict[str, object]:
    with engine.connect() as conn:
        layers = dict(
            conn.execute(sa.text("SELECT kind, id FROM reference_layers WHERE active ORDER BY kind")).all()
        )
        counts = {
            t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
            for t in ("road_edges", "road_nodes", "border_segments", "crossings")
        }
    return {"layers": layers, **counts}


def test_roads_borders_crossings_load_with_provenance(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    roads = country_roads_file(data_dir, tmp_path, "SLV")
    r = reference.load_roads(engine, roads, settings=settings, source="Global Map El Salvador")
    places = data_dir / "natural_earth/ne_10m_populated_places_latam.geojson"
    named = settings.model_copy(update={"crossing_places_file": places})
    b = reference.load_borders(engine, data_dir / BORDERS, settings=named)
    c = reference.load_crossings(engine, data_dir / PORTS, settings=settings)
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT kind, source, file_name, sha256, feature_count, active, loaded_at IS NOT NULL "
                "FROM reference_layers WHERE id = :id"
            ),
            {"id": r.layer_id},
        ).one()
        assert tuple(row) == (
            "roads",
            "Global Map El Salvador",
            roads.name,
            r.sha256,
            r.feature_count,
            True,
            True,
        )
        # every edge's source/target is a stored node of the same layer (routable in pgRouting)
        dangling = conn.execute(
            sa.text(
                "SELECT count(*) FROM road_edges e WHERE NOT EXISTS (SELECT 1 FROM road_nodes n "
                "WHERE n.id = e.source AND n.layer_id = e.layer_id) "
                "OR NOT EXISTS (SELECT 1 FROM road_nodes n "
                "WHERE n.id = e.target AND n.layer_id = e.layer_id)"
            )
        ).scalar_one()
        assert dangling == 0
        # El Salvador's roads cross into Guatemala and Honduras: inferred crossings with those pairs
        pairs = set(
            conn.execute(
                sa.text(
                    "SELECT country_a || '-' || country_b FROM crossings c JOIN reference_layers l "
                    "ON l.id = c.layer_id WHERE l.kind = 'inferred_crossings' AND l.active AND NOT c.official"
                )
            ).scalars()
        )
        assert {"GTM-SLV", "HND-SLV"} <= pairs
        # US ports on the Mexican border took the MEX-USA pair from the nearest border segment
        mex = conn.execute(
            sa.text(
                "SELECT count(*) FROM crossings WHERE official AND country_a = 'MEX' AND country_b = 'USA'"
            )
        ).scalar_one()
        assert mex == 28
        inferred = conn.execute(sa.text("SELECT count(*) FROM crossings WHERE NOT official")).scalar_one()
        # inferred crossings are named after the nearest populated place within 30 km, if any
        names = set(conn.execute(sa.text("SELECT name FROM crossings WHERE NOT official")).scalars())
    assert b.feature_count > 1000 and c.feature_count == 110
    assert b.inferred_crossings == inferred > 0
    assert len(names - {None}) >= 1 and None in names
    edges = read_edges(engine)
    assert list(edges.columns) == [
        "id",
        "source",
        "target",
        "length_m",
        "road_class",
        "name",
        "country",
        "geometry",
    ]
    assert edges.crs.to_epsg() == 4326 and len(edges) == r.feature_count
    graph = to_graph(edges)
    assert graph.number_of_edges() == len(edges)
    some = edges.iloc[0]
    assert (
        graph.edges[int(some["source"]), int(some["target"]), int(some["id"])]["length_m"] == some["length_m"]
    )


def test_reloading_replaces_the_layer_and_failures_keep_the_old_one(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = reference.load_roads(engine, country_roads_file(data_dir, tmp_path, "SLV"), settings=settings)
    reference.load_borders(engine, data_dir / BORDERS, settings=settings)
    before = _state(engine)

    # a file that cannot be a road layer: refused before anything changes
    points = tmp_path / "points.gpkg"
    pyogrio.write_dataframe(pyogrio.read_dataframe(data_dir / PORTS), points)
    with pytest.raises(InputError):
        reference.load_roads(engine, points, settings=settings)
    with pytest.raises(InputError) as caught:
        reference.load_borders(engine, points, settings=settings)
    assert caught.value.code == "bad_geometry_type"
    assert _state(engine) == before

    # a failure inside the transaction (after the new rows are written) rolls everything back
    def fail(*args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(reference, "_refresh_inferred_crossings", fail)
    with pytest.raises(RuntimeError):
        reference.load_roads(engine, country_roads_file(data_dir, tmp_path, "HND"), settings=settings)
    assert _state(engine) == before
    monkeypatch.undo()

    # a good new version replaces the old one: old rows gone, old provenance kept, inactive
    second = reference.load_roads(engine, country_roads_file(data_dir, tmp_path, "HND"), settings=settings)
    assert second.replaced_layer_id == first.layer_id
    after = _state(engine)
    assert after["layers"]["roads"] == second.layer_id  # type: ignore[index]
    assert after["road_edges"] == second.feature_count
    with engine.connect() as conn:
        old = conn.execute(
            sa.text("SELECT active FROM reference_layers WHERE id = :id"), {"id": first.layer_id}
        ).scalar_one()
        left = conn.execute(
            sa.text("SELECT count(*) FROM road_edges WHERE layer_id = :id"), {"id": first.layer_id}
        ).scalar_one()
    assert old is False and left == 0


def test_borders_from_country_polygons(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path: Path
) -> None:
    countries = pyogrio.read_dataframe(
        data_dir / "natural_earth/ne_50m_admin_0_countries.geojson",
        columns=["ADM0_A3", "NAME"],
        where="ADM0_A3 IN ('SLV', 'GTM', 'HND', 'NIC')",
    )
    path = tmp_path / "countries.geojson"
    pyogrio.write_dataframe(countries, path)
    report = reference.load_borders(engine, path, settings=settings)
    segments = gpd.read_postgis(
        sa.text("SELECT country_a, country_b, geom FROM border_segments WHERE layer_id = :id"),
        engine,
        params={"id": report.layer_id},
        geom_col="geom",
    )
    pairs = set(segments["country_a"] + "-" + segments["country_b"])
    assert pairs == {"GTM-SLV", "HND-SLV", "GTM-HND", "HND-NIC"}
    km = _km_by_pair(segments)
    # the same borders as drawn in Natural Earth's 10 m boundary lines; the 50 m polygons are
    # generalised, so their shared edges are somewhat shorter, never longer
    lines = pyogrio.read_dataframe(data_dir / BORDERS).rename(
        columns={"adm0_a3_l": "country_a", "adm0_a3_r": "country_b"}
    )
    reference_km = _km_by_pair(lines)
    for pair in pairs:
        assert 0.75 < km[pair] / reference_km[pair] < 1.05, pair


def _km_by_pair(frame: gpd.GeoDataFrame) -> dict[str, float]:
    pair = ["-".join(sorted((a, b))) for a, b in zip(frame["country_a"], frame["country_b"], strict=True)]
    metric = frame.set_crs("EPSG:4326", allow_override=True).to_crs("EPSG:32616")
    return {str(k): float(v) for k, v in (metric.length / 1000).groupby(pair).sum().items()}


def test_rutas_load_command(
    settings: Settings, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from geodata.settings import get_settings
    from scripts.cli import app

    assert settings.database_url is not None
    monkeypatch.setenv("RUTAS_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        ok = runner.invoke(app, ["load", "crossings", str(data_dir / PORTS), "--source", "BTS", "--json"])
        assert ok.exit_code == 0, ok.output
        record = json.loads(ok.stdout.strip().splitlines()[-1])
        assert record["kind"] == "crossings" and record["feature_count"] == 110 and record["source"] == "BTS"

        bad = runner.invoke(app, ["load", "borders", str(data_dir / PORTS)])
        assert bad.exit_code == 2
        assert "Point" in bad.output and "fronteras" in bad.output
        unknown = runner.invoke(app, ["load", "rivers", str(data_dir / PORTS)])
        assert unknown.exit_code == 2 and "roads" in unknown.output
    finally:
        get_settings.cache_clear()
