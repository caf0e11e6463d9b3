"""API service commands: ``rutas serve``, ``keys create``, ``keys revoke``, ``share``, ``audit verify``."""

from __future__ import annotations

from typing import Annotated

import typer

from api.audit import verify_chain
from api.auth import create_key, revoke_key, set_agreement
from api.web import install_assets
from geodata import db
from geodata.errors import RutasError
from geodata.settings import Settings, get_settings
from scripts.console import friendly_errors, out, print_json

keys_app = typer.Typer(help="API keys / Claves de API.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail / La traza de auditoría.", no_args_is_help=True)


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve the API with uvicorn until interrupted (one process, the app built from ``settings``)."""
    import uvicorn

    from api.app import create_app
    from api.delivery import start_worker

    # the alert delivery worker runs beside the API (more may run with `rutas alerts worker`)
    _, stop = start_worker(db.get_engine(settings), settings)
    try:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    finally:
        stop.set()


@friendly_errors
def _serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port")] = None,
) -> None:
    """Serve the API (OGC API Features and Tiles) / Servir la API."""
    settings = get_settings()
    db.upgrade(settings)
    host = host or settings.api_host
    port = port or settings.api_port
    try:
        install_assets(settings)
    except RutasError as error:  # the API works without the map; say why the map will not
        out.print(f"[yellow]Web map unavailable / mapa web no disponible:[/] {error}")
    out.print(f"Rutas API: http://{host}:{port}/  (OpenAPI: /openapi.json, map: /map)")
    serve(settings, host, port)


@friendly_errors
def _keys_create(
    role: Annotated[str, typer.Option(help="admin, steward, prosecutor, border_authority or analyst")],
    country: Annotated[str | None, typer.Option(help="ISO 3166-1 alpha-3 country of the key")] = None,
    label: Annotated[str, typer.Option(help="Who or what the key is for")] = "",
) -> None:
    """Create an API key and print it as the last word (it is shown only once)."""
    settings = get_settings()
    db.upgrade(settings)
    key = create_key(db.get_engine(settings), role, country, label)
    scope = f" ({country.upper()})" if country else ""
    out.print(f"Clave nueva / new key for {role}{scope}, guárdela / keep it safe: {key}", highlight=False,
              soft_wrap=True)


@friendly_errors
def _keys_revoke(
    key: Annotated[str, typer.Argument(help="The key, or its id (the part after 'rutas_')")],
) -> None:
    """Revoke an API key: every running server refuses it as soon as the revocation commits."""
    settings = get_settings()
    if not revoke_key(db.get_engine(settings), key):
        raise RutasError(f"No active key has the id {key[:20]!r}.",
                         f"Ninguna clave activa tiene el id {key[:20]!r}.", code="not_found")
    out.print("Clave revocada / key revoked")


@friendly_errors
def _share(
    owner: Annotated[str, typer.Argument(help="Country that owns the records (ISO3)")],
    partner: Annotated[str, typer.Argument(help="Country that may see them (ISO3)")],
    level: Annotated[str, typer.Option(help="aggregate, detail or none (remove)")] = "aggregate",
) -> None:
    """Record a sharing agreement: what PARTNER sees of OWNER's records."""
    settings = get_settings()
    set_agreement(db.get_engine(settings), owner, partner, None if level == "none" else level)
    out.print(f"{partner.upper()} ve / sees {owner.upper()}: {level}")


@friendly_errors
def _audit_verify(
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Check the hash chain of the audit log; exit status 1 when a row was edited or deleted."""
    settings = get_settings()
    report = verify_chain(db.get_engine(settings))
    if json_output:
        print_json(report.as_record())
    elif report.ok:
        out.print(f"Cadena de auditoría íntegra / audit chain intact: {report.rows} rows verified")
    else:
        out.print(f"[bold red]Cadena rota / chain broken[/] at row {report.broken_id}: "
                  f"{report.reason_es} / {report.reason}")
    if not report.ok:
        raise typer.Exit(code=1)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``keys``, ``share`` and ``audit`` to the ``rutas`` command line."""
    app.command("serve")(_serve)
    app.command("share")(_share)
    keys_app.command("create")(_keys_create)
    keys_app.command("revoke")(_keys_revoke)
    audit_app.command("verify")(_audit_verify)
    app.add_typer(keys_app, name="keys")
    app.add_typer(audit_app, name="audit")


def demo_stage(settings: Settings) -> None:
    """Demo: create an analyst and a prosecutor key and say how to try the API with them."""
    try:
        engine = db.get_engine(settings)
        analyst = create_key(engine, "analyst", None, "demo")
        prosecutor = create_key(engine, "prosecutor", "MEX", "demo")
    except RutasError as error:
        out.print(f"[red]API keys could not be created: {error}[/]")
        return
    base = f"http://{settings.api_host}:{settings.api_port}"
    out.print("[bold]API[/] (rutas serve):")
    out.print(f"  {base}/collections  —  OGC API Features; tiles at "
              "/collections/events/tiles/WebMercatorQuad/z/x/y", soft_wrap=True)
    out.print(f"  analyst key:    {analyst}", highlight=False, soft_wrap=True)
    out.print(f"  prosecutor MEX: {prosecutor}", highlight=False, soft_wrap=True)
    out.print(f"  try: curl -H 'Authorization: Bearer {analyst}' {base}/collections/event-cells/items",
              highlight=False, soft_wrap=True)
    out.print(f"  web map: {base}/map#key={prosecutor}", highlight=False, soft_wrap=True)
