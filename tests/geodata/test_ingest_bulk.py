"""Large files: loaded into a table of their own and attached whole to ``events`` (migration 0011).

A file at least ``ingest_bulk_min_bytes`` large is copied into ``events_batch_<id>`` and attached
with its indexes built in bulk. What a user sees must not change: the same rows stored, the same
duplicates skipped, the same cell counts, the same protection, and the database still refuses a
second copy of a record or a reference to an event that does not exist, whoever writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from geodata.db import alembic_config
from geodata.settings import Settings
from tests.factories import make_batch
from tests.geodata.ingest_helpers import (
    BOGOTA,
    CIUDAD_JUAREZ,
    TAPACHULA,
    load,
    stored,
    unique_source,
    write,
)

_ROWS = [
    ("A1", "2021-03-04", *TAPACHULA, "2", "cruce"),
    ("A2", "04/03/2021", *CIUDAD_JUAREZ, "", "río"),
    ("A3", "2022-07-01", *BOGOTA, "1", ""),  # in Colombia, loaded as Mexican: kept (abroad is legitimate)
    ("A4", "2023-01-15", 0.0, 0.0, "1", "cero"),  # (0, 0): refused
    ("A5", "2020-12-31", TAPACHULA[0] + 0.01, TAPACHULA[1], "x", "número malo"),  # bad count: refused
    ("A1", "2021-03-04", *TAPACHULA, "2", "cruce"),  # repeat of row 1, in a later chunk
    ("A6", "2019-05-05", TAPACHULA[0] - 0.02, TAPACHULA[1] + 0.02, "0", "camión"),
]
#: Columns that must be identical whichever way the file was loaded.
_SAME = ("kind", "crime_type", "occurred_at", "occurred_text", "date_precision", "owner_country",
         "location_country", "lon", "lat", "coord_precision_m", "coordinate_fix", "dead", "missing",
         "survivors", "victims", "nationalities", "attributes", "source_record_id", "dedupe_key",
         "source_row")


def _csv(path: Path) -> Path:
    lines = ["id,fecha,latitud,longitud,muertos,nota"]
    lines += [f"{i},{d},{la},{lo},{n},{note}" for i, d, la, lo, n, note in _ROWS]
    return write(path, "\n".join(lines) + "\n")


def _bulk(settings: Settings, **extra: Any) -> Settings:
    """Settings under which every file is a bulk file (chunks of two rows)."""
    return settings.model_copy(update={"ingest_bulk_min_bytes": 0, "ingest_chunk_rows": 2, **extra})


def _parts(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text(
            "SELECT c.relname FROM pg_class c WHERE c.relname LIKE 'events\\_batch\\_%' AND c.relkind = 'r'"
        )).scalars())


def _cells(engine: Engine, owner: str) -> dict[tuple[int, int, int, str], int]:
    with engine.connect() as conn:
        return {(r.level, r.gx, r.gy, r.kind): int(r.n) for r in conn.execute(sa.text(
            "SELECT level, gx, gy, kind, n FROM event_cell_counts WHERE owner_country = :o"), {"o": owner})}


def _view(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(r[c] for c in _SAME) for r in rows]


def test_a_bulk_file_stores_what_the_row_by_row_path_stores(tmp_path: Path, engine: Engine,
                                                          settings: Settings) -> None:
    path = _csv(tmp_path / "records.csv")
    plain_source, bulk_source = unique_source("plain"), unique_source("bulk")
    before_parts, before_cells = _parts(engine), _cells(engine, "MEX")
    plain = load(engine, settings.model_copy(update={"ingest_chunk_rows": 2}), path, source=plain_source)
    assert _parts(engine) == before_parts
    plain_cells = _cells(engine, "MEX")
    bulk = load(engine, _bulk(settings), path, source=bulk_source)
    # One new table holds the batch, attached to events.
    assert _parts(engine) == sorted([*before_parts, f"events_batch_{bulk.batch_id}"])
    with engine.connect() as conn:
        attached = conn.execute(sa.text(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'events'::regclass "
            "AND inhrelid = CAST(:t AS regclass)"), {"t": f"events_batch_{bulk.batch_id}"}).scalar_one()
    assert attached == 1
    counts = [(r.accepted, r.rejected, r.duplicates, r.rows_read) for r in (plain, bulk)]
    assert counts[0] == counts[1] and counts[0][2:] == (1, 7) and counts[0][1] >= 2
    assert [(p.row, p.code) for p in plain.errors] == [(p.row, p.code) for p in bulk.errors]
    plain_rows, bulk_rows = stored(engine, plain_source), stored(engine, bulk_source)
    assert _view(plain_rows) == _view(bulk_rows) and len(bulk_rows) == bulk.accepted
    assert {r["storage_part"] for r in bulk_rows} == {bulk.batch_id}
    assert {r["storage_part"] for r in plain_rows} == {0}
    # The low-zoom tile counts grew exactly as the row-by-row triggers make them grow.
    grown = {k: n - before_cells.get(k, 0) for k, n in plain_cells.items() if n != before_cells.get(k, 0)}
    grown_again = {k: n - plain_cells.get(k, 0) for k, n in _cells(engine, "MEX").items()
                   if n != plain_cells.get(k, 0)}
    assert grown == grown_again and sum(grown.values()) == 7 * plain.accepted  # 7 zoom levels


def test_a_bulk_file_loaded_again_adds_nothing_and_leaves_no_table(tmp_path: Path, engine: Engine,
                                                                   settings: Settings) -> None:
    path, source = _csv(tmp_path / "records.csv"), unique_source("bulk-again")
    first = load(engine, _bulk(settings), path, source=source)
    parts = _parts(engine)
    again = load(engine, _bulk(settings), path, source=source)
    assert (again.accepted, again.duplicates) == (0, first.accepted + first.duplicates)
    assert _parts(engine) == parts and len(stored(engine, source)) == first.accepted
    # A corrected file: only the new record is added, in a table of its own.
    fixed = write(tmp_path / "fixed.csv", _csv(tmp_path / "x.csv").read_text()
                  + f"A7,2022-02-02,{TAPACHULA[0]},{TAPACHULA[1]},1,nuevo\n")
    third = load(engine, _bulk(settings), fixed, source=source)
    assert (third.accepted, third.duplicates) == (1, first.accepted + first.duplicates)
    assert [r["source_record_id"] for r in stored(engine, source)].count("A7") == 1


def test_a_bulk_load_that_fails_leaves_no_table_and_no_batch(tmp_path: Path, engine: Engine,
                                                             settings: Settings) -> None:
    path, source = _csv(tmp_path / "records.csv"), unique_source("bulk-fail")
    parts = _parts(engine)

    def fail(conn: sa.Connection, batch_id: int) -> None:
        raise RuntimeError("the next stage failed")

    with pytest.raises(RuntimeError):
        load(engine, _bulk(settings), path, source=source, on_loaded=fail)
    assert _parts(engine) == parts and stored(engine, source) == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_batches WHERE source = :s"),
                            {"s": source}).scalar_one() == 0


_INSERT = sa.text(
    "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, owner_country, geom, source, "
    "dedupe_key, batch_id, source_row) VALUES ('incident', DATE '2024-03-15', '2024-03-15', 'day', :owner, "
    "ST_SetSRID(ST_MakePoint(-92.2, 14.9), 4326), :source, :key, :batch, 1)"
)


def test_the_database_refuses_a_key_stored_in_another_partition(tmp_path: Path, engine: Engine,
                                                                 settings: Settings) -> None:
    path, source = _csv(tmp_path / "records.csv"), unique_source("bulk-key")
    load(engine, _bulk(settings), path, source=source)
    batch = make_batch(engine, owner_country="MEX")
    # Into the shared partition, through events: a key a bulk partition holds is refused.
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        conn.execute(_INSERT, {"owner": "MEX", "source": source, "key": "id:A1", "batch": batch})
    assert isinstance(refused.value.orig, psycopg.errors.UniqueViolation)
    # A new key passes.
    with engine.begin() as conn:
        conn.execute(_INSERT, {"owner": "MEX", "source": source, "key": "id:new", "batch": batch})
    # And a bulk partition holding a key the store has is refused when attached.
    other = make_batch(engine, owner_country="MEX")
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        table = conn.execute(sa.text("SELECT CAST(rutas_events_part_create(:b) AS text)"),
                             {"b": other}).scalar_one()
        conn.execute(sa.text(_INSERT.text.replace("INTO events", f'INTO "{table}"')),
                     {"owner": "MEX", "source": source, "key": "id:new", "batch": other})
        conn.execute(sa.text("SELECT rutas_events_attach(:b)"), {"b": other})
    assert isinstance(refused.value.orig, psycopg.errors.UniqueViolation)
    assert [r["dedupe_key"] for r in stored(engine, source)].count("id:new") == 1


def test_references_to_events_are_checked_and_cascade(engine: Engine, tmp_path: Path,
                                                      settings: Settings) -> None:
    source = unique_source("bulk-refs")
    report = load(engine, _bulk(settings), _csv(tmp_path / "records.csv"), source=source)
    event = stored(engine, source)[0]["id"]
    with pytest.raises(sa.exc.IntegrityError) as refused, engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO event_snaps (event_id, off_network) VALUES (-5, true)"))
    assert isinstance(refused.value.orig, psycopg.errors.ForeignKeyViolation)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO event_snaps (event_id, off_network) VALUES (:e, true)"),
                     {"e": event})
        conn.execute(sa.text("DELETE FROM events WHERE id = :e"), {"e": event})
        left = conn.execute(sa.text("SELECT count(*) FROM event_snaps WHERE event_id = :e"),
                            {"e": event}).scalar_one()
    assert left == 0 and len(stored(engine, source)) == report.accepted - 1


def test_app_roles_cannot_read_a_partition_directly(tmp_path: Path, engine: Engine,
                                                    settings: Settings) -> None:
    report = load(engine, _bulk(settings), _csv(tmp_path / "records.csv"), source=unique_source("bulk-rls"))
    for role in ("rutas_app", "rutas_aggregator"):
        for table in (f"events_batch_{report.batch_id}", "events_shared"):
            with pytest.raises(sa.exc.ProgrammingError) as refused, engine.begin() as conn:
                conn.execute(sa.text(f"SET LOCAL ROLE {role}"))
                conn.execute(sa.text(f'SELECT count(*) FROM "{table}"'))
            assert isinstance(refused.value.orig, psycopg.errors.InsufficientPrivilege)
    # Through events, row-level security applies to the bulk partition's rows as to any others:
    # the app role with another country's scope sees none of them.
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT set_config('rutas.role', 'prosecutor', true), "
                             "set_config('rutas.country', 'COL', true), "
                             "set_config('role', 'rutas_app', true)"))
        seen = conn.execute(sa.text("SELECT count(*) FROM events WHERE batch_id = :b"),
                            {"b": report.batch_id}).scalar_one()
        own = conn.execute(sa.text("SELECT set_config('rutas.country', 'MEX', true)"))
        own = conn.execute(sa.text("SELECT count(*) FROM events WHERE batch_id = :b"),
                           {"b": report.batch_id}).scalar_one()
    assert seen == 0 and own == report.accepted


def test_downgrade_and_upgrade_keep_every_record(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("bulk-migrate")
    report = load(engine, _bulk(settings), _csv(tmp_path / "records.csv"), source=source)
    before = _view(stored(engine, source))
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            command.downgrade(alembic_config(conn), "0010")
            plain = conn.execute(sa.text("SELECT count(*) FROM events WHERE source = :s"),
                                 {"s": source}).scalar()
            kind = conn.execute(sa.text("SELECT relkind FROM pg_class "
                                        "WHERE oid = 'events'::regclass")).scalar()
            command.upgrade(alembic_config(conn), "head")
            again = conn.execute(sa.text(
                "SELECT *, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM events WHERE source = :s "
                "ORDER BY batch_id, source_row"), {"s": source}).mappings().all()
        finally:
            outer.rollback()
    assert plain == report.accepted and kind == "r"
    assert _view([dict(r) for r in again]) == before
