"""Alert subscriptions over HTTP: create, list, update, delete, enable, rotate the secret; deliveries.

``POST /subscriptions`` answers 201 with ``{id, secret}``; the signing secret (``whsec_...``) is
shown only then (and once more by each rotation). Reads go through row-level security: a caller
sees the subscriptions of its own country (all for administrators), their alerts and deliveries.
Only a subscription's owner, or an administrator, may change it. Writes are authorised here and
done by the service, as the app role writes nothing; each change is written to the audit log.
The functions taking a :class:`Principal` are what ``rutas alerts`` calls too.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine

from api import audit, webhooks
from api.auth import Principal, forbidden
from api.deps import PrincipalDep, StateDep
from geodata.db import SYSTEM, scoped
from geodata.errors import InputError, RutasError
from geodata.settings import Settings
from routes.alerts import (
    DELETED,
    READS_PAYLOAD_SQL,
    Subscription,
    create_subscription,
    delete_subscription,
    enable_subscription,
    resolve_fence,
    update_subscription,
)

router = APIRouter(tags=["Alerts"])

SUBSCRIBERS = frozenset({"admin", "border_authority", "prosecutor"})
#: Fields of a subscription that say where its fence is.
FENCE_FIELDS = frozenset({"fence", "border_segment_id", "crossing_id", "corridor_id", "radius_m"})


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
    "SELECT id, name, owner, country, triggers, filters, fence_ref, webhook_url, sse, "
    "CASE WHEN status = 'disabled' AND disabled_reason = :deleted THEN 'deleted' ELSE status END AS status, "
    "disabled_reason, created_at, CAST(ST_AsGeoJSON(fence, 6) AS jsonb) AS fence FROM subscriptions"
)


def _subscription_record(row: sa.RowMapping) -> dict[str, Any]:
    return {**row, "created_at": row["created_at"].isoformat()}


@router.get("/subscriptions", summary="Subscriptions of the caller's country")
def list_subscriptions(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """The subscriptions the caller may see (own country; all for administrators), newest first."""
    with scoped(state.engine, principal.scope()) as conn:
        rows = conn.execute(sa.text(_LIST_SQL + " ORDER BY id DESC LIMIT 1000"),
                            {"deleted": DELETED}).mappings().all()
    return {"subscriptions": [_subscription_record(r) for r in rows]}


def _missing(what: str, ident: int) -> RutasError:
    return RutasError(f"{what} {ident} does not exist or is outside your scope.",
                      f"{what} {ident} no existe o está fuera de su alcance.", code="not_found")


@router.get("/subscriptions/{sub_id}/deliveries", summary="Delivery history of a subscription")
def deliveries(sub_id: int, state: StateDep, principal: PrincipalDep,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Deliveries newest first, each with its alert and every attempt (time, status code, error).

    The alerts' payloads were written for the subscription owner's role and country: a colleague of
    another role (the same country, by row-level security) gets ``payload`` null and
    ``payload_withheld`` true, as the API may show it less."""
    if not 0 < sub_id < 2**63:
        raise _missing("Subscription", sub_id)
    with scoped(state.engine, principal.scope()) as conn:
        found = conn.execute(sa.text(f"SELECT {READS_PAYLOAD_SQL} FROM subscriptions s WHERE s.id = :id"),
                             {"id": sub_id, "role": principal.role}).first()
        if found is None:
            raise _missing("Subscription", sub_id)
        reads_payload = bool(found[0])
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
        record["payload_withheld"] = not reads_payload
        if not reads_payload:
            record["payload"] = None
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
            "SELECT d.alert_id, d.subscription_id, s.status, s.owner FROM deliveries d "
            "JOIN subscriptions s ON s.id = d.subscription_id WHERE d.id = :id"), {"id": delivery_id}).first()
    if found is None:
        raise _missing("Delivery", delivery_id)
    _check_owner(principal, found.subscription_id, found.owner)
    if found.status != "enabled":
        raise RutasError(
            f"Delivery {delivery_id}: its subscription {found.subscription_id} is disabled or deleted; "
            f"enable it first (POST /subscriptions/{found.subscription_id}/enable, rutas alerts enable).",
            f"Entrega {delivery_id}: su suscripción {found.subscription_id} está desactivada o eliminada; "
            f"actívela primero (POST /subscriptions/{found.subscription_id}/enable, rutas alerts enable).",
            code="invalid")
    with scoped(state.engine, SYSTEM) as conn:
        new_id = conn.execute(sa.text(
            "INSERT INTO deliveries (alert_id, subscription_id, replay_of) VALUES (:a, :s, :d) RETURNING id"),
            {"a": found.alert_id, "s": found.subscription_id, "d": delivery_id}).scalar_one()
        conn.execute(sa.text("SELECT pg_notify('rutas_alerts', '')"))
    return JSONResponse({"id": new_id, "replay_of": delivery_id, "status": "pending"}, status_code=202)


