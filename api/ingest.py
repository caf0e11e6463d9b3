"""Loading records over HTTP: OGC API Part 4 create on ``events`` and multipart file upload.

Both call the same functions as ``rutas ingest`` (:func:`geodata.ingest.ingest_features` and
:func:`geodata.ingest.ingest_file`), so a row is accepted or refused for the same reason
whichever way it arrives, and both answer with the same batch report. A steward loads for its
own country only; an administrator names the country (or lets each row's location decide).
Batch reports are read back under row-level security (own country only).
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse

from api import audit
from api.auth import Principal, forbidden
from api.deps import PrincipalDep, StateDep
from geodata.db import scoped
from geodata.errors import InputError, RutasError
from geodata.ingest import BatchReport, ingest_features, ingest_file
from routes.alerts import on_loaded as alert_hook

router = APIRouter()

LOADERS = frozenset({"admin", "steward"})
#: File types ``rutas ingest`` reads; the upload keeps only this suffix of the client's file name.
SUFFIXES = (".csv", ".txt", ".tsv", ".xlsx", ".geojson", ".json", ".gpkg", ".kml", ".kmz", ".zip")
_CHUNK = 1024 * 1024


def _owner(principal: Principal, country: str | None) -> str | None:
    if principal.role not in LOADERS:
        raise forbidden(
            f"Role {principal.role} cannot load records: only stewards and administrators can.",
            f"El rol {principal.role} no puede cargar registros: sólo custodios y administradores.")
    if principal.role == "steward":
        if country and country.upper() != principal.country:
            raise forbidden(
                f"A steward of {principal.country} loads records for {principal.country} only.",
                f"Un custodio de {principal.country} sólo carga registros de {principal.country}.")
        return principal.country
    return country.upper() if country else None


def _answer(state: StateDep, principal: Principal, report: BatchReport, action: str) -> JSONResponse:
    with scoped(state.engine, principal.scope()) as conn:
        audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                    action=action, collection="events", filters={"batch_id": report.batch_id},
                    records=report.accepted)
    return JSONResponse(report.as_record(), status_code=201)


KindQ = Annotated[str, Query(description="incident, interception or victim_identification")]
SourceQ = Annotated[str | None, Query(description="Source system name (dedupe scope)")]
CountryQ = Annotated[str | None, Query(description="Owner ISO3 (administrators only)")]


@router.post("/collections/events/items", tags=["OGC API"], status_code=201,
             summary="Create events (one Feature or a FeatureCollection)")
def create_events(state: StateDep, principal: PrincipalDep,
                  body: Annotated[dict[str, Any], Body(description="GeoJSON Feature or FeatureCollection")],
                  kind: KindQ, source: SourceQ = None, country: CountryQ = None,
                  strict: bool = False) -> JSONResponse:
    """Validate and load features exactly like a file; answers 201 with the batch report."""
    owner = _owner(principal, country)
    if body.get("type") == "Feature":
        body = {"type": "FeatureCollection", "features": [body]}
    report = ingest_features(state.engine, body, settings=state.settings, name="request body", kind=kind,
                             owner_country=owner, source=source, strict=strict, loaded_by=principal.subject,
                             on_loaded=alert_hook)
    return _answer(state, principal, report, "create")


def _safe_name(name: str | None) -> tuple[str, str]:
    base = Path(name or "upload").name
    suffix = "".join(Path(base).suffixes[-1:]).lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{base}: files of type {suffix or '(none)'} cannot be loaded; use one of "
                         f"{', '.join(SUFFIXES)}.",
                         f"{base}: los archivos de tipo {suffix or '(ninguno)'} no se pueden cargar; use "
                         f"uno de {', '.join(SUFFIXES)}.", code="bad_file")
    return re.sub(r"[^\w.\- ]", "_", base)[:200], suffix


@router.post("/ingest", tags=["Ingest"], status_code=201, summary="Upload a file of records")
def upload(state: StateDep, principal: PrincipalDep, file: Annotated[UploadFile, File()],
           kind: Annotated[str, Form()], source: Annotated[str | None, Form()] = None,
           country: Annotated[str | None, Form()] = None, strict: Annotated[bool, Form()] = False,
           fix_coordinates: Annotated[bool, Form()] = False) -> JSONResponse:
    """Validate and load an uploaded CSV, Excel, GeoJSON, GeoPackage, KML or zipped Shapefile."""
    owner = _owner(principal, country)
    name, suffix = _safe_name(file.filename)
    limit = state.settings.api_max_upload_bytes
    with tempfile.TemporaryDirectory(prefix="rutas-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        written = 0
        with path.open("wb") as handle:
            while chunk := file.file.read(_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise RutasError(f"{name}: the upload is larger than {limit:,} bytes. Split the file.",
                                     f"{name}: la carga supera {limit:,} bytes. Divida el archivo.",
                                     code="too_large")
                handle.write(chunk)
        report = ingest_file(state.engine, path, settings=state.settings, kind=kind, owner_country=owner,
                             source=source, strict=strict, fix_coordinates=fix_coordinates,
                             loaded_by=principal.subject, display_name=name, on_loaded=alert_hook)
    return _answer(state, principal, report, "upload")


@router.get("/ingest/batches", tags=["Ingest"], summary="Batches the caller's country loaded")
def batches(state: StateDep, principal: PrincipalDep,
            limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """The latest batches visible to the caller (own country; all for administrators), newest first."""
    with scoped(state.engine, principal.scope()) as conn:
        rows = conn.execute(sa.text(
            "SELECT id, file_name, kind, owner_country, source, rows_read, accepted, rejected, duplicates, "
            "loaded_by, loaded_at FROM ingest_batches ORDER BY id DESC LIMIT :n"),
            {"n": limit}).mappings().all()
    return {"batches": [{**row, "loaded_at": row["loaded_at"].isoformat()} for row in rows]}


@router.get("/ingest/batches/{batch_id}", tags=["Ingest"], summary="One batch report")
def batch(batch_id: int, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    """The stored report of one batch (404 when it does not exist or belongs to another country)."""
    if not 0 < batch_id < 2**63:
        raise RutasError(f"Batch {batch_id} does not exist.", f"El lote {batch_id} no existe.",
                         code="not_found")
    with scoped(state.engine, principal.scope()) as conn:
        report = conn.execute(sa.text("SELECT report FROM ingest_batches WHERE id = :id"),
                              {"id": batch_id}).scalar_one_or_none()
        # A report quotes refused values row by row: reading it is a read of record-level data.
        audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                    action="batch_report", collection="ingest_batches", filters={"batch_id": batch_id},
                    records=0 if report is None else 1)
    if report is None:
        raise RutasError(f"Batch {batch_id} does not exist or is outside your scope.",
                         f"El lote {batch_id} no existe o está fuera de su alcance.", code="not_found")
    result: dict[str, Any] = report
    return result
