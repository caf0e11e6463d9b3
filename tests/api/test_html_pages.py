"""HTML pages of the OGC API documents (OGC API Features Part 1, HTML conformance class).

A browser (Debian's Chromium, headless) gets HTML for the landing page, the collections, a
collection and its items, in Spanish unless it asks for English or Portuguese, each linking to the
web map; any other client gets the JSON it always got. Pages hold only what the JSON holds for the
same key: row-level security and the property allow-lists apply to them.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import Record, bearer, expected_detail
from tests.api.test_web_map import _Chromium

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
HTML_CONFORMANCE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/html"


def test_json_unless_html_is_asked_for(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    key = bearer(keys[("prosecutor", "COL")])
    for path in ("/", "/collections", "/collections/events", "/collections/events/items"):
        for headers in ({}, {"Accept": "application/json"}, {"Accept": "*/*"},
                        {"Accept": "application/geo+json, text/html;q=0.5"}):
            response = client.get(path, headers={**key, **headers})
            assert response.status_code == 200 and "json" in response.headers["content-type"], (path, headers)
        html = client.get(path, params={"f": "html"}, headers=key)
        assert html.headers["content-type"].startswith("text/html"), path
        assert client.get(path, headers={**key, "Accept": BROWSER_ACCEPT}).headers[
            "content-type"].startswith("text/html"), path
        # f=json wins over a browser's Accept
        assert "json" in client.get(path, params={"f": "json"}, headers={**key, "Accept": BROWSER_ACCEPT}
                                    ).headers["content-type"], path
    conformance = client.get("/conformance").json()["conformsTo"]
    assert HTML_CONFORMANCE in conformance
    landing = client.get("/").json()["links"]
    assert {"rel": "alternate", "type": "text/html"}.items() <= next(
        link for link in landing if link["rel"] == "alternate").items()
    assert any(link["href"].endswith("/map") for link in landing)


def test_language_by_parameter_or_accept_language(client: TestClient) -> None:
    cases = [({}, {}, "es", "Colecciones"),
             ({"Accept-Language": "en-GB,en;q=0.9"}, {}, "en", "Collections"),
             ({"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.5"}, {}, "pt", "Coleções"),
             ({"Accept-Language": "fr-FR,fr;q=0.9"}, {}, "es", "Colecciones"),
             ({"Accept-Language": "en"}, {"lang": "pt"}, "pt", "Coleções")]
    for headers, params, lang, word in cases:
        page = client.get("/", params={"f": "html", **params}, headers=headers)
        assert page.headers["content-language"] == lang, (headers, params)
        assert f'<html lang="{lang}">' in page.text and word in page.text, (headers, params)


def test_html_items_hold_what_the_json_holds(
    client: TestClient, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    key = bearer(keys[("prosecutor", "VEN")])
    page = client.get("/collections/events/items", params={"f": "html", "limit": "1000"}, headers=key)
    assert page.status_code == 200
    expected = [r for r in world if expected_detail("prosecutor", "VEN", r)]
    assert page.text.count("<tr><td><a ") == len(expected)
    assert "SECRET" not in page.text
    hidden = next(r for r in world if not expected_detail("prosecutor", "VEN", r))
    refused = client.get(f"/collections/events/items/{hidden.id}", params={"f": "html"}, headers=key)
    assert refused.status_code == 404 and refused.headers["content-type"].startswith("text/html")
    analyst = client.get("/collections/events/items", params={"f": "html"},
                         headers=bearer(keys[("analyst", None)]))
    assert analyst.status_code == 403 and "<html" in analyst.text


def test_a_browser_reads_the_pages(
    live_server: str, keys: dict[tuple[str, str | None], str], world: list[Record]
) -> None:
    key = keys[("prosecutor", "COL")]
    auth = {"Authorization": f"Bearer {key}"}
    browser = _Chromium()
    try:
        landing = browser.document(f"{live_server}/", {"Accept-Language": "es-CO,es;q=0.9"})
        assert landing["lang"] == "es" and "/map" in str(landing["links"]), landing
        listing = browser.document(f"{live_server}/collections",
                                   {**auth, "Accept-Language": "en-US,en;q=0.9"})
        assert listing["lang"] == "en" and listing["h1"] == "Collections", listing
        for cid in ("events", "routes", "corridors", "convergence-zones", "joint-operations"):
            assert any(f"/collections/{cid}?" in str(link) for link in listing["links"]), cid
        one = browser.document(f"{live_server}/collections/routes?lang=pt", auth)
        assert one["lang"] == "pt" and "Itens" in one["text"], one
        assert f"{live_server}/map" in one["links"], one
        items = browser.document(f"{live_server}/collections/events/items?limit=1000",
                                 {**auth, "Accept-Language": "es"})
        expected = sorted(str(r.id) for r in world if expected_detail("prosecutor", "COL", r))
        assert items["lang"] == "es" and sorted(items["ids"]) == expected, items
        refused = browser.document(f"{live_server}/collections", {"Accept-Language": "es"})
        assert "Authorization" in refused["text"] and refused["lang"] == "es", refused
    finally:
        browser.close()
