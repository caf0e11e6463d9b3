"""Loading a batch: one transaction, rows streamed with COPY, duplicates skipped.

The batch row, its events and its report are written in a single transaction: if the
process is killed or the connection drops, PostgreSQL rolls everything back and nothing of
the batch remains. Rows are streamed chunk by chunk with ``COPY ... FROM STDIN`` (CSV):

* a file smaller than ``ingest_bulk_min_bytes`` goes straight into ``events`` (its shared
  partition), whose indexes and triggers are kept up to date row by row;
* a larger file goes into a new table of its own, ``events_batch_<id>``, created in the
  transaction without indexes (``COPY ... FREEZE``: its rows need no later vacuum to be
  visible), then ``rutas_events_attach`` checks it, counts its cells and attaches it to
  ``events``, building the indexes in one sorted pass each (migration 0011).

Before each chunk is copied, its dedupe keys ``(owner_country, source, dedupe_key)`` are looked
up in the store and among the batch's earlier chunks (the transaction sees its own writes); a
transaction-level advisory lock per source keeps two loaders of one source from racing.
Loading the same records again adds nothing and counts them as duplicates.
"""

from __future__ import annotations

import io
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection, Engine

from geodata.countries import load_countries
from geodata.db import Scope, scoped
from geodata.errors import InputError, Problem, RutasError
from geodata.ingest import text as texts
from geodata.ingest.columns import read_mapping, recognise
from geodata.ingest.readers import Source, open_source, scan_file
from geodata.ingest.validate import STAGE_COLUMNS, Context, check_chunk
from geodata.settings import Settings
from geodata.tables import EVENT_KINDS

log = logging.getLogger(__name__)

OnLoaded = Callable[[Connection, int], None]
Progress = Callable[[int, int], None]

_COLUMN_LIST = sql.SQL(", ").join(map(sql.Identifier, (*STAGE_COLUMNS, "batch_id")))
#: Into the shared partition through ``events``, or (FREEZE) into a bulk batch's own new table.
_COPY = sql.SQL("COPY {table} ({columns}) FROM STDIN (FORMAT csv{freeze})")
#: Keys of a chunk already in ``table``: the store through ``events`` (this batch's earlier
#: chunks included, as own writes, when they go to the shared partition), or a bulk batch's table.
_EXISTING = sql.SQL("""
SELECT k.owner, k.key FROM unnest(%s::char(3)[], %s::text[]) AS k(owner, key)
JOIN {table} e ON e.owner_country = k.owner AND e.source = %s AND e.dedupe_key = k.key
""")
#: A bulk batch's table has no index until it is attached: its lookups must hash, not loop.
_NO_NESTED_LOOP = "SELECT set_config('enable_nestloop', %s, true)"
_CSV_OPTIONS = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


@dataclass
class BatchReport:
    """What happened to one file or feature collection.

    ``errors`` lists every rejected value (file, row, field, value, reason in English and
    Spanish); ``notes`` lists what was accepted but should be known (ambiguous dates read
    day-first, repaired coordinates). ``rejected`` counts rows, not problems.
    """

    batch_id: int | None
    file: str
    rows_read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    fixed: int = 0
    sha256: str = ""
    seconds: float = 0.0
    errors_total: int = 0

    def as_record(self) -> dict[str, Any]:
        """The JSON object ``rutas ingest --json`` prints for this batch."""
        return {
            "batch_id": self.batch_id,
            "file": self.file,
            "sha256": self.sha256,
            "rows_read": self.rows_read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "fixed": self.fixed,
            "errors_total": self.errors_total,
            "errors": [p.as_record() for p in self.errors],
            "notes": [p.as_record() for p in self.notes],
            "seconds": round(self.seconds, 3),
        }


def _check_options(kind: str, owner_country: str | None) -> None:
    if kind not in EVENT_KINDS:
        raise InputError(
            f"Unknown kind {kind!r}: use one of {', '.join(EVENT_KINDS)}.",
            f"Tipo {kind!r} desconocido: use uno de {', '.join(EVENT_KINDS)}.",
            code="bad_kind",
        )
    if owner_country is not None and (len(owner_country) != 3 or not owner_country.isalpha()
                                      or not owner_country.isupper()):
        raise InputError(
            f"The country {owner_country!r} is not an ISO 3166-1 alpha-3 code such as MEX or COL.",
            f"El país {owner_country!r} no es un código ISO 3166-1 alfa-3 como MEX o COL.",
            code="bad_country",
        )


