"""Alert rules: subscriptions with fences, and the triggers that raise alerts into the outbox.

Fences are stored as EPSG:4326 multipolygons in ``subscriptions.fence`` (GiST-indexed). A fence
given by reference (a border segment or a crossing plus a radius, a corridor plus a buffer) is
turned into a polygon once, at subscription time, by buffering the reference geometry by the
radius in metres on the geography (geodesic, valid across the region).

Event triggers (``event_in_fence``) run inside the ingest batch's transaction
(:func:`raise_event_alerts`, the ``on_loaded`` hook): one set-based statement joins the batch's new
events to the fences, inserts one alert per (subscription, event) and its outbox row, so an alert
exists exactly when its events are committed. Run triggers (``route_new``, ``route_intensifying``,
``route_convergence``) run after ``rutas run`` (:func:`raise_run_alerts`). Alerts are unique per
(subscription, trigger, object key): re-running or re-loading never raises one twice.

A subscription is changed in place (:func:`update_subscription`), disabled by its webhook's 410 or
a dead letter (:func:`disable_subscription`) until enabled again (:func:`enable_subscription`), and
deleted by marking it (:func:`delete_subscription`): a disabled or deleted one raises nothing and
its pending deliveries stop, while its alerts and deliveries stay for the audit.

Privacy: an alert carries a record of the subscription's own country in detail (whatever its role:
a border authority is told where an interception happened in its sector, the purpose of issue 7),
and another country's record in detail only when the API would show it to the subscriber, read
through the records' row-level security in the subscriber's scope
(:func:`routes.disclosure.records_in_detail`); otherwise only its kind, crime type, owner country
and month. Another country's victim identification raises no ``event_in_fence`` alert at all. A
``route_convergence`` alert names a corridor the subscriber's office owns or the API lets it read
(:func:`routes.disclosure.corridors_in_detail`). An alert about a route carries its counts, first
and last event dates and trend under the API's own rule (:mod:`routes.disclosure`), read in the
subscription owner's scope when the alert is raised.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from geodata.db import SYSTEM, Scope, database_url, reading_as, scoped
from geodata.errors import InputError
from geodata.settings import Settings
from routes.disclosure import corridors_in_detail, records_in_detail, route_figures

TRIGGERS = ("event_in_fence", "route_new", "route_intensifying", "route_convergence")
EVENT_KINDS = ("incident", "interception", "victim_identification")
CRIME_TYPES = ("trafficking", "smuggling", "both", "unknown")
#: Corridor kinds a route may converge with, and how close (metres) its path must run to one.
CONVERGENCE_KINDS = ("drug", "fuel")
CONVERGENCE_M = 1_000.0
MAX_RADIUS_M = 200_000.0
NOTIFY_CHANNEL = "rutas_alerts"
INTENSIFYING = "intensifying_hot"
#: PostgreSQL NOTIFY payloads are small: the worker reads the outbox itself.
_NOTIFY = sa.text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')")


def listen_dsn(settings: Settings) -> str:
    """The libpq connection string of the store, for a connection that LISTENs on ``NOTIFY_CHANNEL``."""
    url = make_url(database_url(settings)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


@dataclass(frozen=True)
class Subscription:
    """What a caller asks to be told about (fence in EPSG:4326 GeoJSON, or a reference)."""

    name: str
    triggers: tuple[str, ...]
    fence: dict[str, Any] | None = None
    border_segment_id: int | None = None
    crossing_id: int | None = None
    corridor_id: int | None = None
    radius_m: float = 0.0
    kinds: tuple[str, ...] = ()
    crime_types: tuple[str, ...] = ()
    min_persons: int | None = None
    webhook_url: str | None = None
    sse: bool = True

    def check(self) -> None:
        """Refuse unknown triggers or filters, a missing or double fence, radii out of range."""
        def bad(field: str, value: object, why: str, why_es: str) -> InputError:
            return InputError(f"{field}={value!r}: {why}", f"{field}={value!r}: {why_es}", code="invalid")

        if not self.name.strip() or len(self.name) > 200:
            raise bad("name", self.name, "give a name of 1 to 200 characters.",
                      "indique un nombre de 1 a 200 caracteres.")
        if not self.triggers or any(t not in TRIGGERS for t in self.triggers):
            raise bad("triggers", list(self.triggers), f"use one or more of {', '.join(TRIGGERS)}.",
                      f"use uno o varios de {', '.join(TRIGGERS)}.")
        for field, values, allowed in (("kinds", self.kinds, EVENT_KINDS),
                                       ("crime_types", self.crime_types, CRIME_TYPES)):
            if any(v not in allowed for v in values):
                raise bad(field, list(values), f"use values among {', '.join(allowed)}.",
                          f"use valores entre {', '.join(allowed)}.")
        if self.min_persons is not None and not 0 <= self.min_persons <= 100_000:
            raise bad("min_persons", self.min_persons, "use a whole number from 0 to 100000.",
                      "use un número entero de 0 a 100000.")
        given = [n for n, v in (("fence", self.fence), ("border_segment_id", self.border_segment_id),
                                ("crossing_id", self.crossing_id), ("corridor_id", self.corridor_id))
                 if v is not None]
        if len(given) != 1:
            raise bad("fence", given, "give exactly one of fence (GeoJSON polygon), border_segment_id, "
                      "crossing_id or corridor_id.", "indique exactamente uno de fence (polígono GeoJSON), "
                      "border_segment_id, crossing_id o corridor_id.")
        if not 0 <= self.radius_m <= MAX_RADIUS_M or (self.fence is None and self.radius_m <= 0
                                                     and self.corridor_id is None):
            raise bad("radius_m", self.radius_m, f"use metres above 0 and at most {MAX_RADIUS_M:.0f} "
                      "around a border segment or crossing.",
                      f"use metros por encima de 0 y como máximo {MAX_RADIUS_M:.0f} alrededor de un "
                      "tramo de frontera o paso.")
        if self.webhook_url is None and not self.sse:
            raise bad("webhook_url", None, "give a webhook URL or keep the SSE stream on.",
                      "indique una URL de webhook o mantenga el flujo SSE.")

    def filters(self) -> dict[str, Any]:
        """The filters as stored (JSON): only those given."""
        out: dict[str, Any] = {}
        if self.kinds:
            out["kinds"] = list(self.kinds)
        if self.crime_types:
            out["crime_types"] = list(self.crime_types)
        if self.min_persons is not None:
            out["min_persons"] = self.min_persons
        return out


_REFERENCES = {
    "border_segment_id": "SELECT geom FROM border_segments WHERE id = :id",
    "crossing_id": "SELECT geom FROM crossings WHERE id = :id",
    "corridor_id": "SELECT geom FROM corridors WHERE id = :id",
}


def _fence_sql(sub: Subscription) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """SQL giving the fence (MultiPolygon, EPSG:4326), its parameters and the stored reference."""
    polygon = ("ST_Multi(ST_CollectionExtract(ST_MakeValid({g}), 3))")
    buffered = "ST_Buffer(CAST({g} AS geography), :radius)::geometry"
    if sub.fence is not None:
        g = "ST_SetSRID(ST_GeomFromGeoJSON(:fence), 4326)"
        if sub.radius_m > 0:
            g = buffered.format(g=g)
        return "SELECT " + polygon.format(g=g), {"fence": json.dumps(sub.fence), "radius": sub.radius_m}, {}
    for name, sql in _REFERENCES.items():
        ref = getattr(sub, name)
        if ref is not None:
            g = "ref.geom" if sub.radius_m <= 0 else buffered.format(g="ref.geom")
            return (f"SELECT {polygon.format(g=g)} FROM ({sql}) AS ref",
                    {"id": int(ref), "radius": sub.radius_m}, {name: int(ref), "radius_m": sub.radius_m})
    raise AssertionError("checked by Subscription.check")


def resolve_fence(engine: Engine, sub: Subscription, scope: Scope) -> tuple[bytes, dict[str, Any]]:
    """The fence of ``sub`` as EWKB (MultiPolygon, EPSG:4326) and its stored reference.

    Resolved under ``scope``: a segment, crossing or corridor the caller may not see does not exist.

    Raises
    ------
    InputError
        The subscription does not pass :meth:`Subscription.check`, the fence is not a valid
        polygon, or the referenced segment, crossing or corridor does not exist for the caller.
    """
    sub.check()
    sql, params, ref = _fence_sql(sub)
    try:
        with scoped(engine, scope) as conn:
            fence = conn.execute(sa.text(f"SELECT ST_AsEWKB(f) FROM ({sql}) AS q(f) WHERE NOT ST_IsEmpty(f)"),
                                 params).scalar_one_or_none()
    except sa.exc.DBAPIError:
        raise InputError("fence: it is not a valid GeoJSON geometry in EPSG:4326 (lon, lat).",
                         "fence: no es una geometría GeoJSON válida en EPSG:4326 (lon, lat).",
                         code="invalid") from None
    if fence is None:
        what = next(iter(ref), "fence")
        raise InputError(
            f"{what}: nothing to fence: the polygon is empty, or the {what} does not exist in your scope "
            "(give a radius_m for points and lines).",
            f"{what}: no hay nada que cercar: el polígono está vacío, o el {what} no existe en su alcance "
            "(indique radius_m para puntos y líneas).", code="invalid")
    return bytes(fence), ref


def create_subscription(engine: Engine, sub: Subscription, *, scope: Scope, owner: str, secret: str) -> int:
    """Store a subscription for ``owner`` (of ``scope``'s country and role) and return its id.

    The fence is resolved under the caller's scope (a corridor the caller may not see does not
    exist for it), then the row is written by the service.

    Raises
    ------
    InputError
        The fence is not a valid polygon, or the referenced segment, crossing or corridor does
        not exist for the caller.
    """
    fence, ref = resolve_fence(engine, sub, scope)
    with scoped(engine, SYSTEM) as conn:
        return int(conn.execute(sa.text(
            "INSERT INTO subscriptions (name, owner, country, role, fence, fence_ref, triggers, filters, "
            "webhook_url, secret, sse) VALUES (:name, :owner, :country, :role, ST_GeomFromEWKB(:fence), "
            "CAST(:ref AS jsonb), :triggers, CAST(:filters AS jsonb), :url, :secret, :sse) RETURNING id"),
            {"name": sub.name.strip(), "owner": owner, "country": scope.country, "role": scope.role,
             "fence": fence, "ref": json.dumps(ref), "triggers": list(dict.fromkeys(sub.triggers)),
             "filters": json.dumps(sub.filters()), "url": sub.webhook_url, "secret": secret,
             "sse": sub.sse}).scalar_one())


#: ``disabled_reason`` of a deleted subscription: kept (with its alerts and deliveries) for the
#: audit, never enabled again, raising and delivering nothing.
DELETED = "deleted"
#: Pending deliveries of a subscription stop (status ``disabled``) when it is disabled or deleted.
#: One a worker is posting at that moment (locked by its round) is left to its outcome: waiting
#: for it could deadlock with a worker disabling the same subscription.
_STOP_PENDING = sa.text(
    "UPDATE deliveries SET status = 'disabled', finished_at = now() WHERE id IN ("
    "SELECT id FROM deliveries WHERE subscription_id = :s AND status = 'pending' FOR UPDATE SKIP LOCKED)")


def update_subscription(conn: Connection, sub_id: int, sub: Subscription, *,
                        fence: tuple[bytes, dict[str, Any]] | None) -> int:
    """Rewrite a subscription's name, triggers, filters, webhook and stream in ``conn``'s transaction.

    ``fence`` is the new fence (EWKB, reference) from :func:`resolve_fence`, or None to keep the
    stored one. Without a webhook URL any pending deliveries stop. Returns how many stopped.
    """
    sub.check()
    params: dict[str, Any] = {
        "id": sub_id, "name": sub.name.strip(), "triggers": list(dict.fromkeys(sub.triggers)),
        "filters": json.dumps(sub.filters()), "url": sub.webhook_url, "sse": sub.sse}
    set_fence = ""
    if fence is not None:
        set_fence = ", fence = ST_GeomFromEWKB(:fence), fence_ref = CAST(:ref AS jsonb)"
        params.update(fence=fence[0], ref=json.dumps(fence[1]))
    conn.execute(sa.text(
        "UPDATE subscriptions SET name = :name, triggers = :triggers, filters = CAST(:filters AS jsonb), "
        f"webhook_url = :url, sse = :sse{set_fence} WHERE id = :id"), params)
    if sub.webhook_url is None:
        return int(conn.execute(_STOP_PENDING, {"s": sub_id}).rowcount)
    return 0


def delete_subscription(conn: Connection, sub_id: int) -> int:
    """Mark a subscription deleted and stop its pending deliveries; return how many stopped.

    The row, its alerts, deliveries and attempts stay for the audit. A delivery a worker is
    posting at that moment keeps its outcome; if that is a retry, it is never sent again.
    """
    conn.execute(sa.text(
        "UPDATE subscriptions SET status = 'disabled', disabled_reason = :why WHERE id = :id"),
        {"id": sub_id, "why": DELETED})
    return int(conn.execute(_STOP_PENDING, {"s": sub_id}).rowcount)


def enable_subscription(conn: Connection, sub_id: int) -> int:
    """Enable a disabled subscription, queue again the deliveries its disabling stopped; return how many."""
    conn.execute(sa.text(
        "UPDATE subscriptions SET status = 'enabled', disabled_reason = NULL WHERE id = :id"), {"id": sub_id})
    return int(conn.execute(sa.text(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), finished_at = NULL "
        "WHERE subscription_id = :s AND status = 'disabled'"), {"s": sub_id}).rowcount)


def disable_subscription(conn: Connection, sub_id: int, reason: str) -> int:
    """Disable an enabled subscription (no alerts raised, no deliveries sent); return deliveries stopped."""
    conn.execute(sa.text(
        "UPDATE subscriptions SET status = 'disabled', disabled_reason = :why "
        "WHERE id = :id AND status = 'enabled'"), {"id": sub_id, "why": reason})
    return int(conn.execute(_STOP_PENDING, {"s": sub_id}).rowcount)


#: Whether event e is of subscription s's own country: then the alert carries the record in detail,
#: whatever the subscriber's role. A border authority reads no record in detail through the API, but
#: being told where an interception or incident happened inside its own sector is what it subscribes
#: for (issue 7): the one place alerts give it more than the ``events`` collection. Victim
#: identifications are not part of that exception: of its own country's, a border authority (or an
#: analyst) gets what the API shows it, as of any record it may not read in detail.
_SAME_COUNTRY_SQL = "coalesce(e.owner_country = s.country, false)"
_OWN_SQL = (f"({_SAME_COUNTRY_SQL} AND (e.kind <> 'victim_identification' "
            "OR s.role IN ('admin', 'steward', 'prosecutor')))")
#: Victim identifications raise ``event_in_fence`` alerts only for subscriptions of their owner
#: country: outside it not even their kind and month go out, since a small fence would locate the
#: victim (they still count in route alerts, whose figures follow :mod:`routes.disclosure`).
_VICTIMS_STAY_SQL = f"(e.kind <> 'victim_identification' OR {_SAME_COUNTRY_SQL})"
_PERSONS = ("(coalesce(e.dead, 0) + coalesce(e.missing, 0) + coalesce(e.survivors, 0) "
            "+ coalesce(e.victims, 0))")
#: What an alert says of a record the subscriber may not see in detail: what the API shows it.
WITHHELD_NOTE = ("withheld: your role and your country's sharing agreements do not show this record in "
                 "detail / retenido: su rol y los acuerdos de su país no muestran este registro en detalle")
_EVENT_PAYLOAD = f"""
jsonb_build_object(
    'type', 'alert.event_in_fence', 'subscription_id', s.id, 'subscription', s.name,
    'trigger', 'event_in_fence', 'batch_id', e.batch_id,
    'event', CASE WHEN {{detail}} THEN jsonb_build_object(
        'id', e.id, 'kind', e.kind, 'crime_type', e.crime_type, 'owner_country', e.owner_country,
        'occurred_at', e.occurred_at,
        'date_precision', e.date_precision, 'lon', ST_X(e.geom), 'lat', ST_Y(e.geom),
        'coord_precision_m', e.coord_precision_m, 'persons', {_PERSONS},
        'dead', e.dead, 'missing', e.missing, 'survivors', e.survivors, 'source', e.source)
    ELSE jsonb_build_object(
        'kind', e.kind, 'crime_type', e.crime_type, 'owner_country', e.owner_country,
        'month', to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM'),
        'detail', CAST(:note AS text)) END)
