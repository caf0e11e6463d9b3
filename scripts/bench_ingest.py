"""Benchmark: load N rows of CSV with ``rutas ingest`` and with the tools a user would otherwise use.

Compares, on the same file and the same PostGIS server (a scratch database created and dropped
here):

* ``rutas ingest``: read, validate, dedupe and load, end to end (CLI in a subprocess);
* raw ``COPY`` of the same rows, already in the table's format, into the same ``events`` table
  (its shared partition: every index and trigger kept up to date row by row);
* the same raw ``COPY`` by the path ``rutas ingest`` takes for a large file: into a new partition,
  then ``rutas_events_attach`` (checks, cell counts, indexes built in bulk): the floor of that path
  (no reading, no validation);
* ``GeoDataFrame.to_postgis`` after ``pandas.read_csv`` (what a geopandas user writes);
* ``ogr2ogr`` from the CSV into PostGIS (GDAL's loader, COPY mode);
* like against like: ``to_postgis`` and ``ogr2ogr`` again, appending into an empty table with as
  many indexes of the same kinds as ``events`` (identity primary key, a unique text key as the
  dedupe index, GiST on the points, b-trees on the date, on a small integer as ``batch_id`` and on
  (text, id) as ``(owner_country, id)``); ``events`` also has the batch-reference triggers,
  checks, row-level security and the cell-count triggers, which these tables do not;
* with ``--anatomy``, raw ``COPY`` into ``events`` again with one index, constraint or trigger
  dropped (or changed back to what migration 0009 replaced) at a time, inside a rolled-back
  transaction, to show where the time goes; ``--anatomy-only`` runs just that;
* ``batch_id = X`` lookups after the load, before and after ``ANALYZE``.

Each tool runs in its own process so that its peak memory (max RSS) is its own; beside wall-clock
seconds the table gives the CPU seconds of the tool's processes and of its server backends,
steadier than wall-clock time on a shared machine. Each tool runs ``--repeat`` times (3 unless
told), from the same starting point each time (its tables emptied or dropped first), and the
table shows its median run and the fastest and slowest times: a first run pays for a cold
server and a freshly written file, which the others do not. Run::

    .venv/bin/python scripts/bench_ingest.py [--rows 1000000] [--repeat 3] [--skip-slow] [--anatomy]
        [--anatomy-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from geodata import cluster, db
from geodata.settings import CHECKOUT_DIR, Settings, get_settings

#: Places (lat, lon) the synthetic incidents scatter around (within ~0.3 degrees).
PLACES = np.array([(14.9054, -92.2630), (19.4326, -99.1332), (31.6904, -106.4245), (8.4500, -77.3000),
                   (15.5000, -88.0300), (25.6866, -100.3161), (32.5149, -117.0382), (9.0000, -79.5000)])

# Peak memory is the process's own VmHWM (getrusage's ru_maxrss would include the forking
# parent's memory, which Linux carries across exec).
_HWM = "int(next(l for l in open('/proc/%s/status') if l.startswith('VmHWM')).split()[1])"
_MEASURE = (
    "import sys, time, runpy\n"
    "start = time.perf_counter()\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') else "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    "except SystemExit as exit_:\n"
    "    if exit_.code not in (0, None): raise\n"
    "finally:\n"
    f"    sys.stderr.write('BENCH %.3f %d\\n' % (time.perf_counter() - start, {_HWM % 'self'}))\n"
)


def make_csv(path: Path, rows: int, seed: int = 1) -> None:
    """Write ``rows`` synthetic incidents (Spanish headers, ISO dates, distinct ids)."""
    rng = np.random.default_rng(seed)
    place = PLACES[rng.integers(0, len(PLACES), rows)]
    frame = pd.DataFrame({
        "id": np.char.add("B", np.arange(rows).astype(str)),
        "fecha": (np.datetime64("2015-01-01") + rng.integers(0, 3500, rows).astype("timedelta64[D]")
                  ).astype(str),
        "latitud": np.round(place[:, 0] + rng.uniform(-0.3, 0.3, rows), 5),
        "longitud": np.round(place[:, 1] + rng.uniform(-0.3, 0.3, rows), 5),
        "muertos": rng.integers(0, 4, rows),
        "nota": rng.choice(["cruce", "embarcación", "camión", "a pie"], rows),
    })
    frame.to_csv(path, index=False)


def make_copy_input(csv_path: Path, out: Path, batch_id: int, source: str = "raw-copy") -> None:
    """The same rows already in the ``events`` table's COPY format (CSV), for the raw COPY floor."""
    frame = pd.read_csv(csv_path, dtype=str)
    pd.DataFrame({
        "kind": "incident",
        "occurred_at": frame["fecha"] + " 00:00:00+00",
        "occurred_text": frame["fecha"],
        "date_precision": "day",
        "owner_country": "MEX",
        "geom": "SRID=4326;POINT(" + frame["longitud"] + " " + frame["latitud"] + ")",
        "dead": frame["muertos"],
        "attributes": '{"nota": "' + frame["nota"] + '"}',
        "source": source,
        "source_record_id": frame["id"],
        "dedupe_key": "id:" + frame["id"],
        "batch_id": str(batch_id),
        "source_row": np.arange(1, len(frame) + 1).astype(str),
    }).to_csv(out, index=False, header=False)


