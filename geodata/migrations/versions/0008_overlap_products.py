"""Overlap products stored per run: route-corridor overlaps, convergence zones, joint operations.

Revision ID: 0008
Revises: 0007

Rows are keyed by ``analysis_runs.id`` (and the run's ``routes``) and go with the run.

Who reads what (the app role ``rutas_app`` may only read, the system writes):

* ``corridor_overlaps`` is derived from one corridor: row-level security shows a row to whoever
  may read that corridor (``owner_country`` is the corridor's owner; same rule as ``corridors``
  in 0005: admin and system, the owner's office, partners sharing in detail).
* ``convergence_zones`` is derived from corridors of several owners: ``owner_countries`` lists
  them, and a zone is shown only to a reader who may read every one of them (admin and system
  see all).
* ``joint_operations`` holds only what every reader may see: crossings, routes, period, counts
  of records per country with counts under k stored as null, and ``base_score``, the score
  without its corridor term. The corridor term (``in_convergence_zone``) is computed when read,
  against the convergence zones the reader's row-level security lets through.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"
AGGREGATOR_ROLE = "rutas_aggregator"
#: The corridors' rule (0005) on the corridor's owner.
OVERLAP_POLICY = (
    "(SELECT rutas_detail_all()) OR owner_country = (SELECT rutas_detail_own()) "
    "OR owner_country = ANY (CAST((SELECT rutas_detail_partners()) AS char(3)[]))"
)
#: A zone is readable when every corridor owner behind it is.
ZONE_POLICY = (
    "(SELECT rutas_detail_all()) OR owner_countries <@ ("
    "ARRAY[(SELECT rutas_detail_own())]::char(3)[] || CAST((SELECT rutas_detail_partners()) AS char(3)[]))"
)
TABLES = ("corridor_overlaps", "convergence_zones", "joint_operations")


def _run_columns() -> list[sa.Column[int]]:
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            sa.BigInteger,
            sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
    ]


def _system_writes(table: str) -> None:
    op.execute(
        f"CREATE POLICY {table}_system_write ON {table} FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}') "
        f"WITH CHECK (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}')"
    )


def upgrade() -> None:
    op.create_table(
        "corridor_overlaps",
        *_run_columns(),
        sa.Column("route_id", sa.BigInteger, sa.ForeignKey("routes.id", ondelete="CASCADE"), nullable=False),
        sa.Column(
            "corridor_id", sa.BigInteger, sa.ForeignKey("corridors.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("owner_country", sa.CHAR(3), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("route_km", sa.Float, nullable=False),
        sa.Column("shared_km", sa.Float, nullable=False),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("shared_crossings", sa.Integer, nullable=False),
        sa.Column("events_shared", sa.Integer, nullable=False),
        sa.Column("co_occurrence", sa.Float, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
    )
    op.create_table(
        "convergence_zones",
        *_run_columns(),
        sa.Column("route_id", sa.BigInteger, sa.ForeignKey("routes.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kinds", sa.Text, nullable=False),
        sa.Column("kind_count", sa.Integer, nullable=False),
        sa.Column("crossing_distance_km", sa.Float, nullable=True),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("owner_countries", pg.ARRAY(sa.CHAR(3)), nullable=False),
        sa.Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("convergence_zones_geom_idx", "convergence_zones", ["geom"], postgresql_using="gist")
    op.create_table(
        "joint_operations",
        *_run_columns(),
        sa.Column("crossing_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("countries", sa.Text, nullable=False),
        sa.Column("records_by_country", pg.JSONB, nullable=False),
        sa.Column("route_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("base_score", sa.Float, nullable=False),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    for table, policy in (("corridor_overlaps", OVERLAP_POLICY), ("convergence_zones", ZONE_POLICY)):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_scope ON {table} FOR SELECT USING ({policy})")
        _system_writes(table)
    for table in TABLES:
        op.execute(f"GRANT SELECT ON {table} TO {APP_ROLE}")


def downgrade() -> None:
    for table in reversed(TABLES):
        op.drop_table(table)
