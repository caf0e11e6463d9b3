"""The collections the API serves: tables, property allow-lists, queryables and who may read them.

Every property a GeoJSON feature carries is listed here; nothing else (free ``attributes``,
dedupe keys, original rows) ever leaves the database. Geometries are EPSG:4326.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from api.cql2 import Queryable

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

    def properties_for(self, role: str) -> dict[str, str]:
        """The allow-list of properties for ``role`` (name to trusted SQL expression)."""
        if role == "admin":
            return {**self.properties, **self.admin_properties}
        return dict(self.properties)


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

#: Aggregated, k-suppressed event counts (served by ``rutas_event_cells``, not a table scan).
EVENT_CELLS_ID = "event-cells"

COLLECTIONS: dict[str, Collection] = {c.id: c for c in (EVENTS, CROSSINGS, BORDERS)}


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
