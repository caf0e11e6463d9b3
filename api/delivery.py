"""The delivery worker: drains the alert outbox to webhooks, signed, with retries, at least once.

Each round claims due deliveries with ``SELECT ... FOR UPDATE SKIP LOCKED`` (so several workers,
e.g. ``rutas serve`` and ``rutas alerts worker``, share the outbox without sending an alert twice at
once), posts them concurrently (:class:`api.webhooks.PinnedClients`) under a timeout, and in the
same transaction records every attempt and the outcome:

- 2xx: delivered;
- 410 Gone: the subscription is disabled, and its pending deliveries with it, until its owner
  enables it again;
- anything else, or no answer: tried again after an exponential delay with jitter
  (``webhook_retry_base_s`` doubled per try, at most ``webhook_retry_max_s``), or after the
  receiver's ``Retry-After`` when that is longer; dead-lettered once the next try would fall
  beyond ``webhook_retry_window_s`` (three days) after the alert, which disables the
  subscription as 410 does (not for a replay).

A worker killed mid-delivery leaves its transaction uncommitted: the deliveries stay pending and
the next worker sends them again under the same ``webhook-id``, which receivers use to drop
duplicates. A slow receiver only ever holds the worker, never ingest: alerts are written to the
outbox by ingest and read from it here.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from api import webhooks
from geodata.errors import ConfigurationError, InputError
from geodata.settings import Settings
from routes.alerts import NOTIFY_CHANNEL, disable_subscription, listen_dsn

log = logging.getLogger("rutas.alerts")
#: Why the worker disabled a subscription (``disabled_reason``); ``enable`` lifts either.
GONE = "webhook answered 410 Gone"
DEAD = "a delivery failed for the whole retry window (dead letter)"
#: Concurrent posts of one round (a round claims up to ``alerts_worker_batch`` deliveries).
POST_THREADS = 16

CLAIM_SQL = sa.text("""
SELECT d.id, d.alert_id, d.subscription_id, d.tries, d.replay_of, a.created_at, a.payload, s.webhook_url,
       s.secret
