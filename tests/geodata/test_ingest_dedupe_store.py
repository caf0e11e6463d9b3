"""The dedupe rule is the database's: one record per (owner country, source, dedupe key).

The loader skips keys it finds already stored, but the unique index is what makes a duplicate
impossible whoever writes; migration 0009 compares its keys byte-wise (collation "C").
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.factories import make_batch

_INSERT = sa.text(
    "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, source, "
    "dedupe_key, batch_id, source_row) VALUES ('incident', DATE '2024-03-15', '2024-03-15', 'day', :owner, "
    "ST_SetSRID(ST_MakePoint(-89.2, 13.7), 4326), :source, :key, :batch, 1)"
)


def _stored(engine: Engine, source: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT dedupe_key FROM events WHERE source = :s ORDER BY id"),
                                 {"s": source}).scalars())


def test_the_same_key_twice_is_refused_by_the_database(engine: Engine) -> None:
    batch, source = make_batch(engine), f"dedupe-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(_INSERT, {"owner": "SLV", "source": source, "key": "id:7", "batch": batch})
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        conn.execute(_INSERT, {"owner": "SLV", "source": source, "key": "id:7", "batch": batch})
    assert isinstance(refused.value.orig, psycopg.errors.UniqueViolation)
    assert _stored(engine, source) == ["id:7"]


def test_keys_differing_in_case_or_accents_are_different_records(engine: Engine) -> None:
    batch, source = make_batch(engine), f"dedupe-{uuid.uuid4().hex[:8]}"
    keys = ["id:Caso-1", "id:caso-1", "id:Cáso-1", "id:Caso-1 "]
    with engine.begin() as conn:
        for key in keys:
            conn.execute(_INSERT, {"owner": "SLV", "source": source, "key": key, "batch": batch})
        # Another office or another source may hold the same key.
        conn.execute(_INSERT, {"owner": "GTM", "source": source, "key": keys[0], "batch": batch})
        conn.execute(_INSERT, {"owner": "SLV", "source": source + "-b", "key": keys[0], "batch": batch})
    assert _stored(engine, source) == [*keys, keys[0]]
