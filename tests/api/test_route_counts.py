"""A route made only of one country's victim-identification records: its counts stay in that country.

DESIGN.md section 6: victim-identification records are shown outside their owning country only
aggregated, with cells of fewer than k records suppressed. The route below holds Colombia's two
victim identifications, stored with 14 events (12 in August, 2 in September): Colombia's own
offices and admins read every count; a Venezuelan prosecutor (detail partner of Colombia, which
excludes victim records) and an analyst get the August count (12 >= k) and nothing else, in the
collection, the series, the CQL2 filter and every export format. The route's Mann-Kendall
statistics (a downward trend: August 12, September 2) would tell them the withheld month is the
smaller one and give back the series of Colombia's two victims: only Colombia and admins get them,
in items, the tile, filters on tau and trend, the series and the exports.

A second route holds all 18 seeded records in one month: an analyst (no record in detail, 18
hidden) gets its counts and trend, a Colombian prosecutor (8 records hidden, fewer than k) gets
its counts but not its trend, which with its own ten records known would describe the other 8.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import mapbox_vector_tile
import pyogrio
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.app import create_app
from geodata.settings import Settings
from tests.api.conftest import Products, Record, bearer

MONTHLY = {"2026-08-01": 12, "2026-09-01": 2}
#: (role, country) -> whether the caller sees every member record in detail.
CALLERS = {
    ("admin", None): True,
    ("steward", "COL"): True,
    ("prosecutor", "COL"): True,
    ("prosecutor", "VEN"): False,
    ("analyst", None): False,
}


def _added_route(engine: Engine, run_id: int, key: str, members: list[int], monthly: dict[str, int],
                 trend: str, tau: float, p_value: float, countries: list[str]) -> Iterator[int]:
    """A route of ``members`` in ``run_id`` (line and category copied from a seeded route), removed after."""
    with engine.begin() as conn:
        route_id = int(conn.execute(sa.text(
            "INSERT INTO routes (run_id, route_key, seen_before, crime_types, category, category_shares, "
            "length_m, event_count, trend, tau, p_value, countries, crossing_ids, first_event, last_event, "
            "monthly_counts, segment_keys, geom) SELECT run_id, :key, false, crime_types, category, "
            "category_shares, length_m, :n, :trend, :tau, :p, CAST(:countries AS char(3)[]), crossing_ids, "
            "first_event, last_event, CAST(:monthly AS jsonb), segment_keys, geom FROM routes "
            "WHERE run_id = :run LIMIT 1 RETURNING id"),
            {"key": key, "n": sum(monthly.values()), "trend": trend, "tau": tau, "p": p_value,
             "countries": countries, "monthly": json.dumps(monthly), "run": run_id}).scalar_one())
        for event_id in members:
            conn.execute(sa.text("INSERT INTO route_events (route_id, event_id) VALUES (:r, :e)"),
                         {"r": route_id, "e": event_id})
    yield route_id
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM routes WHERE id = :r"), {"r": route_id})


@pytest.fixture(scope="module")
def victim_route(engine: Engine, world: list[Record], products: Products) -> Iterator[int]:
    """The route of Colombia's victim identifications, in the latest run (removed afterwards)."""
    members = [r.id for r in world if r.owner == "COL" and r.kind == "victim_identification"]
    yield from _added_route(engine, products.latest_run, "victims", members, MONTHLY, "down", -1.0, 0.32,
                            ["COL"])


def check_victim_route(client: TestClient, keys: dict[tuple[str, str | None], str], route_id: int,
                       tmp: Path) -> None:
    """Owners see 14 events and both months; others see August only, the rest null and flagged."""
    for (role, country), detail in CALLERS.items():
        key, who = keys[(role, country)], f"{role}/{country}"
        total = 14 if detail else None
        months = dict(MONTHLY) if detail else {"2026-08-01": 12, "2026-09-01": None}
        item = client.get(f"/collections/routes/items/{route_id}", headers=bearer(key)).json()
        props = item["properties"]
        assert (props["event_count"], props["monthly_counts"], props["counts_suppressed"]) == (
            total, months, not detail), who
        if not detail:  # no exact date of a victim identification: the start of the shown month
            assert (props["first_event"][:10], props["last_event"][:10]) == ("2026-08-01", "2026-08-01"), who
        stats = (-1.0, 0.32, "down", False) if detail else (None, None, None, True)
        assert (props["tau"], props["p_value"], props["trend"], props["trend_suppressed"]) == stats, who
        series = client.get(f"/routes/{route_id}/series", headers=bearer(key)).json()
        assert (series["event_count"], series["counts_suppressed"]) == (total, not detail), who
        assert [(p["start"], p["count"]) for p in series["series"]] == list(months.items()), who
        assert (series["tau"], series["p_value"], series["trend"], series["trend_suppressed"]) == stats, who
        if not detail:
            assert (series["first_event"][:10], series["last_event"][:10]) == ("2026-08-01",) * 2, who
        tiled = _tile_properties(client, key, route_id)
        assert (tiled.get("tau"), tiled.get("trend"), tiled["trend_suppressed"]) == (
            stats[0], stats[2], stats[3]), who
        # a filter on the count, on tau or on the trend must not tell the hidden values either
        for probe_filter in ("event_count = 14", "tau < 0", "tau IS NULL", "trend = 'down'",
                             "p_value BETWEEN 0.3 AND 0.4"):
            probe = client.get("/collections/routes/items", params={"filter": probe_filter},
                               headers=bearer(key)).json()
            matched = route_id in {f["id"] for f in probe["features"]}
            assert matched == (detail != (probe_filter == "tau IS NULL")), f"{who} {probe_filter}"
        plain = client.get("/collections/routes/items", params={"trend": "down"}, headers=bearer(key)).json()
        assert (route_id in {f["id"] for f in plain["features"]}) == detail, who
        for fmt in ("geojson", "csv", "parquet", "gpkg", "kml"):
            response = client.get("/exports/routes", params={"format": fmt}, headers=bearer(key))
            assert response.status_code == 200, f"{who} {fmt}"
            row = _exported_row(response.content, fmt, tmp)
            assert json.loads(str(row["monthly_counts"])) == months, f"{who} {fmt}"
            assert _number(row["event_count"]) == total, f"{who} {fmt}"
            if not detail:
                assert str(row["last_event"])[:10] == "2026-08-01", f"{who} {fmt}"
            assert str(row["counts_suppressed"]).lower() in (
                {"true", "1"} if not detail else {"false", "0"}), f"{who} {fmt}"
            assert (_float(row["tau"]), _float(row["p_value"]), row["trend"] or None) == stats[:3], \
                f"{who} {fmt}"
            assert str(row["trend_suppressed"]).lower() in (
                {"true", "1"} if not detail else {"false", "0"}), f"{who} {fmt}"


