"""OGC API Features Part 1 (core, GeoJSON) and Part 3 (CQL2 filters, queryables).

Items are read through :func:`geodata.db.scoped` as the caller, so row-level security decides
which records exist; the property allow-lists of :mod:`api.collections` decide which fields
leave. Features are built as GeoJSON text inside PostGIS and streamed out unchanged. Pages are
keyset-paginated on the feature id (``after``), never with OFFSET. Geometries are EPSG:4326.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from api import audit, html
from api.auth import Principal, forbidden
from api.collections import EVENT_CELLS_ID, Collection, available
from api.cql2 import compile_filter
from api.deps import BboxDep, DatetimeDep, LimitDep, PrincipalDep, StateDep
from geodata.db import scoped
from geodata.errors import InputError, RutasError

router = APIRouter()

#: Path parameters under their OGC names (clients such as GDAL read the OpenAPI paths).
CollectionP = Annotated[str, Path(alias="collectionId", description="Collection id")]
FeatureP = Annotated[str, Path(alias="featureId", description="Feature id")]

GEOJSON = "application/geo+json"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/queryables-query-parameters",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/advanced-comparison-operators",
    "http://www.opengis.net/spec/cql2/1.0/conf/case-insensitive-comparison",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/temporal-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/arithmetic",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
]
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _link(href: str, rel: str, type_: str, title: str = "") -> dict[str, str]:
    link = {"href": href, "rel": rel, "type": type_}
    if title:
        link["title"] = title
    return link


def _not_found(what: str, what_es: str) -> RutasError:
    return RutasError(f"{what} does not exist or is outside your scope.",
                      f"{what_es} no existe o está fuera de su alcance.", code="not_found")


#: JSON, or HTML for browsers and ``?f=html`` (see :mod:`api.html`).
_DOCUMENT: dict[int | str, dict[str, Any]] = {200: {"content": {"application/json": {}, html.HTML: {}}}}
FormatQ = Annotated[str | None, Query(alias="f", description="json (default) or html; a browser gets html",
                                      json_schema_extra={"enum": ["json", "html"]})]
LangQ = Annotated[str | None, Query(description="Language of HTML pages: es (default), en or pt",
                                    json_schema_extra={"enum": ["es", "en", "pt"]})]


@router.get("/", summary="Landing page", tags=["OGC API"], response_model=None, responses=_DOCUMENT)
def landing(request: Request, f: FormatQ = None, lang: LangQ = None) -> Response:
    """Links to the API definition, the conformance classes, the collections and the web map."""
    base = _base(request)
    doc = {
        "title": "Rutas",
        "description": "Migratory-route intelligence / Inteligencia de rutas migratorias (OGC API)",
        "links": [
            _link(f"{base}/", "self", "application/json", "This document"),
            html.alternate(f"{base}/"),
            _link(f"{base}/openapi.json", "service-desc", "application/vnd.oai.openapi+json;version=3.0",
                  "The API definition"),
            _link(f"{base}/conformance", "conformance", "application/json", "Conformance classes"),
            _link(f"{base}/collections", "data", "application/json", "Collections"),
            _link(f"{base}/map", "related", html.HTML, "Web map / Mapa web"),
        ],
    }
    return html.landing_page(request, doc) if html.wants_html(request) else JSONResponse(doc)


@router.get("/conformance", summary="Conformance classes", tags=["OGC API"])
def conformance() -> dict[str, list[str]]:
    """The OGC conformance classes this server implements."""
    return {"conformsTo": CONFORMANCE}


def _present(state: StateDep) -> dict[str, Collection]:
    if state.collections is None:
        with scoped(state.engine) as conn:
            state.collections = available(conn)
    return state.collections


def _visible(state: StateDep, principal: Principal) -> dict[str, Collection]:
    present = _present(state)
    return {cid: c for cid, c in present.items() if principal.role in c.roles}


def _collection_doc(base: str, cid: str, title: str, description: str) -> dict[str, Any]:
    return {
        "id": cid,
        "title": title,
        "description": description,
        "itemType": "feature",
        "crs": [CRS84],
        "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]], "crs": CRS84}},
        "links": [
            _link(f"{base}/collections/{cid}", "self", "application/json"),
            html.alternate(f"{base}/collections/{cid}"),
            _link(f"{base}/collections/{cid}/items", "items", GEOJSON, "Features"),
            _link(f"{base}/collections/{cid}/items?f=html", "items", html.HTML, "Features (HTML)"),
            _link(f"{base}/collections/{cid}/queryables", "http://www.opengis.net/def/rel/ogc/1.0/queryables",
                  "application/schema+json", "Queryables"),
            _link(f"{base}/collections/{cid}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}",
                  "item", "application/vnd.mapbox-vector-tile", "Vector tiles"),
        ],
    }


_CELLS_DOC = ("Event counts per square cell (EPSG:3857 grid, cell-km wide) and kind, region-wide or "
              "for the caller's country and partners; cells with fewer records than k are suppressed. "
              "bbox selects whole cells and datetime whole months (UTC).")


def _docs(request: Request, state: StateDep, principal: Principal) -> dict[str, dict[str, Any]]:
    base = _base(request)
    docs = {cid: _collection_doc(base, cid, c.title, c.description)
            for cid, c in _visible(state, principal).items()}
    docs[EVENT_CELLS_ID] = _collection_doc(base, EVENT_CELLS_ID, "Event cells / Celdas de eventos",
                                           _CELLS_DOC)
    return docs


@router.get("/collections", summary="Collections the caller may see", tags=["OGC API"], response_model=None,
            responses=_DOCUMENT)
def collections(request: Request, state: StateDep, principal: PrincipalDep, f: FormatQ = None,
                lang: LangQ = None) -> Response:
    """The collections visible to the caller's role."""
    base = _base(request)
    doc = {"collections": list(_docs(request, state, principal).values()),
           "links": [_link(f"{base}/collections", "self", "application/json"),
                     html.alternate(f"{base}/collections")]}
    return html.collections_page(request, doc) if html.wants_html(request) else JSONResponse(doc)


