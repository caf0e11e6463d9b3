"""``rutas scenario``: the analysis end to end from the command line."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from scripts.cli import app


def test_scenario_prints_the_planted_routes_as_json() -> None:
    result = CliRunner().invoke(app, ["scenario", "--neighbour-km", "20", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["parameters"]["neighbour_km"] == 20.0 and payload["parameters"]["segment_km"] == 10.0
    categories = {r["category"] for r in payload["routes"]}
    assert {"intensifying_hot", "persistent_hot", "diminishing_hot", "sporadic_hot"} <= categories
    assert all(r["length_km"] > 0 and r["events"] > 0 for r in payload["routes"])


def test_scenario_refuses_a_bad_alpha() -> None:
    result = CliRunner().invoke(app, ["scenario", "--alpha", "1.5"])
    assert result.exit_code == 2
    assert "alpha=1.5" in result.output