class SubscriptionPatch(BaseModel):
    """Changes to a subscription: only the fields given change; ``null`` removes a webhook or a filter.

    A new fence is given as in :class:`SubscriptionIn` (a GeoJSON polygon, or a reference plus
    ``radius_m``); ``radius_m`` alone re-buffers the stored border segment, crossing or corridor.
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    triggers: list[str] | None = Field(default=None, min_length=1, max_length=4)
    fence: dict[str, Any] | None = None
    border_segment_id: int | None = None
    crossing_id: int | None = None
    corridor_id: int | None = None
    radius_m: float | None = Field(default=None, description="metres around the reference (or the fence)")
    kinds: list[str] | None = Field(default=None, max_length=3)
    crime_types: list[str] | None = Field(default=None, max_length=4)
    min_persons: int | None = None
    webhook_url: str | None = Field(default=None, max_length=2000)
    sse: bool | None = None


_OWNED_SQL = sa.text(
    "SELECT id, owner, status, disabled_reason, name, triggers, filters, fence_ref, webhook_url, sse, "
    "CAST(ST_AsGeoJSON(fence) AS jsonb) AS fence FROM subscriptions WHERE id = :id")


def _check_owner(principal: Principal, sub_id: int, owner: str) -> None:
    if principal.role != "admin" and principal.subject != owner:
        raise forbidden(
            f"Subscription {sub_id} belongs to another user: only its owner or an administrator may "
            "change it.",
            f"La suscripción {sub_id} pertenece a otro usuario: solo su propietario o un administrador "
            "puede modificarla.")


def _owned(engine: Engine, principal: Principal, sub_id: int) -> sa.RowMapping:
    """The subscription as its owner (or an administrator) sees it; 404 when unseen or deleted, else 403."""
    if principal.role not in SUBSCRIBERS:
        raise forbidden(f"Role {principal.role} cannot manage alert subscriptions.",
                        f"El rol {principal.role} no puede gestionar suscripciones de alertas.")
    if not 0 < sub_id < 2**63:
        raise _missing("Subscription", sub_id)
    with scoped(engine, principal.scope()) as conn:
        row = conn.execute(_OWNED_SQL, {"id": sub_id}).mappings().first()
    if row is None:
        raise _missing("Subscription", sub_id)
    _check_owner(principal, sub_id, row["owner"])
    if row["status"] == "disabled" and row["disabled_reason"] == DELETED:
        raise RutasError(f"Subscription {sub_id} was deleted; create a new one.",
                         f"La suscripción {sub_id} fue eliminada; cree una nueva.", code="not_found")
    return row


def _audit_change(conn: sa.Connection, principal: Principal, action: str, sub_id: int,
                  **details: Any) -> None:
    audit.write(conn, who=principal.subject, role=principal.role, country=principal.country, action=action,
                collection="subscriptions", filters={"subscription_id": sub_id, **details}, records=1)


def _merged(row: sa.RowMapping, patch: SubscriptionPatch) -> tuple[Subscription, bool]:
    """The subscription after ``patch`` and whether its fence changes."""
    given = patch.model_fields_set
    fence_given = given & FENCE_FIELDS
    where: dict[str, Any] = {"fence": row["fence"]}  # unchanged: the stored polygon, as it is
    if fence_given - {"radius_m"}:
        where = {name: getattr(patch, name) for name in FENCE_FIELDS - {"radius_m"}}
        where["radius_m"] = patch.radius_m or 0.0
    elif fence_given:
        reference = {k: v for k, v in row["fence_ref"].items() if k != "radius_m"}
        if not reference:
            raise InputError(
                f"radius_m={patch.radius_m!r}: the fence of subscription {row['id']} is a polygon; give "
                "the fence again with the radius_m to buffer it by.",
                f"radius_m={patch.radius_m!r}: la cerca de la suscripción {row['id']} es un polígono; "
                "indique de nuevo la cerca con el radius_m con que ampliarla.", code="invalid")
        where = {**reference, "radius_m": patch.radius_m if patch.radius_m is not None else 0.0}
    filters = row["filters"]

    def pick(name: str, stored: Any) -> Any:
        return getattr(patch, name) if name in given else stored

    sub = Subscription(
        name=pick("name", row["name"]) or row["name"], triggers=tuple(pick("triggers", row["triggers"])
                                                                     or row["triggers"]),
        kinds=tuple(pick("kinds", filters.get("kinds")) or ()),
        crime_types=tuple(pick("crime_types", filters.get("crime_types")) or ()),
        min_persons=pick("min_persons", filters.get("min_persons")),
        webhook_url=pick("webhook_url", row["webhook_url"]),
        sse=bool(row["sse"] if patch.sse is None else patch.sse), **where)
    return sub, bool(fence_given)


def update(engine: Engine, settings: Settings, principal: Principal, sub_id: int,
           patch: SubscriptionPatch) -> dict[str, Any]:
    """Apply ``patch`` to a subscription of the caller's and return the stored subscription.

    A new webhook URL is checked as at creation (no internal targets unless allowed); a new fence
    is resolved under the caller's scope. Without a webhook, pending deliveries stop.
    """
    row = _owned(engine, principal, sub_id)
    sub, fence_changed = _merged(row, patch)
    sub.check()
    if "webhook_url" in patch.model_fields_set and sub.webhook_url is not None:
        webhooks.check_target(sub.webhook_url, settings)
    fence = resolve_fence(engine, sub, principal.scope()) if fence_changed else None
    with scoped(engine, SYSTEM) as conn:
        stopped = update_subscription(conn, sub_id, sub, fence=fence)
        _audit_change(conn, principal, "subscription_update", sub_id,
                      changed=sorted(patch.model_fields_set), stopped_deliveries=stopped)
        record = conn.execute(sa.text(_LIST_SQL + " WHERE id = :id"),
                              {"id": sub_id, "deleted": DELETED}).mappings().one()
    return _subscription_record(record)


def delete(engine: Engine, principal: Principal, sub_id: int) -> int:
    """Delete a subscription of the caller's (kept for the audit); return the pending deliveries stopped."""
    _owned(engine, principal, sub_id)
    with scoped(engine, SYSTEM) as conn:
        stopped = delete_subscription(conn, sub_id)
        _audit_change(conn, principal, "subscription_delete", sub_id, stopped_deliveries=stopped)
    return stopped


