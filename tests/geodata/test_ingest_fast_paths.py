"""The ingest's fast paths (pyarrow CSV parser, numbers, JSON attributes) give what pandas gave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geodata.ingest import readers, text
from geodata.ingest.columns import Mapping

_CELLS = st.one_of(st.none(), st.text(max_size=12),
                   st.text(alphabet='ab/\\"\n\r\t\b\f\x01\x1f\x7fñ€ ', max_size=8))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_CELLS, _CELLS), min_size=1, max_size=6))
def test_json_objects_match_pandas_to_json(cells: list[tuple[str | None, str | None]]) -> None:
    frame = pd.DataFrame({"nota": [a for a, _ in cells], "x/\"y": [b for _, b in cells]}, dtype="str")
    expected = frame.to_json(orient="records", lines=True, force_ascii=False).split("\n")[:len(frame)]
    columns = {c: text.arrow(frame[c]) for c in frame.columns}
    assert text.json_objects(columns, len(frame)).to_pylist() == expected


_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
    st.text(alphabet="0123456789.,-+eEinaf ", max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_NUMBERS, min_size=1, max_size=20))
def test_numbers_match_pandas_to_numeric(values: list[str]) -> None:
    trimmed = [v.strip() or None for v in values]
    series = pd.Series(trimmed, dtype="str")
    expected = pd.to_numeric(series.str.replace(",", ".", regex=False), errors="coerce").to_numpy(
        dtype="float64", na_value=np.nan)
    got = text.numbers(pa.array(trimmed, type=pa.large_string()))
    np.testing.assert_array_equal(got, expected)
    assert (np.signbit(got) == np.signbit(expected)).all()


_CSV_TEXTS = {
    "plain": "id,fecha,nota\n" + "".join(f"{i},2021-01-{i % 28 + 1:02d},n{i}\n" for i in range(9)),
    "quoted": 'id,nota\n1,"a, b"\n2,"línea\nnueva"\n3,""\n4,"x""y"\n5, z \n',
    "extra_field_late": "a,b\n1,2\n3,4\n5,6\n7,8,9\n10,11\n",
    "short_row_late": "a,b,c\n1,2,3\n4,5,6\n7,8,9\n10,11\n12,13,14\n",
    "blank_lines": "a,b\n1,2\n\n3,4\n   \n5,6\n\n",
    "header_only": "a,b,c\n",
    "crlf": "a;b\r\n1;2\r\n3;\r\n",
}


def _chunks(path: Path, monkeypatch: pytest.MonkeyPatch | None) -> list[tuple[Any, ...]]:
    if monkeypatch is not None:
        def refuse(*args: Any, **kwargs: Any) -> Iterator[pd.DataFrame]:
            raise readers._NotPlainError
            yield  # pragma: no cover
        monkeypatch.setattr(readers, "_arrow_frames", refuse)
    source = readers.open_source(path, encoding="utf-8", chunk_rows=2, mapping=Mapping())
    out = [(list(c.frame.columns), c.frame.astype(object).where(c.frame.notna(), None).values.tolist(),
            c.rows.tolist(), c.skipped, [str(t) for t in c.frame.dtypes]) for c in source.chunks]
    if monkeypatch is not None:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize("name", sorted(_CSV_TEXTS))
def test_fast_csv_reader_gives_the_chunks_of_pandas(name: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / f"{name}.csv"
    path.write_text(_CSV_TEXTS[name], encoding="utf-8", newline="")
    fast = _chunks(path, None)
    slow = _chunks(path, monkeypatch)
    assert fast == slow
    assert sum(len(rows) for _, rows, _, _, _ in fast) == sum(len(rows) for _, rows, _, _, _ in slow)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(""), st.tuples(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99))
                          .map(lambda t: f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}")), min_size=1, max_size=30))
def test_iso_days_match_pandas_to_datetime(values: list[str]) -> None:
    from geodata.ingest.dates import _iso_days

    series = pd.Series(values, dtype="str")
    expected = pd.to_datetime(series, format="%Y-%m-%d", errors="coerce")
    got = _iso_days(text.arrow(series))
    if got is None:  # left to pandas: only when no text is a real day
        assert expected.isna().all()
    else:
        assert pd.Series(got).equals(expected)
