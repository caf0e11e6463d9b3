"""Date parsing: property-based round trips over the forms offices write, and the ambiguous case."""

from __future__ import annotations

from datetime import date

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from geodata.ingest.dates import parse_dates

DAYS = st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 12, 31))
MONTH_ES = ["enero", "febrero", "marzo", "abril", "mayo", "junio", "julio", "agosto", "septiembre",
            "octubre", "noviembre", "diciembre"]


def _one(text: str, order: str = "dmy") -> tuple[date | None, str | None, bool]:
    parsed = parse_dates(pd.Series([text], dtype="str"), order=order)
    stamp = parsed.occurred_at.iloc[0]
    return (None if pd.isna(stamp) else stamp.date(), parsed.precision[0], bool(parsed.ambiguous[0]))


@settings(max_examples=60, deadline=None)
@given(DAYS)
def test_every_written_form_reads_back_the_same_day(day: date) -> None:
    forms = [day.isoformat(), f"{day:%d/%m/%Y}", f"{day.day} de {MONTH_ES[day.month - 1]} de {day.year}",
             f"{day:%B} {day.day}, {day.year}", f"{day:%Y/%m/%d}", f"{day:%d.%m.%Y} 14:30"]
    for text in forms:
        read, precision, _ = _one(text)
        assert (read, precision) == (day, "day"), text


@settings(max_examples=60, deadline=None)
@given(DAYS)
def test_order_decides_only_when_both_readings_exist(day: date) -> None:
    text = f"{day:%m/%d/%Y}"  # month first
    read_mdy, _, ambiguous_mdy = _one(text, order="mdy")
    read_dmy, _, ambiguous = _one(text, order="dmy")
    assert read_mdy == day and ambiguous_mdy == ambiguous  # ambiguity belongs to the text
    if day.day > 12 or day.day == day.month:
        assert read_dmy == day and not ambiguous  # only one reading is possible
    else:
        assert read_dmy == date(day.year, day.day, day.month) and ambiguous


@settings(max_examples=40, deadline=None)
@given(st.integers(1990, 2030), st.integers(1, 12))
def test_month_and_year_precision(year: int, month: int) -> None:
    assert _one(f"{year}-{month:02d}")[:2] == (date(year, month, 1), "month")
    assert _one(f"{MONTH_ES[month - 1]} {year}")[:2] == (date(year, month, 1), "month")
    assert _one(str(year))[:2] == (date(year, 1, 1), "year")


def test_impossible_and_foreign_texts_are_not_dates() -> None:
    for text in ["2021-13-45", "31/02/2021", "45/13/2021", "ayer", "2021-00-10", "13/13/2021"]:
        assert _one(text)[0] is None, text


def test_year_and_month_columns_fill_an_empty_date() -> None:
    parsed = parse_dates(pd.Series(["", "2020-05-06"], dtype="str"),
                         year=pd.Series(["2019", "2000"], dtype="str"),
                         month=pd.Series(["March", "1"], dtype="str"))
    assert [s.date() for s in parsed.occurred_at] == [date(2019, 3, 1), date(2020, 5, 6)]
    assert list(parsed.precision) == ["month", "day"] and parsed.text.tolist() == ["2019-03", "2020-05-06"]


@settings(max_examples=80, deadline=None)
@given(st.integers(1990, 2030), st.integers(1, 12), st.integers(28, 31))
def test_a_day_past_the_end_of_its_month_is_never_a_date(year: int, month: int, day: int) -> None:
    try:
        real: date | None = date(year, month, day)
    except ValueError:  # 2024-02-31, 2023-02-29, 2021-04-31: must be rejected, never rolled over
        real = None
    forms = [f"{year}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year}",
             f"{year}/{month:02d}/{day:02d}", f"{year}-{month:02d}-{day:02d}T10:00:00Z",
             f"{day} de {MONTH_ES[month - 1]} de {year}"]
    for text in forms:
        assert _one(text)[0] == real, text