def get_collection(state: StateDep, principal: Principal, cid: str) -> Collection:
    present = _present(state)
    if cid not in present:
        raise _not_found(f"Collection {cid!r}", f"La colección {cid!r}")
    coll = present[cid]
    if principal.role not in coll.roles:
        raise forbidden(
            f"Role {principal.role} sees aggregated layers only, not {cid} records: "
            f"use the {EVENT_CELLS_ID} collection or the vector tiles.",
            f"El rol {principal.role} sólo ve capas agregadas, no registros de {cid}: "
            f"use la colección {EVENT_CELLS_ID} o las teselas vectoriales.",
        )
    return coll


@router.get("/collections/{collectionId}", summary="One collection", tags=["OGC API"], response_model=None,
            responses=_DOCUMENT)
def collection(request: Request, collection_id: CollectionP, state: StateDep,
               principal: PrincipalDep, f: FormatQ = None, lang: LangQ = None) -> Response:
    """A collection's description and links."""
    docs = _docs(request, state, principal)
    if collection_id not in docs:
        get_collection(state, principal, collection_id)  # 403 when it exists but the role may not read it
        raise _not_found(f"Collection {collection_id!r}", f"La colección {collection_id!r}")
    doc = docs[collection_id]
    return html.collection_page(request, doc) if html.wants_html(request) else JSONResponse(doc)


@router.get("/collections/{collectionId}/queryables", summary="Queryables of a collection",
            tags=["OGC API"], response_class=JSONResponse)
