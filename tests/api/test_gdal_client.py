"""A real client: GDAL's OGC API Features driver (``ogrinfo OAPIF:``) against a server the test starts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.api.conftest import Products, Record, expected_detail


def _ogrinfo(args: list[str], key: str, tmp_path: Path) -> str:
    ogrinfo = shutil.which("ogrinfo")
    if ogrinfo is None:
        pytest.fail("ogrinfo is missing: install Debian's gdal-bin (scripts/setup.sh does).")
    header = tmp_path / "headers.txt"
    header.write_text(f"Authorization: Bearer {key}\n")
    env = {**os.environ, "GDAL_HTTP_HEADER_FILE": str(header), "CPL_DEBUG": "OFF"}
    done = subprocess.run([ogrinfo, "-ro", *args], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ogrinfo_lists_collections_and_reads_filtered_items(
    live_server: str,
    keys: dict[tuple[str, str | None], str],
    world: list[Record],
    tmp_path: Path,
    engine: Engine,
) -> None:
    key = keys[("prosecutor", "COL")]
    listing = _ogrinfo(["-so", f"OAPIF:{live_server}"], key, tmp_path)
    assert "events" in listing and "event-cells" in listing

    everything = _ogrinfo(["-al", "-q", f"OAPIF:{live_server}/collections/events"], key, tmp_path)
    assert everything.count("OGRFeature(") == sum(expected_detail("prosecutor", "COL", r) for r in world)

    filtered = _ogrinfo(
        ["-al", "-q", "-where", "kind = 'interception'", f"OAPIF:{live_server}/collections/events"],
        key,
        tmp_path,
    )
    want = [r for r in world if expected_detail("prosecutor", "COL", r) and r.kind == "interception"]
    assert filtered.count("OGRFeature(") == len(want) > 0
    assert "victim_identification" not in filtered
    with engine.begin() as conn:
        filters = (
            conn.execute(sa.text("SELECT filter FROM audit_log ORDER BY seq DESC LIMIT 20")).scalars().all()
        )
    # GDAL read the API definition and sent the filter to the server as CQL text.
    assert any(f.get("filter") == "kind = 'interception'" for f in filters), filters

    analyst = _ogrinfo(["-so", f"OAPIF:{live_server}"], keys[("analyst", None)], tmp_path)
    assert "event-cells" in analyst and "1: events" not in analyst


def test_ogrinfo_reads_the_overlap_products(
    live_server: str, keys: dict[tuple[str, str | None], str], products: Products, tmp_path: Path
) -> None:
    """GDAL lists the products and reads the latest run's rows (crossing and sector candidates as two
    layers, each of one geometry type), zones only within the corridors' scope."""
    key = keys[("prosecutor", "PER")]
    listing = _ogrinfo(["-so", f"OAPIF:{live_server}"], key, tmp_path)
    assert "convergence-zones" in listing and "joint-operations" in listing
    joint = _ogrinfo(["-al", "-q", f"OAPIF:{live_server}/collections/joint-operations"], key, tmp_path)
    latest = [j for j, (run, _, _) in products.joint.items() if run == products.latest_run]
    assert joint.count("OGRFeature(") == len(latest) > 0
    # the border sectors are their own layer, of one geometry type (QGIS and OGR's writers need one)
    assert "joint-sectors" in listing
    sectors = _ogrinfo(["-al", "-q", f"OAPIF:{live_server}/collections/joint-sectors"], key, tmp_path)
    latest_sectors = [s for s, (run, _, _) in products.sectors.items() if run == products.latest_run]
    assert sectors.count("OGRFeature(") == len(latest_sectors) == sectors.count("MULTILINESTRING") > 0
    assert sectors.count("candidate_type (String) = border_sector") == len(latest_sectors)
    summary = _ogrinfo(["-so", "-al", f"OAPIF:{live_server}/collections/joint-sectors"], key, tmp_path)
    assert "Geometry: Multi Line String" in summary, summary
    filtered = _ogrinfo(
        ["-al", "-q", "-where", "score >= 0", f"OAPIF:{live_server}/collections/joint-sectors"], key, tmp_path
    )
    # the second sector holds a count under k: no score, so the filter does not match it
    assert filtered.count("OGRFeature(") == len(latest_sectors) - 1
    zones = _ogrinfo(["-al", "-q", f"OAPIF:{live_server}/collections/convergence-zones"], key, tmp_path)
    # Peru reads its own corridors only: the latest run's zone made from Peru's corridor alone
    shown = [z for z, (run, owners) in products.zones.items()
             if run == products.latest_run and owners == ["PER"]]
    assert zones.count("OGRFeature(") == len(shown) == 1