"""
_FILTERS = f"""
    s.status = 'enabled'
    AND (NOT (s.filters ? 'kinds') OR s.filters->'kinds' @> to_jsonb(e.kind))
    AND (NOT (s.filters ? 'crime_types') OR s.filters->'crime_types' @> to_jsonb(e.crime_type))
    AND (NOT (s.filters ? 'min_persons') OR {_PERSONS} >= CAST(s.filters->>'min_persons' AS integer))
"""
_OUTBOX_CTE = """
, outbox AS (
    INSERT INTO deliveries (alert_id, subscription_id)
    SELECT ins.id, ins.subscription_id FROM ins JOIN subscriptions s ON s.id = ins.subscription_id
    WHERE s.webhook_url IS NOT NULL
    RETURNING 1
)"""
_COUNTS = "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM outbox)"
#: Queues the webhook deliveries of the alerts CTE ``ins`` wrote; answers (alerts, deliveries).
_OUTBOX = f"{_OUTBOX_CTE}\n{_COUNTS}\n"
# One spatial match: alerts about the subscriber's own country's records are written at once; the
# other matches (never victim identifications) are returned, to be decided in the subscriber's scope.
_EVENT_ALERTS = f"""
WITH m AS (
    SELECT s.id AS sid, e.id AS eid, s.role, s.country, {_OWN_SQL} AS own,
           CASE WHEN {_OWN_SQL} THEN {_EVENT_PAYLOAD.format(detail="TRUE")} END AS payload
    FROM events e JOIN subscriptions s ON ST_Intersects(s.fence, e.geom)
    WHERE {{where}} AND 'event_in_fence' = ANY (s.triggers) AND {_FILTERS} AND {_VICTIMS_STAY_SQL}
), ins AS (
    INSERT INTO alerts (subscription_id, trigger, object_key, payload)
    SELECT m.sid, 'event_in_fence', 'event:' || m.eid, m.payload FROM m WHERE m.own
    ON CONFLICT ON CONSTRAINT alerts_dedupe DO NOTHING
    RETURNING id, subscription_id
){_OUTBOX_CTE}, others AS (
    SELECT array_agg(m.sid) AS sids, array_agg(m.eid) AS eids, array_agg(m.role) AS roles,
           array_agg(coalesce(m.country, '')) AS countries FROM m WHERE NOT m.own
)
{_COUNTS}, others.* FROM others"""
EVENT_ALERTS_SQL = sa.text(_EVENT_ALERTS.format(where="e.batch_id = :batch"))
#: The same rule over every stored event, for one subscription (the demo's backfill).
BACKFILL_SQL = sa.text(_EVENT_ALERTS.format(where="s.id = :sub"))
#: Alerts about other countries' records (subscription, event, whether the subscriber may see it in
#: detail). A persons filter matches only records whose persons the subscriber may see, as a filter
#: of the API matches only the values it shows (else the alert would tell the persons withheld).
_OTHERS_ALERTS_SQL = sa.text(f"""
WITH ins AS (
    INSERT INTO alerts (subscription_id, trigger, object_key, payload)
    SELECT s.id, 'event_in_fence', 'event:' || e.id, {_EVENT_PAYLOAD.format(detail="p.detail")}
    FROM unnest(CAST(:sids AS bigint[]), CAST(:eids AS bigint[]), CAST(:detail AS boolean[]))
         AS p(sid, eid, detail)
    JOIN subscriptions s ON s.id = p.sid JOIN events e ON e.id = p.eid
    WHERE p.detail OR NOT (s.filters ? 'min_persons')
    ON CONFLICT ON CONSTRAINT alerts_dedupe DO NOTHING
    RETURNING id, subscription_id
){_OUTBOX}""")


@dataclass(frozen=True)
class Raised:
    """How many alerts a trigger evaluation raised, and how many webhook deliveries it queued."""

    alerts: int
    deliveries: int


def _raise_others(conn: Connection, sids: list[int], eids: list[int], roles: list[str],
                  countries: list[str]) -> Raised:
    """Write the alerts about other countries' records, each in detail only where the subscriber's
    scope (its role, country and agreements now) may read that record through the API."""
    by_reader: dict[tuple[str, str], list[int]] = {}
    for eid, role, country in zip(eids, roles, countries, strict=True):
        by_reader.setdefault((role, country), []).append(int(eid))
    seen: dict[tuple[str, str], set[int]] = {}
    for (role, country), ids in by_reader.items():
        scope = subscriber_scope(conn, role, country or None)
        with reading_as(conn, scope) as as_reader:  # the batch is not committed: read it in-transaction
            seen[(role, country)] = records_in_detail(as_reader, ids)
    detail = [int(e) in seen[(r, c)] for e, r, c in zip(eids, roles, countries, strict=True)]
    alerts, deliveries = conn.execute(_OTHERS_ALERTS_SQL, {
        "sids": [int(i) for i in sids], "eids": [int(i) for i in eids], "detail": detail,
        "note": WITHHELD_NOTE}).one()
    return Raised(int(alerts), int(deliveries))


def _event_alerts(conn: Connection, sql: sa.TextClause, params: dict[str, Any]) -> Raised:
    """Run an ``event_in_fence`` evaluation (:data:`EVENT_ALERTS_SQL` or :data:`BACKFILL_SQL`)."""
    alerts, deliveries, sids, eids, roles, countries = conn.execute(sql, params).one()
    raised = Raised(int(alerts), int(deliveries))
    if sids:
        others = _raise_others(conn, sids, eids, roles, countries)
        raised = Raised(raised.alerts + others.alerts, raised.deliveries + others.deliveries)
    if raised.alerts:
        conn.execute(_NOTIFY)
    return raised


def raise_event_alerts(conn: Connection, batch_id: int) -> Raised:
    """Raise ``event_in_fence`` alerts for the new events of one batch, in the caller's transaction.

    The ``on_loaded(conn, batch_id)`` hook of ingest: the alerts and their outbox rows commit or
    roll back with the events, and the delivery worker is woken when they commit. A record of the
    subscription's country is carried in detail; another country's record in detail only when the
    API would show it to the subscriber (:func:`routes.disclosure.records_in_detail` in its scope),
    else as kind, crime type, owner country and month; another country's victim identification
    raises nothing.
    """
    return _event_alerts(conn, EVENT_ALERTS_SQL, {"batch": int(batch_id), "note": WITHHELD_NOTE})


def backfill_event_alerts(engine: Engine, subscription_id: int) -> Raised:
    """Raise ``event_in_fence`` alerts of one subscription for the events already stored.

    Subscriptions see new records only; this is for showing what a fence would have caught. The
    payloads follow the rule of :func:`raise_event_alerts`.
    """
    with scoped(engine, SYSTEM) as conn:
        return _event_alerts(conn, BACKFILL_SQL, {"sub": int(subscription_id), "note": WITHHELD_NOTE})


def on_loaded(conn: Connection, batch_id: int) -> None:
    """The ingest hook (``on_loaded=``): raise the batch's event alerts."""
    raise_event_alerts(conn, batch_id)