def queryables(request: Request, collection_id: CollectionP, state: StateDep,
               principal: PrincipalDep) -> JSONResponse:
    """JSON Schema of the properties a CQL2 filter may name."""
    base = _base(request)
    if collection_id == EVENT_CELLS_ID:
        props: dict[str, Any] = {"geom": {"$ref": "https://geojson.org/schema/Geometry.json"}}
    else:
        coll = get_collection(state, principal, collection_id)
        props = {name: q.schema() for name, q in coll.queryables.items()}
    body = {
        "$schema": "https://json-schema.org/draft/2019-09/schema",
        "$id": f"{base}/collections/{collection_id}/queryables",
        "type": "object",
        "title": collection_id,
        "properties": props,
        "additionalProperties": False,
    }
    return JSONResponse(body, media_type="application/schema+json")


FilterQ = Annotated[str | None, Query(description="CQL2 filter (text or JSON)", max_length=20_000)]
FilterLangQ = Annotated[str | None, Query(
    alias="filter-lang", description="cql2-text or cql2-json (cql-text accepted)",
    json_schema_extra={"enum": ["cql2-text", "cql2-json", "cql-text"]})]
#: Query parameters of the items endpoint that are not queryables.
RESERVED = frozenset({"limit", "bbox", "datetime", "filter", "filter-lang", "filter-crs", "after", "cell-km",
                      "f", "lang"})
FilterCrsQ = Annotated[str | None, Query(alias="filter-crs", description="Only CRS84 (EPSG:4326 lon/lat)")]
AfterQ = Annotated[str | None, Query(description="Keyset cursor: the last id of the previous page")]
CellKmQ = Annotated[str | None, Query(alias="cell-km", description="event-cells: cell width in km")]


def _page_links(request: Request, cid: str, last_id: int | None) -> list[dict[str, str]]:
    base = _base(request)
    params = {k: v for k, v in request.query_params.items() if k != "after"}
    links = [_link(str(request.url), "self", GEOJSON), html.alternate(str(request.url)),
             _link(f"{base}/collections/{cid}", "collection", "application/json")]
    if last_id is not None:
        query = urlencode({**params, "after": str(last_id)})
        links.append(_link(f"{base}/collections/{cid}/items?{query}", "next", GEOJSON, "Next page"))
    return links


def _feature_collection(request: Request, title: str, features: list[str], links: list[dict[str, str]], *,
                        complete: bool = False) -> Response:
    """A FeatureCollection (an HTML table when asked); ``numberMatched`` only when it is known for
    free (one whole page)."""
    if html.wants_html(request):
        return html.items_page(request, title, features, links)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    matched = f'"numberMatched":{len(features)},' if complete else ""
    body = ('{"type":"FeatureCollection","features":[' + ",".join(features) + "],"
            f'{matched}"numberReturned":{len(features)},"timeStamp":"{stamp}","links":{json.dumps(links)}}}')
    return Response(body, media_type=GEOJSON)


def _cursor(after: str | None) -> int | None:
    if after is None or after == "":
        return None
    try:
        value = int(after)
        if abs(value) >= 2**63:
            raise ValueError(after)
        return value
    except ValueError:
        raise InputError(f"Parameter after={after!r} must be a feature id from a 'next' link.",
                         f"El parámetro after={after!r} debe ser un id de un enlace 'next'.",
                         code="bad_parameter") from None


@router.get("/collections/{collectionId}/items", summary="Features of a collection", tags=["OGC API"],
            response_class=Response, responses={200: {"content": {GEOJSON: {}, html.HTML: {}}}})
