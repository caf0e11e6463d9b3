"""Every record traces to its upload batch: the database refuses what would break that.

Migration 0009 replaced the per-row foreign key ``events.batch_id -> ingest_batches.id`` by
statement-level triggers; these tests hold them to the foreign key's guarantee, whoever writes.
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from geodata.settings import Settings
from tests.factories import make_batch, make_events

_INSERT = sa.text(
    "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, source, "
    "dedupe_key, batch_id, source_row) "
    "SELECT 'incident', DATE '2024-03-15', '2024-03-15', 'day', 'SLV', "
    "ST_SetSRID(ST_MakePoint(-89.2, 13.7), 4326), 'tests', :key || n, :batch, n "
    "FROM generate_series(1, :rows) AS n"
)


def _events_of(engine: Engine, batch: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM events WHERE batch_id = :b"),
                                {"b": batch}).scalar_one())


def _psycopg_url(settings: Settings) -> str:
    url = make_url(str(settings.database_url)).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def test_events_of_a_missing_batch_are_refused(engine: Engine) -> None:
    real = make_batch(engine)
    missing = real + 1000
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        conn.execute(_INSERT, {"key": uuid.uuid4().hex, "batch": real, "rows": 3})
        conn.execute(_INSERT, {"key": uuid.uuid4().hex, "batch": missing, "rows": 3})
    assert isinstance(refused.value.orig, psycopg.errors.ForeignKeyViolation)
    assert f"ingest batch {missing}" in str(refused.value.orig)
    assert _events_of(engine, real) == 0 and _events_of(engine, missing) == 0


def test_copy_into_a_missing_batch_is_refused(settings: Settings, engine: Engine) -> None:
    missing = make_batch(engine) + 1000
    copy_sql = ("COPY events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, "
                "source, dedupe_key, batch_id, source_row) FROM STDIN (FORMAT csv)")
    with psycopg.connect(_psycopg_url(settings)) as conn, conn.cursor() as cursor, \
            pytest.raises(psycopg.errors.ForeignKeyViolation), cursor.copy(copy_sql) as copy:
        copy.write(f"incident,2024-03-15,2024-03-15,day,SLV,SRID=4326;POINT(-89.2 13.7),"
                   f"tests,{uuid.uuid4().hex},{missing},1\n")
    assert _events_of(engine, missing) == 0


def test_moving_events_to_a_missing_batch_is_refused(engine: Engine) -> None:
    [event] = make_events(engine, [(-89.2, 13.7)])
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("UPDATE events SET batch_id = batch_id + 1000 WHERE id = :id"), {"id": event})


def test_a_batch_with_events_cannot_be_deleted_renumbered_or_truncated(engine: Engine) -> None:
    [event] = make_events(engine, [(-89.2, 13.7)])
    with engine.connect() as conn:
        batch = int(conn.execute(sa.text("SELECT batch_id FROM events WHERE id = :id"),
                                 {"id": event}).scalar_one())
    for statement in ("DELETE FROM ingest_batches WHERE id = :b",
                      "UPDATE ingest_batches SET id = id + 1000 WHERE id = :b",
                      "TRUNCATE ingest_batches"):
        with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
            conn.execute(sa.text(statement), {"b": batch})
        assert isinstance(refused.value.orig, psycopg.errors.ForeignKeyViolation), statement
    assert _events_of(engine, batch) == 1
    # A batch no event references goes, as with the foreign key.
    empty = make_batch(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ingest_batches SET rows_read = 1 WHERE id IN (:a, :b)"),
                     {"a": batch, "b": empty})
        assert conn.execute(sa.text("DELETE FROM ingest_batches WHERE id = :b"), {"b": empty}).rowcount == 1


def test_deleting_a_batch_waits_for_a_load_into_it(settings: Settings, engine: Engine) -> None:
    """A load in flight locks its batch: a concurrent delete cannot leave its records orphaned."""
    batch = make_batch(engine)
    url = _psycopg_url(settings)
    with psycopg.connect(url) as loader, psycopg.connect(url, autocommit=True) as deleter:
        loader.execute("INSERT INTO events (kind, occurred_at, occurred_text, date_precision, "
                       "owner_country, geom, source, dedupe_key, batch_id, source_row) VALUES "
                       "('incident', '2024-03-15', '2024-03-15', 'day', 'SLV', "
                       "ST_SetSRID(ST_MakePoint(-89.2, 13.7), 4326), 'tests', %s, %s, 1)",
                       (uuid.uuid4().hex, batch))
        deleter.execute("SET lock_timeout = '300ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            deleter.execute("DELETE FROM ingest_batches WHERE id = %s", (batch,))
        loader.commit()
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            deleter.execute("DELETE FROM ingest_batches WHERE id = %s", (batch,))
    assert _events_of(engine, batch) == 1
