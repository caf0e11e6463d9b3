"""``rutas alerts create|list|deliveries|update|delete|enable|rotate-secret|worker`` and the demo stage.

The command line acts for an administrator (it holds the database's credentials), so it may
manage every subscription; ``create --country`` subscribes for that country's office.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from rich.table import Table

from api import subscriptions
from api.auth import Principal
from api.delivery import Worker
from api.subscriptions import SubscriptionIn, SubscriptionPatch, subscribe
from geodata import db
from geodata.errors import InputError
from geodata.settings import Settings, get_settings
from routes.alerts import DELETED, backfill_event_alerts
from scripts.console import friendly_errors, out, print_json

alerts_app = typer.Typer(help="Alert subscriptions and delivery / Suscripciones y envío de alertas.",
                         no_args_is_help=True)
#: Radius (metres) of the demo's fence around its border sector.
DEMO_RADIUS_M = 25_000.0


def _read_fence(path: Path) -> dict[str, Any]:
    """The GeoJSON geometry of a file: a geometry, a Feature, or a FeatureCollection's first feature."""
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: cannot read a GeoJSON geometry ({type(error).__name__}).",
                         f"{path}: no se puede leer una geometría GeoJSON ({type(error).__name__}).",
                         code="bad_file") from None
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: not a GeoJSON object.", f"{path}: no es un objeto GeoJSON.",
                         code="bad_file")
    if loaded.get("type") == "FeatureCollection" and loaded.get("features"):
        loaded = loaded["features"][0]
    geometry: dict[str, Any] = loaded.get("geometry", loaded) if loaded.get("type") == "Feature" else loaded
    return geometry


def _principal(country: str | None) -> Principal:
    # the command line acts for an office when given its country, else as an administrator
    if country:
        return Principal(subject="cli", role="border_authority", country=country.upper())
    return Principal(subject="cli", role="admin", country=None)


@friendly_errors
def _create(
    name: Annotated[str, typer.Option(help="Name of the subscription")],
    trigger: Annotated[list[str], typer.Option(
        help="event_in_fence, route_new, route_intensifying or route_convergence (repeat)")],
    fence: Annotated[Path | None, typer.Option(
        help="GeoJSON file with the fence polygon (EPSG:4326)")] = None,
    border_segment: Annotated[int | None, typer.Option(help="Border segment id to fence")] = None,
    crossing: Annotated[int | None, typer.Option(help="Crossing id to fence")] = None,
    corridor: Annotated[int | None, typer.Option(help="Corridor id to fence")] = None,
    radius_m: Annotated[float, typer.Option(help="Metres around the segment, crossing or corridor")] = 0.0,
    webhook: Annotated[str | None, typer.Option(help="Webhook URL the alerts are posted to")] = None,
    country: Annotated[str | None, typer.Option(help="ISO3 of the subscribing office")] = None,
    kind: Annotated[list[str] | None, typer.Option(help="Only these event kinds (repeat)")] = None,
    crime_type: Annotated[list[str] | None, typer.Option(help="Only these crime types (repeat)")] = None,
    min_persons: Annotated[int | None, typer.Option(
        help="Only events with at least this many persons")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {id, secret} as JSON")] = False,
) -> None:
    """Subscribe a fence to alerts; prints the id and the signing secret (shown only once)."""
    settings = get_settings()
    db.upgrade(settings)
    geometry = None if fence is None else _read_fence(fence)
    request = SubscriptionIn(name=name, triggers=trigger, fence=geometry, border_segment_id=border_segment,
                             crossing_id=crossing, corridor_id=corridor, radius_m=radius_m,
                             webhook_url=webhook, kinds=kind or [], crime_types=crime_type or [],
                             min_persons=min_persons)
    sub_id, secret = subscribe(db.get_engine(settings), settings, _principal(country), request)
    if as_json:
        print_json({"id": sub_id, "secret": secret})
    else:
        out.print(f"Suscripción / subscription {sub_id}; secreto de firma / signing secret "
                  f"(guárdelo / keep it): {secret}", highlight=False, soft_wrap=True)


@friendly_errors
def _list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False) -> None:
    """List the subscriptions with their alert and delivery counts."""
    settings = get_settings()
    with db.scoped(db.get_engine(settings)) as conn:
        rows = [dict(r) for r in conn.execute(sa.text(
            "SELECT s.id, s.name, s.country, s.triggers, s.webhook_url, "
            "CASE WHEN s.status = 'disabled' AND s.disabled_reason = :deleted THEN 'deleted' "
            "ELSE s.status END AS status, "
            "(SELECT count(*) FROM alerts a WHERE a.subscription_id = s.id) AS alerts, "
            "(SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.id AND d.status = 'delivered') "
            "AS delivered, (SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.id "
            "AND d.status = 'pending') AS pending FROM subscriptions s ORDER BY s.id"),
            {"deleted": DELETED}).mappings()]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "nombre / name", "país / country", "disparadores / triggers", "webhook",
                  "estado / status", "alertas / alerts", "entregadas / delivered", "pendientes / pending")
    for r in rows:
        table.add_row(str(r["id"]), r["name"], r["country"] or "", ", ".join(r["triggers"]),
                      r["webhook_url"] or "(SSE)", r["status"], str(r["alerts"]), str(r["delivered"]),
                      str(r["pending"]))
    out.print(table)