def items(request: Request, collection_id: CollectionP, state: StateDep, principal: PrincipalDep,
          bbox: BboxDep, interval: DatetimeDep, limit: LimitDep, filter: FilterQ = None,
          filter_lang: FilterLangQ = None, filter_crs: FilterCrsQ = None, after: AfterQ = None,
          cell_km: CellKmQ = None, f: FormatQ = None, lang: LangQ = None) -> Response:
    """GeoJSON features, filtered by bbox, datetime and CQL2, in pages of ``limit`` with ``next`` links."""
    if filter_crs not in (None, "", CRS84, "http://www.opengis.net/def/crs/EPSG/0/4326"):
        raise InputError(f"filter-crs {filter_crs!r} is not supported: use {CRS84}.",
                         f"filter-crs {filter_crs!r} no se admite: use {CRS84}.", code="bad_parameter")
    cursor = _cursor(after)
    if collection_id == EVENT_CELLS_ID:
        if filter:
            raise InputError(f"{EVENT_CELLS_ID} takes bbox, datetime and cell-km, not filter: filter the "
                             "events collection instead, where your role allows it.",
                             f"{EVENT_CELLS_ID} admite bbox, datetime y cell-km, no filter: filtre la "
                             "colección events, si su rol lo permite.", code="bad_parameter")
        return _cells(request, state, principal, bbox, interval, limit, cursor, cell_km)
    coll = get_collection(state, principal, collection_id)
    # k: routes' counts are k-suppressed for callers who cannot see every member in detail
    params: dict[str, Any] = {"limit": limit + 1, "k": state.settings.k_anonymity}
    where = [coll.extra_where]
    if bbox is not None:
        where.append(f"ST_Intersects({coll.geom_sql}, ST_MakeEnvelope(:bx0, :by0, :bx1, :by1, 4326))")
        params.update(bx0=bbox[0], by0=bbox[1], bx1=bbox[2], by1=bbox[3])
    if interval is not None and coll.time_sql:
        if interval[0]:
            where.append(f"{coll.time_sql} >= :t0")
            params["t0"] = interval[0]
        if interval[1]:
            where.append(f"{coll.time_sql} <= :t1")
            params["t1"] = interval[1]
    equals = [(name, value) for name, value in request.query_params.multi_items()
              if name not in RESERVED and name in coll.queryables
              and coll.queryables[name].type != "geometry"]
    named: frozenset[str] = frozenset()
    if filter or equals:
        compiled = compile_filter(filter, filter_lang, coll.queryables,
                                  max_nodes=state.settings.api_max_cql2_nodes, equals=equals)
        where.append(compiled.sql)
        params.update(compiled.params)
        named = compiled.properties
    if coll.latest_by_default and not named & {"run_id", "latest"}:
        where.append(coll.queryables["latest"].sql)
    if cursor is not None:
        where.append(f"{coll.id_sql} > :after")
        params["after"] = cursor
    sql = (f"SELECT {_feature_sql(coll, principal.role)} AS feature, {coll.id_sql} AS fid "
           f"FROM {coll.from_sql} WHERE {' AND '.join(where)} ORDER BY {coll.id_sql} LIMIT :limit")
    if coll.audit:
        sql, audit_params = audit.audited_query(
            sql, who=principal.subject, role=principal.role, country=principal.country, action="items",
            collection=coll.id, max_records=limit,
            filters={"bbox": bbox, "datetime": request.query_params.get("datetime"), "filter": filter,
                     "after": cursor, "limit": limit, "equals": equals or None})
        params.update(audit_params)
    with scoped(state.engine, principal.scope()) as conn:
        rows = conn.execute(sa.text(sql), params).all()
    page = rows[:limit]
    last = page[-1].fid if len(rows) > limit else None
    return _feature_collection(request, coll.title, [r.feature for r in page],
                               _page_links(request, collection_id, last),
                               complete=cursor is None and last is None)


def _feature_sql(coll: Collection, role: str) -> str:
    props = ", ".join(f"'{name}', {expr}" for name, expr in coll.properties_for(role).items())
    return (f"json_build_object('type', 'Feature', 'id', {coll.id_sql}, 'geometry', "
            f"ST_AsGeoJSON({coll.geom_sql}, 6)::json, 'properties', json_build_object({props}))::text")


