"""What each caller may be shown: records and corridors in detail, and a route's figures under k-anonymity.

Records (events) and corridors: the rule is their row-level security (migrations 0003 and 0005),
the one the API's ``events`` and ``corridors`` collections, items, tiles and exports are read
under (admins all; stewards and prosecutors their own country's; prosecutors also a partner's
under a ``detail`` agreement, never its victim identifications; border authorities and analysts
none). :func:`records_in_detail` and :func:`corridors_in_detail` read it for a list of ids in the
scope of the connection they are given, so the alerts apply that rule and never a copy of it.

Routes are aggregates over every country's records, so every role sees a route's line; its
figures are another matter. A caller who may not see every member record of a route in detail
(the events' row-level security, applied to the connection's scope) gets ``event_count`` and each
monthly count only when at least k (``settings.k_anonymity``), ``first_event``/``last_event`` as
the start of the first/last slice (UTC) holding at least k records, and the Mann-Kendall ``tau``,
``p_value`` and ``trend`` only when no count is withheld and at least k member records are hidden
from it. The SQL expressions below (bound parameter ``:k``, route alias ``r``) are the one rule:
the API's collections, series and exports and the alerts' payloads are all built from them, and
:func:`route_figures` reads them for a list of routes in the scope of the connection it is given.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

#: Joined after ``routes r``: ``seen.total`` member events and ``seen.visible`` those the events'
#: row-level security lets the caller see in detail (the policy applies to ``events ev``, as
#: ``route_events`` has none); ``months.shown_sum`` / ``months.hidden`` the stored monthly counts
#: of at least / below ``:k`` (a bind parameter: ``settings.k_anonymity``).
ROUTE_SCOPE_SQL = (
    "CROSS JOIN LATERAL (SELECT count(*) AS total, count(ev.id) AS visible FROM route_events re "
    "LEFT JOIN events ev ON ev.id = re.event_id WHERE re.route_id = r.id) AS seen "
    "CROSS JOIN LATERAL (SELECT coalesce(sum(m.n) FILTER (WHERE m.n >= :k), 0) AS shown_sum, "
    "count(*) FILTER (WHERE m.n < :k) AS hidden FROM (SELECT CAST(j.value AS numeric) AS n "
    "FROM jsonb_each(r.monthly_counts) j) AS m) AS months"
)
#: Whether the caller sees every member record of the route in detail (then nothing is suppressed).
ROUTE_DETAIL_SQL = "(seen.visible = seen.total)"
#: The route's event count, or NULL when the caller may not see every member in detail and the
#: count is below k, or the months it suppresses would add up to fewer than k records (so it
#: cannot be subtracted back out of the months shown).
ROUTE_EVENT_COUNT_SQL = (
    f"CASE WHEN {ROUTE_DETAIL_SQL} OR (r.event_count >= :k AND (r.event_count - months.shown_sum = 0 "
    "OR r.event_count - months.shown_sum >= :k)) THEN r.event_count END"
)
#: The stored monthly counts, each below k NULL for callers who may not see every member in detail.
ROUTE_MONTHLY_SQL = (
    f"CASE WHEN {ROUTE_DETAIL_SQL} THEN r.monthly_counts ELSE (SELECT coalesce(jsonb_object_agg("
    "j.key, CASE WHEN CAST(j.value AS numeric) >= :k THEN j.value END), '{}'::jsonb) "
    "FROM jsonb_each(r.monthly_counts) j) END"
)
#: Whether ``event_count`` or any monthly count was withheld from the caller (k-anonymity).
ROUTE_SUPPRESSED_SQL = (
    f"(NOT {ROUTE_DETAIL_SQL} AND (months.hidden > 0 OR ({ROUTE_EVENT_COUNT_SQL}) IS NULL))"
)

#: First and last event dates: for callers who may not see every member in detail, only the start
#: of the first and last slice holding at least k records (an exact date could single out a victim).
ROUTE_FIRST_EVENT_SQL = (
    f"CASE WHEN {ROUTE_DETAIL_SQL} THEN r.first_event ELSE (SELECT min(CAST(j.key AS timestamptz)) "
    "FROM jsonb_each(r.monthly_counts) j WHERE CAST(j.value AS numeric) >= :k) END"
)
ROUTE_LAST_EVENT_SQL = (
    f"CASE WHEN {ROUTE_DETAIL_SQL} THEN r.last_event ELSE (SELECT max(CAST(j.key AS timestamptz)) "
    "FROM jsonb_each(r.monthly_counts) j WHERE CAST(j.value AS numeric) >= :k) END"
)

#: Whether the route's trend statistics (Mann-Kendall ``tau``, ``p_value``, ``trend``) may go to the
#: caller: when it sees every member record in detail, or when no count is withheld from it and the
#: member records it may not see number at least k. Otherwise the statistics could give back the
#: series of fewer than k hidden records (its own records' series being known to it), or tell the
#: months withheld apart (a two-month "down" says the withheld month is the smaller).
ROUTE_STATS_SHOWN_SQL = (
    f"({ROUTE_DETAIL_SQL} OR (NOT {ROUTE_SUPPRESSED_SQL} AND seen.total - seen.visible >= :k))"
)
ROUTE_TAU_SQL = f"CASE WHEN {ROUTE_STATS_SHOWN_SQL} THEN r.tau END"
ROUTE_P_VALUE_SQL = f"CASE WHEN {ROUTE_STATS_SHOWN_SQL} THEN r.p_value END"
ROUTE_TREND_SQL = f"CASE WHEN {ROUTE_STATS_SHOWN_SQL} THEN r.trend END"
#: Whether ``tau``, ``p_value`` and ``trend`` were withheld from the caller.
ROUTE_TREND_SUPPRESSED_SQL = f"(NOT {ROUTE_STATS_SHOWN_SQL})"


#: Every figure of a route as the connection's scope may see it (bind ``:ids``, ``:k``).
ROUTE_FIGURES_SQL = sa.text(
    f"SELECT r.id, {ROUTE_EVENT_COUNT_SQL} AS event_count, {ROUTE_MONTHLY_SQL} AS monthly_counts, "
    f"{ROUTE_SUPPRESSED_SQL} AS counts_suppressed, {ROUTE_FIRST_EVENT_SQL} AS first_event, "
    f"{ROUTE_LAST_EVENT_SQL} AS last_event, {ROUTE_TREND_SQL} AS trend, {ROUTE_TAU_SQL} AS tau, "
    f"{ROUTE_P_VALUE_SQL} AS p_value, {ROUTE_TREND_SUPPRESSED_SQL} AS trend_suppressed "
    f"FROM routes r {ROUTE_SCOPE_SQL} "
    "WHERE r.id = ANY(CAST(:ids AS bigint[]))"
)
#: The columns :func:`route_figures` gives for each route, in order.
FIGURES = ("id", "event_count", "monthly_counts", "counts_suppressed", "first_event", "last_event", "trend",
           "tau", "p_value", "trend_suppressed")


def route_figures(conn: Connection, route_ids: list[int], k: int) -> list[dict[str, Any]]:
    """The figures of ``route_ids`` as the scope of ``conn`` (set by ``geodata.db.scoped``) may see them.

    Parameters
    ----------
    conn
        A connection whose row-level-security scope is the caller's (the API's request, an alert
        subscription's owner); the member events it may not see in detail are what is suppressed.
    route_ids
        Ids of stored routes; unknown ids give no row.
    k
        The k-anonymity threshold (records), ``settings.k_anonymity``.

    Returns
    -------
    list of dict
        One per route, keyed by :data:`FIGURES`: ``event_count`` (records; None when withheld),
        ``monthly_counts`` (slice start date to records, None below k when withheld),
        ``counts_suppressed``, ``first_event``/``last_event`` (timezone-aware datetimes, coarsened
        to slice starts when withheld), ``trend``, ``tau``, ``p_value`` (None when withheld) and
        ``trend_suppressed``.
    """
    rows = conn.execute(ROUTE_FIGURES_SQL, {"ids": [int(i) for i in route_ids], "k": int(k)}).mappings()
    return [{name: row[name] for name in FIGURES} for row in rows]


_RECORDS_IN_DETAIL_SQL = sa.text("SELECT id FROM events WHERE id = ANY(CAST(:ids AS bigint[]))")
_CORRIDORS_IN_DETAIL_SQL = sa.text("SELECT id FROM corridors WHERE id = ANY(CAST(:ids AS bigint[]))")


def records_in_detail(conn: Connection, event_ids: list[int]) -> set[int]:
    """The ids among ``event_ids`` whose records the scope of ``conn`` may see in detail.

    Parameters
    ----------
    conn
        A connection whose row-level-security scope is the caller's (``geodata.db.scoped`` or
        ``geodata.db.reading_as``); the events' policy decides, as for the API's ``events``.
    event_ids
        Ids of stored events; unknown ids are not returned.

    Returns
    -------
    set of int
        The ids the caller may read in detail (coordinates in EPSG:4326, persons, source).
    """
    if not event_ids:
        return set()
    return {int(i) for i in conn.execute(_RECORDS_IN_DETAIL_SQL,
                                         {"ids": [int(i) for i in event_ids]}).scalars()}


def corridors_in_detail(conn: Connection, corridor_ids: list[int]) -> set[int]:
    """The ids among ``corridor_ids`` of the corridors the scope of ``conn`` may read.

    The corridors' row-level security decides, as for the API's ``corridors`` collection.
    """
    if not corridor_ids:
        return set()
    return {int(i) for i in conn.execute(_CORRIDORS_IN_DETAIL_SQL,
                                         {"ids": [int(i) for i in corridor_ids]}).scalars()}
