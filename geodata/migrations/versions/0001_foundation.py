"""Foundation: PostGIS, ingest batches and events.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KINDS = "('incident', 'interception', 'victim_identification')"


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")
    op.create_table(
        "ingest_batches",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("owner_country", sa.CHAR(3), nullable=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("rows_read", sa.Integer, nullable=False, server_default="0"),
        sa.Column("accepted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rejected", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duplicates", sa.Integer, nullable=False, server_default="0"),
        sa.Column("report", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("loaded_by", sa.Text, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.CheckConstraint(f"kind IN {KINDS}", name="ingest_batches_kind"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("crime_type", sa.Text, nullable=False, server_default="unknown"),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurred_text", sa.Text, nullable=False),
        sa.Column("date_precision", sa.Text, nullable=False),
        sa.Column("owner_country", sa.CHAR(3), nullable=False),
        sa.Column("location_country", sa.CHAR(3), nullable=True),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
        sa.Column("coord_precision_m", sa.Float, nullable=True),
        sa.Column("coordinate_fix", sa.Text, nullable=True),
        sa.Column("dead", sa.Integer, nullable=True),
        sa.Column("missing", sa.Integer, nullable=True),
        sa.Column("survivors", sa.Integer, nullable=True),
        sa.Column("victims", sa.Integer, nullable=True),
        sa.Column("nationalities", pg.ARRAY(sa.Text), nullable=True),
        sa.Column("attributes", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("source_record_id", sa.Text, nullable=True),
        sa.Column("dedupe_key", sa.Text, nullable=False),
        sa.Column("batch_id", sa.BigInteger, sa.ForeignKey("ingest_batches.id"), nullable=False),
        sa.Column("source_row", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.CheckConstraint(f"kind IN {KINDS}", name="events_kind"),
        sa.CheckConstraint(
            "crime_type IN ('trafficking', 'smuggling', 'both', 'unknown')", name="events_crime_type"
        ),
        sa.CheckConstraint("date_precision IN ('day', 'month', 'year')",
                           name="events_date_precision"),
        sa.UniqueConstraint("owner_country", "source", "dedupe_key", name="events_dedupe"),
    )
    op.create_index("events_geom_idx", "events", ["geom"], postgresql_using="gist")
    op.create_index("events_occurred_idx", "events", ["occurred_at"])
    op.create_index("events_batch_idx", "events", ["batch_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("ingest_batches")
