"""Benchmark: ingest against alert fences, and the latency from a committed event to its webhook.

On a scratch database (created and dropped here, on the configured PostGIS server):

1. ``--fences`` subscriptions (default 10,000) with square fences of 1 to 10 km around the places
   the synthetic events scatter over; ``--webhooks`` of them (default 100) post to a receiver on
   127.0.0.1 run by this script;
2. ``--events`` events (default 100,000) loaded with ``ingest_features`` in batches of
   ``--batch`` rows, first without the alert hook (the store alone), then with it (event triggers
   evaluated in each batch's transaction, one set-based statement over the GiST index);
3. while the delivery worker runs in this process, the time from each batch's commit to each of
   its webhook's arrival (p50, p99).

Side by side: the same point-in-fence matching done in memory with shapely 2 ``STRtree``
(``query(points, predicate="intersects")``), what a Python user would write without PostGIS,
and the ratios. Run::

    .venv/bin/python scripts/bench_alerts.py [--events 100000] [--fences 10000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from geodata import db
from geodata.ingest import ingest_features
from geodata.settings import CHECKOUT_DIR, get_settings
from routes.alerts import NOTIFY_CHANNEL, on_loaded

#: Places (lon, lat) the synthetic events and fences scatter around (within ~0.3 degrees).
PLACES = np.array([(-92.2630, 14.9054), (-99.1332, 19.4326), (-106.4245, 31.6904), (-77.3000, 8.4500),
                   (-88.0300, 15.5000), (-100.3161, 25.6866), (-117.0382, 32.5149), (-79.5000, 9.0000)])
KM_DEG = 1 / 111.0


def _points(n: int, rng: np.random.Generator, spread_deg: float = 0.3) -> np.ndarray:
    centre = PLACES[rng.integers(0, len(PLACES), n)]
    return centre + rng.uniform(-spread_deg, spread_deg, (n, 2))


def _features(points: np.ndarray) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
         "properties": {"date": "2024-05-02", "crime_type": "smuggling", "dead": 1}} for x, y in points]}


async def _serve_hooks(sock: socket.socket, out_path: str, closes: bool) -> None:
    """One asyncio server on ``sock``: answers each webhook 204 and writes "unix time, batch id"."""
    out = open(out_path, "a", encoding="utf-8")  # noqa: SIM115 (open for the server's whole life)

    async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                arrived = time.time()
                # keep-alive, as web servers receiving webhooks do; HTTP/1.0 closes after each answer
                writer.write(b"HTTP/1.0 204 No Content\r\ncontent-length: 0\r\n\r\n" if closes
                             else b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                out.write(f"{arrived},{json.loads(body)['data']['batch_id']}\n")
                out.flush()
                await writer.drain()
                if closes:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(exchange, sock=sock, backlog=128)
    async with server:
        await server.serve_forever()


def _receive(sock: socket.socket, out_path: str, closes: bool) -> None:
    """The webhook receiver's process."""
    asyncio.run(_serve_hooks(sock, out_path, closes))