RAW_COPY_SCRIPT = """
import sys, psycopg
url, path, table = sys.argv[1], sys.argv[2], sys.argv[3]
with psycopg.connect(url) as conn, conn.cursor() as cur, open(path, 'rb') as handle:
    with cur.copy(f"COPY {table} (kind, occurred_at, occurred_text, date_precision, owner_country, geom, "
                  "dead, "
                  "attributes, source, source_record_id, dedupe_key, batch_id, source_row) "
                  "FROM STDIN (FORMAT csv)") as copy:
        while block := handle.read(8 << 20):
            copy.write(block)
"""

#: The floor of rutas' bulk path: the same COPY into a new partition, then the attach (migration 0011).
RAW_BULK_SCRIPT = """
import sys, psycopg
url, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
with psycopg.connect(url) as conn, conn.cursor() as cur, open(path, 'rb') as handle:
    table = cur.execute("SELECT CAST(rutas_events_part_create(%s) AS text)", (batch,)).fetchone()[0]
    with cur.copy(f'COPY "{table}" (kind, occurred_at, occurred_text, date_precision, owner_country, '
                  "geom, dead, attributes, source, source_record_id, dedupe_key, batch_id, source_row) "
                  "FROM STDIN (FORMAT csv, FREEZE)") as copy:
        while block := handle.read(8 << 20):
            copy.write(block)
    cur.execute("SELECT rutas_events_attach(%s)", (batch,))
"""

CHECK_ONLY_SCRIPT = """
import sys
from pathlib import Path
from geodata.countries import load_countries
from geodata.ingest.columns import Mapping, recognise
from geodata.ingest.readers import open_source, scan_file
from geodata.ingest.validate import Context, check_chunk
from geodata.settings import get_settings
settings, path = get_settings(), Path(sys.argv[1])
sha256, encoding = scan_file(path)
source = open_source(path, encoding=encoding, chunk_rows=settings.ingest_chunk_rows, mapping=Mapping())
columns = recognise(source.headers, Mapping(), file=path.name, has_geometry=False)
ctx = Context(file=path.name, kind="incident", owner_country="MEX", source="bench", columns=columns,
              countries=load_countries(settings), fix_coordinates=False, earliest_year=1990,
              max_km_outside_country=1000.0, border_tolerance_km=30.0)
rows = sum(len(check_chunk(chunk, ctx).rows) for chunk in source.chunks)
print(rows)
"""

