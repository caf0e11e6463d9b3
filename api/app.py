"""The FastAPI application factory: ``create_app(settings)``; nothing is built at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from api import alert_stream, analytics, errors, exports, features, ingest, subscriptions, tiles, web
from api.auth import Authenticator, RateLimiter, RevocationListener
from api.collections import COLLECTIONS
from api.deps import AppState, StateDep
from geodata.db import database_url, scoped
from geodata.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware answering 413 to bodies over ``max_bytes`` (``upload_bytes`` on ``/ingest``)."""

    def __init__(self, app: ASGIApp, max_bytes: int, upload_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_bytes if scope["path"].startswith("/ingest") else self.max_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(limit, scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLargeError()
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLargeError:
            await self._refuse(limit, scope, receive, send)

    @staticmethod
    async def _refuse(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = errors.problem_response(
            413, "PayloadTooLarge",
            f"The request body is larger than {limit:,} bytes. Split the upload into smaller files.",
            f"El cuerpo de la petición supera {limit:,} bytes. Divida la carga en archivos más pequeños.",
        )
        await response(scope, receive, send)


class _TooLargeError(Exception):
    pass


def create_app(settings: Settings) -> FastAPI:
    """The Rutas API for ``settings``: OGC API Features and Tiles, health, ingest.

    The database engine is opened in the app's lifespan and disposed when it ends.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The service's own pool: sized for concurrent requests, no pre-ping round trip per
        # request (a dropped connection fails one request with 503 and is replaced).
        engine = sa.create_engine(database_url(settings), pool_size=settings.api_pool_size,
                                  max_overflow=settings.api_pool_size, pool_recycle=1800)
        authenticator = Authenticator(engine, settings)
        # revoked keys and changed agreements leave the key cache as soon as they commit
        revocations = RevocationListener(database_url(settings), authenticator)
        revocations.start()
        app.state.rutas = AppState(settings=settings, engine=engine, authenticator=authenticator,
                                   limiter=RateLimiter(settings.api_rate_per_minute))
        app.state.alert_feed = alert_stream.AlertFeed(settings)
        try:
            yield
        finally:
            await app.state.alert_feed.close()
            revocations.stop()
            engine.dispose()

    app = FastAPI(
        title="Rutas API",
        version="0.1.0",
        description=("Migratory-route intelligence: OGC API Features (Parts 1, 3 and 4) and Tiles, "
                     "scoped per country by row-level security. Authenticate with "
                     "'Authorization: Bearer <API key or JWT>'."),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    errors.install(app)

    def openapi() -> dict[str, Any]:
        # Queryables can also be given as plain query parameters (name=value): list them, so
        # clients such as GDAL know they may filter on the server.
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        operation = schema["paths"]["/collections/{collectionId}/items"]["get"]
        present = {p["name"] for p in operation.get("parameters", [])}
        names = sorted({name for c in COLLECTIONS.values() for name, q in c.queryables.items()
                        if q.type != "geometry"} - present)
        operation.setdefault("parameters", []).extend(
            {"name": name, "in": "query", "required": False, "schema": {"type": "string"},
             "description": f"Equality on the queryable '{name}' (in the collections that have it)"}
            for name in names)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.include_router(features.router)
    app.include_router(tiles.router)
    app.include_router(ingest.router)
    app.include_router(web.router)
    app.include_router(subscriptions.router)
    app.include_router(alert_stream.router)
    app.include_router(analytics.router)
    app.include_router(exports.router)

    @app.get("/healthz", summary="Health", tags=["Service"])
    def healthz(state: StateDep) -> JSONResponse:
        """200 with the schema revision when the database answers, 503 otherwise."""
        try:
            with scoped(state.engine) as conn:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        except sa.exc.SQLAlchemyError:
            return errors.problem_response(503, "ServiceUnavailable", "The database does not answer.",
                                           "La base de datos no responde.")
        return JSONResponse({"status": "ok", "schema": revision})

    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes,  # type: ignore[arg-type]
                       upload_bytes=settings.api_max_upload_bytes)
    return app