@friendly_errors
def _deliveries(
    subscription: Annotated[int, typer.Argument(help="Subscription id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Show the deliveries of a subscription, newest first, with their tries and last status code."""
    settings = get_settings()
    with db.scoped(db.get_engine(settings)) as conn:
        rows = [dict(r) for r in conn.execute(sa.text(
            "SELECT d.id, d.alert_id, a.trigger, d.status, d.tries, d.last_status_code, d.next_attempt_at, "
            "d.finished_at FROM deliveries d JOIN alerts a ON a.id = d.alert_id "
            "WHERE d.subscription_id = :s ORDER BY d.id DESC LIMIT 200"), {"s": subscription}).mappings()]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "alerta / alert", "disparador / trigger", "estado / status", "intentos / tries",
                  "código / code", "próximo / next", "fin / finished")
    for r in rows:
        table.add_row(str(r["id"]), str(r["alert_id"]), r["trigger"], r["status"], str(r["tries"]),
                      str(r["last_status_code"] or ""), str(r["next_attempt_at"])[:19],
                      str(r["finished_at"] or "")[:19])
    out.print(table)


@friendly_errors
def _update(
    subscription: Annotated[int, typer.Argument(help="Subscription id")],
    name: Annotated[str | None, typer.Option(help="New name")] = None,
    trigger: Annotated[list[str] | None, typer.Option(help="New triggers (repeat)")] = None,
    fence: Annotated[Path | None, typer.Option(help="GeoJSON file with a new fence (EPSG:4326)")] = None,
    border_segment: Annotated[int | None, typer.Option(help="Fence this border segment instead")] = None,
    crossing: Annotated[int | None, typer.Option(help="Fence this crossing instead")] = None,
    corridor: Annotated[int | None, typer.Option(help="Fence this corridor instead")] = None,
    radius_m: Annotated[float | None, typer.Option(
        help="Metres around the new reference, or alone: around the stored one")] = None,
    webhook: Annotated[str | None, typer.Option(help="New webhook URL (checked as at creation)")] = None,
    no_webhook: Annotated[bool, typer.Option("--no-webhook", help="Remove the webhook")] = False,
    kind: Annotated[list[str] | None, typer.Option(help="Only these event kinds (repeat)")] = None,
    crime_type: Annotated[list[str] | None, typer.Option(help="Only these crime types (repeat)")] = None,
    min_persons: Annotated[int | None, typer.Option(help="Only events with at least N persons")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the subscription as JSON")] = False,
) -> None:
    """Change a subscription: only the options given change."""
    settings = get_settings()
    changes: dict[str, Any] = {key: value for key, value in {
        "name": name, "triggers": trigger, "border_segment_id": border_segment, "crossing_id": crossing,
        "corridor_id": corridor, "radius_m": radius_m, "webhook_url": webhook, "kinds": kind,
        "crime_types": crime_type, "min_persons": min_persons}.items() if value is not None}
    if fence is not None:
        changes["fence"] = _read_fence(fence)
    if no_webhook:
        changes["webhook_url"] = None
    record = subscriptions.update(db.get_engine(settings), settings, _principal(None), subscription,
                                  SubscriptionPatch(**changes))
    if as_json:
        print_json(record)
    else:
        out.print(f"Suscripción / subscription {subscription} actualizada / updated: "
                  f"{', '.join(sorted(changes)) or '-'}", highlight=False, soft_wrap=True)


@friendly_errors
def _delete(subscription: Annotated[int, typer.Argument(help="Subscription id")]) -> None:
    """Delete a subscription: no more alerts, pending deliveries stop; its history stays for the audit."""
    settings = get_settings()
    stopped = subscriptions.delete(db.get_engine(settings), _principal(None), subscription)
    out.print(f"Suscripción / subscription {subscription} eliminada / deleted; entregas detenidas / "
              f"deliveries stopped: {stopped}", highlight=False, soft_wrap=True)


@friendly_errors
def _enable(subscription: Annotated[int, typer.Argument(help="Subscription id")]) -> None:
    """Enable a subscription disabled by its webhook's 410 or a dead letter; stopped deliveries go again."""
    settings = get_settings()
    requeued = subscriptions.enable(db.get_engine(settings), settings, _principal(None), subscription)
    out.print(f"Suscripción / subscription {subscription} activada / enabled; entregas en cola otra vez / "
              f"deliveries queued again: {requeued}", highlight=False, soft_wrap=True)


@friendly_errors
def _rotate_secret(
    subscription: Annotated[int, typer.Argument(help="Subscription id")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {id, secret} as JSON")] = False,
) -> None:
    """Give a subscription a new signing secret, printed only now; the old one stops signing."""
    settings = get_settings()
    secret = subscriptions.rotate_secret(db.get_engine(settings), settings, _principal(None), subscription)
    if as_json:
        print_json({"id": subscription, "secret": secret})
    else:
        out.print(f"Suscripción / subscription {subscription}; secreto nuevo / new signing secret "
                  f"(guárdelo / keep it): {secret}", highlight=False, soft_wrap=True)


@friendly_errors
def _worker() -> None:
    """Deliver alerts to webhooks until interrupted (several workers may run at once)."""
    settings = get_settings()
    db.upgrade(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.print("Entregando alertas / delivering alerts (Ctrl-C to stop)")
    try:
        Worker(db.get_engine(settings), settings).run(stop)
    except KeyboardInterrupt:
        stop.set()


def register(app: typer.Typer) -> None:
    """Add ``alerts create|list|deliveries|update|delete|enable|rotate-secret|worker`` to ``rutas``."""
    alerts_app.command("create")(_create)
    alerts_app.command("list")(_list)
    alerts_app.command("deliveries")(_deliveries)
    alerts_app.command("update")(_update)
    alerts_app.command("delete")(_delete)
    alerts_app.command("enable")(_enable)
    alerts_app.command("rotate-secret")(_rotate_secret)
    alerts_app.command("worker")(_worker)
    app.add_typer(alerts_app, name="alerts")


def busiest_border_segment(settings: Settings) -> tuple[int, int] | None:
    """The border segment with the most incidents within ``border_near_km`` and their count."""
    with db.scoped(db.get_engine(settings)) as conn:
        row = conn.execute(sa.text(
            "SELECT s.border_segment_id, count(*) FROM event_snaps s JOIN events e ON e.id = s.event_id "
            "WHERE s.border_segment_id IS NOT NULL AND s.border_distance_m <= :near AND e.kind = 'incident' "
            "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"), {"near": settings.border_near_km * 1000}).first()
    return None if row is None else (int(row[0]), int(row[1]))


def demo_stage(settings: Settings, segment_id: int | None = None) -> None:
    """Demo: subscribe the border sector with the most IOM incidents (or ``segment_id``), show its alerts."""
    busiest = busiest_border_segment(settings)
    if busiest is None:
        out.print("[yellow]Alerts: no incident is snapped near a border yet (run `rutas snap`).[/]")
        return
    segment, near = busiest
    if segment_id is not None:
        segment = segment_id
    engine = db.get_engine(settings)
    with db.scoped(engine) as conn:
        countries = conn.execute(sa.text("SELECT country_a, country_b FROM border_segments WHERE id = :id"),
                                 {"id": segment}).one()
    request = SubscriptionIn(name=f"Demo: border {countries[0]}-{countries[1]} sector {segment}",
                             triggers=["event_in_fence", "route_new", "route_intensifying",
                                       "route_convergence"],
                             border_segment_id=segment, radius_m=DEMO_RADIUS_M)
    sub_id, _ = subscribe(engine, settings, _principal(None), request)
    raised = backfill_event_alerts(engine, sub_id)
    out.print(f"[bold]Alerts[/]: subscription {sub_id} on the {countries[0]}-{countries[1]} border sector "
              f"{segment} ({near} incidents within {settings.border_near_km:g} km), fence "
              f"{DEMO_RADIUS_M / 1000:g} km: {raised.alerts} event alerts from the stored records.")
    with db.scoped(engine) as conn:
        rows = conn.execute(sa.text(
            "SELECT a.id, a.payload->'event'->>'occurred_at' AS at, "
            "a.payload->'event'->>'owner_country' AS c, a.payload->'event'->>'persons' AS persons "
            "FROM alerts a WHERE a.subscription_id = :s "
            "ORDER BY a.payload->'event'->>'occurred_at' DESC LIMIT 5"), {"s": sub_id}).all()
    table = Table("alerta / alert", "fecha / date", "país / country", "personas / persons",
                  title="Últimas alertas / latest alerts")
    for r in rows:
        table.add_row(str(r[0]), str(r[1])[:10], str(r[2]), str(r[3]))
    out.print(table)
    out.print("  stream them live: GET /alerts/stream (server-sent events); webhooks: "
              "rutas alerts create --webhook URL ...", soft_wrap=True)
