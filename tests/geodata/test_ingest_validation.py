"""Validation: coordinates (swapped, sign lost, out of range, (0, 0)), duplicates, strict mode, IOM."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.errors import InputError
from geodata.settings import Settings
from tests.geodata.ingest_helpers import (
    BOGOTA,
    CIUDAD_JUAREZ,
    MEXICO_CITY,
    TAPACHULA,
    codes,
    count,
    load,
    stored,
    unique_source,
    write,
)

BAD_POINTS = (
    "id,fecha,latitud,longitud,pais\n"
    f"1,2021-01-10,{MEXICO_CITY[0]},{MEXICO_CITY[1]},México\n"      # good
    f"2,2021-01-11,{TAPACHULA[1]},{TAPACHULA[0]},México\n"          # lat/lon swapped
    f"3,2021-01-12,{CIUDAD_JUAREZ[0]},{-CIUDAD_JUAREZ[1]},México\n"  # longitude lost its minus sign
    "4,2021-01-13,95.2,-99.1,México\n"                                 # latitude out of range
    "5,2021-01-14,0,0,México\n"                                        # (0, 0)
    "6,2021-01-15,,,México\n"                                          # no coordinates
    "7,2021-01-16,19.4,abc,México\n"                                   # not a number
    f"8,2021-01-17,{BOGOTA[0]},{BOGOTA[1]},Colombia\n"               # another country, named
)


def test_bad_coordinates_are_reported_row_by_row(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("points")
    report = load(engine, settings, write(tmp_path / "points.csv", BAD_POINTS), source=source)
    assert codes(report) == {2: {"probably_swapped"}, 3: {"probably_swapped"}, 4: {"out_of_range"},
                             5: {"null_island"}, 6: {"missing_coordinates"}, 7: {"bad_coordinates"}}
    assert (report.rows_read, report.accepted, report.rejected) == (8, 2, 6)
    swapped = next(p for p in report.errors if p.row == 2)
    assert swapped.file == "points.csv" and "swapped" in swapped.reason
    assert "intercambiadas" in swapped.reason_es
    sign = next(p for p in report.errors if p.row == 3)
    assert "minus sign" in sign.reason and "--fix-coordinates" in sign.reason
    assert [(e["source_row"], e["location_country"], e["owner_country"]) for e in stored(engine, source)] == [
        (1, "MEX", "MEX"), (8, "COL", "MEX")]


def test_unrecognised_country_names_are_noted(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("names")
    lat, lon = TAPACHULA
    text = (f"fecha,latitud,longitud,país\n2021-01-10,{lat},{lon},Mexcio\n2021-01-11,{lat},{lon},Mexcio\n"
            f"2021-01-12,{lat},{lon},Estados Unidos Mexicanos del Norte\n2021-01-13,{lat},{lon},méxico\n")
    report = load(engine, settings, write(tmp_path / "names.csv", text), source=source)
    assert report.accepted == 4
    [note] = [n for n in report.notes if n.code == "unknown_country"]
    assert note.value == "Mexcio, Estados Unidos Mexicanos del Norte" and note.reason.startswith("3 rows")
    assert {e["location_country"] for e in stored(engine, source)} == {"MEX"}


def test_fix_coordinates_repairs_and_records(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("fix")
    report = load(engine, settings, write(tmp_path / "points.csv", BAD_POINTS), source=source,
                  fix_coordinates=True)
    assert (report.accepted, report.rejected, report.fixed) == (4, 4, 2)
    by_row = {e["source_row"]: e for e in stored(engine, source)}
    assert (by_row[2]["lat"], by_row[2]["lon"]) == pytest.approx(TAPACHULA)
    assert (by_row[3]["lat"], by_row[3]["lon"]) == pytest.approx(CIUDAD_JUAREZ)
    assert "swapped" in by_row[2]["coordinate_fix"] and "-92.263" in by_row[2]["coordinate_fix"]
    assert "minus sign" in by_row[3]["coordinate_fix"]
    assert by_row[1]["coordinate_fix"] is None
    assert any(n.code == "coordinates_fixed" for n in report.notes)


def test_swapped_point_without_country_column_uses_the_owner(tmp_path: Path, engine: Engine,
                                                            settings: Settings) -> None:
    source = unique_source("owner")
    text = ("fecha,latitud,longitud\n"
            f"2021-01-11,{MEXICO_CITY[1]},{MEXICO_CITY[0]}\n"   # lat -99: out of range, swapped fits MEX
            f"2021-01-12,{BOGOTA[0]},{BOGOTA[1]}\n")            # abroad, but a real place: kept
    report = load(engine, settings, write(tmp_path / "owner.csv", text), source=source)
    assert codes(report) == {1: {"probably_swapped"}}
    [kept] = stored(engine, source)
    assert (kept["source_row"], kept["location_country"], kept["owner_country"]) == (2, "COL", "MEX")


def test_point_near_a_border_is_not_called_swapped(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    # Ipiales (Colombia), 3 km from Ecuador, reported by Ecuador: flipping the latitude would land
    # in Ecuador, but a point this close to the named country is a real cross-border place.
    source = unique_source("border")
    text = "fecha,latitud,longitud,pais\n2021-01-11,0.8300,-77.6440,Ecuador\n"
    report = load(engine, settings, write(tmp_path / "border.csv", text), source=source,
                  owner_country="ECU", fix_coordinates=True)
    assert (report.accepted, report.fixed) == (1, 0)
    assert stored(engine, source)[0]["lat"] == pytest.approx(0.83)


def test_boat_off_the_coast_is_not_called_swapped(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    # IOM: "Off coast of Alexandria, Egypt", 40 km out at sea; swapping would land near Cairo.
    source = unique_source("sea")
    text = "fecha,latitud,longitud,pais\n2021-01-11,31.5253,29.6864,Egypt\n"
    report = load(engine, settings, write(tmp_path / "sea.csv", text), source=source,
                  owner_country="EGY", fix_coordinates=True)
    assert (report.accepted, report.fixed, report.errors) == (1, 0, [])
    assert stored(engine, source)[0]["lat"] == pytest.approx(31.5253)


def test_duplicates_in_file_and_same_file_twice(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("dups")
    lat, lon = TAPACHULA
    text = ("fecha,latitud,longitud,muertos\n"
            f"2021-02-01,{lat},{lon},1\n"
            f"2021-02-01,{lat},{lon},1\n"       # same record again, no id: same content hash
            f"2021-02-02,{lat},{lon},1\n"
            f"2021-02-02,{lat},{lon},3\n")      # differs in a count: another record
    path = write(tmp_path / "dups.csv", text)
    first = load(engine, settings, path, source=source)
    assert (first.rows_read, first.accepted, first.duplicates) == (4, 3, 1)
    second = load(engine, settings, path, source=source)
    assert (second.rows_read, second.accepted, second.duplicates, second.rejected) == (4, 0, 4, 0)
    assert second.batch_id != first.batch_id
    assert count(engine, "events", source) == 3
    with engine.connect() as conn:
        batches = conn.execute(sa.text(
            "SELECT accepted, duplicates, report->>'duplicates' FROM ingest_batches WHERE source = :s "
            "ORDER BY id"), {"s": source}).all()
    assert [tuple(b) for b in batches] == [(3, 1, "1"), (0, 4, "4")]


def test_duplicates_across_chunks_of_a_first_load(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("chunks")
    lat, lon = TAPACHULA
    rows = [f"A{i % 3},2021-02-0{1 + i % 3},{lat},{lon}" for i in range(7)]  # A0 A1 A2 A0 A1 A2 A0
    path = write(tmp_path / "chunks.csv", "id,fecha,latitud,longitud\n" + "\n".join(rows) + "\n")
    report = load(engine, settings.model_copy(update={"ingest_chunk_rows": 2}), path, source=source)
    assert (report.rows_read, report.accepted, report.duplicates) == (7, 3, 4)
    assert [e["source_row"] for e in stored(engine, source)] == [1, 2, 3]


def test_record_ids_decide_duplicates(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("ids")
    lat, lon = TAPACHULA
    first = write(tmp_path / "v1.csv", f"id,fecha,latitud,longitud\nX1,2021-02-01,{lat},{lon}\n")
    corrected = write(tmp_path / "v2.csv", f"id,fecha,latitud,longitud\nX1,2021-02-03,{lat},{lon}\n"
                                           f"X2,2021-02-04,{lat},{lon}\n")
    assert load(engine, settings, first, source=source).accepted == 1
    again = load(engine, settings, corrected, source=source)
    assert (again.accepted, again.duplicates) == (1, 1)
    assert [e["source_record_id"] for e in stored(engine, source)] == ["X1", "X2"]


def test_strict_refuses_the_whole_file(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("strict")
    with pytest.raises(InputError) as error:
        load(engine, settings, write(tmp_path / "points.csv", BAD_POINTS), source=source, strict=True)
    assert error.value.code == "strict_rejected"
    assert {p.row for p in error.value.problems} == {2, 3, 4, 5, 6, 7}
    assert count(engine, "events", source) == 0 and count(engine, "ingest_batches", source) == 0


def test_bad_counts_are_rejected_and_unknown_is_null(tmp_path: Path, engine: Engine,
                                                     settings: Settings) -> None:
    source = unique_source("counts")
    lat, lon = TAPACHULA
    text = ("fecha,latitud,longitud,muertos,desaparecidos,sobrevivientes\n"
            f"2021-02-01,{lat},{lon},2,,0\n"
            f"2021-02-02,{lat},{lon},-1,,\n"
            f"2021-02-03,{lat},{lon},dos,,\n")
    report = load(engine, settings, write(tmp_path / "counts.csv", text), source=source)
    assert codes(report) == {2: {"bad_count"}, 3: {"bad_count"}}
    [event] = stored(engine, source)
    assert (event["dead"], event["missing"], event["survivors"], event["victims"]) == (2, None, 0, None)


def test_iom_file_every_row_accounted_for(engine: Engine, settings: Settings, data_dir: Path) -> None:
    source = unique_source("iom")
    path = data_dir / "iom_missing_migrants" / "missing_migrants_americas_NO_ROUTE_LABEL.csv"
    report = load(engine, settings, path, owner_country=None, source=source)
    assert report.rows_read == 5668
    assert report.accepted + report.rejected + report.duplicates == 5668
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT source_row, source_record_id FROM events WHERE source = :s"),
                            {"s": source}).all()
    ids: dict[int, str] = {int(r[0]): str(r[1]) for r in rows}
    problems = {p.row: p.code for p in report.errors}
    # The four US rows whose longitude lost its minus sign (SOURCE.md), and the row with no point.
    flagged = {r for r, c in problems.items() if c == "probably_swapped"}
    assert {4208, 4314, 4403, 4470} <= flagged
    assert problems[4531] == "missing_coordinates"
    assert problems[2124] == "outside_country"  # the Oaxaca incident placed in Armenia/Turkey
    assert len(ids) == report.accepted and "2014.MMP00001" in ids.values()
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT owner_country, dead, missing, survivors, nationalities, occurred_at::date::text "
            "FROM events WHERE source = :s AND source_record_id = '2014.MMP00001'"), {"s": source}).one()
    assert tuple(row) == ("USA", 1, None, None, ["GTM"], "2014-01-06")


def test_location_owned_file_loaded_twice_adds_nothing(tmp_path: Path, engine: Engine,
                                                       settings: Settings) -> None:
    # Without --country each record belongs to its location country; the second load must still
    # find every record of the source in the store (across owners) and add nothing.
    source = unique_source("owners")
    text = ("fecha,latitud,longitud,país\n"
            f"2021-02-01,{TAPACHULA[0]},{TAPACHULA[1]},México\n"
            f"2021-02-02,{BOGOTA[0]},{BOGOTA[1]},Colombia\n")
    path = write(tmp_path / "owners.csv", text)
    first = load(engine, settings, path, owner_country=None, source=source)
    second = load(engine, settings, path, owner_country=None, source=source)
    assert (first.accepted, second.accepted, second.duplicates) == (2, 0, 2)
    assert sorted(e["owner_country"] for e in stored(engine, source)) == ["COL", "MEX"]
    # The same records reported by another office are that office's own, not duplicates.
    third = load(engine, settings, path, owner_country="GTM", source=source)
    assert (third.accepted, third.duplicates) == (2, 0)
