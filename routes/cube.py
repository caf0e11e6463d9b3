"""The space-time cube: events counted per spatial unit (network segment or H3 cell) and time slice.

Slices are calendar-aligned: months start on the 1st at 00:00 UTC, weeks on Monday at
00:00 UTC. Spatial units are the segments of :func:`routes.segments.cut_segments` that hold
at least one event of the period, then the H3 cells (at ``h3_resolution``) of events off the
network. Units without any event are left out; bins of units that have events are zero
where empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import geopandas as gpd
import h3.api.basic_int as h3i
import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from geodata.errors import InputError
from routes.segments import assign_events

SLICES = ("month", "week")
EVENT_COLUMNS = ("event_id", "edge_id", "fraction", "lon", "lat", "occurred_at")


@dataclass(frozen=True)
class CubeFilter:
    """Which events enter the cube. ``None`` means no restriction on that field.

    ``since`` is inclusive and ``until`` exclusive, both UTC.
    """

    since: pd.Timestamp | None = None
    until: pd.Timestamp | None = None
    crime_types: tuple[str, ...] | None = None
    kinds: tuple[str, ...] | None = None
    owner_countries: tuple[str, ...] | None = None


@dataclass
class Cube:
    """Units x slices array of event counts (or weights) and the indices that explain it.

    Attributes
    ----------
    values
        float64 array, shape (n_units, n_slices).
    segments
        Row in the segments frame of each segment unit; segment units come first.
    cells
        H3 cell (integer form) of each off-network unit; these follow the segment units.
    slice_starts
        UTC start of every slice plus the end of the last one (length n_slices + 1).
    event_ids, event_unit, event_slice, event_time
        For every event that entered the cube: its id, unit, slice and time (UTC).
    h3_resolution
        Resolution of ``cells``.
    """

    values: npt.NDArray[np.float64]
    segments: npt.NDArray[np.int64]
    cells: npt.NDArray[np.int64]
    slice_starts: pd.DatetimeIndex
    event_ids: npt.NDArray[np.int64]
    event_unit: npt.NDArray[np.int64]
    event_slice: npt.NDArray[np.int64]
    event_time: npt.NDArray[np.datetime64]
    h3_resolution: int

    @property
    def n_units(self) -> int:
        """Number of spatial units."""
        return int(self.values.shape[0])

    @property
    def n_slices(self) -> int:
        """Number of time slices."""
        return int(self.values.shape[1])

    @property
    def n_segment_units(self) -> int:
        """Number of units that are network segments (the first rows of ``values``)."""
        return len(self.segments)


def slice_starts(since: pd.Timestamp, until: pd.Timestamp, slice: str) -> pd.DatetimeIndex:
    """Calendar-aligned slice boundaries covering [since, until), UTC.

    The first boundary is ``since`` floored to its month (or Monday); the last is the first
    boundary at or after ``until``. Returns n_slices + 1 timestamps.
    """
    _check_slice(slice)
    since = _utc(since)
    until = _utc(until)
    if not until > since:
        raise InputError(
            f"The period is empty: until ({until:%Y-%m-%d}) must come after since ({since:%Y-%m-%d}).",
            f"El periodo está vacío: until ({until:%Y-%m-%d}) debe ser posterior a since "
            f"({since:%Y-%m-%d}).",
        )
    day = since.normalize()
    if slice == "month":
        start = day.replace(day=1)
        bounds = pd.date_range(start, until + pd.offsets.MonthBegin(1), freq="MS", tz="UTC")
    else:
        start = day - pd.Timedelta(days=int(day.weekday()))
        bounds = pd.date_range(start, until + pd.Timedelta(days=7), freq="7D", tz="UTC")
    last = int(bounds.searchsorted(until, side="left"))
    return pd.DatetimeIndex(bounds[: last + 1]).as_unit("ns")


def _check_slice(slice: str) -> None:
    if slice not in SLICES:
        raise InputError(
            f"Unknown slice width {slice!r}: use 'month' or 'week'.",
            f"Ancho de intervalo desconocido {slice!r}: use 'month' (mes) o 'week' (semana).",
        )


def _utc(value: pd.Timestamp | str) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _isin(column: pd.Series, allowed: Iterable[str] | None) -> npt.NDArray[np.bool_]:
    if allowed is None:
        return np.ones(len(column), dtype=bool)
    return column.isin(list(allowed)).to_numpy()


def build_cube(events: pd.DataFrame, segments: gpd.GeoDataFrame, *, slice: str = "month",
               filters: CubeFilter | None = None, weight: str | None = None,
               h3_resolution: int = 5) -> Cube:
    """The space-time cube of the events that pass ``filters``.

    Parameters
    ----------
    events
        Snapped events with columns ``event_id, edge_id`` (nullable: off the network),
        ``fraction`` (0-1 along the edge), ``lon, lat`` (EPSG:4326 degrees), ``occurred_at``
        and, when filtered on, ``kind, crime_type, owner_country``.
    segments
        Output of :func:`routes.segments.cut_segments`.
    slice
        ``"month"`` or ``"week"``.
    filters
        Period, crime types, event kinds and owner countries; the period defaults to the
        events' first and last dates. Events of several crime types are refused unless the
        crime types are named (trafficking and smuggling are never merged by default).
    weight
        Column summed per bin instead of counting events (e.g. persons involved); missing
        values count as 1.
    h3_resolution
        H3 resolution of the cells that hold events off the network.
    """
    _check_slice(slice)
    missing = [c for c in EVENT_COLUMNS if c not in events.columns]
    if weight is not None and weight not in events.columns:
        missing.append(weight)
    filters = filters or CubeFilter()
    for name, allowed in (("kind", filters.kinds), ("crime_type", filters.crime_types),
                          ("owner_country", filters.owner_countries)):
        if allowed is not None and name not in events.columns:
            missing.append(name)
    if missing:
        raise InputError(
            f"The events lack the column(s) {', '.join(missing)} the cube needs; snap the events "
            "(`rutas snap`) before running the analysis.",
            f"A los eventos les falta(n) la(s) columna(s) {', '.join(missing)} que el cubo necesita; "
            "ajuste los eventos a la red (`rutas snap`) antes de ejecutar el análisis.",
        )
    when = pd.to_datetime(events["occurred_at"], utc=True)
    keep = np.array(when.notna().to_numpy(), dtype=bool)
    if filters.kinds:
        keep &= _isin(events["kind"], filters.kinds)
    if filters.crime_types:
        keep &= _isin(events["crime_type"], filters.crime_types)
    elif "crime_type" in events.columns:
        kinds_of_crime = sorted(events["crime_type"].dropna().astype(str).unique())
        if len(kinds_of_crime) > 1:
            # Trafficking and smuggling are distinct crimes: mixed only when the user asks.
            raise InputError(
                f"The events hold several crime types ({', '.join(kinds_of_crime)}); choose one, or name "
                "all of them to analyse them together.",
                f"Los eventos tienen varios tipos de delito ({', '.join(kinds_of_crime)}); elija uno, o "
                "nómbrelos todos para analizarlos juntos.",
                code="mixed_crime_types",
            )
    if filters.owner_countries:
        keep &= _isin(events["owner_country"], filters.owner_countries)
    since = filters.since if filters.since is not None else when[keep].min()
    until = filters.until if filters.until is not None else when[keep].max() + pd.Timedelta(seconds=1)
    if pd.isna(since) or pd.isna(until):
        raise InputError(
            "No event passes the filters: widen the period, crime types, kinds or countries.",
            "Ningún evento cumple los filtros: amplíe el periodo, tipos de delito, clases o países.",
            code="empty",
        )
    bounds = slice_starts(pd.Timestamp(since), pd.Timestamp(until), slice)
    t = when.dt.as_unit("ns").to_numpy(dtype="datetime64[ns]").astype(np.int64)
    keep &= (t >= _utc(since).as_unit("ns").value) & (t < _utc(until).as_unit("ns").value)
    ev = events.loc[keep]
    t = t[keep]
    slice_of = np.searchsorted(bounds.asi8, t, side="right") - 1
    seg_of = assign_events(segments, ev["edge_id"], ev["fraction"])
    off = seg_of < 0
    lat = ev["lat"].to_numpy(dtype=np.float64)[off]
    lon = ev["lon"].to_numpy(dtype=np.float64)[off]
    # h3 has no vectorised API; one call per off-network event is the only way.
    cell_of = np.array([h3i.latlng_to_cell(a, o, h3_resolution) for a, o in zip(lat, lon, strict=True)],
                       dtype=np.uint64).astype(np.int64)
    seg_units, seg_idx = np.unique(seg_of[~off], return_inverse=True)
    cell_units, cell_idx = np.unique(cell_of, return_inverse=True)
    unit = np.empty(len(ev), dtype=np.int64)
    unit[~off] = seg_idx
    unit[off] = len(seg_units) + cell_idx
    n_units = len(seg_units) + len(cell_units)
    n_slices = len(bounds) - 1
    w = np.ones(len(ev)) if weight is None else np.nan_to_num(
        ev[weight].to_numpy(dtype=np.float64, na_value=np.nan), nan=1.0)
    values = np.bincount(unit * n_slices + slice_of, weights=w, minlength=n_units * n_slices)
    return Cube(
        values=values.reshape(n_units, n_slices).astype(np.float64),
        segments=seg_units.astype(np.int64),
        cells=cell_units,
        slice_starts=bounds,
        event_ids=ev["event_id"].to_numpy(dtype=np.int64),
        event_unit=unit,
        event_slice=slice_of.astype(np.int64),
        event_time=t.astype("datetime64[ns]"),
        h3_resolution=h3_resolution,
    )


def h3_neighbours(cells: npt.NDArray[np.int64], resolution: int, neighbour_km: float) -> sparse.csr_matrix:
    """Binary weights between H3 cells within ``k`` rings, k covering ``neighbour_km``.

    ``k = max(1, round(neighbour_km / spacing))`` where spacing is the mean distance between
    the centres of adjacent cells at ``resolution`` (sqrt(3) x mean edge length). Only the
    given cells (units with events) appear; the diagonal is empty.
    """
    n = len(cells)
    if n == 0:
        return sparse.csr_matrix((0, 0))
    spacing_km = np.sqrt(3.0) * h3i.average_hexagon_edge_length(resolution, unit="km")
    k = max(1, round(neighbour_km / spacing_km))
    position = pd.Series(np.arange(n), index=cells.astype(np.uint64).astype(np.int64))
    rows: list[int] = []
    cols: list[int] = []
    # One grid_disk per off-network cell: h3 offers no array form.
    for i, cell in enumerate(cells.astype(np.uint64)):
        disk = np.array(h3i.grid_disk(int(cell), k), dtype=np.uint64).astype(np.int64)
        hit = position.reindex(disk).dropna().to_numpy(dtype=np.int64)
        hit = hit[hit != i]
        rows.extend([i] * len(hit))
        cols.extend(hit.tolist())
    return sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
