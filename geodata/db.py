"""The database: where it is, the engine, migrations, and scoped connections.

Every command and request gets its connection from :func:`scoped` so that the caller's
country and role are set for row-level security in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from geodata import cluster
from geodata.errors import ConfigurationError
from geodata.settings import Settings

if TYPE_CHECKING:
    # Alembic loads only where the schema is migrated: not on every command's start-up.
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def database_url(settings: Settings) -> str:
    """The SQLAlchemy URL Rutas uses: the configured one, or the embedded cluster's."""
    if settings.database_url:
        url = make_url(settings.database_url)
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        return url.render_as_string(hide_password=False)
    return cluster.embedded_url(settings)


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` (with PostGIS) when it does not exist yet."""
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": target.database},
            ).scalar()
            if not exists:
                # Text compares byte-wise ("C"): the order of the embedded server's C.UTF-8 (code
                # points), without a strcoll call per comparison in every index on text (migration
                # 0011's measurements); character classes stay the server's (upper, lower, ILIKE).
                ctype = conn.execute(sa.text("SELECT quote_literal(datctype) FROM pg_database "
                                             "WHERE datname = 'template1'")).scalar_one()
                conn.execute(sa.text(
                    f'CREATE DATABASE "{_identifier(target.database)}" TEMPLATE template0 ENCODING \'UTF8\' '
                    f"LC_COLLATE 'C' LC_CTYPE {ctype}"))
    except sa.exc.OperationalError as exc:
        raise ConfigurationError(
            f"Cannot reach the database server at {target.render_as_string(hide_password=True)}. "
            "Check RUTAS_DATABASE_URL, or unset it to use the embedded database.",
            "No se puede conectar con el servidor de base de datos. Revise RUTAS_DATABASE_URL.",
            code="db_unreachable",
        ) from exc
    finally:
        admin.dispose()


def drop_database(url: str) -> None:
    """Drop the database named in ``url`` (used by the tests' fresh databases)."""
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                sa.text(f'DROP DATABASE IF EXISTS "{_identifier(target.database)}" WITH (FORCE)')
            )
    finally:
        admin.dispose()


def _identifier(name: str | None) -> str:
    if not name or not all(ch.isalnum() or ch == "_" for ch in name):
        raise ConfigurationError(
            f"Database name {name!r} must contain only letters, digits and underscores.",
            f"El nombre de base de datos {name!r} sólo puede tener letras, dígitos y '_'.",
            code="bad_db_name",
        )
    return name


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def get_engine(settings: Settings) -> Engine:
    """A pooled engine for the settings' database (created, with PostGIS, if missing)."""
    url = database_url(settings)
    engine = _engine_for(url)
    return engine


def alembic_config(connection: Connection) -> Config:
    """Alembic configuration bound to an open connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _newest_revision() -> str:
    """The revision of the newest migration file (``NNNN_name.py`` holds revision ``NNNN``)."""
    return max(path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def _stored_revision(conn: Connection) -> str | None:
    """The database's schema revision; None before the first migration."""
    if not conn.execute(sa.text("SELECT to_regclass('alembic_version') IS NOT NULL")).scalar():
        return None
    revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    return None if revision is None else str(revision)


def upgrade(settings: Settings) -> str:
    """Create or migrate the schema to the newest version; idempotent.

    Returns
    -------
    str
        The schema revision after the upgrade.
    """
    url = database_url(settings)
    ensure_database(url)
    engine = get_engine(settings)
    head = _newest_revision()
    with engine.connect() as conn:
        stored = _stored_revision(conn)
    if stored == head:  # up to date: no need to load Alembic and every migration (0.3 s per command)
        return head
    from alembic import command

    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
        revision = _stored_revision(conn)
    return str(revision)


@dataclass(frozen=True)
class Scope:
    """Who is asking: sets what row-level security lets them see.

    ``country`` is ISO 3166-1 alpha-3; ``None`` with role ``admin`` or ``system`` sees all.
    ``partners`` maps partner country to the agreement level (``aggregate`` or ``detail``).
    """

    role: str = "system"
    country: str | None = None
    partners: dict[str, str] = field(default_factory=dict)
    user: str = "rutas"


SYSTEM = Scope()

#: The database role requests run as (created by migration 0003); it owns no table.
APP_ROLE = "rutas_app"
#: Longest a caller's statement may run (milliseconds) before PostgreSQL cancels it.
APP_STATEMENT_TIMEOUT_MS = 30_000


def set_scope(conn: Connection, scope: Scope) -> None:
    """Set ``scope`` for row-level security on ``conn``'s open transaction (``SET LOCAL``).

    It lasts until the transaction ends, or until a rollback to a savepoint taken before it.
    """
    partners = ",".join(f"{c}:{level}" for c, level in sorted(scope.partners.items()))
    # A caller's request runs as the app role, which owns no table, so the row-level
    # security policies of migration 0003 always apply to it (set_config('role') is SET
    # LOCAL ROLE); JIT and parallel workers are off for its short paged queries, whose
    # start-up they would dominate. One round trip sets it all.
    as_app = "" if scope.role == SYSTEM.role else (
        f", set_config('role', '{APP_ROLE}', true), set_config('jit', 'off', true), "
        "set_config('max_parallel_workers_per_gather', '0', true), "
        f"set_config('statement_timeout', '{APP_STATEMENT_TIMEOUT_MS}', true)")
    conn.execute(
        sa.text(
            "SELECT set_config('rutas.role', :role, true), "
            "set_config('rutas.country', :country, true), "
            "set_config('rutas.partners', :partners, true), "
            "set_config('rutas.user', :user, true)" + as_app
        ),
        {
            "role": scope.role,
            "country": scope.country or "",
            "partners": partners,
            "user": scope.user,
        },
    )


@contextmanager
def scoped(engine: Engine, scope: Scope = SYSTEM) -> Iterator[Connection]:
    """A connection in a transaction whose row-level-security scope is ``scope``.

    The scope is set with ``set_config(..., is_local => true)`` (``SET LOCAL``), so it ends
    with the transaction and can never leak to the next user of a pooled connection.
    """
    with engine.begin() as conn:
        set_scope(conn, scope)
        yield conn


@contextmanager
def reading_as(conn: Connection, scope: Scope) -> Iterator[Connection]:
    """``conn``'s own transaction, read under ``scope`` for the block, then restored.

    For reading, inside a transaction that has written rows not yet committed (an ingest
    batch), what another caller may see of them: the block runs in a savepoint under ``scope``
    and is rolled back, which undoes the ``SET LOCAL`` of the scope and of the role, so the
    transaction goes on exactly as it was. Nothing written in the block is kept.
    """
    savepoint = conn.begin_nested()
    try:
        set_scope(conn, scope)
        yield conn
    finally:
        savepoint.rollback()
