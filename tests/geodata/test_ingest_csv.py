"""CSV ingest: encodings, delimiters, decimal commas, empty files, dates and mapping files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from geodata.errors import InputError
from geodata.settings import Settings
from tests.geodata.ingest_helpers import (
    MEXICO_CITY,
    TAPACHULA,
    codes,
    count,
    load,
    stored,
    unique_source,
    write,
)


def test_latin1_file_keeps_its_accents(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("latin1")
    text = ("fecha,latitud,longitud,descripción,país\n"
            f"2021-04-03,{TAPACHULA[0]},{TAPACHULA[1]},Ahogado en el río Suchiate,México\n")
    report = load(engine, settings, write(tmp_path / "latin1.csv", text, "latin-1"), source=source)
    assert (report.accepted, report.rejected) == (1, 0)
    [event] = stored(engine, source)
    assert event["attributes"] == {"descripción": "Ahogado en el río Suchiate"}
    assert event["location_country"] == "MEX"


def test_cp1252_quotes_are_read_as_letters(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("cp1252")
    text = ("fecha,latitud,longitud,nota\n"
            f"2021-04-03,{TAPACHULA[0]},{TAPACHULA[1]},“cruce” de 500 €\n")
    report = load(engine, settings, write(tmp_path / "win.csv", text, "cp1252"), source=source)
    assert report.accepted == 1
    assert stored(engine, source)[0]["attributes"]["nota"] == "“cruce” de 500 €"


def test_semicolon_csv_with_decimal_commas(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("semicolon")
    text = "Fecha;Latitud;Longitud;Muertos\n03/05/2022;19,4326;-99,1332;2\n15/06/2022;14,9054;-92,263;\n"
    report = load(engine, settings, write(tmp_path / "semi.csv", text), source=source)
    assert (report.accepted, report.rejected) == (2, 0)
    first, second = stored(engine, source)
    assert first["lon"] == pytest.approx(-99.1332) and first["lat"] == pytest.approx(19.4326)
    assert first["dead"] == 2
    assert second["dead"] is None  # unknown stays unknown, never 0


def test_tab_delimited_with_bom(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("bom")
    text = f"latitude\tlongitude\tdate\n{MEXICO_CITY[0]}\t{MEXICO_CITY[1]}\t2020-01-31\n"
    report = load(engine, settings, write(tmp_path / "bom.tsv", text, "utf-8-sig"), source=source)
    assert (report.accepted, report.rejected) == (1, 0)
    assert stored(engine, source)[0]["occurred_at"] == datetime(2020, 1, 31, tzinfo=UTC)


def test_empty_file_is_refused(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    source = unique_source("empty")
    with pytest.raises(InputError) as error:
        load(engine, settings, write(tmp_path / "empty.csv", ""), source=source)
    assert error.value.code == "empty_file" and "empty.csv" in error.value.message
    assert count(engine, "ingest_batches", source) == 0


def test_header_only_is_refused_and_stores_nothing(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    source = unique_source("header")
    with pytest.raises(InputError) as error:
        load(engine, settings, write(tmp_path / "header.csv", "fecha,latitud,longitud\n"), source=source)
    assert error.value.code == "no_rows"
    assert "ninguna fila" in error.value.message_es
    assert count(engine, "ingest_batches", source) == 0


def test_unknown_columns_name_the_fix(tmp_path: Path, engine: Engine, settings: Settings) -> None:
    with pytest.raises(InputError) as error:
        load(engine, settings, write(tmp_path / "odd.csv", "when,north,east\n2021-01-01,19.4,-99.1\n"))
    assert error.value.code == "unknown_columns"
    assert "--mapping" in error.value.message and "north" in error.value.message


def test_mapping_file_names_columns_and_date_order(tmp_path: Path, engine: Engine,
                                                   settings: Settings) -> None:
    source = unique_source("mapping")
    mapping = write(tmp_path / "map.json", json.dumps(
        {"columns": {"date": "when", "lat": "north", "lon": "east", "record_id": "case"},
         "date_order": "mdy", "values": {"crime_type": "smuggling"}}))
    data = write(tmp_path / "odd.csv", "case,when,north,east\nA-1,03/04/2021,19.4,-99.1\n")
    report = load(engine, settings, data, source=source, mapping=mapping)
    assert report.accepted == 1 and report.notes == []  # the mapping settled the order
    [event] = stored(engine, source)
    assert event["occurred_at"] == datetime(2021, 3, 4, tzinfo=UTC)
    assert event["crime_type"] == "smuggling" and event["source_record_id"] == "A-1"


def test_dates_day_first_by_default_and_impossible_dates(tmp_path: Path, engine: Engine,
                                                        settings: Settings) -> None:
    source = unique_source("dates")
    lat, lon = MEXICO_CITY
    text = ("fecha,latitud,longitud\n"
            f"03/04/2021,{lat},{lon}\n"      # ambiguous: read 3 April, and the report says so
            f"2021-13-45,{lat},{lon}\n"      # impossible
            f"25/12/2020,{lat},{lon}\n"      # day-first, unambiguous
            f"12/25/2020,{lat},{lon + 0.01}\n"  # month-first, unambiguous
            f"abril 2019,{lat},{lon}\n"      # month precision
            f"2099-01-01,{lat},{lon}\n"      # future
            f"1985-06-01,{lat},{lon}\n"      # before 1990
            f",{lat},{lon}\n")               # missing
    report = load(engine, settings, write(tmp_path / "dates.csv", text), source=source)
    assert codes(report) == {2: {"bad_date"}, 6: {"future_date"}, 7: {"too_old"}, 8: {"missing_date"}}
    by_row = {e["source_row"]: e for e in stored(engine, source)}
    assert by_row[1]["occurred_at"] == datetime(2021, 4, 3, tzinfo=UTC)
    assert by_row[1]["occurred_text"] == "03/04/2021" and by_row[1]["date_precision"] == "day"
    assert by_row[3]["occurred_at"] == by_row[4]["occurred_at"] == datetime(2020, 12, 25, tzinfo=UTC)
    assert (by_row[5]["occurred_at"], by_row[5]["date_precision"]) == (datetime(2019, 4, 1, tzinfo=UTC),
                                                                       "month")
    [note] = report.notes
    assert note.code == "ambiguous_date" and note.row == 1 and "day-first" in note.reason
    bad = next(p for p in report.errors if p.row == 2)
    assert (bad.field, bad.value) == ("fecha", "2021-13-45") and "mes 13" in bad.reason_es


def test_row_with_an_extra_delimiter_is_reported_and_the_rest_loads(tmp_path: Path, engine: Engine,
                                                                   settings: Settings) -> None:
    source = unique_source("extra")
    lat, lon = TAPACHULA
    text = ("fecha,latitud,longitud,lugar\n"
            f"2021-04-03,{lat},{lon},Tapachula\n"
            f"2021-04-04,{lat},{lon},Tapachula, Chiapas\n"   # unquoted comma inside a value
            f"2021-04-05,{lat},{lon},Ciudad Hidalgo\n")
    report = load(engine, settings.model_copy(update={"ingest_chunk_rows": 2}),
                  write(tmp_path / "x.csv", text),
                  source=source)
    assert (report.rows_read, report.accepted, report.rejected) == (3, 2, 1)
    assert codes(report) == {2: {"bad_row"}}
    assert [(e["source_row"], e["attributes"]["lugar"]) for e in stored(engine, source)] == [
        (1, "Tapachula"), (3, "Ciudad Hidalgo")]