#: A route's figures as nobody may see them: what an alert carries if its owner's were not read.
WITHHELD_FIGURES = {"event_count": None, "counts_suppressed": True, "first_event": None, "last_event": None,
                    "trend": None, "trend_suppressed": True}
_ROUTE_PAYLOAD = """
jsonb_build_object(
    'type', 'alert.' || t.trigger, 'subscription_id', s.id, 'subscription', s.name, 'trigger', t.trigger,
    'run_id', r.run_id,
    'route', jsonb_build_object(
        'id', r.id, 'route_key', r.route_key, 'category', r.category, 'previous_category', t.previous,
        'seen_before', r.seen_before, 'crime_types', to_jsonb(r.crime_types),
        'length_m', r.length_m, 'countries', to_jsonb(r.countries),
        'geometry', CAST(ST_AsGeoJSON(r.geom, 6) AS jsonb))
        || coalesce(CAST(:figures AS jsonb) -> (s.role || '|' || coalesce(s.country, '') || '|' || r.id),
                    CAST(:withheld AS jsonb)),
    'corridor', t.corridor)
"""
RUN_ALERTS_SQL = sa.text(f"""
WITH r AS (
    SELECT r.*, (SELECT p.category FROM routes p JOIN analysis_runs a ON a.id = p.run_id
                 WHERE p.route_key = r.route_key AND p.run_id < r.run_id AND a.status = 'succeeded'
                 ORDER BY p.run_id DESC LIMIT 1) AS previous
    FROM routes r WHERE r.run_id = ANY (CAST(:runs AS bigint[]))
), t AS (
    SELECT s.id AS sid, r.id AS rid, 'route_new' AS trigger, 'route:' || r.route_key AS object_key,
           r.previous, CAST(NULL AS jsonb) AS corridor
    FROM r JOIN subscriptions s ON ST_Intersects(s.fence, r.geom)
    WHERE NOT r.seen_before AND 'route_new' = ANY (s.triggers)
    UNION ALL
    SELECT s.id, r.id, 'route_intensifying', 'route:' || r.route_key || ':intensifying:' || r.run_id,
           r.previous, NULL
    FROM r JOIN subscriptions s ON ST_Intersects(s.fence, r.geom)
    WHERE r.category = '{INTENSIFYING}' AND r.previous IS DISTINCT FROM '{INTENSIFYING}'
      AND 'route_intensifying' = ANY (s.triggers)
    UNION ALL
    SELECT s.id, r.id, 'route_convergence', 'route:' || r.route_key || ':corridor:' || c.id,
           r.previous, jsonb_build_object('id', c.id, 'kind', c.kind, 'name', c.name,
                                          'owner_country', c.owner_country)
    FROM r JOIN subscriptions s ON ST_Intersects(s.fence, r.geom)
    JOIN corridors c ON c.kind IN ('drug', 'fuel') AND ST_Intersects(s.fence, c.geom)
         AND ST_DWithin(CAST(r.geom AS geography), CAST(c.geom AS geography), {CONVERGENCE_M})
    WHERE 'route_convergence' = ANY (s.triggers)
      AND (c.owner_country = s.country
           OR CAST(:corridors AS jsonb) ? (s.role || '|' || coalesce(s.country, '') || '|' || c.id))
), ins AS (
    INSERT INTO alerts (subscription_id, trigger, object_key, run_id, payload)
    SELECT s.id, t.trigger, t.object_key, r.run_id, {_ROUTE_PAYLOAD}
    FROM t JOIN subscriptions s ON s.id = t.sid JOIN r ON r.id = t.rid
    WHERE s.status = 'enabled'
      AND (NOT (s.filters ? 'crime_types') OR EXISTS (
           SELECT 1 FROM unnest(r.crime_types) AS ct WHERE s.filters->'crime_types' @> to_jsonb(ct)))
    ON CONFLICT ON CONSTRAINT alerts_dedupe DO NOTHING
    RETURNING id, subscription_id
){_OUTBOX}""")


