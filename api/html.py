"""HTML pages of the OGC API documents (OGC API Features Part 1, HTML conformance class).

The landing page, the collections, a collection and its items answer HTML when the client asks
for it (``?f=html``, or a browser's ``Accept: text/html``) and JSON otherwise (``?f=json``
always JSON). Pages are in Spanish unless ``?lang=`` or ``Accept-Language`` asks for English or
Portuguese, and link to the web map (``/map``). They are rendered from the same documents and
features the JSON carries (already scoped by row-level security and the property allow-lists),
every value escaped; coordinates are not printed (geometries are EPSG:4326 in the JSON form).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi import Request
from fastapi.responses import HTMLResponse

HTML = "text/html"
LANGUAGES = ("es", "en", "pt")
#: Media types whose presence in ``Accept`` means the client reads JSON.
_JSON_TYPES = ("application/json", "application/geo+json", "application/schema+json")

TEXT: dict[str, dict[str, str]] = {
    "es": {
        "service": "Inteligencia de rutas migratorias (OGC API Features y Tiles)",
        "collections": "Colecciones", "conformance": "Clases de conformidad",
        "api": "Definición de la API (OpenAPI)", "map": "Mapa web", "items": "Elementos",
        "queryables": "Propiedades consultables", "tiles": "Teselas vectoriales (MVT)",
        "next": "Página siguiente", "json": "Este documento en JSON",
        "none": "No hay elementos en su alcance.",
        "home": "Inicio", "geometry": "Geometría", "feature": "Elemento", "error": "Error",
        "language": "Idioma", "returned": "elementos en esta página",
        "auth": ("Las páginas de datos piden la cabecera 'Authorization: Bearer <clave>'. Sin ella, "
                 "abra el mapa web con su clave: /map#key=<clave>."),
    },
    "en": {
        "service": "Migratory-route intelligence (OGC API Features and Tiles)",
        "collections": "Collections", "conformance": "Conformance classes",
        "api": "API definition (OpenAPI)", "map": "Web map", "items": "Items",
        "queryables": "Queryables", "tiles": "Vector tiles (MVT)", "next": "Next page",
        "json": "This document as JSON", "none": "No items in your scope.", "home": "Home",
        "geometry": "Geometry", "feature": "Feature", "error": "Error", "language": "Language",
        "returned": "items on this page",
        "auth": ("Data pages need the header 'Authorization: Bearer <key>'. Without it, open the web "
                 "map with your key: /map#key=<key>."),
    },
    "pt": {
        "service": "Inteligência de rotas migratórias (OGC API Features e Tiles)",
        "collections": "Coleções", "conformance": "Classes de conformidade",
        "api": "Definição da API (OpenAPI)", "map": "Mapa web", "items": "Itens",
        "queryables": "Propriedades consultáveis", "tiles": "Blocos vetoriais (MVT)",
        "next": "Próxima página", "json": "Este documento em JSON", "none": "Não há itens no seu escopo.",
        "home": "Início", "geometry": "Geometria", "feature": "Item", "error": "Erro", "language": "Idioma",
        "returned": "itens nesta página",
        "auth": ("As páginas de dados pedem o cabeçalho 'Authorization: Bearer <chave>'. Sem ele, abra o "
                 "mapa web com a sua chave: /map#key=<chave>."),
    },
}

# the texts go into pages as they are: escape them once ("<key>" is text, not a tag)
TEXT = {lang: {name: escape(value) for name, value in texts.items()} for lang, texts in TEXT.items()}

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem;color:#1b1b1b}"
    "table{border-collapse:collapse;font-size:.9rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
    "text-align:left;vertical-align:top}nav a{margin-right:1rem}footer{margin-top:2rem;color:#555}"
)


def _accepted(header: str) -> dict[str, float]:
    """Media types (or language tags) of an Accept-style header with their q values."""
    found: dict[str, float] = {}
    for part in header.split(","):
        name, *params = [p.strip() for p in part.split(";")]
        if not name:
            continue
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        found[name.lower()] = max(q, found.get(name.lower(), 0.0))
    return found


def wants_html(request: Request) -> bool:
    """Whether the client asked for HTML: ``?f=html``, or ``text/html`` preferred to every JSON type."""
    chosen = request.query_params.get("f", "").lower()
    if chosen:
        return chosen == "html"
    accepted = _accepted(request.headers.get("accept", ""))
    html_q = accepted.get(HTML, 0.0)
    return html_q > 0 and all(accepted.get(t, 0.0) < html_q for t in _JSON_TYPES)


def language(request: Request) -> str:
    """The page's language: ``?lang=``, else the first of es, en, pt by ``Accept-Language``, else es."""
    asked = request.query_params.get("lang", "").lower()[:2]
    if asked in LANGUAGES:
        return asked
    tags = _accepted(request.headers.get("accept-language", ""))
    ranked = sorted(((q, tag[:2]) for tag, q in tags.items() if q > 0), key=lambda t: -t[0])
    return next((tag for _, tag in ranked if tag in LANGUAGES), "es")


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` set in its query string (others kept)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def alternate(url: str) -> dict[str, str]:
    """The OGC ``alternate`` link to the HTML form of the document at ``url``."""
    return {"href": with_query(url, f="html"), "rel": "alternate", "type": HTML, "title": "HTML"}


def _page(request: Request, title: str, body: str, status: int = 200,
          headers: dict[str, str] | None = None) -> HTMLResponse:
    lang = language(request)
    text = TEXT[lang]
    base = str(request.base_url).rstrip("/")
    here = str(request.url)
    nav = (f'<nav><a href="{escape(with_query(base + "/", f="html", lang=lang))}">{text["home"]}</a>'
           f'<a href="{escape(with_query(base + "/collections", f="html", lang=lang))}">'
           f'{text["collections"]}</a>'
           f'<a href="{escape(base)}/map">{text["map"]}</a>'
           f'<a href="{escape(with_query(here, f="json"))}" rel="alternate" type="application/json">'
           f'{text["json"]}</a></nav>')
    switch = " ".join(f'<a href="{escape(with_query(here, f="html", lang=code))}" hreflang="{code}">'
                      f"{code.upper()}</a>" for code in LANGUAGES)
    document = (f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{escape(title)} · Rutas</title><style>{_STYLE}</style></head><body>{nav}"
                f"<h1>{escape(title)}</h1>{body}<footer>{text['language']}: {switch}</footer></body></html>")
    out = {"Content-Language": lang, "Vary": "Accept, Accept-Language, Authorization",
           "Cache-Control": "no-store", **(headers or {})}
    return HTMLResponse(document, status_code=status, headers=out)


def _links(request: Request, links: list[dict[str, str]]) -> str:
    lang = language(request)
    shown = []
    for link in links:
        href = link["href"]
        document = link.get("type", "").startswith("application/") and link["rel"] != "service-desc"
        if document and "{" not in href:
            href = with_query(href, f="html", lang=lang)
        label = link.get("title") or link["rel"]
        shown.append(f'<li><a href="{escape(href)}" rel="{escape(link["rel"])}">{escape(label)}</a> '
                     f'<small>({escape(link["rel"])})</small></li>')
    return "<ul>" + "".join(shown) + "</ul>"


def landing_page(request: Request, doc: dict[str, Any]) -> HTMLResponse:
    """The landing page: what Rutas is and links to the collections, conformance, API and map."""
    text = TEXT[language(request)]
    base = str(request.base_url).rstrip("/")
    lang = language(request)
    body = (f"<p>{text['service']}</p><ul>"
            f'<li><a href="{escape(with_query(base + "/collections", f="html", lang=lang))}">'
            f"{text['collections']}</a></li>"
            f'<li><a href="{escape(base)}/conformance">{text["conformance"]}</a></li>'
            f'<li><a href="{escape(base)}/openapi.json">{text["api"]}</a></li>'
            f'<li><a href="{escape(base)}/map">{text["map"]}</a></li></ul>'
            f"<p><small>{text['auth']}</small></p>")
    return _page(request, str(doc["title"]), body)


def _collection_block(request: Request, coll: dict[str, Any], heading: bool) -> str:
    text = TEXT[language(request)]
    lang = language(request)
    base = str(request.base_url).rstrip("/")
    cid = str(coll["id"])
    title = escape(str(coll["title"]))
    head = (f'<h2><a href="{escape(with_query(f"{base}/collections/{cid}", f="html", lang=lang))}">'
            f"{title}</a></h2>") if heading else ""
    return (f"{head}<p>{escape(str(coll['description']))}</p><ul>"
            f'<li><a href="{escape(with_query(f"{base}/collections/{cid}/items", f="html", lang=lang))}">'
            f"{text['items']}</a></li>"
            f'<li><a href="{escape(base)}/collections/{escape(cid)}/queryables">{text["queryables"]}</a></li>'
            f"<li>{text['tiles']}: <code>{escape(base)}/collections/{escape(cid)}/tiles/WebMercatorQuad/"
            f"{{z}}/{{x}}/{{y}}</code></li>"
            f'<li><a href="{escape(base)}/map">{text["map"]}</a></li></ul>')


def collections_page(request: Request, doc: dict[str, Any]) -> HTMLResponse:
    """The collections the caller may see, each with its description and links."""
    body = "".join(_collection_block(request, c, True) for c in doc["collections"])
    return _page(request, TEXT[language(request)]["collections"], body)


def collection_page(request: Request, doc: dict[str, Any]) -> HTMLResponse:
    """One collection: description, links to items, queryables, tiles and the map."""
    return _page(request, str(doc["title"]), _collection_block(request, doc, False))


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return escape(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return escape(json.dumps(value, ensure_ascii=False))
    return escape(str(value))


def items_page(request: Request, title: str, features: list[str],
               links: list[dict[str, str]]) -> HTMLResponse:
    """A page of features as a table (id, geometry type, properties) with the next-page link."""
    text = TEXT[language(request)]
    lang = language(request)
    parsed = [json.loads(f) for f in features]
    names: list[str] = []
    for feature in parsed:
        names.extend(n for n in (feature.get("properties") or {}) if n not in names)
    base = str(request.base_url).rstrip("/")
    cid = request.path_params.get("collectionId", "")
    rows = []
    for feature in parsed:
        fid = str(feature.get("id"))
        href = with_query(f"{base}/collections/{cid}/items/{fid}", f="html", lang=lang)
        props = feature.get("properties") or {}
        geometry = (feature.get("geometry") or {}).get("type", "")
        cells = "".join(f"<td>{_value(props.get(n))}</td>" for n in names)
        rows.append(f'<tr><td><a href="{escape(href)}">{escape(fid)}</a></td>'
                    f"<td>{escape(geometry)}</td>{cells}</tr>")
    header = "".join(f"<th>{escape(n)}</th>" for n in names)
    table = (f"<table><thead><tr><th>id</th><th>{text['geometry']}</th>{header}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>") if rows else f"<p>{text['none']}</p>"
    nxt = [link for link in links if link["rel"] == "next"]
    more = (f'<p><a rel="next" href="{escape(with_query(nxt[0]["href"], f="html", lang=lang))}">'
            f"{text['next']}</a></p>") if nxt else ""
    body = f"<p>{len(parsed)} {text['returned']}</p>{table}{more}"
    return _page(request, f"{title} · {text['items']}", body)


def item_page(request: Request, title: str, feature: str) -> HTMLResponse:
    """One feature: its properties as a two-column table."""
    text = TEXT[language(request)]
    parsed = json.loads(feature)
    props = parsed.get("properties") or {}
    geometry = (parsed.get("geometry") or {}).get("type", "")
    rows = "".join(f"<tr><th>{escape(str(n))}</th><td>{_value(v)}</td></tr>" for n, v in props.items())
    body = (f"<table><tbody><tr><th>id</th><td>{escape(str(parsed.get('id')))}</td></tr>"
            f"<tr><th>{text['geometry']}</th><td>{escape(geometry)}</td></tr>{rows}</tbody></table>"
            f"{_links(request, parsed.get('links', []))}")
    return _page(request, f"{title} · {text['feature']} {parsed.get('id')}", body)


def error_page(request: Request, status: int, message: str, message_es: str,
               headers: dict[str, str] | None = None) -> HTMLResponse:
    """An error as a page: the Spanish message for Spanish pages, the English one otherwise."""
    text = TEXT[language(request)]
    shown = message_es if language(request) == "es" else message
    hint = f"<p><small>{text['auth']}</small></p>" if status == 401 else ""
    return _page(request, f"{text['error']} {status}", f"<p>{escape(shown)}</p>{hint}", status, headers)