def _cells(request: Request, state: StateDep, principal: Principal,
           bbox: tuple[float, float, float, float] | None,
           interval: tuple[datetime | None, datetime | None] | None, limit: int, cursor: int | None,
           cell_km: str | None) -> Response:
    try:
        width_km = float(cell_km) if cell_km else state.settings.aggregate_cell_km
    except ValueError:
        width_km = -1.0
    if not 1.0 <= width_km <= 1000.0:
        raise InputError(f"Parameter cell-km={cell_km!r} must be a number from 1 to 1000.",
                         f"El parámetro cell-km={cell_km!r} debe ser un número de 1 a 1000.",
                         code="bad_parameter")
    area = "ST_MakeEnvelope(:bx0, :by0, :bx1, :by1, 4326)" if bbox else "NULL::geometry"
    params: dict[str, Any] = {"cell_m": width_km * 1000.0, "k": state.settings.k_anonymity,
                              "t0": interval[0] if interval else None,
                              "t1": interval[1] if interval else None,
                              "after": cursor or 0, "limit": limit + 1}
    if bbox:
        params.update(bx0=bbox[0], by0=bbox[1], bx1=bbox[2], by1=bbox[3])
    sql = (
        "SELECT json_build_object('type', 'Feature', 'id', ord, 'geometry', ST_AsGeoJSON(cell, 6)::json, "
        "'properties', json_build_object('kind', kind, 'count', n, "
        "'cell_km', CAST(:cell_m AS float8) / 1000))"
        "::text AS feature, ord AS fid FROM ("
        "  SELECT cell, kind, n, row_number() OVER (ORDER BY kind, ST_XMin(cell), ST_YMin(cell)) AS ord"
        f"  FROM rutas_event_cells(:cell_m, {area}, CAST(:t0 AS timestamptz), CAST(:t1 AS timestamptz), :k)"
        ") AS c WHERE ord > :after ORDER BY ord LIMIT :limit"
    )
    with scoped(state.engine, principal.scope()) as conn:
        rows = conn.execute(sa.text(sql), params).all()
    page = rows[:limit]
    last = page[-1].fid if len(rows) > limit else None
    return _feature_collection(request, "Event cells / Celdas de eventos", [r.feature for r in page],
                               _page_links(request, EVENT_CELLS_ID, last))


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature", tags=["OGC API"],
            response_class=Response, responses={200: {"content": {GEOJSON: {}, html.HTML: {}}}})
def item(request: Request, collection_id: CollectionP, feature_id: FeatureP, state: StateDep,
         principal: PrincipalDep, f: FormatQ = None, lang: LangQ = None) -> Response:
    """One GeoJSON feature; 404 when it does not exist or row-level security hides it."""
    if collection_id == EVENT_CELLS_ID:
        raise _not_found(f"Feature {feature_id!r}", f"El elemento {feature_id!r}")
    coll = get_collection(state, principal, collection_id)
    try:
        fid = int(feature_id)
        if abs(fid) >= 2**63:
            raise ValueError(feature_id)
    except ValueError:
        raise _not_found(f"Feature {feature_id!r}", f"El elemento {feature_id!r}") from None
    sql = (f"SELECT {_feature_sql(coll, principal.role)} AS feature FROM {coll.from_sql} "
           f"WHERE {coll.extra_where} AND {coll.id_sql} = :fid")
    with scoped(state.engine, principal.scope()) as conn:
        found = conn.execute(sa.text(sql), {"fid": fid, "k": state.settings.k_anonymity}
                             ).scalar_one_or_none()
        if coll.audit:
            audit.write(conn, who=principal.subject, role=principal.role, country=principal.country,
                        action="item", collection=coll.id, filters={"id": fid},
                        records=0 if found is None else 1)
    if found is None:
        raise _not_found(f"Feature {feature_id!r}", f"El elemento {feature_id!r}")
    base = _base(request)
    links = [_link(f"{base}/collections/{collection_id}/items/{fid}", "self", GEOJSON),
             html.alternate(f"{base}/collections/{collection_id}/items/{fid}"),
             _link(f"{base}/collections/{collection_id}", "collection", "application/json")]
    feature = found[:-1] + f',"links":{json.dumps(links)}}}'
    if html.wants_html(request):
        return html.item_page(request, coll.title, feature)
    return Response(feature, media_type=GEOJSON)
