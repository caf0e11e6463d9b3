"""``rutas run``: snapped events and the road network from the store, through the analysis, into routes.

The pipeline snaps what is not snapped yet, reads the events (with the system scope of
:func:`geodata.db.scoped`) and the active road edges, calls :func:`routes.analysis.analyse`
and writes the run and its routes in one transaction. Every run is recorded in
``analysis_runs`` (parameters, filters, code version, timings in seconds, counts); a run that
fails is kept with status ``failed`` and the error a user can read.

Trafficking and smuggling are never merged unless the user asks: without ``crime_types`` the
pipeline runs once per crime type present in the selected events (sources without one are
stored as ``unknown`` and analysed alone); naming several crime types analyses them together.
Geometries are EPSG:4326; lengths are geodesic metres.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from geodata.db import SYSTEM, Scope, scoped
from geodata.errors import InputError, RutasError
from geodata.network import read_edges
from geodata.reference import active_layers, read_layer
from geodata.settings import CHECKOUT_DIR, Settings
from geodata.tables import CRIME_TYPES, EVENT_KINDS
from routes.alerts import raise_run_alerts
from routes.analysis import AnalysisParams, analyse
from routes.cube import CubeFilter
from routes.overlap_store import OverlapParams, store_overlap_products
from routes.segments import cut_segments
from routes.snapping import snap_pending

#: Said instead of an unexpected error's text, which may hold internals.
INTERNAL_ERROR = (
    "The analysis stopped on an unexpected error; the log has the details. "
    "/ El análisis se detuvo por un error inesperado; el registro tiene los detalles."
)


@dataclass(frozen=True)
class RunFilters:
    """Which events a run analyses; ``None`` means no restriction.

    ``since`` is inclusive and ``until`` exclusive (UTC); ``countries`` are owner countries
    (ISO 3166-1 alpha-3); ``crime_types`` named together are analysed together.
    """

    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    crime_types: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    countries: tuple[str, ...] | None = None

    def check(self) -> None:
        """Raise :class:`InputError` naming the first crime type, kind or country not known."""
        for option, values, known in (
            ("--crime-type", self.crime_types, CRIME_TYPES),
            ("--kind", self.kinds, EVENT_KINDS),
        ):
            for value in values or ():
                if value not in known:
                    raise InputError(
                        f"{option} {value!r} is not known: use one of {', '.join(known)}.",
                        f"{option} {value!r} no existe: use uno de {', '.join(known)}.",
                        code="bad_parameter",
                    )
        for country in self.countries or ():
            if len(country) != 3 or not country.isalpha() or not country.isupper():
                raise InputError(
                    f"--country {country!r} is not an ISO 3166-1 alpha-3 code (e.g. MEX).",
                    f"--country {country!r} no es un código ISO 3166-1 alfa-3 (p. ej. MEX).",
                    code="bad_parameter",
                )
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InputError(
                f"--since {self.since.date()} is not before --until {self.until.date()}.",
                f"--since {self.since.date()} no es anterior a --until {self.until.date()}.",
                code="bad_parameter",
            )

    def as_record(self) -> dict[str, Any]:
        """Plain dict, as the run records it (dates as ISO text)."""
        record = asdict(self)
        for name in ("since", "until"):
            record[name] = None if record[name] is None else pd.Timestamp(record[name]).isoformat()
        for name in ("crime_types", "kinds", "countries"):
            record[name] = None if record[name] is None else list(record[name])
        return record


@dataclass
class RunSummary:
    """What one run did: the record ``rutas run --json`` prints."""

    run_id: int
    status: str
    crime_types: list[str]
    parameters: dict[str, Any]
    filters: dict[str, Any]
    code_version: str
    timings_s: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    routes: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return asdict(self)


def code_version() -> str:
    """The git commit of the checkout when there is one, else the installed package version."""
    try:
        done = subprocess.run(
            ["git", "-C", str(CHECKOUT_DIR), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return f"git:{done.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"rutas {metadata.version('rutas')}"
    except metadata.PackageNotFoundError:
        return "rutas (unknown version)"


def pending_snaps(engine: Engine) -> int:
    """Events without a snap against the active reference layers (0 when no road layer is loaded)."""
    with scoped(engine) as conn:
        layers = active_layers(conn)
        if "roads" not in layers:
            return 0
        return int(
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM events e LEFT JOIN event_snaps s ON s.event_id = e.id "
                    "WHERE s.event_id IS NULL OR s.layers <> CAST(:layers AS jsonb)"
                ),
                {"layers": json.dumps(layers, sort_keys=True)},
            ).scalar_one()
        )


_FILTER_SQL = (
    "(CAST(:since AS timestamptz) IS NULL OR e.occurred_at >= CAST(:since AS timestamptz)) "
    "AND (CAST(:until AS timestamptz) IS NULL OR e.occurred_at < CAST(:until AS timestamptz)) "
    "AND (CAST(:kinds AS text[]) IS NULL OR e.kind = ANY(CAST(:kinds AS text[]))) "
    "AND (CAST(:countries AS text[]) IS NULL OR e.owner_country = ANY(CAST(:countries AS text[]))) "
    "AND (CAST(:crime_types AS text[]) IS NULL OR e.crime_type = ANY(CAST(:crime_types AS text[])))"
)


def _filter_params(filters: RunFilters) -> dict[str, Any]:
    def listed(values: tuple[str, ...] | None) -> list[str] | None:
        return None if values is None else list(values)

    return {
        "since": None if filters.since is None else pd.Timestamp(filters.since).to_pydatetime(),
        "until": None if filters.until is None else pd.Timestamp(filters.until).to_pydatetime(),
        "kinds": listed(filters.kinds),
        "countries": listed(filters.countries),
        "crime_types": listed(filters.crime_types),
    }


def read_events(engine: Engine, filters: RunFilters, scope: Scope = SYSTEM) -> pd.DataFrame:
    """The snapped events that pass ``filters``, as :func:`routes.cube.build_cube` takes them.

    Columns: ``event_id, edge_id`` (null off the network), ``fraction``, ``lon, lat`` (the
    event's own point, EPSG:4326 degrees), ``occurred_at`` (UTC), ``kind, crime_type,
    owner_country``. Read under ``scope``, so row-level security decides what is seen.
    """
    sql = (
        "SELECT e.id AS event_id, s.edge_id, s.fraction, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat, "
        "e.occurred_at, e.kind, e.crime_type, e.owner_country, e.location_country "
        "FROM events e JOIN event_snaps s ON s.event_id = e.id "
        f"WHERE {_FILTER_SQL} ORDER BY e.id"
    )
    with scoped(engine, scope) as conn:
        frame = pd.read_sql_query(sa.text(sql), conn, params=_filter_params(filters))
    frame["edge_id"] = frame["edge_id"].astype("Int64")
    frame["fraction"] = frame["fraction"].astype(np.float64)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    return frame


def crime_type_groups(events: pd.DataFrame, filters: RunFilters) -> list[tuple[str, ...]]:
    """The analyses to run: the crime types named together, else one per crime type present."""
    if filters.crime_types:
        return [tuple(sorted(set(filters.crime_types)))]
    return [(str(c),) for c in sorted(events["crime_type"].dropna().astype(str).unique())]


def _with_event_countries(routes: gpd.GeoDataFrame, events: pd.DataFrame) -> gpd.GeoDataFrame:
    """Routes whose ``countries`` also hold their events' location countries.

    Segments name the countries of the roads; stretches made of H3 cells (events off the
    network, e.g. in the desert or at sea) have no road, so their events say where they are.
    """
    if not len(routes):
        return routes
    members = routes["event_ids"].explode().dropna().astype(np.int64)
    where = events.set_index("event_id")["location_country"]
    found = pd.Series(where.reindex(members.to_numpy()).to_numpy(), index=members.index).dropna()
    pairs = pd.DataFrame({"route": found.index, "country": found.astype(str).to_numpy()})
    from_events = pairs.drop_duplicates().groupby("route")["country"].agg(list)
    merged = [
        sorted(set(own) | set(from_events.get(i, [])))
        for i, own in zip(routes.index, routes["countries"], strict=True)
    ]
    return routes.assign(countries=merged)


def _previous_routes(conn: Connection, crime_types: tuple[str, ...]) -> pd.DataFrame:
    """Routes of the latest succeeded run over the same crime types (``route_key``, ``member_keys``)."""
    rows = conn.execute(
        sa.text(
            "SELECT r.route_key, r.segment_keys FROM routes r WHERE r.run_id = ("
            "  SELECT max(a.id) FROM analysis_runs a WHERE a.status = 'succeeded' "
            "  AND a.counts->'crime_types' = CAST(:types AS jsonb))"
        ),
        {"types": json.dumps(list(crime_types))},
    ).all()
    return pd.DataFrame({"route_key": [r[0] for r in rows], "member_keys": [list(r[1]) for r in rows]})


def _start_run(engine: Engine, params: AnalysisParams, filters: RunFilters, version: str) -> int:
    with scoped(engine) as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO analysis_runs (status, parameters, filters, code_version) "
                    "VALUES ('running', CAST(:p AS jsonb), CAST(:f AS jsonb), :v) RETURNING id"
                ),
                {"p": json.dumps(params.as_record()), "f": json.dumps(filters.as_record()), "v": version},
            ).scalar_one()
        )


def _fail_run(
    engine: Engine, run_id: int, error: str, timings: dict[str, float], counts: dict[str, Any]
) -> None:
    with scoped(engine) as conn:
        conn.execute(
            sa.text(
                "UPDATE analysis_runs SET status = 'failed', finished_at = now(), error = :e, "
                "timings = CAST(:t AS jsonb), counts = CAST(:c AS jsonb) WHERE id = :id"
            ),
            {"e": error, "t": json.dumps(timings), "c": json.dumps(counts, default=str), "id": run_id},
        )


def _multilines(geoms: gpd.GeoSeries) -> list[str]:
    """EWKB hex of each geometry as a MultiLineString (SRID 4326)."""
    parts = [shapely.get_parts(g) for g in np.asarray(geoms.array)]
    lines = [p[shapely.get_type_id(p) == 1] for p in parts]
    multi = np.asarray([shapely.multilinestrings(lst) for lst in lines], dtype=object)
    return [str(h) for h in shapely.to_wkb(shapely.set_srid(multi, 4326), hex=True, include_srid=True)]


def _write_routes(
    conn: Connection,
    run_id: int,
    routes: gpd.GeoDataFrame,
    slice_starts: pd.DatetimeIndex,
    crime_types: tuple[str, ...],
) -> list[int]:
    """Insert the routes and their events; returns the new route ids in the frame's order."""
    if not len(routes):
        return []
    starts = [t.date().isoformat() for t in slice_starts[:-1]]
    rows = [
        {
            "run": run_id,
            "key": str(r.route_key),
            "seen": bool(r.seen_before),
            "types": list(crime_types),
            "category": str(r.category),
            "shares": json.dumps(r.category_shares),
            "length": float(r.length_m),
            "n": len(r.event_ids),
            "tau": None if pd.isna(r.tau) else float(r.tau),
            "p": None if pd.isna(r.p_value) else float(r.p_value),
            "trend": str(r.trend),
            "countries": [str(c) for c in r.countries],
            "crossings": [int(c) for c in r.crossing_ids],
            "first": None if pd.isna(r.first_event) else r.first_event.to_pydatetime(),
            "last": None if pd.isna(r.last_event) else r.last_event.to_pydatetime(),
            "monthly": json.dumps({s: float(c) for s, c in zip(starts, r.counts, strict=True) if c}),
            "keys": [str(k) for k in r.member_keys],
            "geom": geom,
        }
        for r, geom in zip(routes.itertuples(), _multilines(routes.geometry), strict=True)
    ]
    insert = sa.text(
        "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, category_shares, "
        "length_m, event_count, tau, p_value, trend, countries, crossing_ids, first_event, last_event, "
        "monthly_counts, segment_keys, geom) VALUES (:run, :key, :seen, :types, :category, "
        "CAST(:shares AS jsonb), :length, :n, :tau, :p, :trend, :countries, :crossings, :first, :last, "
        "CAST(:monthly AS jsonb), :keys, ST_GeomFromEWKB(decode(:geom, 'hex'))) RETURNING id"
    )
    ids = [int(conn.execute(insert, row).scalar_one()) for row in rows]
    members = routes["event_ids"].explode().dropna()
    route_of = np.repeat(np.asarray(ids, dtype=np.int64), routes["event_ids"].map(len).to_numpy())
    if len(members):
        conn.execute(
            sa.text(
                "INSERT INTO route_events (route_id, event_id) "
                "SELECT * FROM unnest(CAST(:r AS bigint[]), CAST(:e AS bigint[]))"
            ),
            {"r": route_of.tolist(), "e": members.astype(np.int64).tolist()},
        )
    return ids


def route_summaries(
    routes: gpd.GeoDataFrame, crossing_names: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    """One plain record per route (no geometry, no event ids), longest first.

    ``crossings`` names the crossings near the route (nearest first) from ``crossing_names``
    (crossing id -> name; unnamed ones as ``#<id>``).
    """
    names = crossing_names or {}
    records = []
    for r in routes.sort_values("length_m", ascending=False).itertuples():
        records.append(
            {
                "id": getattr(r, "id", None),
                "route_key": getattr(r, "route_key", None),
                "seen_before": bool(getattr(r, "seen_before", False)),
                "category": r.category,
                "length_km": round(float(r.length_m) / 1000.0, 1),
                "events": len(r.event_ids),
                "trend": r.trend,
                "tau": None if pd.isna(r.tau) else round(float(r.tau), 3),
                "p_value": None if pd.isna(r.p_value) else float(r.p_value),
                "countries": list(r.countries),
                "crossing_ids": [int(c) for c in getattr(r, "crossing_ids", [])],
                "crossings": [names.get(int(c)) or f"#{int(c)}" for c in getattr(r, "crossing_ids", [])],
                "first_event": None if pd.isna(r.first_event) else r.first_event.isoformat(),
                "last_event": None if pd.isna(r.last_event) else r.last_event.isoformat(),
                "category_shares": r.category_shares,
            }
        )
    return records


def run_pipeline(
    engine: Engine,
    settings: Settings,
    params: AnalysisParams | None = None,
    filters: RunFilters | None = None,
    *,
    snap: bool = True,
    on_stage: Callable[[str], None] | None = None,
) -> list[RunSummary]:
    """Snap what is pending, then analyse each crime-type group and store its run and routes.

    Parameters
    ----------
    engine
        The store.
    settings
        Snapping settings and the defaults of ``params``.
    params
        Analysis parameters (the settings' values when None); recorded with each run.
    filters
        Period (UTC), crime types, kinds and owner countries of the events analysed.
    snap
        Snap the events not yet snapped against the active layers first.
    on_stage
        Called with the name of each stage as it starts (for progress output).

    Returns
    -------
    list of RunSummary
        One per crime-type group, in crime-type order.

    Raises
    ------
    InputError
        A parameter is out of range, no road network is loaded, or no event passes the filters.
    """
    params = params or AnalysisParams.from_settings(settings)
    params.check()
    filters = filters or RunFilters()
    filters.check()
    stage = on_stage or (lambda name: None)
    shared: dict[str, float] = {}
    clock = time.perf_counter()
    snap_record: dict[str, Any] = {"pending": 0}
    if snap:
        stage("snapping")
        pending = pending_snaps(engine)
        if pending:
            snap_record = snap_pending(engine, settings).as_record()
    shared["snapping"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    stage("reading")
    with scoped(engine) as conn:
        layers = active_layers(conn)
        if "roads" not in layers:
            raise InputError(
                "No road network is loaded, so there is nothing to find routes on. Run "
                "`rutas load roads PATH` first.",
                "No hay red vial cargada, no hay sobre qué buscar rutas. Ejecute antes "
                "`rutas load roads RUTA`.",
                code="no_roads",
            )
    events = read_events(engine, filters)
    edges = read_edges(engine)
    crossings = read_layer(engine, "crossings", ("name", "official"))
    shared["read"] = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    segments = cut_segments(edges, params.segment_km)
    shared["segments"] = round(time.perf_counter() - clock, 3)
    groups = crime_type_groups(events, filters)
    if not groups:
        raise InputError(
            "No snapped event passes the filters: widen the period, kinds or countries, or "
            "load and snap events first.",
            "Ningún evento ajustado a la red cumple los filtros: amplíe el periodo, las clases o "
            "los países, o cargue y ajuste eventos antes.",
            code="empty",
        )
    version = code_version()
    summaries = []
    for crime_types in groups:
        stage("analysing " + "+".join(crime_types))
        group_filters = RunFilters(
            filters.since, filters.until, crime_types, filters.kinds, filters.countries
        )
        summaries.append(
            _run_group(
                engine,
                params,
                group_filters,
                events,
                edges,
                segments,
                crossings,
                version,
                dict(shared),
                snap_record,
                layers,
                settings.border_near_km,
                OverlapParams.from_settings(settings),
            )
        )
    # run triggers of the alert subscriptions (new, intensifying, converging routes)
    raise_run_alerts(engine, [s.run_id for s in summaries], k=settings.k_anonymity)
    return summaries


def _run_group(
    engine: Engine,
    params: AnalysisParams,
    filters: RunFilters,
    events: pd.DataFrame,
    edges: gpd.GeoDataFrame,
    segments: gpd.GeoDataFrame,
    crossings: gpd.GeoDataFrame,
    version: str,
    timings: dict[str, float],
    snap_record: dict[str, Any],
    layers: dict[str, int],
    near_km: float,
    overlap: OverlapParams,
) -> RunSummary:
    crime_types = filters.crime_types or ()
    run_id = _start_run(engine, params, filters, version)
    # the reference layer versions read, so every route can be traced to its inputs
    counts: dict[str, Any] = {"crime_types": list(crime_types), "snapping": snap_record, "layers": layers}
    try:
        mine = events[events["crime_type"].isin(crime_types)]
        counts["events_read"] = len(mine)
        with scoped(engine) as conn:
            previous = _previous_routes(conn, crime_types)
        result = analyse(
            mine,
            edges,
            params,
            filters=CubeFilter(since=filters.since, until=filters.until, crime_types=crime_types),
            crossings=crossings,
            near_km=near_km,
            previous=previous,
            run_id=str(run_id),
            segments=segments,
        )
        # segments were cut once for every group (the shared "segments" timing)
        timings.update({k: v for k, v in result.timings_s.items() if k != "segments"})
        seg_units = result.cube.n_segment_units
        in_cube = len(result.cube.event_ids)
        on_network = int((result.cube.event_unit < seg_units).sum())
        categories, n_units = np.unique(result.categories.astype(str), return_counts=True)
        routes = _with_event_countries(result.routes, mine)
        counts.update(
            {
                "events_analysed": in_cube,
                "events_on_network": on_network,
                "events_off_network": in_cube - on_network,
                "segments": len(segments),
                "units": result.cube.n_units,
                "segment_units": seg_units,
                "cell_units": result.cube.n_units - seg_units,
                "slices": result.cube.n_slices,
                "units_by_category": {str(c): int(n) for c, n in zip(categories, n_units, strict=True)},
                "routes": len(routes),
                "routes_new": int((~routes["seen_before"].astype(bool)).sum()),
                "routes_seen_before": int(routes["seen_before"].astype(bool).sum()),
                "route_events": int(routes["event_ids"].map(len).sum()) if len(routes) else 0,
                "previous_routes": len(previous),
            }
        )
        clock = time.perf_counter()
        with scoped(engine) as conn:
            ids = _write_routes(conn, run_id, routes, result.cube.slice_starts, crime_types)
            timings["write"] = round(time.perf_counter() - clock, 3)
            # overlap products (corridor overlaps, convergence zones, joint operations) of this run
            clock = time.perf_counter()
            counts.update(
                store_overlap_products(conn, run_id, routes.assign(id=ids), mine, crossings, params=overlap)
            )
            timings["overlap"] = round(time.perf_counter() - clock, 3)
            conn.execute(
                sa.text(
                    "UPDATE analysis_runs SET status = 'succeeded', finished_at = now(), "
                    "timings = CAST(:t AS jsonb), counts = CAST(:c AS jsonb), "
                    "parameters = parameters || CAST(:o AS jsonb) WHERE id = :id"
                ),
                {
                    "t": json.dumps(timings),
                    "c": json.dumps(counts),
                    "o": json.dumps({"overlap": overlap.as_record()}),
                    "id": run_id,
                },
            )
    except RutasError as error:
        _fail_run(engine, run_id, str(error), timings, counts)
        raise
    except Exception:
        _fail_run(engine, run_id, INTERNAL_ERROR, timings, counts)
        raise
    stored = routes.assign(id=ids)
    return RunSummary(
        run_id=run_id,
        status="succeeded",
        crime_types=list(crime_types),
        parameters={**params.as_record(), "overlap": overlap.as_record()},
        filters=filters.as_record(),
        code_version=version,
        timings_s=timings,
        counts=counts,
        routes=route_summaries(stored, _names(crossings)),
    )


def _names(crossings: gpd.GeoDataFrame) -> dict[int, str]:
    named = crossings.dropna(subset=["name"])
    return dict(zip(named["id"].astype(int), named["name"].astype(str), strict=True))


def read_routes(engine: Engine, run_ids: list[int] | None = None, scope: Scope = SYSTEM) -> gpd.GeoDataFrame:
    """Stored routes (EPSG:4326) of ``run_ids``, or of the latest succeeded run per crime-type group.

    Columns are those of the ``routes`` table (``geom`` as ``geometry``) plus ``run_started_at``.
    """
    sql = (
        "SELECT r.*, a.started_at AS run_started_at FROM routes r JOIN analysis_runs a ON a.id = r.run_id "
        "WHERE a.status = 'succeeded' AND "
    )
    if run_ids is None:
        sql += (
            "a.id IN (SELECT max(id) FROM analysis_runs WHERE status = 'succeeded' "
            "GROUP BY counts->'crime_types')"
        )
        params: dict[str, Any] = {}
    else:
        sql += "a.id = ANY(CAST(:runs AS bigint[]))"
        params = {"runs": [int(r) for r in run_ids]}
    sql += " ORDER BY r.run_id, r.length_m DESC, r.id"
    with scoped(engine, scope) as conn:
        frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs="EPSG:4326", params=params)
    return frame.rename_geometry("geometry")
