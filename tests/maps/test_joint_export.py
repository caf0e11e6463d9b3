"""``rutas export joint-operations``: the stored candidates, scores withheld as the API withholds them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import Scope
from geodata.errors import InputError
from geodata.settings import Settings
from maps.products import ProductParams, make_products, read_layers
from maps.risk import RiskParams
from routes.export import ExportRequest, export
from routes.pipeline import RunSummary
from tests.routes.test_overlap_store import sector_run, stored  # noqa: F401  (the stored runs, reused)


@contextmanager
def stored_before_0008(engine: Engine, run_id: int) -> Iterator[None]:
    """Make ``run_id`` look like a run of before migration 0008 (no ``joint_operations`` count: its
    overlap products count as not stored) while the block runs."""
    with engine.begin() as conn:
        counts = conn.execute(
            sa.text("SELECT counts FROM analysis_runs WHERE id = :r"), {"r": run_id}
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE analysis_runs SET counts = counts - 'joint_operations' WHERE id = :r"),
            {"r": run_id},
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE analysis_runs SET counts = CAST(:c AS jsonb) WHERE id = :r"),
                {"c": json.dumps(counts), "r": run_id},
            )


@pytest.fixture
def withheld(engine: Engine, sector_run: tuple[RunSummary, shapely.LineString]) -> Iterator[RunSummary]:  # noqa: F811
    """The sector run with Guatemala's count of its border-sector candidate stored as null, as a count
    under k is stored; put back afterwards."""
    run, _ = sector_run
    with engine.begin() as conn:
        before = conn.execute(
            sa.text("SELECT id, records_by_country FROM joint_sectors WHERE run_id = :r"), {"r": run.run_id}
        ).all()
        conn.execute(
            sa.text(
                "UPDATE joint_sectors SET records_by_country = records_by_country || '{\"GTM\": null}' "
                "WHERE run_id = :r"
            ),
            {"r": run.run_id},
        )
    yield run
    with engine.begin() as conn:
        for row in before:
            conn.execute(
                sa.text("UPDATE joint_sectors SET records_by_country = CAST(:c AS jsonb) WHERE id = :i"),
                {"c": json.dumps(row.records_by_country), "i": row.id},
            )


def _features(engine: Engine, out: Path) -> list[dict[str, object]]:
    export(engine, "joint-operations", ExportRequest(format="geojson", out=out))
    features: list[dict[str, object]] = json.loads(out.read_text(encoding="utf-8"))["features"]
    return features


def test_the_export_writes_no_score_where_a_count_is_under_k(
    engine: Engine, withheld: RunSummary, tmp_path: Path
) -> None:
    features = _features(engine, tmp_path / "joint.geojson")
    sectors = [f for f in features if f["properties"]["candidate_type"] == "border_sector"]  # type: ignore[index]
    assert len(sectors) == 1
    props = sectors[0]["properties"]
    assert isinstance(props, dict)
    # the score weighs Guatemala's count: with the count withheld the score is too
    assert json.loads(props["records_by_country"])["GTM"] == "<11"
    assert props["score"] is None and props["score_suppressed"] is True
    # the sector is drawn as the stretch of border its routes reach (a line)
    assert sectors[0]["geometry"]["type"] == "MultiLineString"  # type: ignore[index]
    # every other candidate, all of whose counts are shown, keeps its score
    for f in features:
        other = f["properties"]
        assert isinstance(other, dict)
        if other["candidate_type"] == "crossing":
            assert other["score"] is not None and other["score_suppressed"] is False


def test_the_export_shows_the_score_when_every_count_is_shown(
    engine: Engine, sector_run: tuple[RunSummary, shapely.LineString], tmp_path: Path  # noqa: F811
) -> None:
    features = _features(engine, tmp_path / "joint.geojson")
    props = [f["properties"] for f in features if f["properties"]["candidate_type"] == "border_sector"]  # type: ignore[index]
    assert len(props) == 1 and isinstance(props[0], dict)
    assert props[0]["score"] > 0 and props[0]["score_suppressed"] is False


def test_a_run_stored_before_its_candidates_is_refused_with_the_fix(
    engine: Engine, sector_run: tuple[RunSummary, shapely.LineString], tmp_path: Path  # noqa: F811
) -> None:
    run, _ = sector_run
    with stored_before_0008(engine, run.run_id), pytest.raises(InputError) as refused:
        export(engine, "joint-operations", ExportRequest(format="geojson", out=tmp_path / "j.geojson"))
    message = str(refused.value)
    assert str(run.run_id) in message and "rutas run" in message
    assert "ejecute `rutas run`" in message  # Spanish too
    assert not (tmp_path / "j.geojson").exists()



def test_the_maps_draw_the_stored_candidates_sectors_as_lines(
    engine: Engine, settings: Settings, withheld: RunSummary, tmp_path: Path
) -> None:
    params = ProductParams.from_settings(settings, cell_km=10.0, k=1, risk=RiskParams(res_m=5_000.0))
    joint = read_layers(engine, Scope(role="admin"), params).joint
    sector = joint[joint["candidate_type"] == "border_sector"]
    assert len(sector) == 1 and sector.geometry.iloc[0].geom_type == "MultiLineString"
    # the same rule as the export: the score of a candidate with a count under k is withheld
    assert pd.isna(sector["score"].iloc[0]) and bool(sector["score_suppressed"].iloc[0])
    html = make_products(engine, tmp_path, params=params).html.read_text(encoding="utf-8")
    assert "Candidatas a operaciones conjuntas: en sector de frontera" in html
    assert "retenida (un conteo" in html  # the popup of the withheld score
