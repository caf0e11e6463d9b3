"""One table from error codes to HTTP status and OGC exception JSON, and the handlers that use it.

A response says what went wrong and how to fix it, in English and Spanish, from the same
:class:`~geodata.errors.RutasError` the CLI prints; internals (SQL, stack traces) are logged,
never sent.
"""

from __future__ import annotations

import logging

import psycopg
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import html
from geodata.errors import InputError, RutasError

log = logging.getLogger("rutas.api")

#: RutasError.code -> (HTTP status, OGC exception code).
STATUS: dict[str, tuple[int, str]] = {
    "unauthorized": (401, "Unauthorized"),
    "forbidden": (403, "Forbidden"),
    "not_found": (404, "NotFound"),
    "bad_filter": (400, "InvalidParameterValue"),
    "bad_parameter": (400, "InvalidParameterValue"),
    "invalid": (400, "InvalidParameterValue"),
    "too_large": (413, "PayloadTooLarge"),
    "rate_limited": (429, "TooManyRequests"),
    "db_unreachable": (503, "ServiceUnavailable"),
    "unavailable": (503, "ServiceUnavailable"),
    "db_lost": (503, "ServiceUnavailable"),
}


def status_of(error: RutasError) -> tuple[int, str]:
    """HTTP status and OGC code of an error: from the table, else 400 for input, 500 otherwise."""
    if error.code in STATUS:
        return STATUS[error.code]
    if isinstance(error, InputError):
        return 400, "InvalidParameterValue"
    return 500, "ServerError"


def problem_response(status: int, code: str, description: str, description_es: str,
                     problems: list[dict[str, object]] | None = None) -> JSONResponse:
    """An OGC API exception body (``code``, ``description``) plus the Spanish text and row problems."""
    body: dict[str, object] = {"code": code, "description": description, "description_es": description_es}
    if problems:
        body["problems"] = problems
    headers = {"WWW-Authenticate": 'Bearer realm="rutas"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""

    @app.exception_handler(RutasError)
    async def _rutas(request: Request, exc: RutasError) -> Response:
        status, code = status_of(exc)
        if status >= 500:
            log.error("request failed: %s (%s)", exc.code, exc.message)
        if html.wants_html(request):  # a browser reading the HTML pages gets an error page
            headers = {"WWW-Authenticate": 'Bearer realm="rutas"'} if status == 401 else None
            return html.error_page(request, status, exc.message, exc.message_es, headers)
        return problem_response(status, code, exc.message, exc.message_es,
                                [p.as_record() for p in exc.problems[:1000]])

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:10]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
            parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
        detail = "; ".join(parts)
        return problem_response(400, "InvalidParameterValue", f"Invalid request: {detail}.",
                                f"Petición no válida: {detail}.")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return problem_response(404, "NotFound", "There is nothing at this address.",
                                    "No hay nada en esta dirección.")
        if exc.status_code == 405:
            return problem_response(405, "MethodNotAllowed", "This method is not allowed here.",
                                    "Este método no se admite aquí.")
        return problem_response(exc.status_code, "Error", str(exc.detail), str(exc.detail))

    @app.exception_handler(sa.exc.OperationalError)
    async def _database(_: Request, exc: sa.exc.OperationalError) -> JSONResponse:
        if isinstance(exc.orig, psycopg.errors.QueryCanceled):
            return problem_response(
                503, "ServiceUnavailable",
                "The request took longer than the database allows (30 s): narrow the bbox, the period, "
                "the filter or the limit.",
                "La petición tardó más de lo que permite la base de datos (30 s): reduzca el bbox, el "
                "periodo, el filtro o el límite.")
        log.error("database unavailable: %s", type(exc.orig).__name__)
        return problem_response(503, "ServiceUnavailable",
                                "The database is not answering; try again in a moment.",
                                "La base de datos no responde; inténtelo de nuevo en un momento.")

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error: %s", type(exc).__name__)
        return problem_response(500, "ServerError",
                                "The server failed to answer; the error was logged. Try again later.",
                                "El servidor no pudo responder; el error quedó registrado. "
                                "Inténtelo más tarde.")
