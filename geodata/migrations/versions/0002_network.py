"""Network: reference layers (roads, borders, crossings), road topology and event snaps.

Revision ID: 0002
Revises: 0001

Geometries in EPSG:4326; lengths and distances in metres. ``road_edges`` has
pgRouting-compatible columns (id, source, target, cost, reverse_cost).
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reference_layers",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("subkind", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("sha256", sa.Text, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("feature_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("report", pg.JSONB, nullable=False, server_default="{}"),
    )
    op.create_index(
        "reference_layers_one_active", "reference_layers", ["kind", "subkind"], unique=True,
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "road_nodes",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("layer_id", sa.BigInteger,
                  sa.ForeignKey("reference_layers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("road_nodes_geom_idx", "road_nodes", ["geom"], postgresql_using="gist")
    op.create_index("road_nodes_layer_idx", "road_nodes", ["layer_id"])
    op.create_table(
        "road_edges",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("layer_id", sa.BigInteger,
                  sa.ForeignKey("reference_layers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("source", sa.BigInteger, nullable=False),
        sa.Column("target", sa.BigInteger, nullable=False),
        sa.Column("length_m", sa.Float, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("reverse_cost", sa.Float, nullable=False),
        sa.Column("road_class", sa.Text, nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("country", sa.CHAR(3), nullable=True),
        sa.Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("road_edges_geom_idx", "road_edges", ["geom"], postgresql_using="gist")
    op.create_index("road_edges_layer_idx", "road_edges", ["layer_id"])
    op.create_index("road_edges_source_idx", "road_edges", ["source"])
    op.create_index("road_edges_target_idx", "road_edges", ["target"])
    op.execute("CREATE SEQUENCE IF NOT EXISTS road_ids_seq AS bigint")
    op.create_table(
        "border_segments",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("layer_id", sa.BigInteger,
                  sa.ForeignKey("reference_layers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("country_a", sa.CHAR(3), nullable=True),
        sa.Column("country_b", sa.CHAR(3), nullable=True),
        sa.Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("border_segments_geom_idx", "border_segments", ["geom"],
                    postgresql_using="gist")
    op.create_index("border_segments_layer_idx", "border_segments", ["layer_id"])
    op.create_table(
        "crossings",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("layer_id", sa.BigInteger,
                  sa.ForeignKey("reference_layers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("official", sa.Boolean, nullable=False),
        sa.Column("country_a", sa.CHAR(3), nullable=True),
        sa.Column("country_b", sa.CHAR(3), nullable=True),
        sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
    )
    op.create_index("crossings_geom_idx", "crossings", ["geom"], postgresql_using="gist")
    op.create_index("crossings_layer_idx", "crossings", ["layer_id"])
    op.create_table(
        "event_snaps",
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("edge_id", sa.BigInteger, nullable=True),
        sa.Column("fraction", sa.Float, nullable=True),
        sa.Column("snapped", Geometry("POINT", srid=4326, spatial_index=False), nullable=True),
        sa.Column("distance_m", sa.Float, nullable=True),
        sa.Column("off_network", sa.Boolean, nullable=False),
        sa.Column("border_segment_id", sa.BigInteger, nullable=True),
        sa.Column("border_countries", sa.Text, nullable=True),
        sa.Column("border_distance_m", sa.Float, nullable=True),
        sa.Column("crossing_id", sa.BigInteger, nullable=True),
        sa.Column("crossing_distance_m", sa.Float, nullable=True),
        sa.Column("layers", pg.JSONB, nullable=False, server_default="{}"),
        sa.Column("snapped_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
    )
    op.create_index("event_snaps_edge_idx", "event_snaps", ["edge_id"])


def downgrade() -> None:
    op.drop_table("event_snaps")
    op.drop_table("crossings")
    op.drop_table("border_segments")
    op.execute("DROP SEQUENCE IF EXISTS road_ids_seq")
    op.drop_table("road_edges")
    op.drop_table("road_nodes")
    op.drop_table("reference_layers")