TO_POSTGIS_SCRIPT = """
import sys, geopandas as gpd, pandas as pd, sqlalchemy as sa
url, path, table, mode = sys.argv[1:5]
frame = pd.read_csv(path)
points = gpd.GeoDataFrame(frame, geometry=gpd.points_from_xy(frame.longitud, frame.latitud), crs=4326)
points.to_postgis(table, sa.create_engine(url), if_exists=mode, chunksize=100_000)
"""


def indexed_like(conn: sa.Connection, plain: str, table: str, geom: str, key: str) -> None:
    """Create ``table``, empty, with the columns of ``plain`` and indexes of the same kinds as ``events``."""
    conn.execute(sa.text(f"CREATE TABLE {table} (LIKE {plain} INCLUDING DEFAULTS INCLUDING IDENTITY)"))
    if key == "rowid":
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN rowid bigint GENERATED ALWAYS AS IDENTITY"))
    conn.execute(sa.text(f"ALTER TABLE {table} ADD PRIMARY KEY ({key})"))
    for n, (using, columns, unique) in enumerate([
        ("btree", "id", True),  # the dedupe key
        ("gist", geom, False),
        ("btree", "fecha", False),  # occurred_at
        ("btree", "muertos", False),  # batch_id: few distinct values
        ("btree", f"nota, {key}", False),  # (owner_country, id)
    ]):
        kind = "UNIQUE INDEX" if unique else "INDEX"
        conn.execute(sa.text(f"CREATE {kind} {table}_{n} ON {table} USING {using} ({columns})"))


#: One guarantee of ``events`` dropped at a time for ``--anatomy`` (in a rolled-back transaction).
ANATOMY: dict[str, list[str]] = {
    "as migrated": [],
    "w/o cell-count triggers": ["ALTER TABLE events DISABLE TRIGGER events_cells_insert"],
    "w/o GiST on geom": ["DROP INDEX events_geom_idx"],
    "w/o unique dedupe index": ["ALTER TABLE events DROP CONSTRAINT events_dedupe"],
    "w/o occurred_at b-tree": ["DROP INDEX events_occurred_idx"],
    "w/o batch_id b-tree": ["DROP INDEX events_batch_idx"],
    "batch_id BRIN, not b-tree": ["DROP INDEX events_batch_idx", "CREATE INDEX events_batch_idx ON events "
                                  "USING brin (batch_id) WITH (pages_per_range = 32)"],
    "w/o (owner, id) b-tree": ["DROP INDEX events_owner_idx"],
    "w/o batch check triggers": ["ALTER TABLE events DISABLE TRIGGER events_batch_insert"],
    # What 0009 replaced: the per-row foreign key, strcoll comparisons of dedupe keys.
    "as before 0009": [
        "ALTER TABLE events DISABLE TRIGGER events_batch_insert",
        "ALTER TABLE events ADD CONSTRAINT events_batch_id_fkey FOREIGN KEY (batch_id) "
        "REFERENCES ingest_batches (id)",
        'ALTER TABLE events ALTER COLUMN dedupe_key TYPE text COLLATE "default"'],
    "dedupe_key in db collation": ['ALTER TABLE events ALTER COLUMN dedupe_key TYPE text COLLATE "default"'],
    "w/o row-level security": ["ALTER TABLE events NO FORCE ROW LEVEL SECURITY",
                               "ALTER TABLE events DISABLE ROW LEVEL SECURITY"],
}

ANATOMY_SCRIPT = """
import sys, time, psycopg
url, path = sys.argv[1], sys.argv[2]
statements = sys.argv[3:]
data = open(path, 'rb').read()
with psycopg.connect(url, autocommit=True) as conn:
    conn.execute("VACUUM events")
    with conn.transaction(force_rollback=True):
        for statement in statements:
            conn.execute(statement)
        start = time.perf_counter()
        with conn.cursor().copy("COPY events (kind, occurred_at, occurred_text, date_precision, "
                                "owner_country, geom, dead, attributes, source, source_record_id, "
                                "dedupe_key, batch_id, source_row) FROM STDIN (FORMAT csv)") as copy:
            for at in range(0, len(data), 8 << 20):
                copy.write(data[at:at + (8 << 20)])
        print(time.perf_counter() - start)
"""


