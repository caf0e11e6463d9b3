"""Small helpers shared by the ingest tests: write files, count what a batch stored."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.ingest import BatchReport, ingest_file
from geodata.settings import Settings

#: Real places (lat, lon) in EPSG:4326 degrees.
MEXICO_CITY = (19.4326, -99.1332)
TAPACHULA = (14.9054, -92.2630)
CIUDAD_JUAREZ = (31.6904, -106.4245)
BOGOTA = (4.7110, -74.0721)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` in ``encoding`` (newlines kept as given)."""
    path.write_bytes(text.encode(encoding))
    return path


def load(engine: Engine, settings: Settings, path: Path, **options: Any) -> BatchReport:
    """Ingest ``path`` as Mexican incidents unless options say otherwise."""
    options.setdefault("kind", "incident")
    options.setdefault("owner_country", "MEX")
    return ingest_file(engine, path, settings=settings, **options)


def stored(engine: Engine, source: str) -> list[dict[str, Any]]:
    """Events of ``source`` in the store, with lon/lat, ordered by batch and source row."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT *, ST_X(geom) AS lon, ST_Y(geom) AS lat FROM events "
            "WHERE source = :source ORDER BY batch_id, source_row"), {"source": source}).mappings().all()
    return [dict(r) for r in rows]


def count(engine: Engine, table: str, source: str) -> int:
    """Rows of ``source`` in ``events`` or ``ingest_batches``."""
    assert table in ("events", "ingest_batches")
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE source = :source"),
                                {"source": source}).scalar_one())


def codes(report: BatchReport) -> dict[int | None, set[str]]:
    """Problem codes per row of a report."""
    out: dict[int | None, set[str]] = {}
    for p in report.errors:
        out.setdefault(p.row, set()).add(p.code)
    return out


def unique_source(name: str) -> str:
    """A source name no other test uses (tests share one database per run)."""
    return f"{name}-{uuid.uuid4().hex[:8]}"
