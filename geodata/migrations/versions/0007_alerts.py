"""Alerts: subscriptions with fences, deduplicated alerts, the delivery outbox and its attempts.

Revision ID: 0007
Revises: 0006

``subscriptions`` holds each border authority's fence (EPSG:4326 polygon, GiST-indexed so an
ingest batch is matched against thousands of fences in one statement), triggers, filters, webhook
URL and signing secret. ``alerts`` is unique per (subscription, trigger, object key), so an event
or a route change raises one alert whatever happens later. ``deliveries`` is the transactional
outbox: written in the same transaction as the alert, drained by the worker; every try is kept in
``delivery_attempts``.

Row-level security shows a subscription, its alerts, deliveries and attempts to the callers of
the subscription's country (all to admin and system). The app role reads them (never the secret
column) and writes nothing: the API authorises in Python and writes as the service.
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql as pg

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"
#: Who may read a subscription: admin and system, or callers of the subscription's country.
SUBSCRIPTION_POLICY = (
    "(SELECT rutas_detail_all()) "
    "OR country = CAST((SELECT nullif(current_setting('rutas.country', true), '')) AS char(3))"
)
CHILD_POLICY = "subscription_id IN (SELECT id FROM subscriptions)"
SUBSCRIPTION_COLUMNS = (
    "id, name, owner, country, role, fence, fence_ref, triggers, filters, webhook_url, sse, status, "
    "disabled_reason, created_at"
)


def upgrade() -> None:
    op.create_table(
        "subscriptions",
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
        sa.CheckConstraint(
            "triggers <@ ARRAY['event_in_fence', 'route_new', 'route_intensifying', "
            "'route_convergence']::text[] AND cardinality(triggers) > 0",
            name="subscriptions_triggers",
        ),
    )
    op.create_index("subscriptions_fence_idx", "subscriptions", ["fence"], postgresql_using="gist")
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("subscription_id", sa.BigInteger,
                  sa.ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("object_key", sa.Text, nullable=False),
        sa.Column("run_id", sa.BigInteger, nullable=True),
        sa.Column("payload", pg.JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("subscription_id", "trigger", "object_key", name="alerts_dedupe"),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("alert_id", sa.BigInteger, sa.ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
        sa.Column("subscription_id", sa.BigInteger,
                  sa.ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("last_status_code", sa.Integer, nullable=True),
        sa.Column("replay_of", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'dead', 'disabled')",
                           name="deliveries_status"),
    )
    op.create_index("deliveries_due_idx", "deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("deliveries_subscription_idx", "deliveries", ["subscription_id", "id"])
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("delivery_id", sa.BigInteger, sa.ForeignKey("deliveries.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("subscription_id", sa.BigInteger,
                  sa.ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )
    op.create_index("delivery_attempts_delivery_idx", "delivery_attempts", ["delivery_id"])
    op.execute("ALTER TABLE subscriptions ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY subscriptions_scope ON subscriptions FOR SELECT USING ({SUBSCRIPTION_POLICY})")
    op.execute(
        "CREATE POLICY subscriptions_system_write ON subscriptions FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}') WITH CHECK (current_user <> '{APP_ROLE}')"
    )
    for table in ("alerts", "deliveries", "delivery_attempts"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_scope ON {table} FOR SELECT USING ({CHILD_POLICY})")
        op.execute(
            f"CREATE POLICY {table}_system_write ON {table} FOR ALL TO PUBLIC "
            f"USING (current_user <> '{APP_ROLE}') WITH CHECK (current_user <> '{APP_ROLE}')"
        )
        op.execute(f"GRANT SELECT ON {table} TO {APP_ROLE}")
    # the signing secret is never readable by the app role
    op.execute(f"GRANT SELECT ({SUBSCRIPTION_COLUMNS}) ON subscriptions TO {APP_ROLE}")


def downgrade() -> None:
    for table in ("delivery_attempts", "deliveries", "alerts", "subscriptions"):
        op.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
        op.drop_table(table)