def enable(engine: Engine, settings: Settings, principal: Principal, sub_id: int) -> int:
    """Enable a subscription disabled by a 410 or a dead letter; return how many deliveries are queued again.

    Its webhook is checked again first. Dead-lettered deliveries stay dead: replay them one by one.
    """
    row = _owned(engine, principal, sub_id)
    if row["webhook_url"] is not None:
        webhooks.check_target(row["webhook_url"], settings)
    with scoped(engine, SYSTEM) as conn:
        requeued = enable_subscription(conn, sub_id) if row["status"] == "disabled" else 0
        _audit_change(conn, principal, "subscription_enable", sub_id, requeued_deliveries=requeued,
                      was=row["disabled_reason"])
        if requeued:
            conn.execute(sa.text("SELECT pg_notify('rutas_alerts', '')"))
    return requeued


def rotate_secret(engine: Engine, settings: Settings, principal: Principal, sub_id: int) -> str:
    """Give a subscription of the caller's a new signing secret and return it (shown only now).

    Deliveries posted from now on, retries included, are signed with it; the old one stops working.
    """
    _owned(engine, principal, sub_id)
    secret = webhooks.new_secret()
    with scoped(engine, SYSTEM) as conn:
        conn.execute(sa.text("UPDATE subscriptions SET secret = :secret WHERE id = :id"),
                     {"id": sub_id, "secret": webhooks.seal(secret, settings)})
        _audit_change(conn, principal, "subscription_rotate_secret", sub_id)
    return secret


@router.patch("/subscriptions/{sub_id}", summary="Change a subscription")
def patch_subscription(sub_id: int, state: StateDep, principal: PrincipalDep,
                       body: SubscriptionPatch) -> dict[str, Any]:
    """Change the name, fence, triggers, filters, webhook URL or stream of a subscription (owner or admin)."""
    return update(state.engine, state.settings, principal, sub_id, body)


@router.delete("/subscriptions/{sub_id}", summary="Delete a subscription")
def delete_subscription_endpoint(sub_id: int, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """Delete a subscription: no more alerts, pending deliveries stop; its history stays for the audit."""
    stopped = delete(state.engine, principal, sub_id)
    return {"id": sub_id, "status": "deleted", "stopped_deliveries": stopped}


@router.post("/subscriptions/{sub_id}/enable", summary="Enable a disabled subscription")
def enable_endpoint(sub_id: int, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """Enable a subscription a 410 or a dead letter disabled; its stopped deliveries are sent again."""
    requeued = enable(state.engine, state.settings, principal, sub_id)
    return {"id": sub_id, "status": "enabled", "requeued_deliveries": requeued}


@router.post("/subscriptions/{sub_id}/rotate-secret", summary="Rotate the signing secret")
def rotate_endpoint(sub_id: int, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """A new signing secret (``whsec_...``), shown only in this answer; the old one stops signing."""
    return {"id": sub_id, "secret": rotate_secret(state.engine, state.settings, principal, sub_id)}