#: Who owns the enabled subscriptions with run triggers whose fences the runs' routes cross, and
#: which of those routes: the scopes whose view of the routes' figures the alerts need.
_ROUTE_READERS_SQL = sa.text("""
SELECT s.role, s.country, array_agg(DISTINCT r.id) AS route_ids
FROM routes r JOIN subscriptions s ON ST_Intersects(s.fence, r.geom)
WHERE r.run_id = ANY (CAST(:runs AS bigint[])) AND s.status = 'enabled'
  AND s.triggers && ARRAY['route_new', 'route_intensifying', 'route_convergence']
GROUP BY s.role, s.country
""")
_PARTNERS_SQL = sa.text("SELECT owner_country, level FROM sharing_agreements WHERE partner_country = :c")


def subscriber_scope(conn: Connection, role: str, country: str | None) -> Scope:
    """The row-level-security scope of a subscription's owner (role, country and its partners now).

    The same scope the API gives a caller of that role and country, so what an alert carries is
    read exactly as the API would read it for the subscriber.
    """
    partners: dict[str, str] = {}
    if country is not None:
        partners = {str(r.owner_country).strip(): str(r.level)
                    for r in conn.execute(_PARTNERS_SQL, {"c": country})}
    return Scope(role=role, country=country, partners=partners, user="rutas-alerts")


