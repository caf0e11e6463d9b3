"""Dates of records as offices write them: ISO, day-first, month-first, month names, years.

Everything is vectorised over a column: ISO dates take pandas' C parser, and only the rows
left over go through the regular expressions. Dates are read in UTC at the start of their
day, month or year; the precision and the original text are kept beside the timestamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from geodata.ingest import text as texts

#: Month names and abbreviations in Spanish, Portuguese and English -> month number.
MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    [
        ("enero", "ene", "janeiro", "jan", "january"),
        ("febrero", "feb", "fevereiro", "fev", "february"),
        ("marzo", "mar", "marco", "março", "march"),
        ("abril", "abr", "april", "apr"),
        ("mayo", "may", "maio", "mai"),
        ("junio", "jun", "junho", "june"),
        ("julio", "jul", "julho", "july"),
        ("agosto", "ago", "august", "aug"),
        ("septiembre", "setiembre", "sep", "sept", "set", "setembro", "september"),
        ("octubre", "oct", "outubro", "out", "october"),
        ("noviembre", "nov", "novembro", "november"),
        ("diciembre", "dic", "dezembro", "dez", "december", "dec"),
    ],
    start=1,
):
    for _name in _names:
        MONTHS[_name] = _number

#: Positions of the digits in ``YYYY-MM-DD``.
_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9]
_SEP = r"[-/.]"
_TIME = r"(?:[T\s]+\d{1,2}:\d{2}.*)?"
_PATTERNS: dict[str, str] = {
    "ymd": rf"^(?P<y>\d{{4}}){_SEP}(?P<m>\d{{1,2}}){_SEP}(?P<d>\d{{1,2}}){_TIME}$",
    "abY": rf"^(?P<a>\d{{1,2}}){_SEP}(?P<b>\d{{1,2}}){_SEP}(?P<y>\d{{4}}|\d{{2}}){_TIME}$",
    "ym": rf"^(?P<y>\d{{4}}){_SEP}(?P<m>\d{{1,2}})$",
    "my": rf"^(?P<m>\d{{1,2}}){_SEP}(?P<y>\d{{4}})$",
    "dNy": r"^(?P<d>\d{1,2})(?:\s+de)?[\s/-]+(?P<n>[^\W\d_]+)\.?(?:\s+de)?[\s/-]+(?P<y>\d{4})$",
    "Ndy": r"^(?P<n>[^\W\d_]+)\.?\s+(?P<d>\d{1,2}),?\s+(?P<y>\d{4})$",
    "Ny": r"^(?P<n>[^\W\d_]+)\.?(?:\s+de|\s+del)?[\s/-]+(?P<y>\d{4})$",
    "y": r"^(?P<y>\d{4})$",
}


@dataclass(frozen=True)
class ParsedDates:
    """Dates read from one column.

    Attributes
    ----------
    occurred_at
        UTC timestamps (start of the day, month or year); NaT where nothing valid was read.
    precision
        ``day``, ``month``, ``year``, or ``None`` where nothing was read.
    text
        The original text (or the year/month it was built from).
    ambiguous
        True where a day/month order could be either (03/04/2021) and was read by the
        file's date order.
    empty
        True where the row has no date at all.
    """

    occurred_at: pd.Series
    precision: npt.NDArray[np.object_]
    text: pd.Series
    ambiguous: npt.NDArray[np.bool_]
    empty: npt.NDArray[np.bool_]


def _two_digit_years(year: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    pivot = datetime.now(UTC).year % 100
    return np.where(year < 100, np.where(year <= pivot, 2000 + year, 1900 + year), year)


def _month_numbers(names: pd.Series) -> npt.NDArray[np.float64]:
    key = names.str.lower().str.normalize("NFKD").str.encode("ascii", "ignore").str.decode("ascii")
    return np.asarray(key.map(MONTHS).astype("float64").to_numpy(), dtype=np.float64)


def _iso_days(text: pa.Array) -> npt.NDArray[np.datetime64] | None:
    """Dates of a column whose texts are all empty or ``YYYY-MM-DD``, at least one a real day.

    ``None`` for any other column.
    The same as ``pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")`` for such a column
    (NaT for empty texts and for days that do not exist, such as 2021-02-29), read from the bytes.
    """
    lengths = np.asarray(pc.binary_length(text).to_numpy(zero_copy_only=False), dtype=np.float64)
    if not bool(((lengths == 0) | (lengths == 10)).all()):
        return None
    out = np.full(len(text), np.datetime64("NaT"), dtype="datetime64[us]")
    grid = texts.text_bytes(text).reshape(-1, 10).astype(np.int64)
    if len(grid) == 0:
        return None
    if not (bool((grid[:, [4, 7]] == ord("-")).all())
            and bool(((grid[:, _DIGITS] >= ord("0")) & (grid[:, _DIGITS] <= ord("9"))).all())):
        return None
    digit = grid[:, _DIGITS] - ord("0")
    year = digit[:, 0] * 1000 + digit[:, 1] * 100 + digit[:, 2] * 10 + digit[:, 3]
    month = digit[:, 4] * 10 + digit[:, 5]
    day = digit[:, 6] * 10 + digit[:, 7]
    first = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    start, end = first.astype("datetime64[D]"), (first + 1).astype("datetime64[D]")
    valid = (month >= 1) & (month <= 12) & (day >= 1) & (day <= (end - start).astype(np.int64))
    if not valid.any():
        return None  # pandas gives such a column another unit (seconds): let it read it
    rows = np.flatnonzero(lengths == 10)[valid]
    out[rows] = (start[valid] + (day[valid] - 1)).astype("datetime64[us]")
    return out


def parse_dates(
    text: pd.Series,
    *,
    order: str = "dmy",
    year: pd.Series | None = None,
    month: pd.Series | None = None,
) -> ParsedDates:
    """Read a column of date texts, falling back to year and month columns where it is empty.

    Parameters
    ----------
    text
        Date texts (any of the forms in :data:`_PATTERNS`); empty or NA where absent.
    order
        ``dmy`` (default), ``mdy`` or ``ymd``: how a date like 03/04/2021 is read. Forms that
        can only be read one way (13/04/2021, 04/13/2021) are read that way whatever the order.
    year, month
        Optional columns used where ``text`` is empty (IOM rows with only year and month).
    """
    n = len(text)
    clean = text.fillna("").astype(str).str.strip()
    y = np.full(n, np.nan)
    m = np.full(n, np.nan)
    d = np.full(n, np.nan)
    precision = np.full(n, None, dtype=object)
    ambiguous = np.zeros(n, dtype=bool)

    fixed = _iso_days(texts.arrow(clean))
    iso = (pd.Series(fixed, index=clean.index) if fixed is not None
           else pd.to_datetime(clean, format="%Y-%m-%d", errors="coerce"))
    fast = iso.notna().to_numpy()
    if fast.any():
        y[fast] = iso.dt.year.to_numpy()[fast]
        m[fast] = iso.dt.month.to_numpy()[fast]
        d[fast] = iso.dt.day.to_numpy()[fast]
        precision[fast] = "day"
    rest = np.flatnonzero(~fast & (clean != "").to_numpy())
    for form, pattern in _PATTERNS.items():
        if len(rest) == 0:
            break
        parts = clean.iloc[rest].str.extract(pattern)
        hit = parts.notna().any(axis=1).to_numpy()
        if not hit.any():
            continue
        rows = rest[hit]
        parts = parts[hit]
        yy = _two_digit_years(np.asarray(parts["y"].astype("float64").to_numpy(), dtype=np.float64))
        y[rows] = yy
        if form == "abY":
            a = parts["a"].astype("float64").to_numpy()
            b = parts["b"].astype("float64").to_numpy()
            month_first = (a <= 12) & (b > 12) if order != "mdy" else ~((a > 12) & (b <= 12))
            m[rows] = np.where(month_first, a, b)
            d[rows] = np.where(month_first, b, a)
            ambiguous[rows] = (a <= 12) & (b <= 12) & (a != b)
            precision[rows] = "day"
        elif form in ("ymd", "dNy", "Ndy"):
            m[rows] = parts["m"].astype("float64").to_numpy() if "m" in parts else _month_numbers(parts["n"])
            d[rows] = parts["d"].astype("float64").to_numpy()
            precision[rows] = "day"
        elif form in ("ym", "my", "Ny"):
            m[rows] = parts["m"].astype("float64").to_numpy() if "m" in parts else _month_numbers(parts["n"])
            d[rows] = 1
            precision[rows] = "month"
        else:
            m[rows] = 1
            d[rows] = 1
            precision[rows] = "year"
        rest = rest[~hit]

    empty = (clean == "").to_numpy(copy=True)
    out_text = clean.copy()
    if year is not None and empty.any():
        rows = np.flatnonzero(empty)
        yv = pd.to_numeric(year.iloc[rows], errors="coerce").to_numpy(dtype="float64", copy=True)
        mv = np.full(len(rows), np.nan)
        if month is not None:
            mtext = month.iloc[rows].astype("object").where(month.iloc[rows].notna(), "").astype(str)
            mv = pd.to_numeric(mtext, errors="coerce").to_numpy(dtype="float64", copy=True)
            named = np.isnan(mv)
            mv[named] = _month_numbers(mtext.str.strip()[named])
        has_year = ~np.isnan(yv)
        y[rows] = yv
        m[rows] = np.where(np.isnan(mv), 1, mv)
        d[rows] = 1
        level = np.where(np.isnan(mv), "year", "month").astype(object)
        level[~has_year] = None
        precision[rows] = level
        built = pd.Series(np.where(np.isnan(mv), "", pd.Series(mv).map("{:02.0f}".format)), dtype=object)
        label = pd.Series(yv).map("{:.0f}".format).str.cat(built, sep="-").str.rstrip("-")
        out_text.iloc[rows[has_year]] = label.to_numpy()[has_year]
        empty[rows[has_year]] = False

    stamp = iso.copy()
    slow = np.flatnonzero(~fast)
    if len(slow):
        parts_frame = pd.DataFrame({"year": y[slow], "month": m[slow], "day": d[slow]})
        assembled = pd.to_datetime(parts_frame, errors="coerce")
        assembled.index = stamp.index[slow]
        stamp = stamp.where(fast, assembled.reindex(stamp.index))
    stamp = stamp.dt.tz_localize("UTC")
    bad = stamp.isna().to_numpy()
    precision[bad] = None
    ambiguous &= ~bad
    stamp.index = text.index
    out_text.index = text.index
    return ParsedDates(occurred_at=stamp, precision=precision, text=out_text, ambiguous=ambiguous,
                       empty=empty)
