"""Table definitions of the store (SQLAlchemy Core + geoalchemy2), one place per table.

Geometries are stored in EPSG:4326. Migrations under ``geodata/migrations`` create these
tables; keep both in step. Sections: records (events, ingest batches), then the layers and
products that later stages add.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

EVENT_KINDS = ("incident", "interception", "victim_identification")
CRIME_TYPES = ("trafficking", "smuggling", "both", "unknown")
DATE_PRECISIONS = ("day", "month", "year")

# --- records -------------------------------------------------------------------------------

ingest_batches = sa.Table(
    "ingest_batches",
    metadata,
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
    sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint(f"kind IN {EVENT_KINDS}", name="ingest_batches_kind"),
)

events = sa.Table(
    "events",
    metadata,
    # One sequence numbers every partition (migration 0011: identity columns cannot be partitioned).
    sa.Column("id", sa.BigInteger, sa.Sequence("events_id_seq"), primary_key=True),
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
    # Compared byte-wise (collation "C", migration 0009): the unique index's inserts stay cheap.
    sa.Column("dedupe_key", sa.Text(collation="C"), nullable=False),
    # References ingest_batches.id: enforced per statement by triggers (migration 0009), not a
    # per-row foreign key, so a COPY of a batch checks its batch once.
    sa.Column("batch_id", sa.BigInteger, nullable=False),
    sa.Column("source_row", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # The partition (migration 0011): 0 the shared one, else the id of a bulk batch stored in a table
    # of its own, ``events_batch_<id>``. Unique rules must include it; triggers keep them global.
    sa.Column("storage_part", sa.BigInteger, nullable=False, server_default="0", primary_key=True),
    sa.CheckConstraint(f"kind IN {EVENT_KINDS}", name="events_kind"),
    sa.CheckConstraint(f"crime_type IN {CRIME_TYPES}", name="events_crime_type"),
    sa.CheckConstraint(f"date_precision IN {DATE_PRECISIONS}", name="events_date_precision"),
    sa.UniqueConstraint("dedupe_key", "owner_country", "source", "storage_part", name="events_dedupe"),
    postgresql_partition_by="LIST (storage_part)",
)
sa.Index("events_geom_idx", events.c.geom, postgresql_using="gist")

#: The (owner country, source) pairs each partition of ``events`` holds (migration 0011), kept by
#: triggers; never shrunk by deletes, so "absent" is certain and "present" may be stale.
event_sources = sa.Table(
    "event_sources",
    metadata,
    sa.Column("owner_country", sa.CHAR(3), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("storage_part", sa.BigInteger, primary_key=True),
)
sa.Index("events_occurred_idx", events.c.occurred_at)
sa.Index("events_batch_idx", events.c.batch_id)

# --- reference layers and snapping (issue 3) ------------------------------------------------

LAYER_KINDS = ("roads", "borders", "crossings", "inferred_crossings", "corridors")

reference_layers = sa.Table(
    "reference_layers",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("subkind", sa.Text, nullable=False, server_default=""),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("file_name", sa.Text, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("feature_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("report", pg.JSONB, nullable=False, server_default="{}"),
)
sa.Index("reference_layers_one_active", reference_layers.c.kind, reference_layers.c.subkind,
         unique=True, postgresql_where=sa.text("active"))

road_nodes = sa.Table(
    "road_nodes",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("layer_id", sa.BigInteger, sa.ForeignKey("reference_layers.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
)
sa.Index("road_nodes_geom_idx", road_nodes.c.geom, postgresql_using="gist")
sa.Index("road_nodes_layer_idx", road_nodes.c.layer_id)

#: Edges of the routable road graph (pgRouting column names: id, source, target, cost, reverse_cost).
road_edges = sa.Table(
    "road_edges",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("layer_id", sa.BigInteger, sa.ForeignKey("reference_layers.id", ondelete="CASCADE"),
              nullable=False),
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
sa.Index("road_edges_geom_idx", road_edges.c.geom, postgresql_using="gist")
sa.Index("road_edges_layer_idx", road_edges.c.layer_id)
sa.Index("road_edges_source_idx", road_edges.c.source)
sa.Index("road_edges_target_idx", road_edges.c.target)

border_segments = sa.Table(
    "border_segments",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("layer_id", sa.BigInteger, sa.ForeignKey("reference_layers.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("country_a", sa.CHAR(3), nullable=True),
    sa.Column("country_b", sa.CHAR(3), nullable=True),
    sa.Column("geom", Geometry("LINESTRING", srid=4326, spatial_index=False), nullable=False),
)
sa.Index("border_segments_geom_idx", border_segments.c.geom, postgresql_using="gist")
sa.Index("border_segments_layer_idx", border_segments.c.layer_id)

crossings = sa.Table(
    "crossings",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("layer_id", sa.BigInteger, sa.ForeignKey("reference_layers.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    sa.Column("official", sa.Boolean, nullable=False),
    sa.Column("country_a", sa.CHAR(3), nullable=True),
    sa.Column("country_b", sa.CHAR(3), nullable=True),
    sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
)
sa.Index("crossings_geom_idx", crossings.c.geom, postgresql_using="gist")
sa.Index("crossings_layer_idx", crossings.c.layer_id)

#: Where each event sits on the network; ``layers`` records the layer versions used.
event_snaps = sa.Table(
    "event_snaps",
    metadata,
    # References events.id, checked and cascaded by statement triggers (migration 0011).
    sa.Column("event_id", sa.BigInteger, primary_key=True),
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
    sa.Column("snapped_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
sa.Index("event_snaps_edge_idx", event_snaps.c.edge_id)

# --- analysis runs and routes (issue 4) -----------------------------------------------------

RUN_STATUSES = ("running", "succeeded", "failed")
ROUTE_TRENDS = ("up", "down", "none")

#: One pipeline run (``rutas run``): what it was given, what it used and what it produced.
analysis_runs = sa.Table(
    "analysis_runs",
    metadata,
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

#: Emerging routes found by a run; ``route_key`` is the identity kept across runs.
routes = sa.Table(
    "routes",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"), nullable=False),
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
sa.Index("routes_run_idx", routes.c.run_id)
sa.Index("routes_key_idx", routes.c.route_key)
sa.Index("routes_geom_idx", routes.c.geom, postgresql_using="gist")

#: The events that make up each route.
route_events = sa.Table(
    "route_events",
    metadata,
    sa.Column("route_id", sa.BigInteger, sa.ForeignKey("routes.id", ondelete="CASCADE"), primary_key=True),
    # References events.id, checked and cascaded by statement triggers (migration 0011).
    sa.Column("event_id", sa.BigInteger, primary_key=True),
)
sa.Index("route_events_event_idx", route_events.c.event_id)

# --- service: keys, sharing agreements, audit (issue 6) -------------------------------------

API_ROLES = ("admin", "steward", "prosecutor", "border_authority", "analyst")
SHARING_LEVELS = ("aggregate", "detail")

#: API keys, stored as SHA-256 of their secret part; ``key_id`` is the public prefix.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("key_id", sa.Text, nullable=False, unique=True),
    sa.Column("key_hash", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("country", sa.CHAR(3), nullable=True),
    sa.Column("label", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint(f"role IN {API_ROLES}", name="api_keys_role"),
    sa.CheckConstraint("role IN ('admin', 'analyst') OR country IS NOT NULL", name="api_keys_country"),
)

#: What ``partner_country`` may see of ``owner_country``'s records.
sharing_agreements = sa.Table(
    "sharing_agreements",
    metadata,
    sa.Column("owner_country", sa.CHAR(3), primary_key=True),
    sa.Column("partner_country", sa.CHAR(3), primary_key=True),
    sa.Column("level", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint(f"level IN {SHARING_LEVELS}", name="sharing_agreements_level"),
    sa.CheckConstraint("owner_country <> partner_country", name="sharing_agreements_distinct"),
)

#: Append-only, hash-chained record of every read of record-level data.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.clock_timestamp()),
    sa.Column("who", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("country", sa.CHAR(3), nullable=True),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("collection", sa.Text, nullable=False),
    sa.Column("filter", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("prev_hash", sa.Text, nullable=False, server_default=""),
    sa.Column("hash", sa.Text, nullable=False, server_default=""),
)
sa.Index("audit_log_seq_idx", audit_log.c.seq, unique=True)
sa.Index("events_owner_idx", events.c.owner_country, events.c.id)

#: Event counts per low-zoom tile cell (level = zoom, cells of the zoom + 5 tile grid), kept by triggers.
event_cell_counts = sa.Table(
    "event_cell_counts",
    metadata,
    sa.Column("level", sa.SmallInteger, primary_key=True),
    sa.Column("gx", sa.Integer, primary_key=True),
    sa.Column("gy", sa.Integer, primary_key=True),
    sa.Column("owner_country", sa.CHAR(3), primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
)

# --- corridors and products (issue 5) -----------------------------------------------------------

CORRIDOR_KINDS = ("drug", "fuel", "arms", "other")

#: Trafficking corridors analysts load (``rutas load corridors``), owned by a country like events;
#: row-level security (migration 0005) shows them to the owner, detail partners, admin and system.
corridors = sa.Table(
    "corridors",
    metadata,
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
    sa.CheckConstraint("kind IN ('drug', 'fuel', 'arms', 'other')", name="corridors_kind"),
    sa.CheckConstraint("valid_to IS NULL OR valid_from IS NULL OR valid_from <= valid_to",
                       name="corridors_validity"),
)
sa.Index("corridors_geom_idx", corridors.c.geom, postgresql_using="gist")
sa.Index("corridors_layer_idx", corridors.c.layer_id)

def _candidate_run() -> list[sa.Column[Any]]:
    """The key and run of a joint-operation candidate (both kinds)."""
    return [
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("analysis_runs.id", ondelete="CASCADE"),
                  nullable=False, index=True),
    ]


def _candidate_figures() -> list[sa.Column[Any]]:
    """What every reader may see of a joint-operation candidate (both kinds): countries, counts, routes,
    period (coarsened) and the score without its corridor term."""
    return [
        sa.Column("countries", sa.Text, nullable=False),
        sa.Column("records_by_country", pg.JSONB, nullable=False),
        sa.Column("route_ids", pg.ARRAY(sa.BigInteger), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("base_score", sa.Float, nullable=False),
    ]


#: Joint-operation candidates at border crossings, per run (migration 0008): only what every reader
#: may see (counts under k as null, the period as the first days of the first and last month holding
#: at least k records, the score without its corridor term, added when read).
joint_operations = sa.Table(
    "joint_operations",
    metadata,
    *_candidate_run(),
    sa.Column("crossing_id", sa.BigInteger, nullable=False),
    sa.Column("name", sa.Text, nullable=True),
    *_candidate_figures(),
    sa.Column("geom", Geometry("POINT", srid=4326, spatial_index=False), nullable=False),
)

#: Joint-operation candidates at border sectors (``border_segments``), per run (migration 0010),
#: under the same rule as ``joint_operations``; ``geom`` is the stretch of the sector the routes reach,
#: ``border_segment_ids`` the contiguous segments of one border merged into it (the first is
#: ``border_segment_id``).
joint_sectors = sa.Table(
    "joint_sectors",
    metadata,
    *_candidate_run(),
    sa.Column("border_segment_id", sa.BigInteger, nullable=False),
    sa.Column("border_segment_ids", pg.ARRAY(sa.BigInteger), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("country_a", sa.CHAR(3), nullable=True),
    sa.Column("country_b", sa.CHAR(3), nullable=True),
    sa.Column("crossing_ids", pg.ARRAY(sa.BigInteger), nullable=False),
    *_candidate_figures(),
    sa.Column("geom", Geometry("MULTILINESTRING", srid=4326, spatial_index=False), nullable=False),
)


# --- alerts (issue 7) -----------------------------------------------------------------------

ALERT_TRIGGERS = ("event_in_fence", "route_new", "route_intensifying", "route_convergence")
DELIVERY_STATUSES = ("pending", "delivered", "dead", "disabled")

#: A border authority's fence (EPSG:4326 multipolygon, GiST) with triggers, filters and webhook;
#: row-level security (migration 0007) shows it to its country; the app role never reads ``secret``.
subscriptions = sa.Table(
    "subscriptions",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("country", sa.CHAR(3), nullable=True),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("fence", Geometry("MULTIPOLYGON", srid=4326, spatial_index=False), nullable=False),
    sa.Column("fence_ref", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("triggers", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("filters", pg.JSONB, nullable=False, server_default="{}"),
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("sse", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("status", sa.Text, nullable=False, server_default="enabled"),
    sa.Column("disabled_reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.CheckConstraint("status IN ('enabled', 'disabled')", name="subscriptions_status"),
)
sa.Index("subscriptions_fence_idx", subscriptions.c.fence, postgresql_using="gist")

#: One alert per (subscription, trigger, object key), with its evidence as JSON.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("subscription_id", sa.BigInteger, sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column("run_id", sa.BigInteger, nullable=True),
    sa.Column("payload", pg.JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("subscription_id", "trigger", "object_key", name="alerts_dedupe"),
)

#: The transactional outbox: one row per webhook delivery of an alert (and per replay).
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("subscription_id", sa.BigInteger, sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="pending"),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("replay_of", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'delivered', 'dead', 'disabled')", name="deliveries_status"),
)
sa.Index("deliveries_due_idx", deliveries.c.next_attempt_at, postgresql_where=sa.text("status = 'pending'"))
sa.Index("deliveries_subscription_idx", deliveries.c.subscription_id, deliveries.c.id)

#: Every try of a delivery: when, the receiver's status code or the error, how long (ms).
delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("delivery_id", sa.BigInteger, sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("subscription_id", sa.BigInteger, sa.ForeignKey("subscriptions.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
)
sa.Index("delivery_attempts_delivery_idx", delivery_attempts.c.delivery_id)