_CONVERGING_CORRIDORS_SQL = sa.text(
    "SELECT array_agg(id) FROM corridors WHERE kind = ANY (CAST(:kinds AS text[]))")


@dataclass(frozen=True)
class _ReadersView:
    """What each subscriber scope may see of the runs' routes and of the corridors they may meet.

    ``figures``: each route's figures keyed ``role|country|route id``; ``corridors``: the drug and
    fuel corridors each scope may read, keyed ``role|country|corridor id`` (JSON objects, bound into
    :data:`RUN_ALERTS_SQL`).
    """

    figures: dict[str, dict[str, Any]]
    corridors: dict[str, bool]


def _read_as_readers(engine: Engine, run_ids: list[int], k: int) -> _ReadersView:
    """The routes' figures and the corridors as each subscriber scope may see them.

    Read under the subscribers' own scopes: :func:`routes.disclosure.route_figures` (row-level
    security of the events) and :func:`routes.disclosure.corridors_in_detail` (that of the
    corridors), the rules the API applies to a caller of that role and country.
    """
    with scoped(engine, SYSTEM) as conn:
        readers = [(row.role, row.country, [int(i) for i in row.route_ids],
                    subscriber_scope(conn, row.role, row.country))
                   for row in conn.execute(_ROUTE_READERS_SQL, {"runs": run_ids})]
        candidates = [int(i) for i in conn.execute(_CONVERGING_CORRIDORS_SQL,
                                                   {"kinds": list(CONVERGENCE_KINDS)}).scalar_one() or []]
    view = _ReadersView({}, {})
    for role, country, route_ids, scope in readers:
        reader = f"{role}|{country or ''}"
        with scoped(engine, scope) as conn:
            for row in route_figures(conn, route_ids, k):
                view.figures[f"{reader}|{row['id']}"] = {
                    "event_count": row["event_count"], "counts_suppressed": bool(row["counts_suppressed"]),
                    "first_event": None if row["first_event"] is None else row["first_event"].isoformat(),
                    "last_event": None if row["last_event"] is None else row["last_event"].isoformat(),
                    "trend": row["trend"], "trend_suppressed": bool(row["trend_suppressed"])}
            for corridor in corridors_in_detail(conn, candidates):
                view.corridors[f"{reader}|{corridor}"] = True
    return view


