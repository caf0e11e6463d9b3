"""Benchmark: Rutas (API key + row-level security + audit) against TiPg on the same 1,000,000 events.

Run: ``.venv/bin/python scripts/bench_api.py [--events 1000000] [--seconds 15] [--clients 32]``.

It builds (once) a database ``rutas_bench`` on the configured server with ``--events`` synthetic
events over eight Latin American countries, installs TiPg in its own virtual environment
(``.rutas/bench-tipg``, so its pins never touch the project's), starts both servers, and drives
each with ``wrk`` (Debian) at ``--clients`` concurrent connections: items with limit 10 and 100
inside a bbox near the Colombia-Venezuela border, and vector tiles at zoom 6 and 2. It prints
requests per second and p99 latency side by side, and the ratio Rutas / TiPg. Never run by the
tests.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from api.auth import create_key, set_agreement  # noqa: E402
from geodata import db  # noqa: E402
from geodata.settings import Settings, get_settings  # noqa: E402

#: (ISO3, centre lon, centre lat, width deg, height deg) of the synthetic events.
COUNTRIES = [
    ("COL", -74.0, 4.0, 8.0, 10.0),
    ("VEN", -66.0, 7.0, 10.0, 8.0),
    ("PER", -75.0, -9.0, 8.0, 12.0),
    ("MEX", -102.0, 23.0, 20.0, 12.0),
    ("GTM", -90.3, 15.5, 3.0, 3.0),
    ("ECU", -78.5, -1.5, 4.0, 4.0),
    ("BRA", -52.0, -10.0, 20.0, 20.0),
    ("CHL", -71.0, -30.0, 3.0, 30.0),
]
BBOX = "-73.5,6.0,-71.0,8.5"
POINT = (-72.5, 7.5)
TIPG_VENV = CHECKOUT / ".rutas" / "bench-tipg"


def _tile(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    return int((lon + 180.0) / 360.0 * n), int(
        (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(settings: Settings, events: int) -> Settings:
    """The bench database's settings, with ``events`` synthetic events loaded (kept between runs)."""
    url = (
        make_url(db.database_url(settings)).set(database="rutas_bench").render_as_string(hide_password=False)
    )
    bench = settings.model_copy(update={"database_url": url, "api_rate_per_minute": 100_000_000})
    db.upgrade(bench)
    engine = db.get_engine(bench)
    with engine.begin() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one()
    if have != events:
        print(f"loading {events:,} synthetic events (once)...", flush=True)
        started = time.perf_counter()
        isos, lons, lats, widths, heights = zip(*COUNTRIES, strict=True)
        with engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE events, ingest_batches RESTART IDENTITY CASCADE"))
            batch = conn.execute(
                sa.text(
                    "INSERT INTO ingest_batches (file_name, sha256, kind, owner_country, source, loaded_by) "
                    "VALUES ('bench', 'bench', 'incident', NULL, 'bench', 'bench') RETURNING id"
                )
            ).scalar_one()
            conn.execute(
                sa.text(
                    "INSERT INTO events (kind, crime_type, occurred_at, occurred_text, date_precision, "
                    "owner_country, "
                    "location_country, geom, source, dedupe_key, batch_id, source_row, dead) "
                    "SELECT (ARRAY['incident', 'interception', 'victim_identification'])[1 + i % 3], "
                    "(ARRAY['trafficking', 'smuggling', 'both', 'unknown'])[1 + i % 4], "
                    "timestamptz '2014-01-01' + random() * interval '3650 days', 'bench', 'day', "
                    "(CAST(:isos AS text[]))[1 + i % 8], (CAST(:isos AS text[]))[1 + i % 8], "
                    "ST_SetSRID(ST_MakePoint((CAST(:lons AS float8[]))[1 + i % 8] "
                    "+ (random() - 0.5) * (CAST(:ws AS float8[]))[1 + i % 8], "
                    "(CAST(:lats AS float8[]))[1 + i % 8] "
                    "+ (random() - 0.5) * (CAST(:hs AS float8[]))[1 + i % 8]), 4326), "
                    "'bench', i::text, :batch, i, (random() * 3)::int FROM generate_series(1, :n) AS i"
                ),
                {
                    "isos": list(isos),
                    "lons": list(lons),
                    "lats": list(lats),
                    "ws": list(widths),
                    "hs": list(heights),
                    "batch": batch,
                    "n": events,
                },
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE events"))
            conn.execute(sa.text("VACUUM ANALYZE event_cell_counts"))
        print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)
    return bench