def ingest_file(
    engine: Engine,
    path: Path | str,
    *,
    settings: Settings,
    kind: str,
    owner_country: str | None,
    source: str | None = None,
    mapping: Path | str | None = None,
    strict: bool = False,
    fix_coordinates: bool = False,
    loaded_by: str = "cli",
    on_loaded: OnLoaded | None = None,
    progress: Progress | None = None,
    display_name: str | None = None,
) -> BatchReport:
    """Validate and load one file of records as one batch (all or nothing).

    Parameters
    ----------
    engine
        Engine of the store.
    path
        CSV, Excel (.xlsx), GeoJSON, GeoPackage, KML/KMZ or zipped Shapefile. Coordinates are
        read as decimal degrees (EPSG:4326) or reprojected from the layer's CRS.
    kind
        ``incident``, ``interception`` or ``victim_identification``.
    owner_country
        ISO3 of the reporting office; ``None`` takes each row's location country.
    source
        Name of the source system; records are unique per (owner, source, record id or
        content hash). Defaults to the kind, so re-uploading a corrected file of the same
        office adds only what is new.
    mapping
        Optional JSON mapping file (see :mod:`geodata.ingest.columns`).
    strict
        Refuse the whole file when any row has a problem.
    fix_coordinates
        Repair points that are probably swapped or lost a minus sign, and record the repair.
    on_loaded
        Called as ``on_loaded(conn, batch_id)`` inside the transaction after the rows are stored.
    progress
        Called as ``progress(done, total)`` while reading (bytes or features).
    display_name
        Name used for the file in reports and messages (default: the file's name).

    Raises
    ------
    InputError
        When the file cannot be read at all, or in ``strict`` mode when any row is rejected
        (``problems`` lists them); nothing is stored then.
    """
    file_path = Path(path)
    _check_options(kind, owner_country)
    if not file_path.is_file():
        raise InputError(f"{file_path}: file not found.", f"{file_path}: no se encuentra el archivo.",
                         code="not_found")
    size = file_path.stat().st_size
    if size > settings.ingest_max_file_bytes:
        raise InputError(
            f"{file_path.name}: the file is {size / 1e6:.0f} MB, above the limit of "
            f"{settings.ingest_max_file_bytes / 1e6:.0f} MB. Split it into smaller files.",
            f"{file_path.name}: el archivo pesa {size / 1e6:.0f} MB, más que el límite de "
            f"{settings.ingest_max_file_bytes / 1e6:.0f} MB. Divídalo en archivos más pequeños.",
            code="too_large",
        )
    sha256, encoding = scan_file(file_path)
    mapping_spec = read_mapping(Path(mapping) if mapping is not None else None)
    opened = open_source(file_path, encoding=encoding, chunk_rows=settings.ingest_chunk_rows,
                         mapping=mapping_spec, max_bytes=settings.ingest_max_file_bytes)
    if display_name:
        opened.name = display_name
    columns = recognise(opened.headers, mapping_spec, file=opened.name, has_geometry=opened.has_geometry)
    ctx = Context(
        file=opened.name, kind=kind, owner_country=owner_country, source=source or kind, columns=columns,
        countries=load_countries(settings), fix_coordinates=fix_coordinates,
        earliest_year=settings.earliest_event_year,
        max_km_outside_country=settings.ingest_max_km_outside_country,
        border_tolerance_km=settings.ingest_border_tolerance_km,
        sea_tolerance_km=settings.ingest_sea_tolerance_km,
    )
    return _load(engine, opened, ctx, sha256=sha256, strict=strict, loaded_by=loaded_by,
                 on_loaded=on_loaded, progress=progress, max_problems=settings.ingest_max_reported_problems,
                 bulk=size >= settings.ingest_bulk_min_bytes)


