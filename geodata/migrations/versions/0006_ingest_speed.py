"""Ingest speed: measured, and no index, constraint or trigger on ``events`` given up.

Revision ID: 0006
Revises: 0005

Where raw ``COPY`` of 1,000,000 rows into ``events`` spends its time (scratch database, each
item dropped inside a rolled-back transaction, 2-core machine shared with other work, 2026-11-23):

======================================  =========  ==========================================
variant                                 seconds    what the item guarantees
======================================  =========  ==========================================
as migrated (0001-0005)                 22.6
cell-count triggers disabled            23.9       exact low-zoom tile counts (already
                                                   statement-level, transition tables: ~0)
GiST on geom dropped                    16.5       every spatial filter and tile query
unique dedupe index dropped             21.8       no duplicate records, ever
foreign key to ingest_batches dropped   18.8       every record traces to its upload batch
no index, constraint or trigger at all   4.4
======================================  =========  ==========================================

Engineer D's triggers were already per statement (``REFERENCING NEW TABLE``, one grouped
``INSERT ... ON CONFLICT`` per statement) and cost nothing measurable; SP-GiST instead of GiST
on the points was no faster. The remaining cost is spread over indexes that each guard a
guarantee or a query path (primary key, dedupe, GiST, ``occurred_at``, ``batch_id`` for the
foreign key's deletes, ``(owner_country, id)`` for row-level security scans), so this revision
changes no schema object: it records the measurement and keeps the chain linear for 0007.
"""

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: see the module docstring for the measurement behind this."""


def downgrade() -> None:
    """Nothing to undo."""
