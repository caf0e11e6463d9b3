"""Readers: every supported format as a stream of chunks of text columns (and points).

CSV (delimiter ``,`` ``;`` or tab; UTF-8, UTF-8 with BOM, cp1252 or Latin-1, detected) and
Excel (.xlsx, header row found even under merged title rows) give text columns; GeoJSON,
GeoPackage, KML/KMZ and zipped Shapefiles (read through GDAL's Arrow stream) give text
columns plus a geometry per row, reprojected to EPSG:4326. Files are read in chunks of
``settings.ingest_chunk_rows`` rows, so memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import shapely

from geodata.errors import InputError
from geodata.ingest.columns import ROLES, Mapping, normalise_header

if TYPE_CHECKING:
    import pyproj

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
GEO_SUFFIXES = (".geojson", ".json", ".gpkg", ".kml", ".kmz", ".shp", ".zip", ".fgb")
_BLOCK = 8 * 1024 * 1024
_HEADER_SCAN_ROWS = 15


@dataclass(frozen=True)
class Chunk:
    """Part of a file: text columns, and for geographic formats one geometry per row.

    ``rows`` holds the 1-based data-row number of each frame row (the header is row 0).
    ``geometry`` holds shapely geometries in EPSG:4326 (``None`` where a feature has none).
    """

    frame: pd.DataFrame
    rows: npt.NDArray[np.int64]
    geometry: npt.NDArray[np.object_] | None = None
    #: Data rows the reader could not split into the header's fields: (row, what was wrong).
    skipped: tuple[tuple[int, str], ...] = ()


@dataclass
class Source:
    """An opened file: its headers, what was detected, and its chunks (read lazily)."""

    name: str
    headers: list[str]
    has_geometry: bool
    chunks: Iterator[Chunk]
    size_bytes: int
    position: Callable[[], int]
    encoding: str | None = None
    delimiter: str | None = None


def _bad_file(name: str, en: str, es: str, code: str = "bad_file") -> InputError:
    return InputError(f"{name}: {en}", f"{name}: {es}", code=code)


def scan_file(path: Path) -> tuple[str, str | None]:
    """SHA-256 of the file and, for text, its encoding, in one streamed pass.

    The encoding is ``utf-8-sig`` (BOM), ``utf-8``, ``cp1252`` (Windows exports: bytes
    0x80-0x9F are letters such as “ ” €) or ``latin-1``.
    """
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    c1_only_cp1252 = True
    c1_seen = False
    first = b""
    with path.open("rb") as handle:
        while block := handle.read(_BLOCK):
            if not first:
                first = block[:4]
            digest.update(block)
            if utf8:
                try:
                    decoder.decode(block)
                except UnicodeDecodeError:
                    utf8 = False
            if re.search(rb"[\x80-\x9f]", block):
                c1_seen = True
                if re.search(rb"[\x81\x8d\x8f\x90\x9d]", block):
                    c1_only_cp1252 = False
    if first.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif utf8:
        encoding = "utf-8"
    elif c1_seen and c1_only_cp1252:
        encoding = "cp1252"
    else:
        encoding = "latin-1"
    return digest.hexdigest(), encoding


def open_source(path: Path, *, encoding: str | None, chunk_rows: int, mapping: Mapping,
                max_bytes: int = 2 * 1024**3) -> Source:
    """Open ``path`` by its suffix and return its chunks.

    Raises
    ------
    InputError
        Empty file, unknown format, unreadable structure (broken JSON, zip without a
        shapefile, ...), each with a message saying what to do.
    """
    name = path.name
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if size == 0:
        raise _bad_file(name, "the file is empty (0 bytes). Export it again from the source system.",
                        "el archivo está vacío (0 bytes). Expórtelo de nuevo desde el sistema de origen.",
                        code="empty_file")
    if suffix in CSV_SUFFIXES:
        return _open_csv(path, encoding or "utf-8", chunk_rows)
    if suffix in EXCEL_SUFFIXES:
        return _open_excel(path, chunk_rows, mapping)
    if suffix in GEO_SUFFIXES:
        return _open_geo(path, chunk_rows, max_bytes)
    raise _bad_file(
        name,
        f"the format '{suffix}' is not supported. Use CSV, Excel (.xlsx), GeoJSON, GeoPackage, "
        "KML/KMZ or a zipped Shapefile.",
        f"el formato '{suffix}' no está admitido. Use CSV, Excel (.xlsx), GeoJSON, GeoPackage, "
        "KML/KMZ o un Shapefile comprimido en zip.",
        code="bad_format",
    )


# --- CSV -----------------------------------------------------------------------------------

def _sniff_delimiter(sample: str) -> str:
    lines = [line for line in sample.splitlines() if line.strip()][:50]
    if not lines:
        return ","
    best, best_score = ",", (-1, -1)
    for delimiter in (",", ";", "\t"):
        widths = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        header = widths[0]
        consistent = sum(1 for w in widths[1:] if w == header)
        score = (header if header > 1 else 0, consistent)
        # A header split in more fields, consistently with the data, wins.
        if header > 1 and (consistent, header) > (best_score[1], best_score[0]):
            best, best_score = delimiter, score
    return best


def _open_csv(path: Path, encoding: str, chunk_rows: int) -> Source:
    name = path.name
    with path.open("r", encoding=encoding, errors="replace", newline="") as handle:
        sample = handle.read(256 * 1024)
    if not sample.strip():
        raise _bad_file(name, "the file has no text (only blanks). Export it again.",
                        "el archivo no tiene texto (sólo espacios). Expórtelo de nuevo.", code="empty_file")
    delimiter = _sniff_delimiter(sample)
    header_line = next(csv.reader([sample.lstrip("\ufeff").splitlines()[0]], delimiter=delimiter))
    headers = [h.strip() for h in header_line]
    raw = path.open("rb")
    try:
        reader = pd.read_csv(
            raw, sep=delimiter, encoding=encoding, dtype=str, keep_default_na=False, na_values=[""],
            chunksize=chunk_rows, engine="c", skipinitialspace=False, encoding_errors="strict",
            on_bad_lines="warn",
        )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raw.close()
        raise _bad_file(name, f"cannot be read as CSV ({exc}).",
                        f"no se puede leer como CSV ({exc}).") from exc

    fast_handle: list[IO[bytes]] = []

    def position() -> int:
        handle = fast_handle[0] if fast_handle else raw
        return 0 if handle.closed else handle.tell()

    def chunks() -> Iterator[Chunk]:
        try:
            yield from read(path.open("rb"))
        finally:
            raw.close()

    def read(fast: IO[bytes]) -> Iterator[Chunk]:
        first = 1
        fast_chunks = 0
        fast_handle.append(fast)
        try:
            # pyarrow's parser first; at the first row it would not read as pandas does (a row
            # of another width, a blank line of spaces, a parse or decoding error) the file goes
            # on through pandas from the chunk the fast path had not finished.
            for frame in _arrow_frames(fast, encoding, delimiter, headers, chunk_rows):
                yield Chunk(frame=frame, rows=_numbers(first, len(frame)))
                first += len(frame)
                fast_chunks += 1
            return
        except _NotPlainError:
            first = 1
        finally:
            fast.close()
            fast_handle.clear()
        try:
            skip = fast_chunks
            while True:
                # Rows with more fields than the header are skipped by the parser with a warning;
                # they become problems of the chunk, and the row numbers step over them.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", pd.errors.ParserWarning)
                    parsed: pd.DataFrame | None = next(reader, None)
                if parsed is None:
                    break
                frame = parsed
                skipped = tuple(
                    (int(m.group(1)) - 1, m.group(2).strip())
                    for w in caught if (m := re.search(r"Skipping line (\d+): (.*)", str(w.message)))
                )
                frame.columns = headers if len(headers) == frame.shape[1] else [str(c) for c in frame.columns]
                numbers = _numbers(first, len(frame) + len(skipped))
                if skipped:
                    numbers = numbers[~np.isin(numbers, [row for row, _ in skipped])][:len(frame)]
                if skip:
                    skip -= 1  # already given by the fast path
                else:
                    yield Chunk(frame=frame.reset_index(drop=True), rows=numbers, skipped=skipped)
                first += len(frame) + len(skipped)
        except pd.errors.ParserError as exc:
            raise _bad_file(
                name,
                f"the CSV structure breaks near data row {first} ({exc}). Check for quotes that are "
                "not closed or rows with extra delimiters.",
                f"la estructura del CSV se rompe cerca de la fila {first} ({exc}). Revise comillas "
                "sin cerrar o filas con separadores de más.",
            ) from exc
        except UnicodeDecodeError as exc:
            raise _bad_file(
                name, f"mixes text encodings near data row {first}; save it as UTF-8.",
                f"mezcla codificaciones de texto cerca de la fila {first}; guárdelo como UTF-8.",
            ) from exc

    return Source(name=name, headers=headers, has_geometry=False, chunks=chunks(),
                  size_bytes=path.stat().st_size, position=position, encoding=encoding,
                  delimiter=delimiter)


class _NotPlainError(Exception):
    """The fast CSV path met a row it does not read as pandas does."""


def _arrow_frames(handle: IO[bytes], encoding: str, delimiter: str, headers: list[str],
                  chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Frames of exactly ``chunk_rows`` data rows (the last may be shorter) read by pyarrow.

    Every cell is text, null where empty (quoted or not), as pandas reads it with
    ``dtype=str, na_values=[""]``. Raises :class:`_NotPlainError` before giving a frame that holds
    or follows a row pandas would read otherwise.
    """
    width = len(headers)
    odd: list[int] = []

    def invalid(row: Any) -> str:
        odd.append(1)
        return "skip"

    try:
        reader = pa_csv.open_csv(
            handle,
            # One thread: on a shared machine the parser's threads cost more CPU than they save.
            read_options=pa_csv.ReadOptions(encoding=encoding, autogenerate_column_names=True,
                                            block_size=1 << 22, use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter, quote_char='"', double_quote=True,
                                              escape_char=False, newlines_in_values=True,
                                              ignore_empty_lines=True, invalid_row_handler=invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"f{i}": pa.large_string() for i in range(width)}, null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=True),
        )
        if reader.schema.names != [f"f{i}" for i in range(width)]:
            raise _NotPlainError
        pending: list[pa.RecordBatch] = []
        count = 0
        header_seen = given = False
        for batch in reader:
            if odd:
                raise _NotPlainError
            if not header_seen:
                if batch.num_rows == 0:
                    continue
                first_row = [v if v is not None else "" for v in batch.slice(0, 1).to_pylist()[0].values()]
                if [str(v).strip() for v in first_row] != headers:
                    raise _NotPlainError
                batch = batch.slice(1)
                header_seen = True
            pending.append(batch)
            count += batch.num_rows
            while count >= chunk_rows:
                table = pa.Table.from_batches(pending, schema=reader.schema)
                yield _text_frame(table.slice(0, chunk_rows), headers)
                given = True
                rest = table.slice(chunk_rows)
                pending, count = rest.to_batches(), rest.num_rows
        if odd:
            raise _NotPlainError
        if count or not given:  # pandas gives one empty frame for a file of only a header
            yield _text_frame(pa.Table.from_batches(pending, schema=reader.schema), headers)
    except (pa.ArrowException, UnicodeDecodeError, ValueError) as exc:
        raise _NotPlainError from exc


