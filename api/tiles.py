"""OGC API Tiles: Mapbox Vector Tiles made in PostGIS (``ST_AsMVT``) in the WebMercatorQuad set.

Tiles are read as the caller, through the same row-level security and property allow-lists as
the features. Record-level collections (events) are drawn as points from zoom
``tiles_detail_min_zoom`` on; below it they are drawn as k-suppressed cell counts (cells 1/32 of
the tile wide, aligned across tiles), so a world view never carries a record's position. Zooms
0-6 read counts kept up to date by triggers (``rutas_tile_cells``: a range scan, however many
events there are); higher aggregated zooms count on the fly (``rutas_event_cells``). Geometries are
EPSG:3857 tile coordinates (extent 4096).
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api import audit
from api.auth import Principal
from api.collections import COLLECTIONS, EVENT_CELLS_ID, Collection
from api.deps import PrincipalDep, StateDep
from api.features import CollectionP, get_collection
from geodata.db import scoped
from geodata.errors import InputError

router = APIRouter()

MVT = "application/vnd.mapbox-vector-tile"
EXTENT = 4096
#: Web Mercator's full width, metres.
WORLD_M = 40_075_016.685_578_49
#: Cells per tile side in the aggregated (low zoom) layer.
CELLS_PER_TILE = 32
MAX_FEATURES = 50_000

ZoomP = Annotated[int, Path(ge=0, le=22, description="Zoom level (tile matrix)")]
ColP = Annotated[int, Path(ge=0, description="Tile column")]
RowP = Annotated[int, Path(ge=0, description="Tile row")]


def _check(z: int, x: int, y: int) -> None:
    if x >= 2**z or y >= 2**z:
        raise InputError(f"Tile {z}/{x}/{y} is outside the WebMercatorQuad grid: x and y go from 0 to "
                         f"{2**z - 1} at zoom {z}.",
                         f"La tesela {z}/{x}/{y} está fuera de la malla WebMercatorQuad: x e y van de 0 a "
                         f"{2**z - 1} en el zoom {z}.", code="bad_parameter")


def _mvt_value(coll: Collection, name: str, expr: str) -> str:
    # MVT attributes are text, numbers or booleans: arrays, JSON and times go as text.
    if name in coll.tile_text:
        return f"CAST({expr} AS text) AS \"{name}\""
    return f"{expr} AS \"{name}\""


def _detail_sql(coll: Collection, role: str) -> str:
    props = ", ".join(_mvt_value(coll, n, e) for n, e in coll.properties_for(role).items())
    # a tile has no filter: products of many runs show the latest run's rows only
    latest = coll.queryables["latest"].sql if coll.latest_by_default else "TRUE"
    return (
        "WITH bounds AS (SELECT ST_TileEnvelope(:z, :x, :y) AS b3857, "
        "ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => 0.015625), 4326) AS b4326) "
        f"SELECT ST_AsMVT(t, :layer, {EXTENT}, 'geom', 'id'), count(*) FROM ("
        f"  SELECT {coll.id_sql} AS id, "
        f"  ST_AsMVTGeom(ST_Transform({coll.geom_sql}, 3857), bounds.b3857, {EXTENT}, 64, true) AS geom, "
        f"  {props} FROM {coll.from_sql}, bounds "
        f"  WHERE {coll.extra_where} AND {latest} AND {coll.geom_sql} && bounds.b4326 LIMIT {MAX_FEATURES}"
        ") AS t WHERE t.geom IS NOT NULL"
    )


#: Zoom levels with pre-computed cell counts (``event_cell_counts``, migration 0003: levels 0-6).
PRECOMPUTED_LEVELS = 7

_TILE_CELLS_SQL = (
    f"SELECT ST_AsMVT(t, :layer, {EXTENT}, 'geom'), count(*) FROM ("
    f"  SELECT ST_MakeEnvelope(px * {EXTENT // CELLS_PER_TILE}, py * {EXTENT // CELLS_PER_TILE}, "
    f"  (px + 1) * {EXTENT // CELLS_PER_TILE}, (py + 1) * {EXTENT // CELLS_PER_TILE}) AS geom, "
    "   kind, n AS count FROM rutas_tile_cells(:z, :x, :y, :k)"
    ") AS t"
)

_CELLS_SQL = (
    "WITH bounds AS (SELECT ST_TileEnvelope(:z, :x, :y) AS b3857) "
    f"SELECT ST_AsMVT(t, :layer, {EXTENT}, 'geom'), count(*) FROM ("
    f"  SELECT ST_AsMVTGeom(ST_Transform(c.cell, 3857), bounds.b3857, {EXTENT}, 0, true) AS geom, "
    "   c.kind, c.n AS count FROM bounds, "
    "   rutas_event_cells(:cell_m, ST_Transform(bounds.b3857, 4326), NULL, NULL, :k) AS c"
    ") AS t WHERE t.geom IS NOT NULL"
)


def tile(state: StateDep, principal: Principal, collection_id: str, z: int, x: int,
         y: int) -> tuple[bytes, int]:
    """The MVT bytes of one tile for the caller, and how many features it holds."""
    _check(z, x, y)
    known = COLLECTIONS.get(collection_id)
    # Every role may see record-level collections aggregated: below the detail zoom nobody gets
    # records, and roles without record access (analyst, border authority) get cells at every zoom.
    aggregated = collection_id == EVENT_CELLS_ID or (
        known is not None and known.record_level
        and (z < state.settings.tiles_detail_min_zoom or principal.role not in known.roles))
    coll: Collection | None = None
    if not aggregated:
        coll = get_collection(state, principal, collection_id)
    params: dict[str, Any] = {"z": z, "x": x, "y": y, "layer": collection_id,
                              "k": state.settings.k_anonymity}
    if aggregated:
        params.update(cell_m=WORLD_M / 2**z / CELLS_PER_TILE)
        sql = _TILE_CELLS_SQL if z < PRECOMPUTED_LEVELS else _CELLS_SQL
    else:
        assert coll is not None
        sql = _detail_sql(coll, principal.role)
    with scoped(state.engine, principal.scope()) as conn:
        data, count = conn.execute(sa.text(sql), params).one()
        if coll is not None and coll.audit and not aggregated:
            audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                        action="tile", collection=coll.id, filters={"tile": f"{z}/{x}/{y}"},
                        records=int(count))
    return bytes(data or b""), int(count)


@router.get("/collections/{collectionId}/tiles/WebMercatorQuad/{z}/{x}/{y}", tags=["OGC API Tiles"],
            summary="A vector tile", response_class=Response, responses={200: {"content": {MVT: {}}}})
def get_tile(request: Request, collection_id: CollectionP, z: ZoomP, x: ColP, y: RowP, state: StateDep,
             principal: PrincipalDep) -> Response:
    """One Mapbox Vector Tile (layer named after the collection); aggregated cells below the detail zoom."""
    data, _ = tile(state, principal, collection_id, z, x, y)
    # Tiles depend on who asks: a browser must never serve one key's tile to another key.
    return Response(data, media_type=MVT, headers={"Cache-Control": "no-store", "Vary": "Authorization"})