def _wait(
    url: str, headers: dict[str, str], process: subprocess.Popen[bytes], timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server for {url} did not answer within {timeout_s} s")


def start_rutas(bench: Settings, port: int) -> subprocess.Popen[bytes]:
    """Rutas in one uvicorn process (as ``rutas serve``)."""
    env = {
        **os.environ,
        "RUTAS_DATABASE_URL": str(bench.database_url),
        "RUTAS_API_RATE_PER_MINUTE": "100000000",
    }
    code = (
        "from geodata.settings import get_settings; from scripts.cli_api import serve; "
        f"serve(get_settings(), '127.0.0.1', {port})"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=CHECKOUT, env=env)


def start_tipg(bench: Settings, port: int) -> subprocess.Popen[bytes]:
    """TiPg in one uvicorn process, in its own virtual environment, on the same database."""
    if not (TIPG_VENV / "bin" / "uvicorn").exists():
        subprocess.run([sys.executable, "-m", "venv", str(TIPG_VENV)], check=True)
        subprocess.run([str(TIPG_VENV / "bin" / "pip"), "install", "-q", "tipg", "uvicorn"], check=True)
    url = make_url(str(bench.database_url))
    socket_dir = url.query.get("host")
    # TiPg's settings demand a host name in the URL; a Unix socket folder (the embedded cluster)
    # is handed to asyncpg directly instead.
    dsn = url.set(drivername="postgresql", host=None if socket_dir else url.host, query={})
    if socket_dir:
        dsn = dsn.set(host="localhost")
    env = {
        **os.environ,
        "DATABASE_URL": dsn.render_as_string(hide_password=False),
        "TIPG_DB_SCHEMAS": '["public"]',
        "TIPG_DB_TABLES": '["public.events"]',
    }
    code = (
        "import functools, asyncpg, uvicorn\n"
        f"if {socket_dir!r}:\n"
        f"    asyncpg.create_pool = functools.partial(asyncpg.create_pool, host={socket_dir!r})\n"
        "from tipg.main import app\n"
        f"uvicorn.run(app, host='127.0.0.1', port={port}, log_level='warning', access_log=False)\n"
    )
    return subprocess.Popen([str(TIPG_VENV / "bin" / "python"), "-c", code], env=env)


def wrk(url: str, headers: dict[str, str], clients: int, seconds: int) -> tuple[float, float, int]:
    """Requests per second, p99 latency (ms) and non-2xx count of ``wrk`` on ``url``."""
    args = ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "--timeout", "30s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    subprocess.run([*args[:3], "-d2s", *args[4:], url], capture_output=True, check=True)  # warm-up
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert p99 is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, float(p99.group(1)) * scale, int(bad.group(1)) if bad else 0


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=32)
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    bench = prepare(get_settings(), options.events)
    engine = db.get_engine(bench)
    set_agreement(engine, "VEN", "COL", "detail")
    set_agreement(engine, "PER", "COL", "aggregate")
    key = create_key(engine, "prosecutor", "COL", "bench")
    rutas_port, tipg_port = _free_port(), _free_port()
    rutas, tipg = start_rutas(bench, rutas_port), start_tipg(bench, tipg_port)
    try:
        auth = {"Authorization": f"Bearer {key}"}
        rutas_base, tipg_base = f"http://127.0.0.1:{rutas_port}", f"http://127.0.0.1:{tipg_port}"
        _wait(f"{rutas_base}/collections", auth, rutas)
        _wait(f"{tipg_base}/collections", {}, tipg)
        z6, z2 = _tile(*POINT, 6), _tile(*POINT, 2)
        cases = [
            (
                "items limit=10 bbox",
                f"/collections/events/items?limit=10&bbox={BBOX}",
                f"/collections/public.events/items?limit=10&bbox={BBOX}",
            ),
            (
                "items limit=100 bbox",
                f"/collections/events/items?limit=100&bbox={BBOX}",
                f"/collections/public.events/items?limit=100&bbox={BBOX}",
            ),
            (
                "tile z6",
                f"/collections/events/tiles/WebMercatorQuad/6/{z6[0]}/{z6[1]}",
                f"/collections/public.events/tiles/WebMercatorQuad/6/{z6[0]}/{z6[1]}",
            ),
            (
                "tile z2",
                f"/collections/events/tiles/WebMercatorQuad/2/{z2[0]}/{z2[1]}",
                f"/collections/public.events/tiles/WebMercatorQuad/2/{z2[0]}/{z2[1]}",
            ),
        ]
        print(
            f"\n{options.events:,} events, {options.clients} concurrent clients, {options.seconds} s each; "
            "Rutas with API key, row-level security (prosecutor COL) and audit; TiPg without auth\n"
        )
        print(f"{'case':<22}{'Rutas req/s':>12}{'p99 ms':>9}{'TiPg req/s':>12}{'p99 ms':>9}{'ratio':>8}")
        for name, rutas_path, tipg_path in cases:
            r = wrk(rutas_base + rutas_path, auth, options.clients, options.seconds)
            t = wrk(tipg_base + tipg_path, {}, options.clients, options.seconds)
            flag = "" if r[2] == 0 and t[2] == 0 else f"  (non-2xx: Rutas {r[2]}, TiPg {t[2]})"
            print(
                f"{name:<22}{r[0]:>12.1f}{r[1]:>9.1f}{t[0]:>12.1f}{t[1]:>9.1f}{r[0] / t[0]:>7.2f}x{flag}",
                flush=True,
            )
    finally:
        for process in (rutas, tipg):
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
