"""The audit trail: who read which record-level data, when, with what filter and how many records.

Rows go to ``audit_log``, which the app role can only insert into; a trigger chains each row to
the previous one with SHA-256 (``hash = sha256(canonical(row))``, the canonical text including
the previous row's hash, in ``seq`` order, numbered under a lock). :func:`verify_chain` recomputes
every hash here, in Python, so an edited row or a deleted one breaks the chain where it happened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from geodata.db import SYSTEM, scoped

GENESIS = "0" * 64


def write(conn: Connection, *, who: str, role: str, country: str | None, action: str, collection: str,
          filters: dict[str, Any], records: int) -> None:
    """Append one audit row in the caller's transaction (so data never leaves unaudited)."""
    conn.execute(
        sa.text("INSERT INTO audit_log (who, role, country, action, collection, filter, records) "
                "VALUES (:who, :role, :country, :action, :collection, CAST(:filter AS jsonb), :records)"),
        {"who": who, "role": role, "country": country, "action": action, "collection": collection,
         "filter": json.dumps(filters, default=str, sort_keys=True), "records": records},
    )


def audited_query(page_sql: str, *, who: str, role: str, country: str | None, action: str, collection: str,
                  filters: dict[str, Any], max_records: int) -> tuple[str, dict[str, Any]]:
    """``page_sql`` (columns ``feature``, ``fid``) with its audit row written by the same statement.

    The insert is a data-modifying CTE over the page, so the read and its audit row are one
    round trip in one transaction; ``records`` counts at most ``max_records`` rows of the page.
    """
    sql = (f"WITH page AS ({page_sql}), audit AS ("
           "INSERT INTO audit_log (who, role, country, action, collection, filter, records) "
           "SELECT :audit_who, :audit_role, :audit_country, :audit_action, :audit_collection, "
           "CAST(:audit_filter AS jsonb), least(count(*), :audit_max) FROM page) "
           "SELECT feature, fid FROM page ORDER BY fid")
    params = {"audit_who": who, "audit_role": role, "audit_country": country, "audit_action": action,
              "audit_collection": collection,
              "audit_filter": json.dumps(filters, default=str, sort_keys=True), "audit_max": max_records}
    return sql, params


@dataclass(frozen=True)
class ChainReport:
    """Result of :func:`verify_chain`: rows checked and the first broken row, if any."""

    rows: int
    ok: bool
    broken_id: int | None = None
    reason: str = ""
    reason_es: str = ""

    def as_record(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return {"rows": self.rows, "ok": self.ok, "broken_id": self.broken_id, "reason": self.reason,
                "reason_es": self.reason_es}


def _canonical(row: Any) -> str:
    # Must match rutas_audit_canonical() of migration 0003, field by field.
    return "|".join([
        row.prev_hash, str(row.seq), str(row.id), row.at_text, row.who, row.role, (row.country or ""),
        row.action, row.collection, row.filter_text, str(row.records),
    ])


def verify_chain(engine: Engine, batch_rows: int = 10_000) -> ChainReport:
    """Recompute the audit chain from its first row; report the first row that does not fit.

    An edited row no longer hashes to its stored hash; a deleted row leaves the next row's
    ``prev_hash`` pointing at nothing that precedes it.
    """
    expected_prev = GENESIS
    checked = 0
    last_seq = 0
    with scoped(engine, SYSTEM) as conn:
        while True:
            rows = conn.execute(
                sa.text("SELECT seq, id, prev_hash, hash, who, role, country, action, collection, records, "
                        "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS at_text, "
                        "filter::text AS filter_text FROM audit_log WHERE seq > :after "
                        "ORDER BY seq LIMIT :n"),
                {"after": last_seq, "n": batch_rows},
            ).all()
            if not rows:
                break
            for row in rows:
                if row.seq != last_seq + 1 or row.prev_hash != expected_prev:
                    return ChainReport(
                        checked, False, row.id,
                        f"row {row.id} does not follow the row before it: a row was deleted or inserted",
                        f"la fila {row.id} no sigue a la anterior: se borró o insertó una fila",
                    )
                digest = hashlib.sha256(_canonical(row).encode()).hexdigest()
                if digest != row.hash:
                    return ChainReport(
                        checked, False, row.id,
                        f"row {row.id} was changed after it was written (its hash does not match)",
                        f"la fila {row.id} se modificó después de escribirse (su hash no coincide)",
                    )
                expected_prev = row.hash
                checked += 1
                last_seq = row.seq
    return ChainReport(checked, True)
