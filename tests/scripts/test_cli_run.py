"""``rutas run --json`` and ``rutas export`` end to end on El Salvador's roads and stored events."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pyogrio
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from geodata.settings import Settings, get_settings
from routes.synthetic import Scenario
from scripts.cli import app
from tests.routes.store_scenario import store_scenario


@pytest.fixture(scope="module")
def stored(
    engine: Engine, settings: Settings, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    scenario, _ = store_scenario(engine, settings, data_dir, tmp_path_factory.mktemp("roads"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUTAS_DATABASE_URL", str(settings.database_url))
        get_settings.cache_clear()
        try:
            yield scenario
        finally:
            get_settings.cache_clear()


def test_run_json_then_export(engine: Engine, stored: Scenario, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "run",
            "--neighbour-km",
            "20",
            "--segment-km",
            "5",
            "--time-step",
            "1",
            "--slice",
            "month",
            "--alpha",
            "0.05",
            "--gap-segments",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    (run,) = json.loads(result.stdout.strip().splitlines()[-1])["runs"]
    assert run["status"] == "succeeded" and run["crime_types"] == ["smuggling"]
    assert run["parameters"]["segment_km"] == 5.0 and run["parameters"]["gap_segments"] == 1
    assert run["counts"]["events_analysed"] == len(stored.events)
    assert run["counts"]["routes"] == len(run["routes"]) >= 2
    assert {"persistent_hot"} <= {r["category"] for r in run["routes"]}
    assert any(r["trend"] == "up" for r in run["routes"])
    # both kinds of joint-operation candidate are counted, as many as the run stored
    assert _stored_candidates(engine, run["run_id"]) == (
        run["counts"]["joint_operations"],
        run["counts"]["joint_sectors"],
    )

    out = tmp_path / "routes.gpkg"
    result = runner.invoke(app, ["export", "routes", "--format", "gpkg", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["features"] == len(run["routes"])
    back = pyogrio.read_dataframe(out)
    assert sorted(back["category"]) == sorted(r["category"] for r in run["routes"])
    assert set(back["run_id"]) == {run["run_id"]}


def _stored_candidates(engine: Engine, run_id: int) -> tuple[int, int]:
    """Rows of ``joint_operations`` and ``joint_sectors`` the run stored."""
    sql = (
        "SELECT (SELECT count(*) FROM joint_operations WHERE run_id = :r), "
        "(SELECT count(*) FROM joint_sectors WHERE run_id = :r)"
    )
    with engine.connect() as conn:
        crossings, sectors = conn.execute(sa.text(sql), {"r": run_id}).one()
    return int(crossings), int(sectors)


def test_run_prints_the_crossing_and_the_border_sector_candidates(engine: Engine, stored: Scenario) -> None:
    result = CliRunner().invoke(app, ["run", "--neighbour-km", "20", "--gap-segments", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    run_id = int(re.search(r"Ejecución / run (\d+)", text).group(1))  # type: ignore[union-attr]
    crossings, sectors = _stored_candidates(engine, run_id)
    assert (
        f"joint-operation candidates: {crossings} en pasos / at crossings, "
        f"{sectors} en tramos de frontera / at border sectors"
    ) in text


def test_the_printed_run_tells_crossing_from_border_sector_candidates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from routes.pipeline import RunSummary
    from scripts.cli_routes import print_runs

    counts = {"routes": 4, "joint_operations": 3, "joint_sectors": 5}
    print_runs([RunSummary(7, "succeeded", ["smuggling"], {}, {}, "tests", counts=counts)])
    text = " ".join(capsys.readouterr().out.split())
    assert "candidates: 3 en pasos / at crossings, 5 en tramos de frontera / at border sectors" in text


def test_run_and_export_refuse_bad_options(stored: Scenario, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["run", "--slice", "fortnight"])
    assert result.exit_code == 2 and "slice=fortnight" in result.output
    result = runner.invoke(app, ["run", "--since", "yesterday-ish"])
    assert result.exit_code == 2 and "YYYY-MM-DD" in result.output
    result = runner.invoke(app, ["run", "--crime-type", "smugling"])
    assert result.exit_code == 2 and "smuggling" in result.output and "'smugling'" in result.output
    result = runner.invoke(app, ["run", "--since", "2025-01-01", "--until", "2024-01-01"])
    assert result.exit_code == 2 and "--until" in result.output
    result = runner.invoke(app, ["export", "routes", "--format", "shp", "--out", str(tmp_path / "r.shp")])
    assert result.exit_code == 2 and "geojson" in result.output
