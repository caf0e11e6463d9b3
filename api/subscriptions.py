"""Alert subscriptions over HTTP: create and list, delivery history, replay, and the SSE stream.

``POST /subscriptions`` answers 201 with ``{id, secret}``; the signing secret (``whsec_...``) is
shown only then. Reads go through row-level security: a caller sees the subscriptions of its own
country (all for administrators), their alerts and deliveries. Writes are authorised here and
done by the service, as the app role writes nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import sqlalchemy as sa
from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from api import audit, webhooks
from api.auth import Principal, forbidden
from api.deps import PrincipalDep, StateDep
from geodata.db import SYSTEM, scoped
from geodata.errors import RutasError
from geodata.settings import Settings
from routes.alerts import Subscription, create_subscription, read_alerts

router = APIRouter(tags=["Alerts"])

SUBSCRIBERS = frozenset({"admin", "border_authority", "prosecutor"})
#: Seconds between polls of the alerts table by one SSE stream, and between keep-alive comments.
STREAM_POLL_S = 0.5
KEEPALIVE_S = 15.0


class SubscriptionIn(BaseModel):
    """A subscription request: a fence (GeoJSON geometry, EPSG:4326) or a reference plus a radius."""

    name: str = Field(min_length=1, max_length=200)
    triggers: list[str] = Field(min_length=1, max_length=4)
    fence: dict[str, Any] | None = None
    border_segment_id: int | None = None
    crossing_id: int | None = None
    corridor_id: int | None = None
    radius_m: float = Field(default=0.0, description="metres around the reference (or the fence)")
    kinds: list[str] = Field(default_factory=list, max_length=3)
    crime_types: list[str] = Field(default_factory=list, max_length=4)
    min_persons: int | None = None
    webhook_url: str | None = Field(default=None, max_length=2000)
    sse: bool = True


def subscribe(engine: Engine, settings: Settings, principal: Principal,
              request: SubscriptionIn) -> tuple[int, str]:
    """Check the caller and the webhook target, store the subscription; return (id, secret).

    The API and ``rutas alerts create`` both call this.
    """
    if principal.role not in SUBSCRIBERS:
        raise forbidden(
            f"Role {principal.role} cannot subscribe to alerts: border authorities, prosecutors and "
            "administrators can.",
            f"El rol {principal.role} no puede suscribirse a alertas: sí pueden autoridades de frontera, "
            "fiscales y administradores.")
    if request.webhook_url is not None:
        webhooks.check_target(request.webhook_url, settings)
    secret = webhooks.new_secret()
    sub = Subscription(
        name=request.name, triggers=tuple(request.triggers), fence=request.fence,
        border_segment_id=request.border_segment_id, crossing_id=request.crossing_id,
        corridor_id=request.corridor_id, radius_m=request.radius_m, kinds=tuple(request.kinds),
        crime_types=tuple(request.crime_types), min_persons=request.min_persons,
        webhook_url=request.webhook_url, sse=request.sse)
    sub_id = create_subscription(engine, sub, scope=principal.scope(), owner=principal.subject,
                                 secret=webhooks.seal(secret, settings))
    return sub_id, secret


@router.post("/subscriptions", status_code=201, summary="Subscribe a fence to alerts")
def post_subscription(state: StateDep, principal: PrincipalDep, body: SubscriptionIn) -> JSONResponse:
    """Create a subscription; answers 201 with its id and the signing secret (shown only once)."""
    sub_id, secret = subscribe(state.engine, state.settings, principal, body)
    return JSONResponse({"id": sub_id, "secret": secret, "status": "enabled"}, status_code=201,
                        headers={"Location": f"/subscriptions/{sub_id}"})


_LIST_SQL = (
    "SELECT id, name, owner, country, triggers, filters, fence_ref, webhook_url, sse, status, "
    "disabled_reason, created_at, CAST(ST_AsGeoJSON(fence, 6) AS jsonb) AS fence FROM subscriptions"
)


def _subscription_record(row: sa.RowMapping) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}


@router.get("/subscriptions", summary="Subscriptions of the caller's country")
def list_subscriptions(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """The subscriptions the caller may see (own country; all for administrators), newest first."""
    with scoped(state.engine, principal.scope()) as conn:
        rows = conn.execute(sa.text(_LIST_SQL + " ORDER BY id DESC LIMIT 1000")).mappings().all()
    return {"subscriptions": [_subscription_record(r) for r in rows]}


def _missing(what: str, ident: int) -> RutasError:
    return RutasError(f"{what} {ident} does not exist or is outside your scope.",
                      f"{what} {ident} no existe o está fuera de su alcance.", code="not_found")


@router.get("/subscriptions/{sub_id}/deliveries", summary="Delivery history of a subscription")
def deliveries(sub_id: int, state: StateDep, principal: PrincipalDep,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Deliveries newest first, each with its alert and every attempt (time, status code, error)."""
    if not 0 < sub_id < 2**63:
        raise _missing("Subscription", sub_id)
    with scoped(state.engine, principal.scope()) as conn:
        found = conn.execute(sa.text("SELECT 1 FROM subscriptions WHERE id = :id"), {"id": sub_id}).scalar()
        if found is None:
            raise _missing("Subscription", sub_id)
        rows = conn.execute(sa.text(
            "SELECT d.id, d.alert_id, d.status, d.tries, d.next_attempt_at, d.last_status_code, d.replay_of, "
            "d.created_at, d.finished_at, a.trigger, a.object_key, a.payload, "
            "coalesce((SELECT jsonb_agg(jsonb_build_object('at', t.attempted_at, "
            "'status_code', t.status_code, 'error', t.error, 'duration_ms', t.duration_ms) ORDER BY t.id) "
            "FROM delivery_attempts t "
            "WHERE t.delivery_id = d.id), '[]') AS attempts "
            "FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE d.subscription_id = :id "
            "ORDER BY d.id DESC LIMIT :n"), {"id": sub_id, "n": limit}).mappings().all()
        audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                    action="deliveries", collection="alerts", filters={"subscription_id": sub_id},
                    records=len(rows))
    out = []
    for r in rows:
        record = dict(r)
        for key in ("next_attempt_at", "created_at", "finished_at"):
            record[key] = None if r[key] is None else r[key].isoformat()
        record["webhook_id"] = f"msg_alert_{r['alert_id']}"
        out.append(record)
    return {"subscription_id": sub_id, "deliveries": out}


