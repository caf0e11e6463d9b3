"""Text columns of a chunk as pyarrow arrays: trimming, decimal numbers, JSON objects of free attributes.

The readers give pandas columns of the ``str`` dtype, which pyarrow arrays back; these
functions work on those arrays directly (no Python object per cell), and give exactly what
the pandas string methods, ``pd.to_numeric`` and ``DataFrame.to_json`` gave before, falling
back to them for the rare cells the fast paths do not cover.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

#: Decimal numbers the fast path reads (pyarrow's parser gives the same double as pandas' for them).
_PLAIN_NUMBER = r"^[+-]?(?:[0-9]{1,17}\.?[0-9]{0,20}|\.[0-9]{1,20})$"
#: JSON escapes of ``DataFrame.to_json`` (ujson): these characters get a two-character escape,
#: the other control characters a ``\u00XX`` one; everything else is written as it is.
_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("/", "\\/"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"),
                 ("\b", "\\b"), ("\f", "\\f"))
_CONTROL = "[\\x00-\\x1f]"


def arrow(values: pd.Series) -> pa.Array:
    """The text of ``values`` as one pyarrow ``large_string`` array (nulls where NA)."""
    if not isinstance(values.dtype, pd.StringDtype):
        values = values.astype("str")
    array = pa.array(values.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    return array.cast(pa.large_string()) if array.type != pa.large_string() else array


def series(array: pa.Array | pa.ChunkedArray, index: pd.Index | None = None) -> pd.Series:
    """A pandas ``str`` Series over ``array`` (no copy)."""
    return pd.Series(pd.array(array, dtype="str"), index=index)


def trimmed(values: pd.Series) -> pa.Array:
    """``values`` without leading and trailing white space, null where that leaves nothing."""
    text = pc.utf8_trim_whitespace(arrow(values))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.large_string()), text)


def text_bytes(values: pa.Array) -> npt.NDArray[np.uint8]:
    """The UTF-8 bytes of all the values of a ``large_string`` array, end to end (no copy)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.large_string():
        values = values.cast(pa.large_string())
    offsets_buffer, data = values.buffers()[1:3]
    if data is None or len(values) == 0:
        return np.empty(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[values.offset:values.offset + len(values) + 1]
    return np.frombuffer(data, dtype=np.uint8)[int(offsets[0]):int(offsets[-1])]


def _holds_any(values: pa.Array, characters: bytes) -> bool:
    """Whether any value holds any of the ASCII ``characters`` (a scan of the bytes, no regex)."""
    raw = text_bytes(values)
    return bool(np.isin(raw, np.frombuffer(characters, dtype=np.uint8)).any()) if len(raw) else False


def _mask(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.bool_]:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def numbers(text: pa.Array) -> npt.NDArray[np.float64]:
    """Decimal numbers (``.`` or ``,`` as decimal mark) read from ``text``; NaN where unreadable.

    The same values as ``pd.to_numeric(..., errors="coerce")`` on the text with ``,`` made ``.``.
    """
    dotted = pc.replace_substring(text, ",", ".") if _holds_any(text, b",") else text
    # Without exponents or words (inf, nan), whatever pyarrow reads as a decimal number pandas
    # reads as the same double; anything else goes through the checks below.
    if not _holds_any(dotted, b"eEnN"):
        try:
            values = pc.cast(dotted, pa.float64())
        except pa.ArrowInvalid:
            pass
        else:
            return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)
    plain = _mask(pc.match_substring_regex(dotted, _PLAIN_NUMBER))
    result = np.full(len(text), np.nan)
    if plain.any():
        result[plain] = pc.cast(dotted.filter(pa.array(plain)), pa.float64()).to_numpy(zero_copy_only=False)
    other = ~plain & _mask(pc.is_valid(dotted))
    if other.any():
        rest = series(dotted.filter(pa.array(other)))
        result[other] = pd.to_numeric(rest, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return result


def decimal_places(text: pa.Array) -> npt.NDArray[np.float64] | None:
    """Characters after the first decimal mark (0 when there is none, or for nulls).

    ``None`` when some text is not ASCII (the caller then counts in Python's characters).
    """
    raw = text_bytes(text)
    if len(raw) and int(raw.max()) >= 0x80:
        return None
    dotted = pc.replace_substring(text, ",", ".") if _holds_any(text, b",") else text
    dot = pc.fill_null(pc.find_substring(dotted, "."), -1).to_numpy(zero_copy_only=False).astype("float64")
    length = pc.fill_null(pc.binary_length(dotted), 0).to_numpy(zero_copy_only=False).astype("float64")
    return np.where(dot >= 0, length - dot - 1, 0.0)


def _json_string(values: pa.Array) -> pa.Array:
    """Each value as a JSON string literal as ujson writes it (``null`` for nulls)."""
    text = values
    raw = text_bytes(text)
    if len(raw) and bool(((raw < 0x20) | np.isin(raw, np.frombuffer(b'"/\\', dtype=np.uint8))).any()):
        for char, escape in _JSON_ESCAPES:
            if pc.any(pc.match_substring(text, char)).as_py():
                text = pc.replace_substring(text, char, escape)
        control = _mask(pc.match_substring_regex(text, _CONTROL))
        if control.any():
            items = text.to_pylist()
            for i in np.flatnonzero(control):
                items[i] = "".join(f"\\u{ord(c):04x}" if ord(c) < 0x20 else c for c in items[i])
            text = pa.array(items, type=pa.large_string())
    quote = pa.scalar('"', pa.large_string())
    return pc.fill_null(pc.binary_join_element_wise(quote, text, quote, pa.scalar("", pa.large_string())),
                        pa.scalar("null", pa.large_string()))


def json_objects(columns: dict[str, pa.Array], rows: int) -> pa.Array:
    """One JSON object per row holding ``columns`` (name -> text), as ``to_json(orient="records")``."""
    if not columns:
        return pa.repeat(pa.scalar("{}", pa.large_string()), rows)
    parts: list[pa.Array | pa.Scalar] = []
    for i, (name, values) in enumerate(columns.items()):
        key = _json_string(pa.array([name], type=pa.large_string()))[0].as_py()
        parts.append(pa.scalar(("{" if i == 0 else ",") + key + ":", pa.large_string()))
        parts.append(_json_string(values))
    parts.append(pa.scalar("}", pa.large_string()))
    return pc.binary_join_element_wise(*parts, pa.scalar("", pa.large_string()))
