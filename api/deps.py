"""Request dependencies: the app's state, the caller, and validated bbox, datetime and limit.

Each raises a :class:`~geodata.errors.RutasError` that the error table turns into the right
HTTP status and an OGC exception body. Coordinates are EPSG:4326 (lon, lat) degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.engine import Engine

from api.auth import Authenticator, Principal, RateLimiter
from api.collections import Collection
from api.cql2 import parse_instant
from geodata.errors import InputError, RutasError
from geodata.settings import Settings


@dataclass
class AppState:
    """What every request needs, created in the app's lifespan."""

    settings: Settings
    engine: Engine
    authenticator: Authenticator
    limiter: RateLimiter
    #: Collections whose tables exist, found on first use.
    collections: dict[str, Collection] | None = None


def get_state(request: Request) -> AppState:
    """The app's :class:`AppState`."""
    state: AppState = request.app.state.rutas
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_principal(
    state: StateDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key or JWT>")] = None,
) -> Principal:
    """The authenticated caller (401 without valid credentials, 429 past the rate limit)."""
    principal = state.authenticator(authorization)
    if not state.limiter.allow(principal.subject):
        raise RutasError(
            f"Too many requests: at most {state.settings.api_rate_per_minute} a minute per key. "
            "Wait a moment and retry.",
            f"Demasiadas peticiones: como máximo {state.settings.api_rate_per_minute} por minuto "
            "por clave. Espere un momento y reintente.",
            code="rate_limited",
        )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _bad(name: str, value: str, message: str, message_es: str) -> InputError:
    return InputError(f"Parameter {name}={value!r}: {message}",
                      f"Parámetro {name}={value!r}: {message_es}", code="bad_parameter")


def get_bbox(
    bbox: Annotated[str | None, Query(description="minLon,minLat,maxLon,maxLat (EPSG:4326)")] = None,
) -> tuple[float, float, float, float] | None:
    """The bbox as (min lon, min lat, max lon, max lat) in degrees, validated."""
    if bbox is None or bbox == "":
        return None
    try:
        values = [float(v) for v in bbox.split(",")]
    except ValueError:
        raise _bad("bbox", bbox, "use four numbers: minLon,minLat,maxLon,maxLat.",
                   "use cuatro números: minLon,minLat,maxLon,maxLat.") from None
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    if len(values) != 4 or not all(v == v and abs(v) != float("inf") for v in values):
        raise _bad("bbox", bbox, "use four numbers: minLon,minLat,maxLon,maxLat.",
                   "use cuatro números: minLon,minLat,maxLon,maxLat.")
    minx, miny, maxx, maxy = values
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise _bad("bbox", bbox, "longitudes must be within -180..180 and latitudes within -90..90, "
                   "min before max.", "las longitudes van de -180 a 180 y las latitudes de -90 a 90, "
                   "el mínimo antes del máximo.")
    if minx > maxx:
        raise _bad("bbox", bbox, "boxes across the antimeridian are not supported: send two requests.",
                   "no se admiten cajas que crucen el antimeridiano: envíe dos peticiones.")
    return minx, miny, maxx, maxy


BboxDep = Annotated[tuple[float, float, float, float] | None, Depends(get_bbox)]


def get_datetime(
    datetime_: Annotated[str | None, Query(alias="datetime", description=(
        "An instant or an interval start/end in RFC 3339; '..' leaves an end open"))] = None,
) -> tuple[datetime | None, datetime | None] | None:
    """The datetime parameter as (start, end), either end None when open; dates cover the whole day."""
    if datetime_ is None or datetime_ == "":
        return None
    try:
        if "/" in datetime_:
            start_text, end_text = datetime_.split("/", 1)
            start = None if start_text in ("", "..") else parse_instant(start_text)
            end = None if end_text in ("", "..") else parse_instant(end_text, end=True)
        else:
            start, end = parse_instant(datetime_), parse_instant(datetime_, end=True)
    except InputError:
        raise _bad("datetime", datetime_, "use an RFC 3339 instant or interval, e.g. "
                   "2024-01-01T00:00:00Z/2024-02-01T00:00:00Z or 2024-01-01/..",
                   "use un instante o intervalo RFC 3339, p. ej. 2024-01-01T00:00:00Z/2024-02-01T00:00:00Z "
                   "o 2024-01-01/..") from None
    if start and end and start > end:
        raise _bad("datetime", datetime_, "the start is after the end.", "el inicio es posterior al fin.")
    return start, end


DatetimeDep = Annotated[tuple[datetime | None, datetime | None] | None, Depends(get_datetime)]


def get_limit(
    state: StateDep,
    limit: Annotated[str | None, Query(description="Items per page (default 100, at most 10,000)")] = None,
) -> int:
    """The page size: the default when absent; refused outside 1..maximum."""
    if limit is None or limit == "":
        return state.settings.api_default_limit
    try:
        value = int(limit)
    except ValueError:
        raise _bad("limit", limit, "use a whole number.", "use un número entero.") from None
    if not 1 <= value <= state.settings.api_max_limit:
        raise _bad("limit", limit, f"use a number from 1 to {state.settings.api_max_limit}.",
                   f"use un número de 1 a {state.settings.api_max_limit}.")
    return value


LimitDep = Annotated[int, Depends(get_limit)]
