"""``rutas alerts create|list|deliveries`` and the demo stage, on the test run's database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from geodata.settings import Settings, get_settings
from scripts import cli_alerts
from scripts.cli import app


@pytest.fixture()
def cli_env(settings: Settings) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RUTAS_DATABASE_URL", str(settings.database_url))
        patch.setenv("RUTAS_WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


def test_create_list_and_refuse(cli_env: None, tmp_path: Path) -> None:
    fence = tmp_path / "fence.geojson"
    fence.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[-92.3, 14.8], [-92.1, 14.8], [-92.1, 15.0], [-92.3, 15.0],
                                            [-92.3, 14.8]]]}}))
    runner = CliRunner()
    name = f"cli {uuid.uuid4().hex[:6]}"
    created = runner.invoke(app, ["alerts", "create", "--name", name, "--trigger", "event_in_fence",
                                  "--trigger", "route_new", "--fence", str(fence), "--country", "MEX",
                                  "--webhook", "http://127.0.0.1:9/hook", "--json"])
    assert created.exit_code == 0, created.output
    answer = json.loads(created.output.strip().splitlines()[-1])
    assert answer["secret"].startswith("whsec_")
    listed = runner.invoke(app, ["alerts", "list", "--json"])
    row = next(r for r in json.loads(listed.output.strip().splitlines()[-1]) if r["id"] == answer["id"])
    assert (row["name"], row["country"], row["triggers"]) == (name, "MEX", ["event_in_fence", "route_new"])
    assert runner.invoke(app, ["alerts", "deliveries", str(answer["id"]), "--json"]).exit_code == 0
    refused = runner.invoke(app, ["alerts", "create", "--name", "x", "--trigger", "event_in_fence",
                                  "--fence", str(fence), "--webhook", "http://169.254.169.254/"])
    assert refused.exit_code == 2 and "169.254.169.254" in refused.output


def test_demo_stage_subscribes_the_busiest_border_sector(engine: Engine, settings: Settings) -> None:
    with engine.begin() as conn:
        layer = conn.execute(sa.text(
            "INSERT INTO reference_layers (kind, source, file_name, sha256) "
            "VALUES ('borders', 't', 't', :sha) RETURNING id"), {"sha": uuid.uuid4().hex}).scalar_one()
        segments = conn.execute(sa.text(
            "INSERT INTO border_segments (layer_id, country_a, country_b, geom) VALUES "
            "(:l, 'GTM', 'MEX', ST_GeomFromText('LINESTRING(-92.2 14.5, -92.1 15.0)', 4326)), "
            "(:l, 'GTM', 'MEX', ST_GeomFromText('LINESTRING(-91.5 16.0, -91.0 16.2)', 4326)) RETURNING id"),
            {"l": layer}).scalars().all()
        batch = conn.execute(sa.text(
            "INSERT INTO ingest_batches (file_name, sha256, kind, owner_country, source, loaded_by) "
            "VALUES ('demo.csv', 'x', 'incident', 'MEX', 'demo', 'tests') RETURNING id")).scalar_one()
        # three incidents by the first segment (one 60 km away, outside the 25 km fence), one by the second
        places = [(-92.16, 14.70, segments[0]), (-92.14, 14.80, segments[0]), (-92.70, 14.70, segments[0]),
                  (-91.2, 16.1, segments[1])]
        events = []
        for i, (lon, lat, seg) in enumerate(places):
            event = conn.execute(sa.text(
                "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, "
                "source, dedupe_key, batch_id, source_row, dead) "
                "VALUES ('incident', CAST(:d AS timestamptz), 'x', "
                "'day', 'MEX', ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'demo', :k, :b, :r, 2) RETURNING id"),
                {"d": f"2024-01-0{i + 1}", "x": lon, "y": lat, "k": uuid.uuid4().hex, "b": batch,
                 "r": i + 1}).scalar_one()
            conn.execute(sa.text(
                "INSERT INTO event_snaps (event_id, off_network, border_segment_id, border_distance_m) "
                "VALUES (:e, true, :s, 1000)"), {"e": event, "s": seg})
            events.append(event)
    busiest = cli_alerts.busiest_border_segment(settings)
    assert busiest is not None and busiest[1] >= 3
    # other tests' snapped records may make another segment the busiest: name ours
    cli_alerts.demo_stage(settings, segments[0])
    with engine.connect() as conn:
        fence_ref, alerted = conn.execute(sa.text(
            "SELECT s.fence_ref, (SELECT array_agg(a.object_key) FROM alerts a "
            "WHERE a.subscription_id = s.id) "
            "FROM subscriptions s WHERE s.name LIKE 'Demo:%' ORDER BY s.id DESC LIMIT 1")).one()
    assert fence_ref == {"border_segment_id": segments[0], "radius_m": cli_alerts.DEMO_RADIUS_M}
    # other tests' records may lie in the same fence: check the planted ones
    assert {f"event:{e}" for e in events[:2]} <= set(alerted) and f"event:{events[2]}" not in alerted


def test_update_rotate_delete_and_enable(cli_env: None, tmp_path: Path, engine: Engine) -> None:
    fence = tmp_path / "fence.geojson"
    fence.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[-92.3, 14.8], [-92.1, 14.8], [-92.1, 15.0], [-92.3, 15.0], [-92.3, 14.8]]]}))
    runner = CliRunner()
    created = runner.invoke(app, ["alerts", "create", "--name", "cli manage", "--trigger", "event_in_fence",
                                  "--fence", str(fence), "--country", "MEX", "--webhook",
                                  "http://127.0.0.1:9/hook", "--json"])
    sub = json.loads(created.output.strip().splitlines()[-1])
    sub_id = str(sub["id"])
    updated = runner.invoke(app, ["alerts", "update", sub_id, "--name", "cli renamed", "--kind",
                                  "interception", "--no-webhook", "--json"])
    assert updated.exit_code == 0, updated.output
    record = json.loads(updated.output.strip().splitlines()[-1])
    assert (record["name"], record["webhook_url"], record["filters"]) == ("cli renamed", None,
                                                                          {"kinds": ["interception"]})
    refused = runner.invoke(app, ["alerts", "update", sub_id, "--webhook", "http://10.1.1.1/hook"])
    assert refused.exit_code == 2 and "10.1.1.1" in refused.output
    rotated = runner.invoke(app, ["alerts", "rotate-secret", sub_id, "--json"])
    secret = json.loads(rotated.output.strip().splitlines()[-1])["secret"]
    assert secret.startswith("whsec_") and secret != sub["secret"]
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT secret FROM subscriptions WHERE id = :id"),
                              {"id": sub["id"]}).scalar_one()
    assert sub["secret"] not in stored
    assert runner.invoke(app, ["alerts", "enable", sub_id]).exit_code == 0  # enabled: nothing to resend
    assert runner.invoke(app, ["alerts", "delete", sub_id]).exit_code == 0
    listed = runner.invoke(app, ["alerts", "list", "--json"])
    row = next(r for r in json.loads(listed.output.strip().splitlines()[-1]) if r["id"] == sub["id"])
    assert row["status"] == "deleted"
    again = runner.invoke(app, ["alerts", "enable", sub_id])
    assert again.exit_code == 2 and "deleted" in again.output