FROM deliveries d JOIN alerts a ON a.id = d.alert_id JOIN subscriptions s ON s.id = d.subscription_id
WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND s.status = 'enabled'
ORDER BY d.next_attempt_at, d.id
LIMIT :n
FOR UPDATE OF d SKIP LOCKED
""")


@dataclass(frozen=True)
class Attempt:
    """What one POST gave: the status code (None when no answer), error text, Retry-After seconds."""

    status_code: int | None
    error: str | None
    retry_after_s: float | None
    duration_ms: float


def message_id(alert_id: int) -> str:
    """The ``webhook-id`` of an alert: the same for every try and replay, so receivers can dedupe."""
    return f"msg_alert_{alert_id}"


def message_body(alert_id: int, created_at: datetime, payload: dict[str, Any]) -> bytes:
    """The JSON body posted for an alert: ``{type, timestamp, data}`` as Standard Webhooks suggests."""
    return json.dumps({"type": payload.get("type", "alert"), "timestamp": created_at.isoformat(),
                       "alert_id": alert_id, "data": payload}, ensure_ascii=False,
                      separators=(",", ":")).encode()


def backoff_s(tries: int, settings: Settings, rng: random.Random) -> float:
    """Seconds before try ``tries + 1``: base x 2^(tries - 1), capped, times a jitter in [0.5, 1]."""
    delay = min(settings.webhook_retry_base_s * 2.0 ** max(tries - 1, 0), settings.webhook_retry_max_s)
    return delay * (0.5 + 0.5 * rng.random())


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date); None if absent."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def post(clients: webhooks.PinnedClients, url: str, secret: str, msg_id: str, body: bytes,
         settings: Settings) -> Attempt:
    """POST one signed message to an address of the target checked now (its DNS may have changed).

    The host is resolved once for the attempt and the connection made to an address that passed
    the check, never to a second resolution's answer (DNS rebinding).
    """
    started = time.perf_counter()
    try:
        target = webhooks.check_target(url, settings)
        answer = clients.post(target, body, webhooks.headers(secret, msg_id, body))
    except InputError as error:
        return Attempt(None, error.message[:500], None, (time.perf_counter() - started) * 1000)
    except (OSError, http.client.HTTPException) as error:
        return Attempt(None, f"{type(error).__name__}: {str(error)[:300]}", None,
                       (time.perf_counter() - started) * 1000)
    return Attempt(answer.status_code, None, retry_after_s(answer.retry_after),
                   (time.perf_counter() - started) * 1000)


def _ok(status_code: int | None) -> bool:
    return status_code is not None and 200 <= status_code < 300


class Worker:
    """Delivers the outbox of one database; :meth:`run` until stopped, or :meth:`deliver_due` once."""

    def __init__(self, engine: Engine, settings: Settings, *, seed: int | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.rng = random.Random(seed)
        # redirects are not followed: a redirect could lead to an internal address
        self.clients = webhooks.PinnedClients(settings.webhook_timeout_s)
        self.pool = ThreadPoolExecutor(max_workers=POST_THREADS, thread_name_prefix="rutas-post")

    def close(self) -> None:
        """Release the HTTP client and the posting threads."""
        self.pool.shutdown(wait=True)
        self.clients.close()

    def deliver_due(self) -> int:
        """Claim the due deliveries (up to ``alerts_worker_batch``), post them, record; return how many."""
        with self.engine.begin() as conn:
            rows = conn.execute(CLAIM_SQL, {"n": self.settings.alerts_worker_batch}).mappings().all()
            if not rows:
                return 0
            attempts = list(self.pool.map(self._post_row, rows))
            # every attempt, and the common outcome (delivered), in one pipelined round each
            conn.execute(sa.text(
                "INSERT INTO delivery_attempts (delivery_id, subscription_id, status_code, error, "
                "duration_ms) VALUES (:d, :s, :code, :error, :ms)"),
                [{"d": row["id"], "s": row["subscription_id"], "code": a.status_code, "error": a.error,
                  "ms": round(a.duration_ms, 1)} for row, a in zip(rows, attempts, strict=True)])
            delivered = [{"t": row["tries"] + 1, "c": a.status_code, "id": row["id"]}
                         for row, a in zip(rows, attempts, strict=True) if _ok(a.status_code)]
            if delivered:
                conn.execute(sa.text(
                    "UPDATE deliveries SET status = 'delivered', tries = :t, last_status_code = :c, "
                    "finished_at = now() WHERE id = :id"), delivered)
            for row, attempt in zip(rows, attempts, strict=True):
                if not _ok(attempt.status_code):
                    self._record_failure(conn, row, attempt)
        return len(rows)

    def _post_row(self, row: sa.RowMapping) -> Attempt:
        body = message_body(row["alert_id"], row["created_at"], row["payload"])
        try:
            secret = webhooks.unseal(row["secret"], self.settings)
        except ConfigurationError as error:
            return Attempt(None, error.message, None, 0.0)
        return post(self.clients, row["webhook_url"], secret, message_id(row["alert_id"]), body,
                    self.settings)

    def _record_failure(self, conn: sa.Connection, row: sa.RowMapping, attempt: Attempt) -> None:
        tries = row["tries"] + 1
        code = attempt.status_code
        if code == 410:
            conn.execute(sa.text("UPDATE deliveries SET tries = :t, last_status_code = 410 WHERE id = :id"),
                         {"t": tries, "id": row["id"]})
            disable_subscription(conn, row["subscription_id"], GONE)
            log.warning("subscription %s disabled: its webhook answered 410", row["subscription_id"])
            return
        delay = max(backoff_s(tries, self.settings, self.rng), attempt.retry_after_s or 0.0)
        age_s = (datetime.now(UTC) - row["created_at"]).total_seconds()
        if age_s + delay > self.settings.webhook_retry_window_s:
            conn.execute(sa.text(
                "UPDATE deliveries SET status = 'dead', tries = :t, last_status_code = :c, "
                "finished_at = now() WHERE id = :id"), {"t": tries, "c": code, "id": row["id"]})
            log.warning("delivery %s dead-lettered after %d tries", row["id"], tries)
            if row["replay_of"] is None:  # a replay of an old alert failing once says little
                disable_subscription(conn, row["subscription_id"], DEAD)
                log.warning("subscription %s disabled: a delivery was dead-lettered", row["subscription_id"])
            return
        conn.execute(sa.text(
            "UPDATE deliveries SET tries = :t, last_status_code = :c, "
            "next_attempt_at = now() + make_interval(secs => :delay) WHERE id = :id"),
            {"t": tries, "c": code, "delay": delay, "id": row["id"]})

    def next_due_s(self) -> float | None:
        """Seconds until the next pending delivery is due (None when there is none)."""
        with self.engine.connect() as conn:
            value = conn.execute(sa.text(
                "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM deliveries "
                "WHERE status = 'pending'")).scalar()
        return None if value is None else max(float(value), 0.0)

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, woken by NOTIFY when ingest or a run raises alerts."""
        listener = psycopg.connect(listen_dsn(self.settings), autocommit=True)
        try:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while not stop.is_set():
                try:
                    if self.deliver_due():
                        continue
                    wait = self.next_due_s()
                except sa.exc.OperationalError as error:
                    log.error("outbox unavailable (%s); retrying", type(error.orig).__name__)
                    wait = self.settings.alerts_poll_s
                except Exception:  # the worker outlives one bad round; the round rolled back
                    log.exception("delivery round failed; retrying")
                    wait = self.settings.alerts_poll_s
                wait = self.settings.alerts_poll_s if wait is None else min(wait, self.settings.alerts_poll_s)
                for _ in listener.notifies(timeout=max(wait, 0.01), stop_after=1):
                    pass
        finally:
            listener.close()
            self.close()


def start_worker(engine: Engine, settings: Settings) -> tuple[threading.Thread, threading.Event]:
    """Run a :class:`Worker` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    worker = Worker(engine, settings)
    thread = threading.Thread(target=worker.run, args=(stop,), name="rutas-alerts-worker", daemon=True)
    thread.start()
    return thread, stop
