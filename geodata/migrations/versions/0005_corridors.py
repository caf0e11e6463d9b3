"""Corridors: analysts' drug, fuel, arms and other trafficking corridors, owned by a country.

Revision ID: 0005
Revises: 0004

``corridors`` holds the lines or polygons of each loaded corridor layer (EPSG:4326) with kind,
name, source, confidence and validity period. An office's corridors are sensitive like its
records: row-level security shows them to the owner's office, to partners with a detail
agreement and to the admin and system roles (as for records), never to others. The app role
``rutas_app`` may only read.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"
AGGREGATOR_ROLE = "rutas_aggregator"
CORRIDOR_KINDS = ("drug", "fuel", "arms", "other")
#: Who may read a corridor: admin and system, its owner's office, partners sharing in detail.
CORRIDOR_POLICY = (
    "(SELECT rutas_detail_all()) OR owner_country = (SELECT rutas_detail_own()) "
    "OR owner_country = ANY (CAST((SELECT rutas_detail_partners()) AS char(3)[]))"
)


def upgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in CORRIDOR_KINDS)
    op.create_table(
        "corridors",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("layer_id", sa.BigInteger, sa.ForeignKey("reference_layers.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("owner_country", sa.CHAR(3), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("source", sa.Text, nullable=True),
        sa.Column("confidence", sa.Text, nullable=True),
        sa.Column("valid_from", sa.Date, nullable=True),
        sa.Column("valid_to", sa.Date, nullable=True),
        sa.Column("illustrative", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("note", sa.Text, nullable=True),
        sa.Column("source_row", sa.Integer, nullable=False),
        sa.Column("properties", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("geom", Geometry("GEOMETRY", srid=4326, spatial_index=False), nullable=False),
        sa.CheckConstraint(f"kind IN ({kinds})", name="corridors_kind"),
        sa.CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_from <= valid_to",
                           name="corridors_validity"),
    )
    op.create_index("corridors_geom_idx", "corridors", ["geom"], postgresql_using="gist")
    op.create_index("corridors_layer_idx", "corridors", ["layer_id"])
    op.execute("ALTER TABLE corridors ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE corridors FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY corridors_scope ON corridors FOR SELECT USING ({CORRIDOR_POLICY})")
    op.execute(
        "CREATE POLICY corridors_system_write ON corridors FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}') "
        f"WITH CHECK (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}')"
    )
    op.execute(f"GRANT SELECT ON corridors TO {APP_ROLE}")


def downgrade() -> None:
    op.execute("DROP POLICY IF EXISTS corridors_system_write ON corridors")
    op.execute("DROP POLICY IF EXISTS corridors_scope ON corridors")
    op.drop_table("corridors")
