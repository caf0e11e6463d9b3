"""Ingest in bulk: the batch reference checked once per statement, dedupe keys compared byte-wise.

Revision ID: 0009
Revises: 0008

Two items of the anatomy in 0006 cost a bulk load seconds per million rows for work that can be
done once per statement, or more cheaply:

* the foreign key ``events.batch_id -> ingest_batches.id`` fired one check (an index probe and
  a row lock) per inserted row. It becomes statement-level triggers on the transition tables:
  after an ``INSERT`` or ``UPDATE`` of events, the distinct batch ids of the new rows (one per
  ``COPY`` of a batch) are looked up and locked ``FOR KEY SHARE``, as the foreign key did, and a
  missing batch raises ``foreign_key_violation``; deleting, re-numbering or truncating batches
  that events still reference raises the same error. The guarantee is the foreign key's: every
  record traces to its upload batch, enforced by the database whoever writes.
* ``dedupe_key`` is compared under the ``"C"`` collation: every insert into the unique dedupe index
  compares keys some twenty times, and under the database's ``C.UTF-8`` PostgreSQL calls
  ``strcoll`` for each comparison, under ``"C"`` a ``memcmp``. Equality is unchanged (database
  collations are deterministic: equal means byte-wise equal), so is order under ``C.UTF-8``
  (code point order, as ``"C"`` on UTF-8); the key is internal (a record id or a content hash,
  never shown or sorted for people), so other database collations lose nothing either.

Everything else of ``events`` stays: the unique dedupe constraint, the checks, row-level security,
GiST and the b-trees, the cell-count triggers.

Measured (``scripts/bench_ingest.py --anatomy``, 1,000,000 rows, 2 December 2026, load average
about 3): raw ``COPY`` into ``events`` as before this revision used 26.6 s of server CPU, as
migrated 16.5 s (18.6 s wall against 37.9 s); the dedupe key's collation alone accounts for
about 2 s of it. Repeated runs on this shared machine vary by a few seconds.

Measured and not taken: a BRIN index on ``batch_id`` instead of the b-tree (batch ids grow with
insertion order). Its saving was within the noise (0.5 s wall, none in CPU), and until
autovacuum has analysed the table after a bulk load the planner turns ``batch_id = X`` into a
sequential scan (150 ms on 1,000,000 events, growing with the table; the b-tree answers in under
1 ms either way), the lookup the alert triggers run for every batch. WAL compression of the
embedded server: a load into fresh pages writes no full-page images, so nothing to compress.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

#: Raised with the first missing batch id; the same SQLSTATE (23503) as the foreign key's.
_MISSING = (
    "RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', "
    "MESSAGE = format('events reference ingest batch %s, which does not exist', {id}), "
    "HINT = 'Insert the ingest_batches row first, in the same transaction.'"
)
_REFERENCED = (
    "RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', "
    "MESSAGE = format('ingest batch %s is still referenced by events', {id}), "
    "HINT = 'Delete the batch''s events first.'"
)

TRIGGERS_SQL = f"""
CREATE OR REPLACE FUNCTION rutas_events_batch_exists() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    wanted bigint[];
    found bigint[];
    missing bigint;
BEGIN
    SELECT array_agg(DISTINCT n.batch_id) INTO wanted FROM new_rows n;
    IF wanted IS NULL THEN
        RETURN NULL;
    END IF;
    -- Locked as the foreign key locks them: a concurrent delete of the batch waits for us.
    SELECT array_agg(b.id) INTO found
    FROM (SELECT id FROM ingest_batches WHERE id = ANY (wanted) FOR KEY SHARE) AS b;
    IF cardinality(wanted) > coalesce(cardinality(found), 0) THEN
        SELECT min(w) INTO missing FROM unnest(wanted) AS w WHERE w <> ALL (coalesce(found, '{{}}'));
        {_MISSING.format(id="missing")};
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION rutas_batches_unreferenced() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    referenced bigint;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        -- After the whole TRUNCATE statement: "TRUNCATE events, ingest_batches" passes.
        SELECT e.batch_id INTO referenced FROM events e LIMIT 1;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT e.batch_id INTO referenced FROM events e
        WHERE e.batch_id = ANY (ARRAY(SELECT o.id FROM old_rows o)) LIMIT 1;
    ELSE
        SELECT e.batch_id INTO referenced FROM events e
        WHERE e.batch_id = ANY (ARRAY(SELECT o.id FROM old_rows o
                                      EXCEPT SELECT n.id FROM new_rows n)) LIMIT 1;
    END IF;
    IF referenced IS NOT NULL THEN
        {_REFERENCED.format(id="referenced")};
    END IF;
    RETURN NULL;
END
$$;

"""

#: (trigger, table, timing and transition tables, function): created by upgrade, dropped by downgrade.
TRIGGERS = (
    ("events_batch_insert", "events", "AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows",
     "rutas_events_batch_exists"),
    ("events_batch_update", "events",
     "AFTER UPDATE ON events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
     "rutas_events_batch_exists"),
    ("ingest_batches_delete", "ingest_batches",
     "AFTER DELETE ON ingest_batches REFERENCING OLD TABLE AS old_rows", "rutas_batches_unreferenced"),
    ("ingest_batches_update", "ingest_batches",
     "AFTER UPDATE ON ingest_batches REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
     "rutas_batches_unreferenced"),
    ("ingest_batches_truncate", "ingest_batches", "AFTER TRUNCATE ON ingest_batches",
     "rutas_batches_unreferenced"),
)


def upgrade() -> None:
    """Replace the per-row foreign key by statement triggers; compare dedupe keys byte-wise."""
    op.execute("ALTER TABLE events DROP CONSTRAINT IF EXISTS events_batch_id_fkey")
    op.execute(TRIGGERS_SQL)
    for trigger, _table, timing, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {trigger} {timing} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
    # Rebuilds the unique dedupe index; the table itself is not rewritten (same type).
    op.execute('ALTER TABLE events ALTER COLUMN dedupe_key TYPE text COLLATE "C"')


def downgrade() -> None:
    """Back to the foreign key and the database's collation for the key."""
    op.execute('ALTER TABLE events ALTER COLUMN dedupe_key TYPE text COLLATE "default"')
    for trigger, table, _timing, _function in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
    op.execute("DROP FUNCTION IF EXISTS rutas_events_batch_exists()")
    op.execute("DROP FUNCTION IF EXISTS rutas_batches_unreferenced()")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_batch_id_fkey FOREIGN KEY (batch_id) "
               "REFERENCES ingest_batches (id)")
