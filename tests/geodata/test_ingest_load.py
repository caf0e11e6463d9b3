"""Loading: all or nothing when the connection or the process dies, the CLI, bounded memory.

These tests run ``rutas ingest`` in a subprocess against the test run's database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.errors import RutasError
from geodata.ingest import ingest_file
from geodata.settings import Settings
from scripts.cli_ingest import IOM_SOURCE, demo_stage
from tests.geodata.ingest_helpers import TAPACHULA, count, unique_source, write

CHECKOUT = Path(__file__).resolve().parents[2]
RUTAS = [sys.executable, "-m", "scripts.cli"]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ, RUTAS_DATABASE_URL=str(settings.database_url), **extra)
    env.pop("RUTAS_INGEST_CHUNK_ROWS", None)
    env.update(extra)
    return env


def _records_csv(path: Path, rows: int, note_chars: int = 0, seed: int = 7) -> Path:
    """A CSV of ``rows`` valid Mexican incidents (distinct ids), optionally with a long note."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "id": np.char.add("R", np.arange(rows).astype(str)),
        "fecha": pd.to_datetime("2018-01-01") + pd.to_timedelta(rng.integers(0, 2000, rows), unit="D"),
        "latitud": np.round(TAPACHULA[0] + rng.uniform(-0.05, 0.05, rows), 5),
        "longitud": np.round(TAPACHULA[1] + rng.uniform(-0.05, 0.05, rows), 5),
        "muertos": rng.integers(0, 4, rows),
    })
    if note_chars:
        frame["nota"] = "x" * note_chars
    frame["fecha"] = frame["fecha"].dt.strftime("%Y-%m-%d")
    frame.to_csv(path, index=False)
    return path


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _copy_backend(engine: Engine) -> int | None:
    with engine.connect() as conn:
        pid = conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'rutas ingest' "
            "AND (query LIKE 'COPY events%' OR query LIKE 'COPY \"events_batch_%')")).scalar()
    return None if pid is None else int(pid)


def _start_ingest(settings: Settings, path: Path, source: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*RUTAS, "ingest", str(path), "--kind", "incident", "--country", "MEX", "--source", source, "--json"],
        cwd=CHECKOUT, env=_env(settings, RUTAS_INGEST_CHUNK_ROWS="10000"), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def test_connection_killed_mid_copy_leaves_nothing(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    source = unique_source("killed-conn")
    path = _records_csv(tmp_path / "big.csv", 300_000)
    process = _start_ingest(settings, path, source)
    try:
        _wait_for(lambda: _copy_backend(engine) is not None, 60, "the COPY to start")
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": _copy_backend(engine)})
        stdout, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 2
    record = json.loads(stdout.splitlines()[-1])
    assert record["error"]["code"] == "db_lost" and "nothing" in record["error"]["message"]
    assert count(engine, "events", source) == 0 and count(engine, "ingest_batches", source) == 0


def test_process_killed_mid_copy_leaves_nothing(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("killed-proc")
    path = _records_csv(tmp_path / "big.csv", 300_000)
    process = _start_ingest(settings, path, source)
    try:
        _wait_for(lambda: _copy_backend(engine) is not None, 60, "the COPY to start")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        process.kill()
    _wait_for(lambda: _copy_backend(engine) is None, 30, "the server to end the dead client's session")
    assert count(engine, "events", source) == 0 and count(engine, "ingest_batches", source) == 0


def test_cli_json_reports_each_batch(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("cli")
    lat, lon = TAPACHULA
    good = write(tmp_path / "good.csv",
                 f"fecha,latitud,longitud\n2021-01-01,{lat},{lon}\n2021-13-01,{lat},{lon}\n")
    empty = write(tmp_path / "empty.csv", "")
    result = subprocess.run(
        [*RUTAS, "ingest", str(good), str(empty), "--kind", "incident", "--country", "mex", "--source",
                               source,
         "--json"], cwd=CHECKOUT, env=_env(settings), text=True, capture_output=True, timeout=120)
    assert result.returncode == 2  # one of the files could not be read
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert (first["file"], first["accepted"], first["rejected"], first["duplicates"]) == ("good.csv", 1, 1, 0)
    [problem] = first["errors"]
    assert (problem["row"], problem["field"], problem["value"]) == (2, "fecha", "2021-13-01")
    assert problem["reason"] and problem["reason_es"]
    assert second["file"] == "empty.csv" and second["error"]["code"] == "empty_file"
    assert count(engine, "events", source) == 1


def _peak_rss_mb(settings: Settings, path: Path, source: str, tmp_path: Path) -> tuple[float, dict[str,
                 object]]:
    """Peak resident memory (MB) of ``rutas ingest`` on ``path``, and its JSON report."""
    probe = tmp_path / f"rss-{path.stem}.txt"
    code = (
        "import resource, sys\n"
        "from scripts.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:], standalone_mode=False)\n"
        "finally:\n"
        f"    open({str(probe)!r}, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "ingest", str(path), "--kind", "incident", "--country", "MEX",
         "--source", source, "--json"],
        cwd=CHECKOUT, env=_env(settings, RUTAS_INGEST_CHUNK_ROWS="5000"), text=True, capture_output=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return int(probe.read_text()) / 1024, json.loads(result.stdout.splitlines()[-1])


def test_200_mb_file_is_streamed_in_bounded_memory(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    source = unique_source("huge")
    small = _records_csv(tmp_path / "small.csv", 100, note_chars=900)
    huge = _records_csv(tmp_path / "huge.csv", 205_000, note_chars=950, seed=8)
    assert huge.stat().st_size > 200_000_000
    baseline_mb, _ = _peak_rss_mb(settings, small, source + "-small", tmp_path)
    peak_mb, report = _peak_rss_mb(settings, huge, source, tmp_path)
    assert report["rows_read"] == report["accepted"] == 205_000
    # Streaming in chunks: the 200 MB file costs far less memory than its size.
    assert peak_mb - baseline_mb < 100, (baseline_mb, peak_mb)


def test_demo_stage_accounts_for_every_iom_row(settings: Settings, engine: Engine,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    demo_stage(settings)
    printed = capsys.readouterr()
    text = " ".join((printed.out + printed.err).split())
    assert "5668 = " in text and "all accounted for" in text
    with engine.connect() as conn:
        fixed = conn.execute(sa.text(
            "SELECT count(*) FROM events WHERE source = :s AND coordinate_fix LIKE '%minus sign%' "
            "AND location_country = 'USA' AND ST_X(geom) < 0"), {"s": IOM_SOURCE}).scalar_one()
    assert fixed >= 4  # the four US rows whose longitude lost its minus sign, repaired


def test_failure_in_on_loaded_rolls_the_batch_back(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    # on_loaded runs inside the batch's transaction (alerts hook in there): if it fails, nothing stays.
    source = unique_source("hook")
    path = _records_csv(tmp_path / "few.csv", 20)

    def broken_hook(conn: sa.Connection, batch_id: int) -> None:
        conn.execute(sa.text("SELECT * FROM no_such_table_for_alerts"))

    with pytest.raises(RutasError) as error:
        ingest_file(engine, path, settings=settings, kind="incident", owner_country="MEX", source=source,
                    on_loaded=broken_hook)
    assert error.value.code == "db_error" and "no_such_table" not in str(error.value)
    assert count(engine, "events", source) == 0 and count(engine, "ingest_batches", source) == 0
