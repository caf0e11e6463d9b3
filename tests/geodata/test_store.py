"""The store: migrations are idempotent and the embedded cluster answers."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata import db
from geodata.settings import Settings


def test_upgrade_is_idempotent(settings: Settings, engine: Engine) -> None:
    first = db.upgrade(settings)
    second = db.upgrade(settings)
    assert first == second
    with engine.connect() as conn:
        tables = set(
            conn.execute(
                sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
        )
        postgis = conn.execute(sa.text("SELECT postgis_lib_version()")).scalar()
    assert {"events", "ingest_batches", "alembic_version"} <= tables
    assert postgis is not None and postgis.startswith("3.")


def test_upgrade_reaches_the_newest_migration_and_says_so(settings: Settings, engine: Engine) -> None:
    # An up-to-date store is recognised without Alembic; the revision it names must be Alembic's head.
    from alembic.script import ScriptDirectory

    with engine.connect() as conn:
        head = ScriptDirectory.from_config(db.alembic_config(conn)).get_current_head()
        assert db.upgrade(settings) == head
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == head


def test_scope_is_local_to_the_transaction(engine: Engine) -> None:
    with db.scoped(engine, db.Scope(role="prosecutor", country="COL")) as conn:
        inside = conn.execute(sa.text("SELECT current_setting('rutas.country', true)")).scalar()
    with engine.connect() as conn:
        after = conn.execute(sa.text("SELECT current_setting('rutas.country', true)")).scalar()
    assert inside == "COL"
    assert after in (None, "")