class _Receiver:
    """A webhook receiver on 127.0.0.1 in its own process, so the ingest here does not slow it.

    An asyncio server (one thread for every connection, as production receivers such as nginx or
    uvicorn are event-driven), not ``http.server``'s thread per connection: on this 2-core machine
    the receiver shares the cores with the worker, the ingest and the database, and a thread per
    connection would measure the receiver's own cost, not the delivery's.
    """

    def __init__(self, out_path: str, closes: bool) -> None:
        self.out_path = out_path
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.process = multiprocessing.get_context("fork").Process(
            target=_receive, args=(self.sock, out_path, closes), daemon=True)
        self.process.start()

    def arrivals(self) -> list[tuple[float, int]]:
        with open(self.out_path, encoding="utf-8") as lines:
            rows = (line.strip().split(",") for line in lines if line.strip())
            return [(float(a), int(b)) for a, b in rows]

    def stop(self) -> None:
        self.process.terminate()
        self.sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--fences", type=int, default=10_000)
    parser.add_argument("--webhooks", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--spread-deg", type=float, default=3.0,
                        help="fence centres scatter this far (degrees) around the places "
                        "(0.3 = the events' spread)")
    parser.add_argument("--receiver-closes", action="store_true",
                        help="the receiver closes each connection after answering (HTTP/1.0)")
    args = parser.parse_args()
    base = get_settings()
    url = make_url(db.database_url(base)).set(database=f"rutas_bench_alerts_{os.getpid()}")
    settings = base.model_copy(update={"database_url": url.render_as_string(hide_password=False),
                                       "webhook_allowed_hosts": "127.0.0.1", "alerts_poll_s": 0.05})
    db.upgrade(settings)
    engine = db.get_engine(settings)
    folder = tempfile.mkdtemp(prefix="rutas-bench-alerts-")
    receiver = _Receiver(os.path.join(folder, "arrivals.csv"), args.receiver_closes)
    rng = np.random.default_rng(7)
    try:
        centres = _points(args.fences, rng, args.spread_deg)
        # the webhook fences sit where the events fall, so the latency is measured on many alerts
        centres[:args.webhooks] = _points(args.webhooks, rng)
        half = rng.uniform(0.5, 5.0, args.fences) * KM_DEG
        boxes = np.column_stack([centres - half[:, None], centres + half[:, None]])
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO subscriptions (name, owner, country, role, fence, triggers, webhook_url, "
                "secret) SELECT 'bench ' || i, 'bench', 'MEX', 'border_authority', "
                "ST_Multi(ST_MakeEnvelope(x0, y0, x1, y1, 4326)), ARRAY['event_in_fence'], "
                "CASE WHEN i <= :hooks THEN :url END, 'whsec_YmVuY2htYXJrLXNlY3JldA==' "
                "FROM unnest(CAST(:x0 AS float8[]), CAST(:y0 AS float8[]), CAST(:x1 AS float8[]), "
                "CAST(:y1 AS float8[])) WITH ORDINALITY AS b(x0, y0, x1, y1, i)"),
                {"hooks": args.webhooks, "url": receiver.url, "x0": boxes[:, 0].tolist(),
                 "y0": boxes[:, 1].tolist(), "x1": boxes[:, 2].tolist(), "y1": boxes[:, 3].tolist()})
            conn.execute(sa.text("ANALYZE subscriptions"))
        points = _points(args.events, rng)
        chunks = [points[i:i + args.batch] for i in range(0, len(points), args.batch)]

        accepted = 0

        def load(hook: bool) -> tuple[float, float, dict[int, float]]:
            nonlocal accepted
            accepted = 0
            source = uuid.uuid4().hex
            matching = 0.0
            committed: dict[int, float] = {}

            def timed(conn: sa.Connection, batch_id: int) -> None:
                nonlocal matching
                started = time.perf_counter()
                on_loaded(conn, batch_id)
                matching += time.perf_counter() - started

            started = time.perf_counter()
            for i, chunk in enumerate(chunks):
                report = ingest_features(engine, _features(chunk), settings=settings, name=f"bench {i}",
                                         kind="incident", owner_country=None, source=source,
                                         on_loaded=timed if hook else None)
                committed[int(report.batch_id or 0)] = time.time()
                accepted += report.accepted
            return time.perf_counter() - started, matching, committed

        plain_s, _, _ = load(False)
        # the worker runs in its own process, as beside `rutas serve` or as `rutas alerts worker`
        worker = subprocess.Popen(
            [sys.executable, "-m", "scripts.cli", "alerts", "worker"], cwd=CHECKOUT_DIR,
            env={**os.environ, "RUTAS_DATABASE_URL": settings.database_url or "",
                 "RUTAS_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "RUTAS_ALERTS_POLL_S": "0.05"},
            stdout=subprocess.DEVNULL)
        # its start-up (imports, schema check) takes seconds on a loaded machine: the first batch is
        # loaded once it listens, else that batch's latency would be the start-up's
        deadline = time.perf_counter() + 120
        while time.perf_counter() < deadline:
            with engine.connect() as conn:
                if conn.execute(sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query = :listen"), {"listen": f"LISTEN {NOTIFY_CHANNEL}"}).scalar():
                    break
            time.sleep(0.05)
        fenced_s, matching_s, committed = load(True)
        with engine.connect() as conn:
            alerts, queued = conn.execute(sa.text(
                "SELECT count(*), (SELECT count(*) FROM deliveries) FROM alerts")).one()
        deadline = time.perf_counter() + 120
        while len(receiver.arrivals()) < queued and time.perf_counter() < deadline:
            time.sleep(0.1)
        worker.terminate()
        worker.wait(10)
        with engine.connect() as conn:
            tries = conn.execute(sa.text(
                "SELECT count(*), count(*) FILTER (WHERE status_code IS NULL OR status_code >= 300), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms), "
                "(SELECT string_agg(DISTINCT left(error, 80), '; ') FROM delivery_attempts) "
                "FROM delivery_attempts")).one()
            # attempted_at is now() of the worker's round transaction: one value per round
            rounds = conn.execute(sa.text(
                "SELECT extract(epoch FROM attempted_at), count(*) FROM delivery_attempts "
                "GROUP BY 1 ORDER BY 1")).all()
            first_claim = {int(b): float(at) for b, at in conn.execute(sa.text(
                "SELECT e.batch_id, extract(epoch FROM min(t.attempted_at)) FROM delivery_attempts t "
                "JOIN deliveries d ON d.id = t.delivery_id JOIN alerts a ON a.id = d.alert_id "
                "JOIN events e ON a.object_key = 'event:' || e.id GROUP BY 1"))}
        arrivals = receiver.arrivals()
        latencies = np.array([at - committed[batch] for at, batch in arrivals])
        tree_started = time.perf_counter()
        tree = shapely.STRtree(shapely.box(boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]))
        pairs = tree.query(shapely.points(points), predicate="intersects")  # all points, rejected too
        tree_s = time.perf_counter() - tree_started
        n = args.events
        print(f"events {n:,} ({accepted:,} accepted), fences {args.fences:,} within {args.spread_deg:g} deg "
              f"({args.webhooks} with webhooks), batches of {args.batch:,}")
        print(f"{'':34}{'time s':>9}{'events/s':>12}")
        print(f"{'ingest without fences':34}{plain_s:9.2f}{n / plain_s:12,.0f}")
        print(f"{'ingest with fences (end to end)':34}{fenced_s:9.2f}{n / fenced_s:12,.0f}")
        print(f"{'  of which matching in PostGIS':34}{matching_s:9.2f}{n / matching_s:12,.0f}")
        print(f"{'shapely STRtree in memory':34}{tree_s:9.2f}{n / tree_s:12,.0f}")
        print(f"alerts raised {alerts:,} ({alerts / max(accepted, 1):.2f} per event; shapely pairs "
              f"{pairs.shape[1]:,}); webhooks queued {queued:,}, "
              f"arrived {len(arrivals):,}")
        print(f"ratio ingest with / without fences: {plain_s / fenced_s:.2f} (target >= 0.5)")
        print(f"ratio matching PostGIS / shapely STRtree speed: {tree_s / matching_s:.2f}")
        print(f"posts {tries[0]:,} ({tries[1]:,} failed{': ' + tries[4] if tries[4] else ''}), "
              f"duration p50 {tries[2] or 0:.1f} ms, p99 {tries[3] or 0:.1f} ms"
              f"{' (receiver closes each connection)' if args.receiver_closes else ''}")
        # the wake-up: a batch's commit (taken here after ingest returns) to the worker's first claim
        wake = np.array([first_claim[b] - at for b, at in committed.items() if b in first_claim])
        if len(wake):
            print(f"worker rounds {len(rounds):,} (mean {np.mean([r[1] for r in rounds]):.0f} posts); "
                  f"commit -> first claim of its batch p50 {np.percentile(wake, 50):.3f} s, "
                  f"max {wake.max():.3f} s")
        if len(latencies):
            print(f"commit -> webhook latency: p50 {np.percentile(latencies, 50):.3f} s, "
                  f"p99 {np.percentile(latencies, 99):.3f} s, max {latencies.max():.3f} s (target p99 < 2 s)")
    finally:
        receiver.stop()
        shutil.rmtree(folder, ignore_errors=True)
        engine.dispose()
        db.drop_database(settings.database_url or "")


if __name__ == "__main__":
    main()