_MEASURE_BINARY = (
    "import subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "peak = 0\n"
    "while child.poll() is None:\n"
    "    try:\n"
    "        peak = max(peak, int(next(line for line in open('/proc/%d/status' % child.pid)\n"
    "                                  if line.startswith('VmHWM')).split()[1]))\n"
    "    except (OSError, StopIteration):\n"
    "        pass\n"
    "    time.sleep(0.05)\n"
    "sys.stderr.write('BENCH %.3f %d\\n' % (time.perf_counter() - start, peak))\n"
    "sys.exit(child.returncode)\n"
)


def server_cpu_seconds(postmaster_pid: int | None) -> float:
    """CPU seconds (user + system) of the server's ended backends so far; NaN when unknown.

    The postmaster reaps every backend, so its children's CPU (``cutime + cstime``) grows by what
    a tool's connections used once they close. On a machine shared with other work, CPU seconds
    vary far less than wall-clock seconds.
    """
    if postmaster_pid is None:
        return float("nan")
    fields = Path(f"/proc/{postmaster_pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _postmaster_pid(settings: Settings) -> int | None:
    """Process id of the embedded server (None for a server elsewhere)."""
    if not settings.embedded:
        return None
    pid_file = cluster.embedded_cluster(settings).data_dir / "postmaster.pid"
    return int(pid_file.read_text().split()[0]) if pid_file.exists() else None


def batch_lookups(engine: sa.Engine, big_batch: int, rows: int) -> list[tuple[str, float]]:
    """Milliseconds of ``batch_id = X`` (the alerts' and the API's filter) after a bulk load.

    Looked up right after the big load, before autovacuum has analysed the table (as in the
    load's own transaction), and again after ``ANALYZE``, for the big batch and for a batch of
    10 events loaded after it.
    """
    with engine.begin() as conn:
        small = int(conn.execute(sa.text(
            "INSERT INTO ingest_batches (file_name, sha256, kind, source, loaded_by) "
            "VALUES ('small', '', 'incident', 'bench-small', 'bench') RETURNING id")).scalar_one())
        conn.execute(sa.text(
            "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, "
            "source, dedupe_key, batch_id, source_row) SELECT 'incident', DATE '2024-01-01', '2024-01-01', "
            "'day', 'MEX', ST_SetSRID(ST_MakePoint(-99.1, 19.4), 4326), 'bench-small', 'k' || n, :b, n "
            "FROM generate_series(1, 10) AS n"), {"b": small})
    timings: list[tuple[str, float]] = []
    for when in ("before ANALYZE", "after ANALYZE"):
        with engine.begin() as conn:
            if when == "after ANALYZE":
                conn.execute(sa.text("ANALYZE events"))
            for label, batch in ((f"{rows:,}-row batch", big_batch),
                                 ("10-row batch", small)):
                start = time.perf_counter()
                conn.execute(sa.text("SELECT count(*) FROM events WHERE batch_id = :b"), {"b": batch})
                timings.append((f"{label}, {when}", (time.perf_counter() - start) * 1000))
    return timings


def run(label: str, argv: list[str], env: dict[str, str], postmaster_pid: int | None = None
        ) -> dict[str, float | str]:
    """Run a python module/script (``["python", ...]``) or a binary.

    Returns seconds, peak RSS (MB), the client's CPU seconds (the process and what it waited
    for) and the server's CPU seconds (the tool's backends, see :func:`server_cpu_seconds`).
    """
    if argv[0] == "python":
        command = [sys.executable, "-c", _MEASURE, *argv[1:]]
    else:
        command = [sys.executable, "-c", _MEASURE_BINARY, *argv]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_before = server_cpu_seconds(postmaster_pid)
    result = subprocess.run(command, cwd=CHECKOUT_DIR, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{label} failed:\n{result.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, rss_kb = result.stderr.strip().splitlines()[-1].split()[1:]
    return {"tool": label, "seconds": float(seconds), "rss_mb": int(rss_kb) / 1024, "stdout": result.stdout,
            "client_cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "server_cpu": server_cpu_seconds(postmaster_pid) - server_before}


def median_run(label: str, argv: list[str], env: dict[str, str], postmaster_pid: int | None,
               repeat: int, reset: Callable[[], None] | None = None) -> dict[str, float | str]:
    """:func:`run` ``repeat`` times, ``reset`` before each; the median run, with the fastest and slowest."""
    runs = []
    for _ in range(repeat):
        if reset is not None:
            reset()
        runs.append(run(label, argv, env, postmaster_pid))
    runs.sort(key=lambda r: float(r["seconds"]))
    fastest, slowest = float(runs[0]["seconds"]), float(runs[-1]["seconds"])
    return {**runs[len(runs) // 2], "fastest": fastest, "slowest": slowest}


def main() -> None:
    """Run the benchmark and print the figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool (the median is shown)")
    parser.add_argument("--skip-slow", action="store_true", help="skip to_postgis and ogr2ogr")
    parser.add_argument("--anatomy", action="store_true",
                        help="also time raw COPY into events with each index/constraint/trigger dropped")
    parser.add_argument("--anatomy-only", action="store_true", help="only the --anatomy figures")
    args = parser.parse_args()
    args.anatomy = args.anatomy or args.anatomy_only

    base = get_settings()
    server = make_url(db.database_url(base))
    name = f"rutas_bench_{uuid.uuid4().hex[:8]}"
    url = server.set(database=name).render_as_string(hide_password=False)
    settings = base.model_copy(update={"database_url": url})
    db.upgrade(settings)
    engine = db.get_engine(settings)
    plain_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = dict(os.environ, RUTAS_DATABASE_URL=url)
    pid = _postmaster_pid(base)
    work = Path(tempfile.mkdtemp(prefix="rutas-bench-"))
    results: list[dict[str, float | str]] = []
    try:
        csv_path = work / "incidents.csv"
        make_csv(csv_path, args.rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"{args.rows:,} rows, {size_mb:.0f} MB of CSV; database {name}", flush=True)

        def reset_by(*statements: str) -> Callable[[], None]:
            def reset() -> None:
                with engine.begin() as conn:
                    for statement in statements:
                        conn.execute(sa.text(statement))
            return reset

        def empty_store() -> None:
            """An empty ``events``, without the partitions earlier bulk loads attached."""
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE events, ingest_batches RESTART IDENTITY CASCADE"))
                parts = conn.execute(sa.text(
                    "SELECT inhrelid::regclass::text FROM pg_inherits "
                    "WHERE inhparent = 'events'::regclass AND inhrelid <> 'events_shared'::regclass"
                )).scalars()
                for part in list(parts):
                    conn.execute(sa.text(f"DROP TABLE {part}"))

        lookups: list[tuple[str, float]] = []
        if not args.anatomy_only:
            rutas = median_run("rutas ingest", [
                "python", "scripts.cli", "ingest", str(csv_path), "--kind", "incident", "--country", "MEX",
                "--source", "bench", "--json"], env, pid, args.repeat, empty_store)
            report = json.loads(str(rutas["stdout"]).splitlines()[-1])
            assert report["accepted"] == args.rows, report
            results.append(rutas)
            with engine.connect() as conn:  # the last run's batch, which is the one stored
                last_batch = int(conn.execute(sa.text("SELECT max(id) FROM ingest_batches")).scalar_one())
            lookups = batch_lookups(engine, last_batch, args.rows)

        # The same starting point as rutas ingest had: an empty events table.
        empty_store()
        with engine.begin() as conn:
            batch = conn.execute(sa.text(
                "INSERT INTO ingest_batches (file_name, sha256, kind, source, loaded_by) "
                "VALUES ('raw', '', 'incident', 'raw-copy', 'bench') RETURNING id")).scalar_one()
        copy_input = work / "copy.csv"
        make_copy_input(csv_path, copy_input, int(batch))
        script = work / "raw_copy.py"
        script.write_text(RAW_COPY_SCRIPT)
        if not args.anatomy_only:
            results.append(median_run("raw COPY into events", [
                "python", str(script), plain_url, str(copy_input), "events"], env, pid, args.repeat,
                reset_by("TRUNCATE events CASCADE")))
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "CREATE TABLE events_bare (LIKE events INCLUDING DEFAULTS INCLUDING IDENTITY)"))
            results.append(median_run("raw COPY, table w/o indexes", [
                "python", str(script), plain_url, str(copy_input), "events_bare"], env, pid, args.repeat,
                reset_by("TRUNCATE events_bare")))
            with engine.begin() as conn:
                bulk_batch = int(conn.execute(sa.text(
                    "INSERT INTO ingest_batches (file_name, sha256, kind, source, loaded_by) "
                    "VALUES ('raw-bulk', '', 'incident', 'raw-bulk', 'bench') RETURNING id")).scalar_one())
            bulk_input = work / "copy_bulk.csv"
            make_copy_input(csv_path, bulk_input, bulk_batch, source="raw-bulk")
            bulk_script = work / "raw_bulk.py"
            bulk_script.write_text(RAW_BULK_SCRIPT)
            # Each run attaches a new partition, as a first load of the source does.
            results.append(median_run("raw COPY, new part + attach", [
                "python", str(bulk_script), plain_url, str(bulk_input), str(bulk_batch)], env, pid,
                args.repeat, reset_by(f"DROP TABLE IF EXISTS events_batch_{bulk_batch}",
                                     f"DELETE FROM event_sources WHERE storage_part = {bulk_batch}")))
            bulk_input.unlink()
        anatomy: list[tuple[str, float, float]] = []
        indexed: dict[str, int] = {}
        if args.anatomy:
            script = work / "anatomy.py"
            script.write_text(ANATOMY_SCRIPT)
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE events CASCADE"))
            # A first COPY warms the server (caches, the table's files) so the items compare alike.
            run("warm-up", ["python", str(script), plain_url, str(copy_input)], env, pid)
            for label, statements in ANATOMY.items():
                done = run(label, ["python", str(script), plain_url, str(copy_input), *statements], env, pid)
                anatomy.append((label, float(str(done["stdout"]).strip()), float(done["server_cpu"])))
        if not args.anatomy_only:
            script = work / "check_only.py"
            script.write_text(CHECK_ONLY_SCRIPT)
            results.append(median_run("rutas read+check, no DB", ["python", str(script), str(csv_path)], env,
                                      pid, args.repeat))

        if not args.skip_slow and not args.anatomy_only:
            script = work / "to_postgis.py"
            script.write_text(TO_POSTGIS_SCRIPT)
            results.append(median_run("GeoDataFrame.to_postgis", [
                "python", str(script), url, str(csv_path), "bench_to_postgis", "replace"], env, pid,
                args.repeat, reset_by("DROP TABLE IF EXISTS bench_to_postgis")))
            with engine.begin() as conn:
                indexed_like(conn, "bench_to_postgis", "bench_to_postgis_indexed", "geometry", "rowid")
            results.append(median_run("to_postgis, events' indexes", [
                "python", str(script), url, str(csv_path), "bench_to_postgis_indexed", "append"], env, pid,
                args.repeat, reset_by("TRUNCATE bench_to_postgis_indexed RESTART IDENTITY")))
            if shutil.which("ogr2ogr"):
                pg = (f"PG:dbname={name} host={server.query.get('host', server.host or 'localhost')} "
                      f"port={server.port or 5432} user={server.username or 'postgres'}")
                results.append(median_run("ogr2ogr (COPY)", [
                    "ogr2ogr", "-f", "PostgreSQL", pg, str(csv_path), "-nln", "bench_ogr2ogr",
                    "-oo", "X_POSSIBLE_NAMES=longitud", "-oo", "Y_POSSIBLE_NAMES=latitud",
                    "-oo", "KEEP_GEOM_COLUMNS=NO", "-a_srs", "EPSG:4326", "-lco", "GEOMETRY_NAME=geom",
                    "--config", "PG_USE_COPY", "YES", "-gt", "100000"], env, pid, args.repeat,
                    reset_by("DROP TABLE IF EXISTS bench_ogr2ogr")))
                with engine.begin() as conn:
                    indexed_like(conn, "bench_ogr2ogr", "bench_ogr2ogr_indexed", "geom", "ogc_fid")
                results.append(median_run("ogr2ogr, events' indexes", [
                    "ogr2ogr", "-append", "-f", "PostgreSQL", pg, str(csv_path),
                    "-nln", "bench_ogr2ogr_indexed",
                    "-oo", "X_POSSIBLE_NAMES=longitud", "-oo", "Y_POSSIBLE_NAMES=latitud",
                    "-oo", "KEEP_GEOM_COLUMNS=NO", "-a_srs", "EPSG:4326",
                    "--config", "PG_USE_COPY", "YES", "-gt", "100000"], env, pid, args.repeat,
                    reset_by("TRUNCATE bench_ogr2ogr_indexed RESTART IDENTITY")))
        with engine.connect() as conn:
            for table in ("bench_to_postgis_indexed", "bench_ogr2ogr_indexed"):
                if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": table}).scalar() is not None:
                    indexed[table] = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()
        db.drop_database(url)
        shutil.rmtree(work, ignore_errors=True)

    ours = float(results[0]["seconds"]) if results else 1.0
    print(f"\n{'tool':<30}{'seconds':>10}{'min-max':>14}{'rows/s':>12}{'x rutas time':>14}"
          f"{'peak RSS MB':>13}{'client CPU s':>14}{'server CPU s':>14}")
    for r in results:
        seconds = float(r["seconds"])
        spread = f"{float(r['fastest']):.1f}-{float(r['slowest']):.1f}"
        print(f"{r['tool']!s:<30}{seconds:>10.2f}{spread:>14}{args.rows / seconds:>12,.0f}"
              f"{seconds / ours:>14.2f}{float(r['rss_mb']):>13.0f}{float(r['client_cpu']):>14.2f}"
              f"{float(r['server_cpu']):>14.2f}")
    print(f"\n(seconds: the median of {args.repeat} runs, min-max the fastest and slowest; x rutas time: the"
          "\n tool's time divided by rutas ingest's, above 1 means slower than rutas; CPU: user + system"
          "\n seconds of the median run's processes and of its server backends)")
    print(f"load average after the run: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    for table, loaded in indexed.items():
        assert loaded == args.rows, f"{table} holds {loaded} rows, not {args.rows}"
    if lookups:
        print("\nbatch_id = X (count of the batch's events):")
        for label, ms in lookups:
            print(f"  {label:<40}{ms:>10.1f} ms")
    if anatomy:
        full, full_cpu = anatomy[0][1], anatomy[0][2]
        print(f"\n{'raw COPY into events':<30}{'seconds':>10}{'saved s':>10}{'server CPU s':>14}"
              f"{'saved CPU s':>13}")
        for label, seconds, cpu in anatomy:
            print(f"{label:<30}{seconds:>10.2f}{full - seconds:>10.2f}{cpu:>14.2f}{full_cpu - cpu:>13.2f}")


if __name__ == "__main__":
    main()