@dataclass
class _Dedupe:
    """Finds duplicates of a batch's rows: earlier in the batch, or already in the store.

    :meth:`screen` (cheap, in the reading thread) drops repeats inside a chunk and marks the
    rows to look up; :meth:`drop_stored` (on the connection) looks them up exactly. Only keys
    whose 64-bit hash matches a key of the batch's earlier chunks are looked up among those
    chunks; in the store, every key is looked up when the store held records of the source
    before the batch, none otherwise (so a first load pays no lookup per row).
    """

    source: str
    store_has_source: bool
    #: The bulk batch's own table (``events_batch_<id>``), or None when rows go to ``events``.
    table: str | None = None
    seen: npt.NDArray[np.uint64] = field(default_factory=lambda: np.empty(0, dtype=np.uint64))

    def screen(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, npt.NDArray[np.bool_]]:
        """Rows without in-chunk repeats, and which of them to look up among earlier chunks."""
        joined = texts.series(pc.binary_join_element_wise(
            texts.arrow(rows["owner_country"]), texts.arrow(rows["dedupe_key"]),
            pa.scalar("\x1f", pa.large_string())))
        # Codes number the distinct keys in order of first appearance, so the distinct keys are
        # the kept rows' keys in order, and a row is a first occurrence where its code is new.
        codes, distinct = pd.factorize(joined, use_na_sentinel=False)
        running = np.maximum.accumulate(codes)
        first = np.ones(len(codes), dtype=bool)
        first[1:] = codes[1:] > running[:-1]
        if not first.all():
            rows = rows[first]
        hashes = pd.util.hash_array(distinct.array if isinstance(distinct, pd.Index) else distinct)
        if len(self.seen):
            at = np.clip(np.searchsorted(self.seen, hashes), 0, len(self.seen) - 1)
            earlier = self.seen[at] == hashes
        else:
            earlier = np.zeros(len(rows), dtype=bool)
        # Merge the sorted hashes in (timsort merges two sorted runs in linear time).
        merged = np.concatenate([self.seen, np.sort(hashes)])
        merged.sort(kind="stable")
        self.seen = merged
        return rows, earlier

    def drop_stored(self, cursor: Any, rows: pd.DataFrame, earlier: npt.NDArray[np.bool_]) -> pd.DataFrame:
        """The rows whose key is neither in the store nor in the batch's earlier chunks."""
        everything = np.ones(len(rows), dtype=bool)
        # (table, rows to look up in it, whether it is the bulk batch's own table without indexes)
        lookups: list[tuple[str, npt.NDArray[np.bool_], bool]] = []
        if self.table is None:
            lookups.append(("events", everything if self.store_has_source else earlier, False))
        else:
            if self.store_has_source:
                lookups.append(("events", everything, False))
            lookups.append((self.table, earlier, True))
        keep = np.ones(len(rows), dtype=bool)
        for table, ask, bulk in lookups:
            if not ask.any():
                continue
            asked = rows[ask]
            if bulk:
                cursor.execute(_NO_NESTED_LOOP, ("off",))
            cursor.execute(_EXISTING.format(table=sql.Identifier(table)), (
                asked["owner_country"].tolist(), asked["dedupe_key"].tolist(), self.source))
            found = cursor.fetchall()
            if bulk:
                cursor.execute(_NO_NESTED_LOOP, ("on",))
            if found:
                keys = pd.MultiIndex.from_arrays([asked["owner_country"], asked["dedupe_key"]])
                keep[np.flatnonzero(ask)[keys.isin(pd.MultiIndex.from_tuples(found))]] = False
        return rows if keep.all() else rows[keep]


def _copy_rows(cursor: Any, rows: pd.DataFrame, batch_id: int, table: str | None = None) -> None:
    """COPY ``rows`` into ``events``, or into the bulk batch's own ``table`` (with FREEZE)."""
    frame = pa.Table.from_pandas(rows.assign(batch_id=batch_id), preserve_index=False)
    buffer = io.BytesIO()
    pa_csv.write_csv(frame, buffer, _CSV_OPTIONS)
    statement = _COPY.format(table=sql.Identifier(table or "events"), columns=_COLUMN_LIST,
                             freeze=sql.SQL(", FREEZE" if table else ""))
    with cursor.copy(statement) as copy:
        copy.write(buffer.getbuffer())


