"""The collections the API serves: tables, property allow-lists, queryables and who may read them.

Every property a GeoJSON feature carries is listed here; nothing else (free ``attributes``,
dedupe keys, original rows) ever leaves the database. Geometries are EPSG:4326.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from api.cql2 import Queryable

# The route figures' rule lives with the analysis: the alerts' payloads apply it too.
from routes.disclosure import (
    ROUTE_EVENT_COUNT_SQL,
    ROUTE_FIRST_EVENT_SQL,
    ROUTE_LAST_EVENT_SQL,
    ROUTE_MONTHLY_SQL,
    ROUTE_P_VALUE_SQL,
    ROUTE_SCOPE_SQL,
    ROUTE_SUPPRESSED_SQL,
    ROUTE_TAU_SQL,
    ROUTE_TREND_SQL,
    ROUTE_TREND_SUPPRESSED_SQL,
)
from routes.joint_disclosure import JOINT_COUNTS_SHOWN_SQL
from routes.overlap import BORDER_SECTOR, CROSSING, ZONE_WEIGHT

RECORD_ROLES = frozenset({"admin", "steward", "prosecutor"})
ALL_ROLES = frozenset({"admin", "steward", "prosecutor", "border_authority", "analyst"})


@dataclass(frozen=True)
class Collection:
    """One OGC API collection backed by a PostGIS table (or query).

    ``record_level`` collections hold records of a country (row-level security applies and
    every read is audited); the others are reference layers or aggregates.
    """

    id: str
    title: str
    description: str
    from_sql: str
    id_sql: str
    geom_sql: str
    geometry_type: str
    properties: dict[str, str]
    queryables: dict[str, Queryable]
    required_table: str
    time_sql: str | None = None
    record_level: bool = False
    roles: frozenset[str] = ALL_ROLES
    extra_where: str = "TRUE"
    admin_properties: dict[str, str] = field(default_factory=dict)
    #: Properties only the roles that read records (admin, steward, prosecutor) get.
    record_properties: dict[str, str] = field(default_factory=dict)
    #: Whether reads are written to the audit log although rows are not records (corridors).
    audited: bool = False
    #: Properties sent as text in vector tiles (arrays, JSON and times have no MVT type).
    tile_text: frozenset[str] = frozenset({"occurred_at", "nationalities"})
    #: Only the latest run's rows, in tiles always and in items unless a filter names run_id or latest.
    latest_by_default: bool = False

    @property
    def audit(self) -> bool:
        """Whether every read of this collection is written to the audit log."""
        return self.record_level or self.audited

    def properties_for(self, role: str) -> dict[str, str]:
        """The allow-list of properties for ``role`` (name to trusted SQL expression)."""
        props = dict(self.properties)
        if role in RECORD_ROLES:
            props.update(self.record_properties)
        if role == "admin":
            props.update(self.admin_properties)
        return props


def _q(name: str, sql: str, kind: str, description: str = "") -> tuple[str, Queryable]:
    return name, Queryable(name=name, sql=sql, type=kind, description=description)


_EVENT_PROPERTIES = {
    "kind": "e.kind",
    "crime_type": "e.crime_type",
    "occurred_at": "e.occurred_at",
    "date_precision": "e.date_precision",
    "owner_country": "e.owner_country",
    "location_country": "e.location_country",
    "coord_precision_m": "e.coord_precision_m",
    "dead": "e.dead",
    "missing": "e.missing",
    "survivors": "e.survivors",
    "victims": "e.victims",
    "nationalities": "e.nationalities",
    "source": "e.source",
    "batch_id": "e.batch_id",
    "border_countries": "s.border_countries",
    "border_distance_m": "s.border_distance_m",
    "crossing_distance_m": "s.crossing_distance_m",
    "off_network": "s.off_network",
}

EVENTS = Collection(
    id="events",
    title="Events / Eventos",
    description=(
        "Incidents, interceptions and victim identifications reported by each country, in "
        "detail only within the caller's country and partners' detail sharing agreements."
    ),
    from_sql="events e LEFT JOIN event_snaps s ON s.event_id = e.id",
    id_sql="e.id",
    geom_sql="e.geom",
    geometry_type="Point",
    time_sql="e.occurred_at",
    properties=_EVENT_PROPERTIES,
    admin_properties={"source_record_id": "e.source_record_id", "source_row": "e.source_row"},
    queryables=dict([
        _q("geom", "e.geom", "geometry", "Location (EPSG:4326)"),
        _q("id", "e.id", "integer"),
        _q("kind", "e.kind", "string", "incident, interception or victim_identification"),
        _q("crime_type", "e.crime_type", "string", "trafficking, smuggling, both or unknown"),
        _q("occurred_at", "e.occurred_at", "datetime"),
        _q("date_precision", "e.date_precision", "string"),
        _q("owner_country", "e.owner_country", "string", "ISO 3166-1 alpha-3"),
        _q("location_country", "e.location_country", "string", "ISO 3166-1 alpha-3"),
        _q("coord_precision_m", "e.coord_precision_m", "number", "metres"),
        _q("dead", "e.dead", "integer"),
        _q("missing", "e.missing", "integer"),
        _q("survivors", "e.survivors", "integer"),
        _q("victims", "e.victims", "integer"),
        _q("source", "e.source", "string"),
        _q("batch_id", "e.batch_id", "integer"),
        _q("border_countries", "s.border_countries", "string",
           "the two countries of the nearest border segment, e.g. COL-VEN"),
        _q("border_distance_m", "s.border_distance_m", "number",
           "distance to the nearest land border, metres"),
        _q("crossing_distance_m", "s.crossing_distance_m", "number",
           "distance to the nearest border crossing, metres"),
    ]),
    required_table="events",
    record_level=True,
    roles=RECORD_ROLES,
)

CROSSINGS = Collection(
    id="crossings",
    title="Border crossings / Pasos fronterizos",
    description="Official and inferred border crossings of the active reference layer.",
    from_sql="crossings c JOIN reference_layers l ON l.id = c.layer_id AND l.active",
    id_sql="c.id",
    geom_sql="c.geom",
    geometry_type="Point",
    properties={"name": "c.name", "official": "c.official", "country_a": "c.country_a",
                "country_b": "c.country_b", "layer": "l.kind"},
    queryables=dict([
        _q("geom", "c.geom", "geometry"), _q("id", "c.id", "integer"), _q("name", "c.name", "string"),
        _q("official", "c.official", "boolean"), _q("country_a", "c.country_a", "string"),
        _q("country_b", "c.country_b", "string"),
    ]),
    required_table="crossings",
)

BORDERS = Collection(
    id="borders",
    title="Land borders / Fronteras terrestres",
    description="Land border segments between two countries, of the active reference layer.",
    from_sql="border_segments b JOIN reference_layers l ON l.id = b.layer_id AND l.active",
    id_sql="b.id",
    geom_sql="b.geom",
    geometry_type="LineString",
    properties={"country_a": "b.country_a", "country_b": "b.country_b"},
    queryables=dict([
        _q("geom", "b.geom", "geometry"), _q("id", "b.id", "integer"),
        _q("country_a", "b.country_a", "string"), _q("country_b", "b.country_b", "string"),
    ]),
    required_table="border_segments",
)

#: Succeeded runs that are the latest of their crime-type group (what ``read_routes`` returns).
LATEST_RUNS_SQL = (
    "SELECT max(id) AS id FROM analysis_runs WHERE status = 'succeeded' GROUP BY counts->'crime_types'"
)

ROUTES = Collection(
    id="routes",
    title="Emerging routes / Rutas emergentes",
    description=(
        "Routes of every succeeded analysis run (filter latest = true for the current ones), EPSG:4326 "
        "lines, lengths in metres, 'category' the dominant emerging hot-spot category. Routes are "
        "aggregates over the records of every country, so every role sees them; the ids of their "
        "member events go only to roles that read records, and only the events row-level security "
        "lets the caller see. When the caller may not see every member event in detail, event_count "
        "and each monthly count below k (settings.k_anonymity) are null and counts_suppressed is true, "
        "and first_event/last_event are the starts of the first/last slice holding at least k records. "
        "tau, p_value and trend are null and trend_suppressed is true unless the caller sees every member "
        "event in detail, or no count is withheld and at least k member events are hidden from it."
    ),
    from_sql=(
        "routes r JOIN analysis_runs a ON a.id = r.run_id AND a.status = 'succeeded' "
        f"LEFT JOIN ({LATEST_RUNS_SQL}) AS latest ON latest.id = r.run_id {ROUTE_SCOPE_SQL}"
    ),
    id_sql="r.id",
    geom_sql="r.geom",
    geometry_type="MultiLineString",
    time_sql=f"({ROUTE_LAST_EVENT_SQL})",
    properties={
        "run_id": "r.run_id",
        "latest": "latest.id IS NOT NULL",
        "route_key": "r.route_key",
        "seen_before": "r.seen_before",
        "category": "r.category",
        "category_shares": "r.category_shares",
        "crime_types": "r.crime_types",
        "length_m": "r.length_m",
        "event_count": ROUTE_EVENT_COUNT_SQL,
        "counts_suppressed": ROUTE_SUPPRESSED_SQL,
        "trend": ROUTE_TREND_SQL,
        "tau": ROUTE_TAU_SQL,
        "p_value": ROUTE_P_VALUE_SQL,
        "trend_suppressed": ROUTE_TREND_SUPPRESSED_SQL,
        "countries": "r.countries",
        "crossing_ids": "r.crossing_ids",
        "crossings": ("ARRAY(SELECT c.name FROM crossings c WHERE c.id = ANY(r.crossing_ids) "
                      "AND c.name IS NOT NULL ORDER BY c.name)"),
        "first_event": ROUTE_FIRST_EVENT_SQL,
        "last_event": ROUTE_LAST_EVENT_SQL,
        "monthly_counts": ROUTE_MONTHLY_SQL,
    },
    # route_events has no row-level security of its own: joining events applies the events' policy,
    # so an event id leaves only when the caller may see that event in detail.
    record_properties={
        "event_ids": ("ARRAY(SELECT re.event_id FROM route_events re JOIN events ev ON ev.id = re.event_id "
                      "WHERE re.route_id = r.id ORDER BY re.event_id)"),
    },
    queryables=dict([
        _q("geom", "r.geom", "geometry", "Route line (EPSG:4326)"),
        _q("id", "r.id", "integer"),
        _q("run_id", "r.run_id", "integer", "the analysis run"),
        _q("latest", "(latest.id IS NOT NULL)", "boolean", "route of the latest run of its crime types"),
        _q("category", "r.category", "string", "dominant category, e.g. intensifying_hot"),
        _q("trend", ROUTE_TREND_SQL, "string",
           "up, down or none (Mann-Kendall); null (and not matched) when withheld: see trend_suppressed"),
        _q("tau", ROUTE_TAU_SQL, "number", "Mann-Kendall tau; null (and not matched) when withheld"),
        _q("p_value", ROUTE_P_VALUE_SQL, "number",
           "Mann-Kendall p-value; null (and not matched) when withheld"),
        _q("countries", "array_to_string(r.countries, ',')", "string",
           "ISO3 codes joined by commas, e.g. COL,VEN: use LIKE '%VEN%'"),
        _q("crime_types", "array_to_string(r.crime_types, ',')", "string",
           "crime types joined by commas: use LIKE '%smuggling%'"),
        _q("length_m", "r.length_m", "number", "metres"),
        _q("event_count", ROUTE_EVENT_COUNT_SQL, "integer",
           "null (and not matched) when suppressed for the caller: see counts_suppressed"),
        _q("first_event", ROUTE_FIRST_EVENT_SQL, "datetime",
           "for callers who may not see every member record: start of the first slice with >= k records"),
        _q("last_event", ROUTE_LAST_EVENT_SQL, "datetime",
           "for callers who may not see every member record: start of the last slice with >= k records"),
    ]),
    required_table="routes",
    tile_text=frozenset({"category_shares", "crime_types", "countries", "crossing_ids", "crossings",
                         "first_event", "last_event", "monthly_counts", "event_ids"}),
)

CORRIDORS = Collection(
    id="corridors",
    title="Trafficking corridors / Corredores de tráfico",
    description=(
        "Drug, fuel, arms and other trafficking corridors of the active layers (EPSG:4326), each owned "
        "by a country's office: row-level security shows them to the owner, to partners sharing in "
        "detail and to admins. Notes go to roles that read records; the source only to admins. "
        "Every read is audited."
    ),
    from_sql="corridors co JOIN reference_layers l ON l.id = co.layer_id AND l.active",
    id_sql="co.id",
    geom_sql="co.geom",
    geometry_type="Geometry",
    properties={
        "kind": "co.kind", "owner_country": "co.owner_country", "name": "co.name",
        "confidence": "co.confidence", "valid_from": "co.valid_from", "valid_to": "co.valid_to",
        "illustrative": "co.illustrative",
    },
    record_properties={"note": "co.note"},
    admin_properties={"source": "co.source", "source_row": "co.source_row"},
    queryables=dict([
        _q("geom", "co.geom", "geometry"), _q("id", "co.id", "integer"),
        _q("kind", "co.kind", "string", "drug, fuel, arms or other"),
        _q("owner_country", "co.owner_country", "string", "ISO 3166-1 alpha-3"),
        _q("name", "co.name", "string"), _q("confidence", "co.confidence", "string"),
        _q("illustrative", "co.illustrative", "boolean"),
    ]),
    required_table="corridors",
    audited=True,
    tile_text=frozenset({"valid_from", "valid_to"}),
)

#: The run of an overlap product row (alias ``p``): succeeded, and whether it is a latest run.
_PRODUCT_RUN_SQL = (
    "JOIN analysis_runs a ON a.id = p.run_id AND a.status = 'succeeded' "
    f"LEFT JOIN ({LATEST_RUNS_SQL}) AS latest ON latest.id = p.run_id"
)
_LATEST_PROPERTIES = {"run_id": "p.run_id", "latest": "latest.id IS NOT NULL"}
_LATEST_QUERYABLES = [
    _q("run_id", "p.run_id", "integer", "the analysis run"),
    _q("latest", "(latest.id IS NOT NULL)", "boolean",
       "row of the latest run of its crime types (the default when no filter names run_id or latest)"),
]

CONVERGENCE_ZONES = Collection(
    id="convergence-zones",
    title="Convergence zones / Zonas de convergencia",
    description=(
        "Stretches of a route (EPSG:4326 areas) within reach of trafficking corridors of two kinds or more, "
        "per analysis run; the latest run's unless a filter names run_id or latest. Each zone is derived "
        "from corridors of the offices in owner_countries, and row-level security shows it only to a "
        "reader who may read every one of those corridors (admins, owners' offices, partners sharing in "
        "detail). score 0-1; crossing_distance_km to the nearest border crossing. Every read is audited."
    ),
    from_sql=f"convergence_zones p {_PRODUCT_RUN_SQL}",
    id_sql="p.id",
    geom_sql="p.geom",
    geometry_type="Geometry",
    properties={
        **_LATEST_PROPERTIES,
        "route_id": "p.route_id",
        "kinds": "p.kinds",
        "kind_count": "p.kind_count",
        "crossing_distance_km": "p.crossing_distance_km",
        "category": "p.category",
        "score": "p.score",
        "owner_countries": "p.owner_countries",
    },
    queryables=dict([
        _q("geom", "p.geom", "geometry", "Zone (EPSG:4326)"),
        _q("id", "p.id", "integer"),
        *_LATEST_QUERYABLES,
        _q("route_id", "p.route_id", "integer", "the route whose stretch the zone is"),
        _q("kinds", "p.kinds", "string",
           "corridor kinds joined by commas, e.g. drug,fuel: use LIKE '%fuel%'"),
        _q("kind_count", "p.kind_count", "integer"),
        _q("crossing_distance_km", "p.crossing_distance_km", "number", "km to the nearest border crossing"),
        _q("category", "p.category", "string", "the route's dominant category"),
        _q("score", "p.score", "number", "0 to 1"),
        _q("owner_countries", "array_to_string(p.owner_countries, ',')", "string",
           "ISO3 codes of the corridors' owners joined by commas: use LIKE '%COL%'"),
    ]),
    required_table="convergence_zones",
    audited=True,
    tile_text=frozenset({"owner_countries"}),
    latest_by_default=True,
)

#: Whether a convergence zone of the same run that the reader may see covers the crossing.
_IN_ZONE_SQL = ("EXISTS (SELECT 1 FROM convergence_zones z WHERE z.run_id = p.run_id "
                "AND ST_Intersects(z.geom, p.geom))")
#: Stored counts of records per country, those under k (stored as null) shown as the text "<k".
_RECORDS_BY_COUNTRY_SQL = (
    "(SELECT coalesce(jsonb_object_agg(j.key, CASE WHEN jsonb_typeof(j.value) = 'null' "
    "THEN to_jsonb('<' || CAST(:k AS text)) ELSE j.value END), '{}'::jsonb) "
    "FROM jsonb_each(p.records_by_country) j)"
)
#: Whether every stored count is shown (none under k). The score weighs the records per country
#: (their total and the second largest over the largest), so with one count withheld it would give
#: that count back: base_score and score go only with every count shown.
_JOINT_COUNTS_SHOWN_SQL = JOINT_COUNTS_SHOWN_SQL  # routes.joint_disclosure: shared with the exports
_JOINT_BASE_SCORE_SQL = f"CASE WHEN {_JOINT_COUNTS_SHOWN_SQL} THEN p.base_score END"
_JOINT_SCORE_SQL = (f"CASE WHEN {_JOINT_COUNTS_SHOWN_SQL} "
                    f"THEN p.base_score + {ZONE_WEIGHT} * CAST({_IN_ZONE_SQL} AS int) END")
#: The period as the caller's view of its routes tells it: the routes' first and last event dates,
#: coarsened like the routes' own for callers who may not see every member record in detail.
_JOINT_PERIOD_START_SQL = (f"(SELECT min({ROUTE_FIRST_EVENT_SQL}) FROM routes r {ROUTE_SCOPE_SQL} "
                           "WHERE r.id = ANY(p.route_ids))")
_JOINT_PERIOD_END_SQL = (f"(SELECT max({ROUTE_LAST_EVENT_SQL}) FROM routes r {ROUTE_SCOPE_SQL} "
                         "WHERE r.id = ANY(p.route_ids))")

#: What a crossing's and a sector's candidate share: the properties, queryables and tile text columns.
_JOINT_PROPERTIES = {
    **_LATEST_PROPERTIES,
    "name": "p.name",
    "countries": "p.countries",
    "records_by_country": _RECORDS_BY_COUNTRY_SQL,
    "route_ids": "p.route_ids",
    "period_start": _JOINT_PERIOD_START_SQL,
    "period_end": _JOINT_PERIOD_END_SQL,
    "in_convergence_zone": _IN_ZONE_SQL,
    "base_score": _JOINT_BASE_SCORE_SQL,
    "score": _JOINT_SCORE_SQL,
    "score_suppressed": f"(NOT {_JOINT_COUNTS_SHOWN_SQL})",
}
_JOINT_QUERYABLES = [
    _q("id", "p.id", "integer"),
    *_LATEST_QUERYABLES,
    _q("countries", "p.countries", "string", "ISO3 codes joined by commas, e.g. COL,VEN"),
    _q("period_start", _JOINT_PERIOD_START_SQL, "datetime",
       "first event of its routes (coarsened as the routes' first_event)"),
    _q("period_end", _JOINT_PERIOD_END_SQL, "datetime",
       "last event of its routes (coarsened as the routes' last_event)"),
    _q("in_convergence_zone", _IN_ZONE_SQL, "boolean",
       "within a convergence zone the caller may see"),
    _q("base_score", _JOINT_BASE_SCORE_SQL, "number",
       "score without the corridor term; null (and not matched) when a count is under k"),
    _q("score", _JOINT_SCORE_SQL, "number",
       "base_score + 0.15 inside a convergence zone the caller sees; null when a count is under k"),
]
_JOINT_TILE_TEXT = frozenset({"records_by_country", "route_ids", "period_start", "period_end"})
#: The rule both kinds of candidate are served under, for the collections' descriptions.
_JOINT_RULE = (
    "per analysis run; the latest run's unless a filter names run_id or latest. Every role sees them: "
    "records_by_country holds counts per office, those under k as the text '<k'. in_convergence_zone "
    "and the score's corridor term (+0.15 on base_score) come from the convergence zones the reader "
    "may see. When a count is under k, base_score and score (which would give it back) are null and "
    "score_suppressed is true; period_start/period_end are its routes' first/last event dates as "
    "the caller sees them (coarsened like the routes'). Every read is audited."
)


def _joint_collection(
    cid: str, title: str, what: str, *, table: str, candidate_type: str, geometry_type: str,
    properties: dict[str, str], queryables: list[tuple[str, Queryable]], tile_text: frozenset[str],
) -> Collection:
    """A collection of joint-operation candidates stored in ``table`` (alias ``p``, EPSG:4326), served
    under the crossing candidates' rule, with ``candidate_type`` (a constant, queryable) and the
    columns of its own kind (``properties``, ``queryables``, ``tile_text``) added."""
    kind = f"CAST('{candidate_type}' AS text)"
    return Collection(
        id=cid,
        title=title,
        description=f"{what}, {_JOINT_RULE}",
        from_sql=f"{table} p {_PRODUCT_RUN_SQL}",
        id_sql="p.id",
        geom_sql="p.geom",
        geometry_type=geometry_type,
        properties={"candidate_type": kind, **_JOINT_PROPERTIES, **properties},
        queryables=dict([
            *queryables,
            _q("candidate_type", kind, "string", f"{candidate_type} (crossing or border_sector)"),
            *_JOINT_QUERYABLES,
        ]),
        required_table=table,
        audited=True,
        tile_text=_JOINT_TILE_TEXT | tile_text,
        latest_by_default=True,
    )


JOINT_OPERATIONS = _joint_collection(
    "joint-operations",
    "Joint-operation candidates / Candidatas a operaciones conjuntas",
    "Border crossings (EPSG:4326 points) where routes carry records of two or more countries' offices "
    "(candidate_type crossing; the border sectors are the joint-sectors collection)",
    table="joint_operations",
    candidate_type=CROSSING,
    geometry_type="Point",
    properties={"crossing_id": "p.crossing_id"},
    queryables=[
        _q("geom", "p.geom", "geometry", "The crossing (EPSG:4326)"),
        _q("crossing_id", "p.crossing_id", "integer"),
        _q("name", "p.name", "string", "the crossing's name"),
    ],
    tile_text=frozenset(),
)

JOINT_SECTORS = _joint_collection(
    "joint-sectors",
    "Joint-operation candidates at border sectors / Candidatas a operaciones conjuntas en tramos fronterizos",
    "Border sectors (EPSG:4326 multilines: the stretch of contiguous segments of one border the routes "
    "reach) where routes carry records of two or more countries' offices (candidate_type border_sector; "
    "the crossings are the joint-operations collection)",
    table="joint_sectors",
    candidate_type=BORDER_SECTOR,
    geometry_type="MultiLineString",
    properties={
        "border_segment_id": "p.border_segment_id",
        "border_segment_ids": "p.border_segment_ids",
        "country_a": "p.country_a",
        "country_b": "p.country_b",
        "crossing_ids": "p.crossing_ids",
    },
    queryables=[
        _q("geom", "p.geom", "geometry", "The border sector (EPSG:4326)"),
        _q("border_segment_id", "p.border_segment_id", "integer", "the first of its border segments"),
        _q("name", "p.name", "string", "the sector's name"),
        _q("country_a", "p.country_a", "string", "ISO 3166-1 alpha-3"),
        _q("country_b", "p.country_b", "string", "ISO 3166-1 alpha-3"),
    ],
    tile_text=frozenset({"border_segment_ids", "crossing_ids"}),
)

#: Aggregated, k-suppressed event counts (served by ``rutas_event_cells``, not a table scan).
EVENT_CELLS_ID = "event-cells"

COLLECTIONS: dict[str, Collection] = {
    c.id: c for c in (EVENTS, CROSSINGS, BORDERS, ROUTES, CORRIDORS, CONVERGENCE_ZONES, JOINT_OPERATIONS,
              JOINT_SECTORS)
}


def available(conn: Connection) -> dict[str, Collection]:
    """The collections whose tables exist in this database (later stages add theirs)."""
    names = [c.required_table for c in COLLECTIONS.values()]
    rows = conn.execute(
        sa.text("SELECT name FROM unnest(CAST(:names AS text[])) AS name "
                "WHERE to_regclass(name) IS NOT NULL"),
        {"names": names},
    ).scalars().all()
    present = set(rows)
    return {cid: c for cid, c in COLLECTIONS.items() if c.required_table in present}
