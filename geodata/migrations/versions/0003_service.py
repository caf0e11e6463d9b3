"""Service: API keys, sharing agreements, hash-chained audit log, the app role and row-level security.

Revision ID: 0003
Revises: 0002

The API connects as the database user Rutas is configured with and, for every request,
switches to the role ``rutas_app`` (``SET LOCAL ROLE``), which owns no table, so the
row-level-security policies below always apply to it. The caller's role, country and partner
countries are read from ``current_setting('rutas.role' | 'rutas.country' | 'rutas.partners')``,
set per transaction by ``geodata.db.scoped``.

Roles are cluster-wide while every test run has its own database, so they are created
idempotently and never dropped by the downgrade.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

APP_ROLE = "rutas_app"
#: Owner of the SECURITY DEFINER aggregate function: policies let it count every record.
AGGREGATOR_ROLE = "rutas_aggregator"

ROLES_SQL = f"""
DO $$
BEGIN
    BEGIN
        CREATE ROLE {APP_ROLE} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE {AGGREGATOR_ROLE} NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    -- The connecting user switches to these roles (SET ROLE) and hands functions to them.
    EXECUTE format('GRANT {APP_ROLE}, {AGGREGATOR_ROLE} TO %I', current_user);
END
$$;
"""

# The caller's scope, read from the settings geodata.db.scoped sets per transaction. Policies call
# these inside scalar subqueries, so each is evaluated once per query (an InitPlan), not per row,
# and owner_country comparisons can use the index.
#
# Detail: admin and system see everything; steward and prosecutor see their own country; a
# prosecutor also sees partners' records in detail when the owner granted 'detail', except victim
# identifications, which are never shown in detail outside the owning country. The aggregator
# role (only used inside the k-suppressing count functions below) counts everything.
# Aggregates: region-wide for admin, system, analyst and border_authority; own country plus
# partners (either level) for the others.
SCOPE_FUNCTIONS_SQL = f"""
CREATE OR REPLACE FUNCTION rutas_scope_role() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('rutas.role', true), '')
$$;
CREATE OR REPLACE FUNCTION rutas_detail_all() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT current_user = '{AGGREGATOR_ROLE}' OR rutas_scope_role() IN ('admin', 'system')
$$;
CREATE OR REPLACE FUNCTION rutas_detail_own() RETURNS char(3)
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN rutas_scope_role() IN ('steward', 'prosecutor')
                THEN CAST(nullif(current_setting('rutas.country', true), '') AS char(3)) END
$$;
CREATE OR REPLACE FUNCTION rutas_partners(levels text[]) RETURNS char(3)[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(CAST(split_part(p, ':', 1) AS char(3))), CAST('{{}}' AS char(3)[]))
    FROM unnest(string_to_array(coalesce(current_setting('rutas.partners', true), ''), ',')) AS p
    WHERE split_part(p, ':', 2) = ANY (levels)
