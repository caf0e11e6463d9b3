"""The ``rutas`` command line. Every command calls the same domain functions as the API."""

from __future__ import annotations

import typer

from geodata import cluster, db
from geodata.settings import get_settings
from scripts.console import friendly_errors, out

app = typer.Typer(
    name="rutas",
    help="Rutas: migratory-route intelligence / inteligencia de rutas migratorias.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The PostGIS store / El almacén PostGIS.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Create or migrate the schema (idempotent)."""
    revision = db.upgrade(get_settings())
    out.print(f"Esquema al día / schema up to date: revision {revision}")


@db_app.command("start")
@friendly_errors
def db_start() -> None:
    """Start the embedded database (when RUTAS_DATABASE_URL is not set)."""
    settings = get_settings()
    if not settings.embedded:
        out.print("RUTAS_DATABASE_URL is set: nothing to start.")
        return
    c = cluster.ensure_running(settings)
    out.print(f"Base de datos integrada en marcha / embedded database running: {c.data_dir}")


@db_app.command("stop")
@friendly_errors
def db_stop() -> None:
    """Stop the embedded database."""
    settings = get_settings()
    if not settings.embedded:
        out.print("RUTAS_DATABASE_URL is set: nothing to stop.")
        return
    was = cluster.stop(settings)
    out.print("Detenida / stopped" if was else "No estaba en marcha / was not running")


@db_app.command("url")
@friendly_errors
def db_url() -> None:
    """Print the database URL in use (starting the embedded database if needed)."""
    out.print(db.database_url(get_settings()), highlight=False)


from scripts import cli_network  # noqa: E402

cli_network.register(app)

from scripts import cli_api  # noqa: E402

cli_api.register(app)

from scripts import cli_ingest  # noqa: E402

cli_ingest.register(app)

from scripts import cli_routes  # noqa: E402

cli_routes.register(app)

from scripts import cli_demo  # noqa: E402

cli_demo.register(app)

from scripts import cli_maps  # noqa: E402

cli_maps.register(app)

from scripts import cli_alerts  # noqa: E402

cli_alerts.register(app)


def main() -> None:
    """Entry point of the console script."""
    app()


if __name__ == "__main__":
    main()
