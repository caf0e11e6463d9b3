"""``GET /alerts/stream``: alerts as server-sent events, pushed by PostgreSQL LISTEN/NOTIFY.

The transaction that raises alerts (ingest's batch, a run's triggers, a replay) sends
``NOTIFY rutas_alerts``, delivered when it commits. One listening connection per app
(:class:`AlertFeed`, opened with the first stream and closed with the app) wakes every open
stream, which then reads the alerts after its cursor under its caller's scope: row-level
security shows only the subscriptions of the caller's country (all for administrators), of those
only the ones of the caller's role (the payloads were written for that role and country), and an
alert's payload already carries only what its subscriber may see. Each event's ``id`` is the
alert id, so a client reconnecting with ``Last-Event-ID`` (or ``?after=ID``) misses nothing.
Streams also read every ``KEEPALIVE_S`` seconds, with a keep-alive comment, so an alert is
never lost while the listening connection is being re-opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import psycopg
import sqlalchemy as sa
from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from api import audit
from api.deps import PrincipalDep, StateDep
from geodata.db import scoped
from geodata.settings import Settings
from routes.alerts import NOTIFY_CHANNEL, listen_dsn, read_alerts

log = logging.getLogger("rutas.alerts")
router = APIRouter(tags=["Alerts"])

#: Seconds between keep-alive comments, each followed by a read (the fallback to the push).
KEEPALIVE_S = 15.0
#: The largest alert id (bigint).
MAX_ID = 2**63 - 1
#: Alerts read per query; a stream with more waiting reads again at once.
PAGE = 100
#: Seconds before re-opening a lost listening connection (doubling up to the maximum).
RECONNECT_S = 0.5
RECONNECT_MAX_S = 10.0


class AlertFeed:
    """Wakes the open SSE streams of one app when a committed transaction notifies new alerts.

    Each notification replaces the current :class:`asyncio.Event` with a fresh one and sets the
    old one, so a stream that took the event before reading cannot miss a notification that
    arrives while it reads.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def signal(self) -> asyncio.Event:
        """The event the next notification sets (starting the listener on first use)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="rutas-alert-feed")
        return self._event

    def _wake(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def _listen(self) -> None:
        delay = RECONNECT_S
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(listen_dsn(self.settings), autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = RECONNECT_S
                    self._wake()  # streams read what was raised while nobody listened
                    async for _ in conn.notifies():
                        self._wake()
            except psycopg.Error as error:
                log.warning("alert stream listener lost (%s); re-opening in %.1f s",
                            type(error).__name__, delay)
                self._wake()
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def close(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _feed(request: Request) -> AlertFeed:
    feed: AlertFeed = request.app.state.alert_feed
    return feed


# Left out of the OpenAPI document: an endless stream is no operation a generated client or a
# schema fuzzer can call and wait for; the README documents it.
@router.get("/alerts/stream", summary="Alerts as server-sent events", include_in_schema=False)
async def stream(request: Request, state: StateDep, principal: PrincipalDep,
                 after: Annotated[int | None, Query(ge=0, le=MAX_ID,
                                                    description="Send alerts after this id")] = None,
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Alerts of the caller's subscriptions as they are raised (``text/event-stream``).

    Each event has ``id`` (the alert id, so a reconnecting client resumes with ``Last-Event-ID``),
    ``event: alert`` and the alert as JSON. Without ``after`` or ``Last-Event-ID`` it starts now.
    """
    scope = principal.scope()
    engine = state.engine
    feed = _feed(request)

    def latest() -> int:
        with scoped(engine, scope) as conn:
            return int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM alerts")).scalar_one())

    def fetch(after_id: int) -> list[dict[str, Any]]:
        with scoped(engine, scope) as conn:
            rows = read_alerts(conn, after_id, PAGE, role=principal.role)
            if rows:
                audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                            action="alerts_stream", collection="alerts", filters={"after": after_id},
                            records=len(rows))
            return rows

    start = after
    if start is None and last_event_id is not None and last_event_id.strip().isdigit():
        start = min(int(last_event_id.strip()), MAX_ID)
    if start is None:
        start = await to_thread.run_sync(latest)

    async def events() -> AsyncIterator[bytes]:
        cursor = start
        yield b": rutas alerts\n\n"
        while not await request.is_disconnected():
            woken = feed.signal()  # taken before reading: a notification during the read is kept
            rows = await to_thread.run_sync(fetch, cursor)
            for row in rows:
                cursor = row["id"]
                yield f"id: {row['id']}\nevent: alert\ndata: {json.dumps(row, default=str)}\n\n".encode()
            if len(rows) == PAGE:
                continue
            try:
                await asyncio.wait_for(woken.wait(), KEEPALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
