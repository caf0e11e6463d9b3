"""Analysis: pipeline runs and the emerging routes they find.

Revision ID: 0004
Revises: 0003

``analysis_runs`` records every ``rutas run`` (parameters, filters, code version, timings,
counts, status and a user-readable error when it failed); ``routes`` holds the routes of each
run (EPSG:4326 MultiLineString, lengths in metres) and ``route_events`` their member events.
Routes are aggregated products, so the app role ``rutas_app`` (migration 0003) may read them;
the events behind them stay under the events' row-level security.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"
TABLES = ("analysis_runs", "routes", "route_events")


def upgrade() -> None:
    op.create_table(
        "analysis_runs",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text, nullable=False, server_default="running"),
        sa.Column("parameters", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("filters", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("code_version", sa.Text, nullable=False),
        sa.Column("timings", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("counts", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("error", sa.Text, nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="analysis_runs_status"),
    )
    op.create_table(
        "routes",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("route_key", sa.Text, nullable=False),
        sa.Column("seen_before", sa.Boolean, nullable=False),
        sa.Column("crime_types", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("category_shares", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("length_m", sa.Float, nullable=False),
        sa.Column("event_count", sa.Integer, nullable=False),
        sa.Column("tau", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("trend", sa.Text, nullable=False),
        sa.Column("countries", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("crossing_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("first_event", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event", sa.DateTime(timezone=True), nullable=True),
        sa.Column("monthly_counts", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("segment_keys", pg.ARRAY(sa.Text), nullable=False),
        sa.Column("geom", Geometry("MULTILINESTRING", srid=4326, spatial_index=False), nullable=False),
        sa.CheckConstraint("trend IN ('up', 'down', 'none')", name="routes_trend"),
    )
    op.create_index("routes_run_idx", "routes", ["run_id"])
    op.create_index("routes_key_idx", "routes", ["route_key"])
    op.create_index("routes_geom_idx", "routes", ["geom"], postgresql_using="gist")
    op.create_table(
        "route_events",
        sa.Column("route_id", sa.BigInteger, sa.ForeignKey("routes.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id", ondelete="CASCADE"),
                  primary_key=True),
    )
    op.create_index("route_events_event_idx", "route_events", ["event_id"])
    op.execute(f"GRANT SELECT ON {', '.join(TABLES)} TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON {', '.join(TABLES)} FROM {APP_ROLE}")
    op.drop_table("route_events")
    op.drop_table("routes")
    op.drop_table("analysis_runs")