class _Writer:
    """Stores checked chunks on a second thread while the next chunk is read and checked.

    The database applies a chunk (index upkeep) while Python parses the next one; at most two
    chunks wait in the queue, so memory stays bounded. The thread owns the connection until
    the context ends; an error on it is raised again in the caller's thread.
    """

    def __init__(self, cursor: Any, dedupe: _Dedupe, report: BatchReport) -> None:
        self.cursor = cursor
        self.dedupe = dedupe
        self.report = report
        self.queue: queue.Queue[tuple[pd.DataFrame, npt.NDArray[np.bool_]] | None] = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        # Counted on the writer's thread, added to the report once it has finished.
        self.accepted = 0
        self.stored_duplicates = 0
        self.thread = threading.Thread(target=self._run, name="rutas-ingest-copy", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def put(self, rows: pd.DataFrame) -> None:
        """Queue a chunk's rows (raises the writer's error, if it failed)."""
        fresh, ask = self.dedupe.screen(rows)
        self.report.duplicates += len(rows) - len(fresh)
        while True:
            self._raise()
            try:
                self.queue.put((fresh, ask), timeout=0.5)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                rows, ask = item
                fresh = self.dedupe.drop_stored(self.cursor, rows, ask)
                self.stored_duplicates += len(rows) - len(fresh)
                if len(fresh):
                    _copy_rows(self.cursor, fresh, int(self.report.batch_id or 0), self.dedupe.table)
                    self.accepted += len(fresh)
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
            while self.queue.get() is not None:  # let the producer finish
                pass

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()
        if kind is None:
            self._raise()
        self.report.accepted += self.accepted
        self.report.duplicates += self.stored_duplicates


def _load(engine: Engine, opened: Source, ctx: Context, *, sha256: str, strict: bool, loaded_by: str,
          on_loaded: OnLoaded | None, progress: Progress | None, max_problems: int,
          bulk: bool = False) -> BatchReport:
    started = time.perf_counter()
    report = BatchReport(batch_id=None, file=opened.name, sha256=sha256)
    ambiguous: list[int] = []
    ambiguous_total = 0
    unknown_countries: dict[str, int] = {}
    try:
        with scoped(engine, Scope(role="system", country=ctx.owner_country, user=loaded_by)) as conn:
            conn.execute(sa.text("SELECT set_config('application_name', 'rutas ingest', true)"))
            batch_id = conn.execute(
                sa.text("INSERT INTO ingest_batches "
                        "(file_name, sha256, kind, owner_country, source, loaded_by) "
                        "VALUES (:file, :sha, :kind, :owner, :source, :by) RETURNING id"),
                {"file": opened.name, "sha": sha256, "kind": ctx.kind, "owner": ctx.owner_country,
                 "source": ctx.source, "by": loaded_by},
            ).scalar_one()
            report.batch_id = int(batch_id)
            # One loader per source at a time: the duplicate check below then stays exact.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:source, 0))"),
                         {"source": ctx.source})
            # Only the owners this batch can write matter: a few probes of event_sources (the
            # pairs each partition holds, migration 0011) say whether the store has the source.
            owners = ([ctx.owner_country] if ctx.owner_country is not None
                      else sorted({str(code) for code in ctx.countries.codes if code}))
            dedupe = _Dedupe(source=ctx.source, store_has_source=bool(conn.execute(
                sa.text("SELECT EXISTS (SELECT 1 FROM event_sources WHERE source = :source "
                        "AND owner_country = ANY (CAST(:owners AS char(3)[])))"),
                {"source": ctx.source, "owners": owners}).scalar()))
            if bulk:
                dedupe.table = conn.execute(sa.text("SELECT CAST(rutas_events_part_create(:id) AS text)"),
                                            {"id": report.batch_id}).scalar_one()
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            with _Writer(cursor, dedupe, report) as writer:
                for chunk in opened.chunks:
                    checked = check_chunk(chunk, ctx)
                    report.rows_read += len(chunk.frame) + len(chunk.skipped)
                    report.rejected += checked.rejected
                    report.fixed += checked.fixed
                    report.errors_total += len(checked.problems)
                    room = max_problems - len(report.errors)
                    report.errors.extend(checked.problems[:max(room, 0)])
                    ambiguous_total += len(checked.ambiguous_rows)
                    for name, count in checked.unknown_countries.items():
                        unknown_countries[name] = unknown_countries.get(name, 0) + count
                    ambiguous.extend(checked.ambiguous_rows[:max(20 - len(ambiguous), 0)])
                    writer.put(checked.rows)
                    if progress is not None:
                        progress(opened.position(), opened.size_bytes)
            if report.rows_read == 0:
                raise InputError(
                    f"{opened.name}: the file has a header but no data rows.",
                    f"{opened.name}: el archivo tiene encabezado pero ninguna fila de datos.",
                    code="no_rows",
                )
            if strict and report.rejected:
                raise InputError(
                    f"{opened.name}: {report.rejected} of {report.rows_read} rows have problems; with "
                    "--strict nothing was loaded. Correct them, or load without --strict to keep the "
                    "good rows.",
                    f"{opened.name}: {report.rejected} de {report.rows_read} filas tienen problemas; con "
                    "--strict no se cargó nada. Corríjalas, o cargue sin --strict para guardar las "
                    "filas buenas.",
                    code="strict_rejected",
                    problems=report.errors,
                )
            if dedupe.table is not None:
                # Checked, counted and attached with its indexes built in bulk; an empty one is dropped.
                conn.execute(sa.text("SELECT rutas_events_attach(:id)") if report.accepted else
                             sa.text(f'DROP TABLE "{dedupe.table}"'), {"id": report.batch_id})
            report.notes = _notes(opened.name, ctx, ambiguous, ambiguous_total, report, unknown_countries)
            report.seconds = time.perf_counter() - started
            conn.execute(
                sa.text("UPDATE ingest_batches SET rows_read = :read, accepted = :accepted, "
                        "rejected = :rejected, duplicates = :dups, report = CAST(:report AS jsonb) "
                        "WHERE id = :id"),
                {"read": report.rows_read, "accepted": report.accepted, "rejected": report.rejected,
                 "dups": report.duplicates, "report": json.dumps(report.as_record(), ensure_ascii=False),
                 "id": report.batch_id},
            )
            if on_loaded is not None:
                on_loaded(conn, report.batch_id)
    except (sa.exc.OperationalError, psycopg.OperationalError) as exc:
        raise RutasError(
            f"{opened.name}: the connection to the database was lost while loading; nothing of this "
            "file was stored. Load it again.",
            f"{opened.name}: se perdió la conexión con la base de datos durante la carga; no se guardó "
            "nada de este archivo. Cárguelo de nuevo.",
            code="db_lost",
        ) from exc
    except (sa.exc.DBAPIError, psycopg.Error) as exc:
        # The internal message goes to the log only; the user gets what happened and what to do.
        log.error("batch of %s refused by the database: %s", opened.name, type(exc).__name__)
        raise RutasError(
            f"{opened.name}: the database refused the batch; nothing of this file was stored. Try "
            "again, and tell the administrator if it happens again.",
            f"{opened.name}: la base de datos rechazó el lote; no se guardó nada de este archivo. "
            "Inténtelo de nuevo y avise al administrador si se repite.",
            code="db_error",
        ) from exc
    log.info("batch %s: %s read, %s accepted, %s rejected, %s duplicates in %.1f s", report.batch_id,
             report.rows_read, report.accepted, report.rejected, report.duplicates, report.seconds)
    return report


