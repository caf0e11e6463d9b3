"""``rutas demo``: every stage on the bundled data, in pipeline order, then the API.

Each stage is the ``demo_stage`` of its command module, so the demo shows exactly what the
commands do. The demo can be run again: loads are idempotent and layers are replaced.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer

from geodata import db
from geodata.settings import Settings, get_settings
from scripts import cli_alerts, cli_api, cli_ingest, cli_maps, cli_network, cli_routes
from scripts.console import console, friendly_errors, out

Stage = tuple[str, Callable[[Settings], None]]

STAGES: list[Stage] = [
    ("1. Registros: carga de incidentes OIM / records: loading IOM incidents", cli_ingest.demo_stage),
    ("2. Redes y ajuste a la red / networks and snapping", cli_network.demo_stage),
    ("3. Corredores (ilustrativos) / corridors (illustrative)", cli_maps.demo_corridors_stage),
    ("4. Rutas emergentes / emerging routes", cli_routes.demo_stage),
    ("5. Riesgo y mapas / risk and maps", cli_maps.demo_stage),
    ("6. Alertas en la frontera / border alerts", cli_alerts.demo_stage),
    ("7. API: claves de prueba / API: keys to try it", cli_api.demo_stage),
]


@friendly_errors
def _demo(
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Do not start the API at the end")] = False,
) -> None:
    """Run every stage on the demo data and print where the products are."""
    settings = get_settings()
    out.print("[bold]Rutas demo[/] — datos / data: "
              f"{settings.data_dir}  ·  base de datos / database: "
              f"{'integrada / embedded' if settings.embedded else 'RUTAS_DATABASE_URL'}")
    revision = db.upgrade(settings)
    out.print(f"Esquema / schema: revision {revision}")
    for title, stage in STAGES:
        console.rule(f"[bold]{title}")
        started = time.perf_counter()
        stage(settings)
        out.print(f"[dim]({time.perf_counter() - started:.1f} s)[/]")
    console.rule("[bold]Fuentes / sources")
    out.print("Source: IOM Missing Migrants Project (CC BY 4.0) · Natural Earth · Global Map © ISCGM and "
              "national mapping agencies (non-commercial) · © OpenStreetMap contributors (ODbL) · "
              "US BTS/CBP ports of entry")
    if not no_serve:
        console.rule("[bold]API")
        cli_api.serve(settings, settings.api_host, settings.api_port)


def register(app: typer.Typer) -> None:
    """Add ``rutas demo`` to the command line."""
    app.command("demo")(_demo)
