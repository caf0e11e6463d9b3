"""The ``rutas`` command line. Every command calls the same domain functions as the API."""

from __future__ import annotations

import importlib
import sys

import typer

from geodata import cluster, db
from geodata.settings import get_settings
from scripts.console import friendly_errors, out

# Private: ``scripts.cli.app`` (module ``__getattr__`` below) is this with every command registered.
_app = typer.Typer(
    name="rutas",
    help="Rutas: migratory-route intelligence / inteligencia de rutas migratorias.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The PostGIS store / El almacén PostGIS.", no_args_is_help=True)
_app.add_typer(db_app, name="db")
_registered: set[str] = set()


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


#: Command modules in the order ``rutas --help`` lists them, with the top-level commands each adds.
#: A command imports only its own module: ``rutas ingest`` does not pay for the API, the maps or
#: the analysis (seconds of start-up on a busy machine).
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "cli_network": ("load", "snap"),
    "cli_api": ("serve", "share", "keys", "audit"),
    "cli_ingest": ("ingest",),
    "cli_routes": ("scenario", "run", "export"),
    "cli_demo": ("demo",),
    "cli_maps": ("maps",),
    "cli_alerts": ("alerts",),
}


def build_app(command: str | None = None) -> typer.Typer:
    """The ``rutas`` command line with every command, or only ``db`` and ``command``'s module.

    An unknown or missing ``command`` (``rutas --help``, a typo) gets every command, so help
    and "no such command" read as always; ``db`` needs no module.
    """
    modules = [name for name, commands in COMMAND_MODULES.items() if command in commands]
    if not modules and command != "db":
        modules = list(COMMAND_MODULES)
    for name in modules:
        if name not in _registered:
            importlib.import_module(f"scripts.{name}").register(_app)
            _registered.add(name)
    return _app


def __getattr__(name: str) -> typer.Typer:
    """``scripts.cli.app`` imported from elsewhere (tests, embedding): every command registered."""
    if name == "app":
        return build_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the console script: registers only the command being run, then runs it."""
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    build_app(command)()


if __name__ == "__main__":
    main()