@router.post("/deliveries/{delivery_id}/replay", status_code=202, summary="Send a delivery again")
def replay(delivery_id: int, state: StateDep, principal: PrincipalDep) -> JSONResponse:
    """Queue the delivery's alert again (same ``webhook-id``); answers 202 with the new delivery id."""
    if principal.role not in SUBSCRIBERS:
        raise forbidden(f"Role {principal.role} cannot replay deliveries.",
                        f"El rol {principal.role} no puede reenviar entregas.")
    if not 0 < delivery_id < 2**63:
        raise _missing("Delivery", delivery_id)
    with scoped(state.engine, principal.scope()) as conn:
        found = conn.execute(sa.text(
            "SELECT d.alert_id, d.subscription_id, s.status FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id = :id"), {"id": delivery_id}).first()
    if found is None:
        raise _missing("Delivery", delivery_id)
    if found.status != "enabled":
        raise RutasError(
            f"Delivery {delivery_id}: its subscription is disabled (its webhook answered 410 Gone); "
            "create a new subscription.",
            f"Entrega {delivery_id}: su suscripción está desactivada (el webhook respondió 410 Gone); "
            "cree una suscripción nueva.", code="invalid")
    with scoped(state.engine, SYSTEM) as conn:
        new_id = conn.execute(sa.text(
            "INSERT INTO deliveries (alert_id, subscription_id, replay_of) VALUES (:a, :s, :d) RETURNING id"),
            {"a": found.alert_id, "s": found.subscription_id, "d": delivery_id}).scalar_one()
        conn.execute(sa.text("SELECT pg_notify('rutas_alerts', '')"))
    return JSONResponse({"id": new_id, "replay_of": delivery_id, "status": "pending"}, status_code=202)


# Left out of the OpenAPI document: an endless stream is no operation a generated client or a
# schema fuzzer can call and wait for; the README documents it.
@router.get("/alerts/stream", summary="Alerts as server-sent events", include_in_schema=False)
async def stream(request: Request, state: StateDep, principal: PrincipalDep,
                 after: Annotated[int | None, Query(ge=0, description="Send alerts after this id")] = None,
                 last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """Alerts of the caller's subscriptions as they are raised (``text/event-stream``).

    Each event has ``id`` (the alert id, so a reconnecting client resumes with ``Last-Event-ID``),
    ``event: alert`` and the alert as JSON. Without ``after`` or ``Last-Event-ID`` it starts now.
    """
    scope = principal.scope()
    engine = state.engine

    def latest() -> int:
        with scoped(engine, scope) as conn:
            return int(conn.execute(sa.text("SELECT coalesce(max(id), 0) FROM alerts")).scalar_one())

    def fetch(after_id: int) -> list[dict[str, Any]]:
        with scoped(engine, scope) as conn:
            rows = read_alerts(conn, after_id)
            if rows:
                audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                            action="alerts_stream", collection="alerts", filters={"after": after_id},
                            records=len(rows))
            return rows

    start = after
    if start is None and last_event_id is not None and last_event_id.strip().isdigit():
        start = int(last_event_id.strip())
    if start is None:
        start = await to_thread.run_sync(latest)

    async def events() -> AsyncIterator[bytes]:
        cursor = start
        idle = 0.0
        yield b": rutas alerts\n\n"
        while not await request.is_disconnected():
            rows = await to_thread.run_sync(fetch, cursor)
            for row in rows:
                cursor = row["id"]
                yield f"id: {row['id']}\nevent: alert\ndata: {json.dumps(row, default=str)}\n\n".encode()
            if rows:
                idle = 0.0
                continue
            await asyncio.sleep(STREAM_POLL_S)
            idle += STREAM_POLL_S
            if idle >= KEEPALIVE_S:
                idle = 0.0
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