def raise_run_alerts(engine: Engine, run_ids: list[int], *, k: int) -> Raised:
    """Raise ``route_new``, ``route_intensifying`` and ``route_convergence`` alerts for stored runs.

    A route is new once (its route key), intensifying once per change into the
    ``intensifying_hot`` category (compared with the route's category in its previous run), and
    converging once per corridor (drug or fuel, within 1 km of the route, inside the fence).
    Each alert carries the route's ``event_count``, ``first_event``, ``last_event`` and ``trend``
    as the API would show them to the subscription's owner (:mod:`routes.disclosure`, with k
    records ``k``, ``settings.k_anonymity``): withheld as null with ``counts_suppressed`` /
    ``trend_suppressed`` true, or coarsened, where the owner may not see every member record.
    """
    if not run_ids:
        return Raised(0, 0)
    runs = [int(r) for r in run_ids]
    view = _read_as_readers(engine, runs, k)
    with scoped(engine, SYSTEM) as conn:
        alerts, deliveries = conn.execute(RUN_ALERTS_SQL, {
            "runs": runs, "figures": json.dumps(view.figures), "withheld": json.dumps(WITHHELD_FIGURES),
            "corridors": json.dumps(view.corridors)}).one()
        if alerts:
            conn.execute(_NOTIFY)
    return Raised(int(alerts), int(deliveries))


#: Whether a reader of role ``:role`` (row-level security already limits it to the subscription's
#: country) may read the payloads of subscription ``s``: they were written for its owner's role and
#: country, so only callers the API shows as much (that role, or administrators) read them.
READS_PAYLOAD_SQL = "(:role = 'admin' OR s.role = :role)"


def read_alerts(conn: Connection, after_id: int, limit: int = 100, *, role: str) -> list[dict[str, Any]]:
    """Alerts after ``after_id``, with SSE on, of the subscriptions the connection's scope sees whose
    payloads a reader of ``role`` may read (see :data:`READS_PAYLOAD_SQL`)."""
    rows = conn.execute(sa.text(
        "SELECT a.id, a.subscription_id, a.trigger, a.payload, a.created_at FROM alerts a "
        "JOIN subscriptions s ON s.id = a.subscription_id "
        f"WHERE a.id > :after AND s.sse AND {READS_PAYLOAD_SQL} ORDER BY a.id LIMIT :n"),
        {"after": after_id, "n": limit, "role": role}).mappings()
    return [{"id": r["id"], "subscription_id": r["subscription_id"], "trigger": r["trigger"],
             "created_at": r["created_at"].isoformat(), "data": r["payload"]} for r in rows]