$$;
CREATE OR REPLACE FUNCTION rutas_detail_partners() RETURNS char(3)[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN rutas_scope_role() = 'prosecutor' THEN rutas_partners(ARRAY['detail'])
                ELSE CAST('{{}}' AS char(3)[]) END
$$;
CREATE OR REPLACE FUNCTION rutas_aggregate_all() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT rutas_scope_role() IN ('admin', 'system', 'analyst', 'border_authority')
$$;
CREATE OR REPLACE FUNCTION rutas_aggregate_countries() RETURNS char(3)[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT rutas_partners(ARRAY['aggregate', 'detail'])
           || CAST(nullif(current_setting('rutas.country', true), '') AS char(3))
$$;
"""

#: The detail rule as a policy expression (also what the security tests restore).
DETAIL_POLICY = (
    "(SELECT rutas_detail_all()) OR owner_country = (SELECT rutas_detail_own()) "
    "OR (kind <> 'victim_identification' "
    "AND owner_country = ANY (CAST((SELECT rutas_detail_partners()) AS char(3)[])))"
)
#: Whether a row of owner ``{owner}`` feeds the caller's aggregated layers.
AGGREGATE_CONDITION = (
    "((SELECT rutas_aggregate_all()) "
    "OR {owner} = ANY (CAST((SELECT rutas_aggregate_countries()) AS char(3)[])))"
)

# Event counts per square cell of ``cell_m`` metres (EPSG:3857), per kind, for the countries the
# caller may see aggregated, with cells of fewer than ``k`` records suppressed. It runs as the
# aggregator role (SECURITY DEFINER) so it can count records the caller cannot see in detail,
# and returns only the counts.
CELLS_FUNCTION_SQL = f"""
CREATE OR REPLACE FUNCTION rutas_event_cells(
    cell_m double precision, area geometry, since timestamptz, until timestamptz, k integer)
RETURNS TABLE (cell geometry, kind text, n bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT ST_Transform(ST_MakeEnvelope(gx * cell_m, gy * cell_m, (gx + 1) * cell_m,
                                        (gy + 1) * cell_m, 3857), 4326) AS cell,
           e_kind AS kind, count(*) AS n
    FROM (
        SELECT floor(ST_X(ST_Transform(e.geom, 3857)) / cell_m)::bigint AS gx,
               floor(ST_Y(ST_Transform(e.geom, 3857)) / cell_m)::bigint AS gy,
               e.kind AS e_kind
        FROM events e, (
            -- Whole cells and whole months only: a bbox or a period that cuts a cell or a month
            -- would let two overlapping requests be subtracted to reveal suppressed counts.
            SELECT ST_Transform(ST_MakeEnvelope(floor(ST_XMin(m) / cell_m) * cell_m,
                                                floor(ST_YMin(m) / cell_m) * cell_m,
                                                ceil(ST_XMax(m) / cell_m) * cell_m,
                                                ceil(ST_YMax(m) / cell_m) * cell_m, 3857), 4326) AS box,
                   date_trunc('month', since, 'UTC') AS t0,
                   date_trunc('month', until, 'UTC') + interval '1 month' AS t1
            FROM (SELECT ST_Transform(ST_MakeEnvelope(
                      greatest(ST_XMin(area), -180), greatest(ST_YMin(area), -85.05),
                      least(ST_XMax(area), 180), least(ST_YMax(area), 85.05), 4326), 3857) AS m) AS a
        ) AS b
        WHERE {AGGREGATE_CONDITION.format(owner="e.owner_country")}
          AND (b.box IS NULL OR e.geom && b.box)
          AND (b.t0 IS NULL OR e.occurred_at >= b.t0)
          AND (b.t1 IS NULL OR e.occurred_at < b.t1)
          AND abs(ST_Y(e.geom)) < 85.05
    ) AS cells
    GROUP BY gx, gy, e_kind
    HAVING count(*) >= greatest(k, 1)
$$;
ALTER FUNCTION rutas_event_cells(double precision, geometry, timestamptz, timestamptz, integer)
    OWNER TO {AGGREGATOR_ROLE};
"""

# Pre-computed counts for low-zoom tiles: per cell of the tile grid at zoom level + 5 (32 cells per
# tile side, EPSG:3857), per owner country and kind, for levels 0..6 (zoom 7 and finer count on
# the fly: a zoom-12 grid would hold about one cell per event). Kept exact by statement
# triggers on events (transition tables), whoever writes the events. Only the SECURITY DEFINER
# function rutas_tile_cells reads it, and only returns sums of at least k.
CELL_LEVELS = 7

def _roll_up(rows: str, sign: str) -> str:
    """PL/pgSQL adding (sign '') or removing (sign '-') the transition table ``rows`` in every level."""
    ops = "'INSERT', 'UPDATE'" if rows == "new_rows" else "'UPDATE', 'DELETE'"
    return f"""    IF TG_OP IN ({ops}) THEN
        INSERT INTO event_cell_counts AS c (level, gx, gy, owner_country, kind, n)
        SELECT lv, b.gx >> ({CELL_LEVELS - 1} - lv), b.gy >> ({CELL_LEVELS - 1} - lv), b.owner_country,
               b.kind, {sign}sum(b.n)
        FROM (SELECT floor((ST_X(geom) + 180.0) / 360.0 * {2 ** (CELL_LEVELS - 1 + 5)})::int AS gx,
                     floor((1.0 - asinh(tan(radians(ST_Y(geom)))) / pi()) / 2.0
                           * {2 ** (CELL_LEVELS - 1 + 5)})::int AS gy,
                     owner_country, kind, count(*) AS n
              FROM {rows} WHERE abs(ST_Y(geom)) < 85.05 AND abs(ST_X(geom)) < 180
              GROUP BY 1, 2, 3, 4) AS b
        CROSS JOIN generate_series(0, {CELL_LEVELS - 1}) AS lv
        GROUP BY 1, 2, 3, 4, 5
        ON CONFLICT (level, gx, gy, owner_country, kind) DO UPDATE SET n = c.n + EXCLUDED.n;
    END IF;
"""


_ROLL_UP_OLD = _roll_up("old_rows", "-")
_ROLL_UP_NEW = _roll_up("new_rows", "")
CELL_COUNTS_SQL = f"""
CREATE OR REPLACE FUNCTION rutas_cells_apply() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM event_cell_counts;
        RETURN NULL;
    END IF;
    -- Rows are counted once per finest cell (the tile grid of zoom {CELL_LEVELS - 1 + 5}, from
    -- lon/lat with the WebMercatorQuad formulas), then rolled up to the coarser levels.
{_ROLL_UP_OLD}{_ROLL_UP_NEW}    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM event_cell_counts WHERE n <= 0;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_cells_insert AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rutas_cells_apply();
CREATE TRIGGER events_cells_update AFTER UPDATE ON events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rutas_cells_apply();
CREATE TRIGGER events_cells_delete AFTER DELETE ON events REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION rutas_cells_apply();
CREATE TRIGGER events_cells_truncate AFTER TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION rutas_cells_apply();

-- Cells of tile z/x/y (z < {CELL_LEVELS}) as pixel-grid indices 0..31 inside the tile, summed
-- over the countries the caller may see aggregated, suppressed below k.
CREATE OR REPLACE FUNCTION rutas_tile_cells(z integer, x integer, y integer, k integer)
RETURNS TABLE (px integer, py integer, kind text, n bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT c.gx - x * 32, c.gy - y * 32, c.kind, sum(c.n)::bigint
    FROM event_cell_counts c
    WHERE c.level = z AND c.gx >= x * 32 AND c.gx < (x + 1) * 32
      AND c.gy >= y * 32 AND c.gy < (y + 1) * 32
      AND {AGGREGATE_CONDITION.format(owner="c.owner_country")}
    GROUP BY c.gx, c.gy, c.kind
    HAVING sum(c.n) >= greatest(k, 1)
$$;
ALTER FUNCTION rutas_tile_cells(integer, integer, integer, integer) OWNER TO {AGGREGATOR_ROLE};
REVOKE ALL ON FUNCTION rutas_tile_cells(integer, integer, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rutas_tile_cells(integer, integer, integer, integer) TO {APP_ROLE};
"""

AUDIT_SQL = f"""
CREATE OR REPLACE FUNCTION rutas_audit_canonical(a audit_log) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws('|', a.prev_hash, a.seq::text, a.id::text,
                     to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                     a.who, a.role, coalesce(a.country, ''), a.action, a.collection,
                     a.filter::text, a.records::text)
$$;

-- Chains each new row to the previous one. SECURITY DEFINER: the app role may only insert,
-- yet the trigger must read the last hash. The advisory lock serialises writers until commit,
-- and the chain order is seq, numbered under that lock (ids are drawn before it, so concurrent
-- writers may commit out of id order; a rolled-back writer leaves no gap in seq).
CREATE OR REPLACE FUNCTION rutas_audit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('rutas_audit_log'));
    NEW.at := clock_timestamp();
    SELECT l.seq + 1, l.hash INTO NEW.seq, NEW.prev_hash FROM audit_log l ORDER BY l.seq DESC LIMIT 1;
    NEW.seq := coalesce(NEW.seq, 1);
    NEW.prev_hash := coalesce(NEW.prev_hash, repeat('0', 64));
    NEW.hash := encode(sha256(convert_to(rutas_audit_canonical(NEW), 'UTF8')), 'hex');
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION rutas_audit_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION rutas_audit_chain();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION rutas_audit_refuse();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION rutas_audit_refuse();
REVOKE ALL ON audit_log FROM PUBLIC;
GRANT INSERT ON audit_log TO {APP_ROLE};
"""

#: Tables the app role reads (reference layers carry no personal data).
READ_TABLES = (
    "events", "ingest_batches", "event_snaps", "reference_layers", "road_nodes", "road_edges",
    "border_segments", "crossings", "sharing_agreements", "spatial_ref_sys",
)


def upgrade() -> None:
    op.execute(ROLES_SQL)
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("key_id", sa.Text, nullable=False, unique=True),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("country", sa.CHAR(3), nullable=True),
        sa.Column("label", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('admin', 'steward', 'prosecutor', 'border_authority', 'analyst')",
            name="api_keys_role",
        ),
        sa.CheckConstraint(
            "role IN ('admin', 'analyst') OR country IS NOT NULL", name="api_keys_country"
        ),
    )
    op.create_table(
        "sharing_agreements",
        sa.Column("owner_country", sa.CHAR(3), primary_key=True),
        sa.Column("partner_country", sa.CHAR(3), primary_key=True),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.CheckConstraint("level IN ('aggregate', 'detail')", name="sharing_agreements_level"),
        sa.CheckConstraint("owner_country <> partner_country", name="sharing_agreements_distinct"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.clock_timestamp()),
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
    op.create_index("audit_log_seq_idx", "audit_log", ["seq"], unique=True)
    op.execute(AUDIT_SQL)
    op.create_index("events_owner_idx", "events", ["owner_country", "id"])

    # text() with escaped colons: ':detail' is a literal, not a bind parameter.
    op.execute(sa.text(SCOPE_FUNCTIONS_SQL.replace(":", "\\:")))
    for table in ("events", "ingest_batches", "event_snaps"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    # Only SELECT policies: the app role cannot write records through any path.
    op.execute(
        f"CREATE POLICY events_detail ON events FOR SELECT USING ({DETAIL_POLICY})"
    )
    # Writes by the trusted loader (role 'system', or the table owner outside any scope).
    op.execute(
        "CREATE POLICY events_system_write ON events FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}') "
        f"WITH CHECK (current_user <> '{APP_ROLE}' AND current_user <> '{AGGREGATOR_ROLE}')"
    )
    op.execute(
        "CREATE POLICY ingest_batches_scope ON ingest_batches FOR SELECT "
        "USING (coalesce(current_setting('rutas.role', true), '') IN ('admin', 'system') "
        "OR owner_country = nullif(current_setting('rutas.country', true), ''))"
    )
    op.execute(
        "CREATE POLICY ingest_batches_system_write ON ingest_batches FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}') WITH CHECK (current_user <> '{APP_ROLE}')"
    )
    # A snap reveals where its event is: visible exactly when the event is (events' RLS applies
    # inside the subquery). A scalar subquery, so it is one index probe per snap read, never a
    # hash of every visible event.
    op.execute(
        "CREATE POLICY event_snaps_scope ON event_snaps FOR SELECT "
        "USING ((SELECT true FROM events e WHERE e.id = event_snaps.event_id))"
    )
    op.execute(
        "CREATE POLICY event_snaps_system_write ON event_snaps FOR ALL TO PUBLIC "
        f"USING (current_user <> '{APP_ROLE}') WITH CHECK (current_user <> '{APP_ROLE}')"
    )

    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}, {AGGREGATOR_ROLE}")
    op.execute(f"GRANT SELECT ON {', '.join(READ_TABLES)} TO {APP_ROLE}")
    op.execute(f"GRANT SELECT ON events TO {AGGREGATOR_ROLE}")
    op.create_table(
        "event_cell_counts",
        sa.Column("level", sa.SmallInteger, primary_key=True),
        sa.Column("gx", sa.Integer, primary_key=True),
        sa.Column("gy", sa.Integer, primary_key=True),
        sa.Column("owner_country", sa.CHAR(3), primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
    )
    op.execute("REVOKE ALL ON event_cell_counts FROM PUBLIC")
    op.execute(f"GRANT SELECT ON event_cell_counts TO {AGGREGATOR_ROLE}")
    op.execute(sa.text(CELL_COUNTS_SQL.replace(":", "\\:")))
    op.execute(CELLS_FUNCTION_SQL)
    op.execute(
        "REVOKE ALL ON FUNCTION rutas_event_cells(double precision, geometry, timestamptz, "
        "timestamptz, integer) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION rutas_event_cells(double precision, geometry, timestamptz, "
        f"timestamptz, integer) TO {APP_ROLE}"
    )
    # Products of later stages (routes, runs) are aggregated: readable by the app role.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {APP_ROLE}")


def downgrade() -> None:
    for trigger in ("insert", "update", "delete", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS events_cells_{trigger} ON events")
    op.execute("DROP FUNCTION IF EXISTS rutas_tile_cells(integer, integer, integer, integer)")
    op.execute("DROP FUNCTION IF EXISTS rutas_cells_apply()")
    op.drop_table("event_cell_counts")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {APP_ROLE}")
    op.execute(
        "DROP FUNCTION IF EXISTS rutas_event_cells(double precision, geometry, timestamptz, "
        "timestamptz, integer)"
    )
    for table, policies in (
        ("events", ("events_detail", "events_system_write")),
        ("ingest_batches", ("ingest_batches_scope", "ingest_batches_system_write")),
        ("event_snaps", ("event_snaps_scope", "event_snaps_system_write")),
    ):
        for policy in policies:
            op.execute(f"DROP POLICY IF EXISTS {policy} ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute(f"REVOKE ALL ON {', '.join(READ_TABLES)} FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON events FROM {AGGREGATOR_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}, {AGGREGATOR_ROLE}")
    op.drop_index("events_owner_idx", table_name="events")
    for function in ("rutas_aggregate_countries()", "rutas_aggregate_all()", "rutas_detail_partners()",
                     "rutas_partners(text[])", "rutas_detail_own()", "rutas_detail_all()",
                     "rutas_scope_role()"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}")
    op.execute("DROP FUNCTION IF EXISTS rutas_audit_canonical(audit_log)")
    op.drop_table("audit_log")
    op.execute("DROP FUNCTION IF EXISTS rutas_audit_chain()")
    op.execute("DROP FUNCTION IF EXISTS rutas_audit_refuse()")
    op.drop_table("sharing_agreements")
    op.drop_table("api_keys")
