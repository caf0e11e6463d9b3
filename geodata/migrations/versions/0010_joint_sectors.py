"""Joint-operation candidates at border sectors, stored per run next to the crossings' ones.

Revision ID: 0010
Revises: 0009

A border sector is a stored border segment (``border_segments``, the same object an alert
subscription fences with ``border_segment_id``), or several contiguous segments of the same
border reached by the same routes, merged: ``border_segment_ids`` lists them and
``border_segment_id`` is the first. ``joint_sectors`` holds, per run, the sectors where the
run's routes carry records of two or more countries' offices. Like ``joint_operations`` (0008,
left unchanged so its readers keep working) it holds only what every reader may see: the
sector, its countries, the routes, the crossings of the sector those routes carry, counts of
records per country with counts under k stored as null, a period no finer than the first days
of the first and last calendar month holding at least k of the candidate's records (null when
none does; the runs stored since this rule apply it to ``joint_operations`` too), and
``base_score``, the score without its corridor term (added when read, against the convergence
zones the reader's row-level security lets through). ``geom`` is the stretch of the sector the
routes reach (EPSG:4326 lines). The app role may only read; the system writes.

The ``joint_operations`` rows stored before this revision carry their routes' exact first and
last event dates: the upgrade coarsens them by the same rule, counting the member records of
their routes (``route_events``) per calendar month (UTC), with the k the run recorded
(``parameters.overlap.k``) or else 11, the default every such run stored its counts with.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"

#: The stored crossings' period: first days (UTC) of the first and last month holding at least k
#: of the candidate's records (as routes.overlap.k_period), null when no month does. Counted
#: with the system scope, which row-level security on ``events`` requires, reset afterwards.
COARSEN_PERIODS_SQL = """
UPDATE joint_operations j SET (period_start, period_end) = (
    SELECT min(m.month) AT TIME ZONE 'UTC', max(m.month) AT TIME ZONE 'UTC'
    FROM (
        SELECT date_trunc('month', e.occurred_at AT TIME ZONE 'UTC') AS month, count(*) AS n
        FROM route_events re JOIN events e ON e.id = re.event_id
        WHERE re.route_id = ANY (j.route_ids) GROUP BY 1
    ) m
    WHERE m.n >= coalesce(
        (SELECT CAST(a.parameters -> 'overlap' ->> 'k' AS integer) FROM analysis_runs a
         WHERE a.id = j.run_id),
        11
    )
)
"""


def upgrade() -> None:
    op.create_table(
        "joint_sectors",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "run_id",
            sa.BigInteger,
            sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("border_segment_id", sa.BigInteger, nullable=False),
        sa.Column("border_segment_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("country_a", sa.CHAR(3), nullable=True),
        sa.Column("country_b", sa.CHAR(3), nullable=True),
        sa.Column("countries", sa.Text, nullable=False),
        sa.Column("records_by_country", pg.JSONB, nullable=False),
        sa.Column("route_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("crossing_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("base_score", sa.Float, nullable=False),
        sa.Column("geom", Geometry("MULTILINESTRING", srid=4326, spatial_index=False), nullable=False),
    )
    op.execute(f"GRANT SELECT ON joint_sectors TO {APP_ROLE}")
    op.execute("SELECT set_config('rutas.role', 'system', true)")
    op.execute(COARSEN_PERIODS_SQL)
    op.execute("SELECT set_config('rutas.role', '', true)")


def downgrade() -> None:
    op.drop_table("joint_sectors")