def _tile_properties(client: TestClient, key: str, route_id: int) -> dict[str, Any]:
    """The properties of ``route_id`` in the zoom-7 routes tile holding the seeded routes."""
    n = 2**7
    x = int((-72.4 + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(7.6))) / math.pi) / 2.0 * n)
    tile = client.get(f"/collections/routes/tiles/WebMercatorQuad/7/{x}/{y}", headers=bearer(key))
    assert tile.status_code == 200
    features = mapbox_vector_tile.decode(tile.content)["routes"]["features"]
    return dict(next(f["properties"] for f in features if f["id"] == route_id))


def _float(value: Any) -> float | None:
    """An exported statistic as a float, None when empty (null, NaN or an empty CSV/KML field)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def _exported_row(content: bytes, fmt: str, tmp: Path) -> dict[str, Any]:
    """The exported properties of the victims' route, read back as a user's tool would."""
    if fmt == "geojson":
        rows = [f["properties"] for f in json.loads(content)["features"]]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(content.decode("utf-8"))))
    else:
        path = tmp / f"routes.{fmt}"
        path.write_bytes(content)
        frame = gpd.read_parquet(path) if fmt == "parquet" else pyogrio.read_dataframe(path)
        rows = frame.drop(columns="geometry").to_dict("records")
    # by its key: KML readers take a placemark's "id" for the placemark's own id
    return next(r for r in rows if r["route_key"] == "victims")


def _number(value: Any) -> int | None:
    """An exported count as an int, None when empty (null, NaN or an empty CSV/KML field)."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return None
    return int(float(value))


def test_victim_route_counts_stay_in_the_owning_country(
    client: TestClient, keys: dict[tuple[str, str | None], str], victim_route: int, tmp_path: Path
) -> None:
    check_victim_route(client, keys, victim_route, tmp_path)


def test_the_check_fails_without_suppression(
    settings: Settings, keys: dict[tuple[str, str | None], str], victim_route: int, tmp_path: Path
) -> None:
    """With k = 0 nothing is suppressed: other countries then read 14 and 2, and the check fails."""
    unsuppressed = create_app(settings.model_copy(update={"k_anonymity": 0}))
    with TestClient(unsuppressed) as open_client, pytest.raises(AssertionError):
        check_victim_route(open_client, keys, victim_route, tmp_path)


@pytest.fixture(scope="module")
def crowd_route(engine: Engine, world: list[Record], products: Products) -> Iterator[int]:
    """A route of every seeded record (18) in one month, trend up (removed afterwards)."""
    yield from _added_route(engine, products.latest_run, "crowd", [r.id for r in world], {"2026-08-01": 18},
                            "up", 0.9, 0.01, ["COL", "PER", "VEN"])


def test_trend_goes_only_where_at_least_k_records_are_hidden(
    client: TestClient, keys: dict[tuple[str, str | None], str], crowd_route: int
) -> None:
    # (role, country) -> trend shown: admin sees all; the analyst has 18 hidden (>= k) and every
    # count shown; the Colombian prosecutor sees 10 (its own 6, Venezuela's non-victim 4): 8 hidden.
    for (role, country), shown in {("admin", None): True, ("analyst", None): True,
                                   ("prosecutor", "COL"): False}.items():
        key, who = keys[(role, country)], f"{role}/{country}"
        item = client.get(f"/collections/routes/items/{crowd_route}", headers=bearer(key)).json()
        props = item["properties"]
        assert (props["event_count"], props["counts_suppressed"]) == (18, False), who
        assert (props["trend"], props["tau"], props["trend_suppressed"]) == (
            ("up", 0.9, False) if shown else (None, None, True)), who
        series = client.get(f"/routes/{crowd_route}/series", headers=bearer(key)).json()
        assert (series["trend"], series["trend_suppressed"]) == (
            ("up", False) if shown else (None, True)), who