def _text_frame(table: pa.Table, headers: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame({i: pd.array(column.combine_chunks(), dtype="str")
                          for i, column in enumerate(table.columns)})
    frame.columns = pd.Index(headers)
    return frame


def _numbers(first: int, count: int) -> npt.NDArray[np.int64]:
    return np.arange(first, first + count, dtype=np.int64)


def _tell(handle: IO[bytes]) -> Callable[[], int]:
    def position() -> int:
        return 0 if handle.closed else handle.tell()
    return position


# --- Excel ---------------------------------------------------------------------------------

def _cell_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time(0) else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _open_excel(path: Path, chunk_rows: int, mapping: Mapping) -> Source:
    import openpyxl  # local: only Excel files need it
    from openpyxl.utils.exceptions import InvalidFileException

    name = path.name
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise _bad_file(name, f"is not a readable Excel .xlsx workbook ({exc}).",
                        f"no es un libro Excel .xlsx legible ({exc}).") from exc
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    top: list[list[str | None]] = []
    for row in rows:
        top.append([_cell_text(v) for v in row])
        if len(top) >= _HEADER_SCAN_ROWS:
            break
    if not any(any(v for v in row) for row in top):
        book.close()
        raise _bad_file(name, "the first sheet is empty.", "la primera hoja está vacía.", code="empty_file")
    known = {n for names in ROLES.values() for n in names}
    known |= {normalise_header(h) for h in mapping.columns.values()}
    scores = [sum(1 for v in row if v and normalise_header(v) in known) for row in top]
    header_at = int(np.argmax(scores)) if max(scores) > 0 else next(i for i, r in enumerate(top) if any(r))
    width = max(len(r) for r in top)
    headers: list[str] = []
    for j in range(width):
        # Merged header cells keep their text in the top-left cell: look upwards.
        label = next((top[i][j] for i in range(header_at, -1, -1) if j < len(top[i]) and top[i][j]), None)
        headers.append(label or f"column_{j + 1}")
    buffered = top[header_at + 1:]

    def chunks() -> Iterator[Chunk]:
        first = 1
        batch: list[list[str | None]] = []
        try:
            for values in _chain(buffered, ([_cell_text(v) for v in r] for r in rows)):
                batch.append((values + [None] * width)[:width])
                if len(batch) >= chunk_rows:
                    yield _excel_chunk(batch, headers, first)
                    first += len(batch)
                    batch = []
            if batch:
                yield _excel_chunk(batch, headers, first)
        finally:
            book.close()

    return Source(name=name, headers=headers, has_geometry=False, chunks=chunks(),
                  size_bytes=path.stat().st_size, position=lambda: 0)


def _chain(first: list[list[str | None]], rest: Iterator[list[str | None]]) -> Iterator[list[str | None]]:
    yield from first
    yield from rest


def _excel_chunk(batch: list[list[str | None]], headers: list[str], first: int) -> Chunk:
    frame = pd.DataFrame(batch, columns=headers, dtype="str")
    # Keep row numbering, but drop rows that are entirely blank (formatting left in the sheet).
    frame.index = pd.RangeIndex(first, first + len(frame))
    frame = frame[frame.notna().any(axis=1)]
    return Chunk(frame=frame.reset_index(drop=True), rows=frame.index.to_numpy(dtype=np.int64))


# --- GDAL formats --------------------------------------------------------------------------

def _gdal_path(path: Path, max_bytes: int) -> str:
    name = path.name
    suffix = path.suffix.lower()
    if suffix not in (".zip", ".kmz"):
        return str(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile as exc:
        raise _bad_file(name, "is not a valid zip archive.", "no es un archivo zip válido.") from exc
    if unpacked > max_bytes:
        raise _bad_file(
            name, f"unpacks to {unpacked / 1e6:.0f} MB, above the {max_bytes / 1e6:.0f} MB limit; split it.",
            f"descomprimido ocupa {unpacked / 1e6:.0f} MB, más que el límite de {max_bytes / 1e6:.0f} MB; "
            "divídalo.", code="too_large")
    if suffix == ".kmz":
        return str(path)
    shapefiles = [m for m in members if m.lower().endswith(".shp") and not m.startswith("__MACOSX")]
    if not shapefiles:
        raise _bad_file(
            name,
            f"the zip holds no shapefile (.shp); it contains {members[:10]}. Zip the .shp, .shx, "
            ".dbf and .prj files together.",
            f"el zip no contiene ningún shapefile (.shp); contiene {members[:10]}. Comprima juntos "
            "los archivos .shp, .shx, .dbf y .prj.",
            code="no_shapefile",
        )
    stem = shapefiles[0][:-4]
    lower = {m.lower() for m in members}
    lacking = [ext for ext in (".shx", ".dbf") if (stem + ext).lower() not in lower]
    if lacking:
        raise _bad_file(
            name,
            f"the shapefile {shapefiles[0]} lacks its {' and '.join(lacking)} file(s); add them to the zip.",
            f"al shapefile {shapefiles[0]} le faltan los archivos {' y '.join(lacking)}; añádalos al zip.",
            code="no_shapefile",
        )
    return f"/vsizip/{path}/{shapefiles[0]}"


def _open_geo(path: Path, chunk_rows: int, max_bytes: int) -> Source:
    import pyogrio  # local: only the GDAL formats need it (it also loads geopandas)

    name = path.name
    gdal_path = _gdal_path(path, max_bytes)
    options = _open_options(path)
    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(gdal_path)]
        infos = [pyogrio.read_info(gdal_path, layer=layer, **options) for layer in layers]
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise _bad_file(
            name,
            f"cannot be read as {path.suffix.lstrip('.').upper()} ({_gdal_message(exc)}). Check that "
            "the file is complete and valid (for GeoJSON, a FeatureCollection).",
            f"no se puede leer como {path.suffix.lstrip('.').upper()} ({_gdal_message(exc)}). "
            "Compruebe que el archivo está completo y es válido (en GeoJSON, una FeatureCollection).",
        ) from exc
    headers: list[str] = []
    for info in infos:
        headers.extend(str(f) for f in info["fields"] if str(f) not in headers)
    has_geometry = any(info.get("geometry_type") for info in infos)
    done = [0]

    def chunks() -> Iterator[Chunk]:
        first = 1
        for layer, info in zip(layers, infos, strict=True):
            sql = _dates_as_text(layer, info)
            with pyogrio.open_arrow(gdal_path, layer=None if sql else layer, batch_size=chunk_rows,
                                    use_pyarrow=True, datetime_as_string=True, sql=sql,
                                    sql_dialect="OGRSQL" if sql else None, **options) as (meta, reader):
                transform = _to_wgs84(meta.get("crs"))
                for batch in reader:
                    frame, geometry = _arrow_chunk(batch, headers, transform)
                    yield Chunk(frame=frame, rows=_numbers(first, len(frame)), geometry=geometry)
                    first += len(frame)
                    done[0] = first

    return Source(name=name, headers=headers, has_geometry=has_geometry, chunks=chunks(),
                  size_bytes=path.stat().st_size, position=lambda: done[0])


def _open_options(path: Path) -> dict[str, str]:
    """GDAL open options: GeoJSON dates stay the text the office wrote.

    GDAL would otherwise type a ``2024-02-31`` property as a date and hand it over rolled into
    2 March, so an impossible date would be accepted as another day.
    """
    return {"DATE_AS_STRING": "YES"} if path.suffix.lower() in (".geojson", ".json") else {}


def _quoted(name: str) -> str:
    """An OGR SQL identifier (OGR SQL escapes quotes with a backslash, not by doubling them)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dates_as_text(layer: str, info: dict[str, Any]) -> str | None:
    """OGR SQL reading the layer's date fields as the year/month/day stored, or ``None``.

    GeoPackage, Shapefile (DBF) and other typed formats can hold impossible dates such as
    2024-02-31; read as dates they reach Python rolled over (2 March). Cast to text
    (``2024/02/31``) they go through :func:`geodata.ingest.dates.parse_dates` like any other
    text and are rejected as dates that do not exist.
    """
    fields = [str(f) for f in info["fields"]]
    types = [str(t) for t in info.get("ogr_types", [])]
    if "OFTDate" not in types:
        return None
    columns = ", ".join(
        f"CAST({_quoted(f)} AS CHARACTER) AS {_quoted(f)}" if t == "OFTDate" else _quoted(f)
        for f, t in zip(fields, types, strict=True)
    )
    return f"SELECT {columns} FROM {_quoted(layer)}"


def _gdal_message(exc: Exception) -> str:
    return str(exc).replace(" at /vsimem", "").split("\n")[0][:200]


def _to_wgs84(crs: str | None) -> pyproj.Transformer | None:
    if not crs:
        return None
    import pyproj  # local: only layers in another CRS need it

    source = pyproj.CRS.from_user_input(crs)
    if source.equals(pyproj.CRS.from_epsg(4326), ignore_axis_order=True):
        return None
    return pyproj.Transformer.from_crs(source, 4326, always_xy=True)


def _arrow_chunk(
    batch: pa.RecordBatch, headers: list[str], transform: pyproj.Transformer | None
) -> tuple[pd.DataFrame, npt.NDArray[np.object_]]:
    columns: dict[str, Any] = {}
    geometry: npt.NDArray[np.object_] = np.full(batch.num_rows, None, dtype=object)
    for field, column in zip(batch.schema, batch.columns, strict=True):
        extension = (field.metadata or {}).get(b"ARROW:extension:name", b"")
        wkb = pa.types.is_binary(field.type) and field.name.endswith("geometry")
        if extension == b"geoarrow.wkb" or wkb:
            geometry = shapely.from_wkb(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object),
                                        on_invalid="warn")
            continue
        columns[field.name] = pc.cast(column, pa.string())
    frame = pd.DataFrame({h: columns[h].to_pandas() if h in columns else None for h in headers},
                         dtype="str")
    frame = frame.reindex(columns=headers)
    if transform is not None:
        present = np.flatnonzero(pd.notna(geometry))
        geometry[present] = shapely.transform(
            geometry[present], lambda xy: np.column_stack(transform.transform(xy[:, 0], xy[:, 1]))
        )
    return frame, geometry