def _notes(file: str, ctx: Context, ambiguous: list[int], total: int, report: BatchReport,
           unknown_countries: dict[str, int]) -> list[Problem]:
    notes: list[Problem] = []
    if total:
        first = "day-first" if ctx.columns.date_order == "dmy" else ctx.columns.date_order
        notes.append(Problem(
            file=file, row=ambiguous[0], field=ctx.columns.get("date") or "date",
            value=f"{total} rows, e.g. rows {', '.join(map(str, ambiguous[:10]))}",
            reason=f"{total} dates such as 03/04/2021 could be day/month or month/day; they were read "
                   f"{first} (3 April 2021). If the file is month-first, load it with a mapping file "
                   'that says "date_order": "mdy".',
            reason_es=f"{total} fechas como 03/04/2021 podían ser día/mes o mes/día; se leyeron con el "
                      "día primero (3 de abril de 2021). Si el archivo pone el mes primero, cárguelo con "
                      'un archivo de correspondencias que diga "date_order": "mdy".',
            code="ambiguous_date",
        ))
    if unknown_countries:
        rows = sum(unknown_countries.values())
        names = sorted(unknown_countries, key=lambda k: -unknown_countries[k])[:10]
        notes.append(Problem(
            file=file, row=None, field=ctx.columns.get("country") or "country", value=", ".join(names),
            reason=f"{rows} rows name a country that was not recognised ({', '.join(names)}); their "
                   "location country was taken from the point. Write the country's name in Spanish, "
                   "Portuguese or English, or its ISO3 code.",
            reason_es=f"{rows} filas nombran un país que no se reconoció ({', '.join(names)}); su país "
                      "de ubicación se tomó del punto. Escriba el nombre del país en español, portugués "
                      "o inglés, o su código ISO3.",
            code="unknown_country",
        ))
    if report.fixed:
        notes.append(Problem(
            file=file, row=None, field="coordinates", value=str(report.fixed),
            reason=f"{report.fixed} points were repaired (swapped or lost minus sign); each repair is "
                   "recorded in the event's coordinate_fix.",
            reason_es=f"Se repararon {report.fixed} puntos (intercambiados o sin signo menos); cada "
                      "reparación queda registrada en coordinate_fix del evento.",
            code="coordinates_fixed",
        ))
    return notes
