"""Events as the products may show them: counts per cell, cells under k suppressed.

Every map and raster Rutas writes is built from these counts, never from event coordinates,
so no product can carry a victim's location (or any single record's) to a reader outside the
owner's scope. The counting is the database function ``rutas_event_cells`` of migration 0003,
the one the API's ``event-cells`` collection serves: it counts only the countries the scope may
see aggregated, on whole cells of a square EPSG:3857 grid and whole months, and drops every
cell with fewer than ``k`` records. One function serves the API and the products.
"""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.db import Scope, scoped

_CELLS_SQL = sa.text(
    "SELECT ST_X(ST_Centroid(cell)) AS lon, ST_Y(ST_Centroid(cell)) AS lat, "
    "ST_XMin(cell) AS west, ST_YMin(cell) AS south, ST_XMax(cell) AS east, ST_YMax(cell) AS north, kind, n "
    "FROM rutas_event_cells(:cell_m, NULL::geometry, CAST(:t0 AS timestamptz), CAST(:t1 AS timestamptz), :k)"
)
_PERIOD_SQL = sa.text(
    "SELECT date_trunc('month', min(occurred_at), 'UTC')::date, "
    "date_trunc('month', max(occurred_at), 'UTC')::date "
    "FROM events WHERE (CAST(:t0 AS timestamptz) IS NULL OR occurred_at >= CAST(:t0 AS timestamptz)) "
    "AND (CAST(:t1 AS timestamptz) IS NULL OR occurred_at < CAST(:t1 AS timestamptz))"
)
CELL_COLUMNS = ["lon", "lat", "west", "south", "east", "north", "kind", "n"]


def event_cells(
    engine: Engine,
    scope: Scope,
    *,
    cell_km: float,
    k: int,
    since: date | None = None,
    until: date | None = None,
) -> pd.DataFrame:
    """Counts per cell and kind for ``scope`` over the period (whole months).

    Returns columns lon, lat (cell centre, EPSG:4326 degrees), west, south, east, north (cell
    bounds, degrees), kind and n (records, at least ``k``). ``until`` is inclusive: its month counts.
    """
    params = {"cell_m": cell_km * 1000.0, "k": k, "t0": since, "t1": until}
    with scoped(engine, scope) as conn:
        frame = pd.DataFrame(conn.execute(_CELLS_SQL, params).all(), columns=CELL_COLUMNS)
    return frame.astype({"n": "int64"})


#: Time slices the products may use, as pandas frequencies (slice start).
SLICE_FREQ = {"month": "MS", "quarter": "QS", "year": "YS"}


def sliced_event_cells(
    engine: Engine,
    scope: Scope,
    *,
    cell_km: float,
    k: int,
    since: date | None = None,
    until: date | None = None,
    slice: str = "month",
) -> pd.DataFrame:
    """:func:`event_cells` slice by slice, with a ``month`` column (first day of the slice, ``datetime64``).

    ``slice`` is month, quarter or year (a sparse store keeps more cells with longer slices).
    Each slice is suppressed on its own (a cell appears in a slice only with at least ``k``
    records of that slice), so the slices never reveal what the whole-period cells hide.
    """
    if slice not in SLICE_FREQ:
        raise ValueError(f"slice must be one of {', '.join(SLICE_FREQ)}, got {slice!r}")
    # the span of months of all records (not the scope's: partners' records count in cells too);
    # only its first and last month leave this function
    with scoped(engine) as conn:
        first, last = conn.execute(_PERIOD_SQL, {"t0": since, "t1": until}).one()
    if first is None:
        return pd.DataFrame(columns=[*CELL_COLUMNS, "month"])
    starts = pd.date_range(
        pd.Timestamp(first).to_period(SLICE_FREQ[slice][0]).start_time, last, freq=SLICE_FREQ[slice]
    )
    frames = []
    for start in starts:
        # until is inclusive of its month: the slice's last month
        end = start + pd.tseries.frequencies.to_offset(SLICE_FREQ[slice]) - pd.offsets.MonthBegin(1)
        cells = event_cells(engine, scope, cell_km=cell_km, k=k, since=start.date(), until=end.date())
        frames.append(cells.assign(month=start))
    return pd.concat(frames, ignore_index=True)


def monthly_event_cells(
    engine: Engine,
    scope: Scope,
    *,
    cell_km: float,
    k: int,
    since: date | None = None,
    until: date | None = None,
) -> pd.DataFrame:
    """:func:`sliced_event_cells` by month."""
    return sliced_event_cells(engine, scope, cell_km=cell_km, k=k, since=since, until=until, slice="month")


def cells_as_events(cells: pd.DataFrame, *, month_column: str = "month") -> pd.DataFrame:
    """Cell counts as weighted points for the risk surface: lon, lat, occurred_at, weight.

    Each cell stands at its centre with weight n; its time is the middle of its month (or now
    when the counts carry no month).
    """
    if month_column in cells:
        occurred = pd.to_datetime(cells[month_column]) + pd.Timedelta(days=15)
    else:
        occurred = pd.Series(pd.Timestamp(datetime.now()), index=cells.index)
    return pd.DataFrame(
        {
            "lon": cells["lon"].to_numpy(float),
            "lat": cells["lat"].to_numpy(float),
            "occurred_at": occurred.to_numpy("datetime64[s]"),
            "weight": cells["n"].to_numpy(float),
        }
    )
