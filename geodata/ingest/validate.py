"""Validation of a chunk of records: vectorised checks, each failure a :class:`Problem`.

Coordinates are degrees in EPSG:4326 (longitude x, latitude y). A row with any problem is
rejected; the others become the rows to store, in the column order of
:data:`STAGE_COLUMNS`. Distances are geodesic (WGS84 ellipsoid) in kilometres.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from geodata.countries import Countries
from geodata.errors import Problem
from geodata.ingest import text as texts
from geodata.ingest.columns import ColumnMap
from geodata.ingest.dates import ParsedDates, parse_dates
from geodata.ingest.readers import Chunk

if TYPE_CHECKING:
    import pyproj

#: Columns written to the staging table, in order.
STAGE_COLUMNS = (
    "kind", "crime_type", "occurred_at", "occurred_text", "date_precision", "owner_country",
    "location_country", "geom", "coord_precision_m", "coordinate_fix", "dead", "missing",
    "survivors", "victims", "nationalities", "attributes", "source", "source_record_id",
    "dedupe_key", "source_row",
)
COUNT_ROLES = ("dead", "missing", "survivors", "victims")
_UNKNOWN_WORDS = {"unknown", "desconocido", "desconocida", "desconhecido", "mixed", "mixed or unknown",
                  "mixed unknown", "n a", "na", "sin dato", "sin datos", "s d", "nd"}
#: The two upper-case hex digits of each byte value, as one little-endian 16-bit word.
_HEX_PAIRS = np.frombuffer("".join(f"{b:02X}" for b in range(256)).encode(), dtype="<u2")
#: Corrections tried for a point outside its country, in order: (label es, label en, function).
_Change = Callable[[npt.NDArray[np.float64], npt.NDArray[np.float64]],
                   tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]
_CANDIDATES: tuple[tuple[str, str, _Change], ...] = (
    ("latitud y longitud intercambiadas", "latitude and longitude swapped", lambda x, y: (y, x)),
    ("longitud sin signo menos", "longitude lost its minus sign", lambda x, y: (-x, y)),
    ("latitud sin signo menos", "latitude lost its minus sign", lambda x, y: (x, -y)),
    ("latitud y longitud sin signo menos", "latitude and longitude lost their minus signs",
     lambda x, y: (-x, -y)),
    ("intercambiadas y longitud sin signo", "swapped and longitude sign lost", lambda x, y: (-y, x)),
    ("intercambiadas y latitud sin signo", "swapped and latitude sign lost", lambda x, y: (y, -x)),
)


@dataclass(frozen=True)
class Context:
    """What every row of a batch shares."""

    file: str
    kind: str
    owner_country: str | None
    source: str
    columns: ColumnMap
    countries: Countries
    fix_coordinates: bool
    earliest_year: int
    max_km_outside_country: float
    border_tolerance_km: float
    sea_tolerance_km: float = 200.0


@dataclass
class Checked:
    """The outcome of one chunk: rows to store, problems, and counts for the report."""

    rows: pd.DataFrame
    problems: list[Problem]
    rejected: int
    ambiguous_rows: list[int] = field(default_factory=list)
    fixed: int = 0
    #: Country names in the country column that were not recognised, with their row counts.
    unknown_countries: dict[str, int] = field(default_factory=dict)


class _Collector:
    """Gathers problems for a chunk from boolean masks (a loop over bad rows only)."""

    def __init__(self, ctx: Context, rows: npt.NDArray[np.int64]) -> None:
        self.ctx = ctx
        self.rows = rows
        self.bad = np.zeros(len(rows), dtype=bool)
        self.problems: list[Problem] = []

    def add(self, mask: npt.NDArray[np.bool_], field: str, values: pd.Series | npt.NDArray[np.object_],
            reason: str, reason_es: str, code: str) -> None:
        hit = np.flatnonzero(mask)
        if len(hit) == 0:
            return
        self.bad[hit] = True
        shown = (values.iloc[hit].to_numpy(dtype=object) if isinstance(values, pd.Series)
                 else np.asarray(values, dtype=object)[hit])
        self.problems.extend(
            Problem(file=self.ctx.file, row=int(self.rows[i]), field=field,
                    value="" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v),
                    reason=reason, reason_es=reason_es, code=code)
            for i, v in zip(hit, shown, strict=True)
        )


def _text(frame: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series(pd.NA, index=frame.index, dtype="str")
    return texts.series(texts.trimmed(frame[column]), frame.index)


def _number(values: pd.Series) -> npt.NDArray[np.float64]:
    return texts.numbers(texts.arrow(values))


def _decimals(values: pd.Series) -> npt.NDArray[np.float64]:
    fast = texts.decimal_places(texts.arrow(values))
    if fast is not None:
        return fast
    dot = values.str.replace(",", ".", regex=False).str.find(".")
    length = values.str.len()
    places = np.where(dot.to_numpy(dtype="float64", na_value=-1) >= 0,
                      length.to_numpy(dtype="float64", na_value=0)
                      - dot.to_numpy(dtype="float64", na_value=0) - 1,
                      0)
    return np.asarray(places, dtype="float64")


def _coordinates(chunk: Chunk, ctx: Context, bad: _Collector) -> tuple[
        npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], pd.Series]:
    """Longitude, latitude, precision in metres and the text shown in messages, per row."""
    frame = chunk.frame
    n = len(frame)
    cols = ctx.columns
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    places = np.full(n, np.nan)
    shown = pd.Series("", index=frame.index, dtype="str")
    from_columns = np.ones(n, dtype=bool)
    if chunk.geometry is not None:
        geom = chunk.geometry
        present = ~shapely.is_missing(geom) & ~shapely.is_empty(geom)
        type_id = shapely.get_type_id(geom)
        single_multi = (type_id == 4) & (shapely.get_num_geometries(geom) == 1)
        point = present & ((type_id == 0) | single_multi)
        wrong = present & ~point
        kinds = pd.Series(type_id).map(dict(enumerate(
            ["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
             "MultiPolygon", "GeometryCollection"]))).to_numpy(dtype=object)
        bad.add(wrong, "geometry", kinds,
                "The geometry is not a point: a record needs one point. Replace the shape by the "
                "place where the event happened.",
                "La geometría no es un punto: cada registro necesita un punto. Sustituya la forma "
                "por el lugar donde ocurrió el hecho.", "not_a_point")
        as_point = np.where(single_multi, shapely.get_geometry(geom, 0), geom)
        lon[point] = shapely.get_x(as_point[point])
        lat[point] = shapely.get_y(as_point[point])
        shown[point] = pd.Series(shapely.to_wkt(as_point[point], rounding_precision=6)).to_numpy()
        broken = point & ~(np.isfinite(lon) & np.isfinite(lat))
        bad.add(broken, "geometry", shown,
                "The point has no valid "
                "coordinates.", "El punto no tiene coordenadas válidas.", "bad_geometry")
        from_columns = ~present
        if cols.get("lat") is None and cols.get("coords") is None:
            bad.add(~present, "geometry", np.full(n, "", dtype=object),
                    "The record has no coordinates (no geometry). Add the point where it happened.",
                    "El registro no tiene coordenadas (sin geometría). Añada el punto donde ocurrió.",
                    "missing_coordinates")
            return lon, lat, places, shown
    if cols.get("coords") is not None:
        text = _text(frame, cols.get("coords"))
        parts = text.str.extract(
            r"^\s*\(?\s*([-+]?\d+(?:[.,]\d+)?)\s*(?:[,;]\s*|\s+)([-+]?\d+(?:[.,]\d+)?)\s*\)?\s*$")
        field_name = cols.get("coords") or "coordinates"
        lat_text, lon_text = parts[0], parts[1]
    else:
        lat_text, lon_text = _text(frame, cols.get("lat")), _text(frame, cols.get("lon"))
        lat_arrow, lon_arrow = texts.arrow(lat_text), texts.arrow(lon_text)
        empty = pa.scalar("", pa.large_string())
        joined = pc.binary_join_element_wise(pc.fill_null(lat_arrow, empty), pc.fill_null(lon_arrow, empty),
                                             pa.scalar(", ", pa.large_string()))
        either = pc.or_(pc.is_valid(lat_arrow), pc.is_valid(lon_arrow))
        text = texts.series(pc.if_else(either, joined, pa.scalar(None, pa.large_string())), frame.index)
        field_name = f"{cols.get('lat')}/{cols.get('lon')}"
    use = from_columns
    lat_c, lon_c = _number(lat_text), _number(lon_text)
    lat[use], lon[use] = lat_c[use], lon_c[use]
    places[use] = np.minimum(_decimals(lat_text), _decimals(lon_text))[use]
    if use.all():
        shown = texts.series(pc.fill_null(texts.arrow(text), pa.scalar("", pa.large_string())), frame.index)
    else:
        shown[use] = text.fillna("").to_numpy()[use]
    missing = use & text.isna().to_numpy()
    bad.add(missing, field_name, shown,
            "The coordinates are missing. Add latitude and longitude in decimal degrees (e.g. 19.43, "
            "-99.13).",
            "Faltan las coordenadas. Añada latitud y longitud en grados decimales (p. ej. 19.43, -99.13).",
            "missing_coordinates")
    unreadable = use & ~missing & ~(np.isfinite(lat) & np.isfinite(lon))
    bad.add(unreadable, field_name, shown,
            "The coordinates cannot be read as numbers. Write decimal degrees, e.g. 19.43 and -99.13.",
            "Las coordenadas no se pueden leer como números. Escriba grados decimales, p. ej. 19.43 "
            "y -99.13.",
            "bad_coordinates")
    return lon, lat, places, shown


@cache
def _geod() -> pyproj.Geod:
    import pyproj  # local: only points outside their country need geodesic distances

    return pyproj.Geod(ellps="WGS84")


def _distance_km(countries: Countries, codes: npt.NDArray[np.object_], lon: npt.NDArray[np.float64],
                 lat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Geodesic distance (km) from each point to the nearest edge of its country's polygon."""
    position = {code: i for i, code in enumerate(countries.codes)}
    polygons = countries.geoms[[position[c] for c in codes]]
    lines = shapely.shortest_line(polygons, shapely.points(lon, lat))
    near = shapely.get_point(lines, 0)
    _, _, metres = _geod().inv(lon, lat, shapely.get_x(near), shapely.get_y(near))
    return np.asarray(metres, dtype="float64") / 1000.0


def _place(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64], named: npt.NDArray[np.object_],
           shown: pd.Series, ctx: Context, bad: _Collector, field: str
           ) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.object_], int]:
    """Check ranges and countries; repair swapped points when asked. Returns location country, fix, count."""
    n = len(lon)
    finite = np.isfinite(lon) & np.isfinite(lat)
    in_range = finite & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
    fix_text = np.full(n, None, dtype=object)
    countries = ctx.countries
    located = countries.locate(np.where(in_range, lon, np.nan), np.where(in_range, lat, np.nan))
    has_name = pd.notna(named)
    fallback = ctx.owner_country if ctx.columns.get("country") is None else None
    expected = named.copy()
    # Without a country column the owner's country is expected, but a record abroad is
    # legitimate: such a point is suspect only when it lies in no country (at sea, out of range,
    # Antarctica) or very far from the owner's country, as a lost minus sign puts it.
    by_owner = ~has_name & finite & (fallback is not None)
    expected[by_owner] = fallback
    nowhere = (located == None) | (located == "ATA")  # noqa: E711
    check = finite & pd.notna(expected)
    # A point located in the expected country is inside it (codes are unique); only the others
    # are tested against the expected country's polygon.
    inside = check & (located == expected)
    test = check & ~inside
    inside[test] = countries.contains(expected[test], lon[test], lat[test])
    outside = np.flatnonzero(check & ~inside & ~((lon == 0) & (lat == 0)))
    km = np.full(n, np.nan)

    def distance(rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """Geodesic km from the original points to their expected country (computed once, lazily)."""
        todo = rows[np.isnan(km[rows])]
        if len(todo):
            km[todo] = np.inf
            ranged = todo[in_range[todo]]
            if len(ranged):
                km[ranged] = _distance_km(countries, expected[ranged], lon[ranged], lat[ranged])
        return km[rows]

    # A point just across a border (or off the coast) is a real place, not a typing error: only
    # points farther than the tolerance count as swapped or sign-lost. Distances are computed only
    # for the few rows a correction would move into their country.
    # Boats: a point at sea off the country it names is a real place up to sea_tolerance_km out.
    at_sea = (located == None) & in_range  # noqa: E711
    tolerance = np.where(by_owner & ~nowhere, ctx.max_km_outside_country,
                         np.where(at_sea, max(ctx.sea_tolerance_km, ctx.border_tolerance_km),
                                  ctx.border_tolerance_km))
    fixed = 0
    explained = np.zeros(n, dtype=bool)
    if len(outside):
        left = outside
        for label_es, label_en, change in _CANDIDATES:
            if len(left) == 0:
                break
            cx, cy = change(lon[left], lat[left])
            ok = (np.abs(cy) <= 90) & (np.abs(cx) <= 180)
            inside_now = countries.contains(expected[left], cx, cy)
            close = ok & ~inside_now & has_name[left]
            if close.any():
                # Corrected points just across the border count too (coarse 1:50m coastlines).
                gap = _distance_km(countries, expected[left[close]], cx[close], cy[close])
                inside_now[np.flatnonzero(close)[gap <= ctx.border_tolerance_km]] = True
            ok &= inside_now
            if ok.any():
                candidates = left[ok]
                ok[np.flatnonzero(ok)] = distance(candidates) > tolerance[candidates]
            hit = left[ok]
            if len(hit):
                if ctx.fix_coordinates:
                    fix_text[hit] = [f"{label_en} / {label_es}: was lat {la:g}, lon {lo:g}"
                                     for la, lo in zip(lat[hit], lon[hit], strict=True)]
                    lon[hit], lat[hit] = cx[ok], cy[ok]
                    in_range[hit] = True
                    located[hit] = expected[hit]
                    fixed += len(hit)
                else:
                    mask = np.zeros(n, dtype=bool)
                    mask[hit] = True
                    explained[hit] = True
                    bad.add(mask, field, shown,
                            f"The point is outside the record's country but falls inside it with {label_en}: "
                            "probably an error. Correct the file, or load it with --fix-coordinates to "
                            "repair it (the repair is recorded).",
                            f"El punto está fuera del país del registro pero cae dentro con {label_es}: "
                            "probablemente un error. Corrija el archivo o cárguelo con --fix-coordinates "
                            "para repararlo (la reparación queda registrada).", "probably_swapped")
            left = left[~ok]
        far_rows = left[in_range[left] & has_name[left]]
        if len(far_rows):
            mask = np.zeros(n, dtype=bool)
            mask[far_rows[distance(far_rows) > ctx.max_km_outside_country]] = True
            bad.add(mask, field, shown,
                    f"The point is more than {ctx.max_km_outside_country:g} km outside the country the row "
                    "names: the coordinates or the country are wrong. Correct one of them.",
                    f"El punto está a más de {ctx.max_km_outside_country:g} km fuera del país que indica la "
                    "fila: las coordenadas o el país están mal. Corrija uno de los dos.", "outside_country")
    out = finite & ~in_range & ~explained
    bad.add(out, field, shown,
            "Latitude must be between -90 and 90 and longitude between -180 and 180 (decimal degrees).",
            "La latitud debe estar entre -90 y 90 y la longitud entre -180 y 180 (grados decimales).",
            "out_of_range")
    bad.add(finite & (lon == 0) & (lat == 0), field, shown,
            "The point is (0, 0), in the Gulf of Guinea: an empty value exported as zero. Give the "
            "real place.",
            "El punto es (0, 0), en el golfo de Guinea: un valor vacío exportado como cero. Indique "
            "el lugar real.",
            "null_island")
    location = np.where(has_name, named, located)
    return location, fix_text, fixed


def _crime_type(frame: pd.DataFrame, ctx: Context) -> npt.NDArray[np.object_]:
    constant = ctx.columns.values.get("crime_type")
    column = ctx.columns.get("crime_type")
    if column is None:
        value = constant if constant in ("trafficking", "smuggling", "both", "unknown") else "unknown"
        return np.full(len(frame), value, dtype=object)
    text = _text(frame, column).fillna("").str.lower()
    uniques = pd.unique(text.to_numpy())
    lookup = {}
    for u in uniques:
        plain = str(u).replace("á", "a").replace("í", "i")
        traf = any(w in plain for w in ("trata", "traffick", "trafico de pessoas"))
        smug = any(w in plain for w in ("smuggl", "trafico ilicito de migrantes", "trafico de migrantes",
                                        "contrabando", "contrabando de migrantes"))
        lookup[u] = ("both" if (traf and smug) or plain.strip() in ("ambos", "both") else
                     "trafficking" if traf else "smuggling" if smug else "unknown")
    return text.map(lookup).to_numpy(dtype=object)


def _nationalities(frame: pd.DataFrame, ctx: Context) -> npt.NDArray[np.object_]:
    """PostgreSQL array literals of ISO3 codes (or the text when not a known country)."""
    column = ctx.columns.get("nationalities")
    if column is None:
        return np.full(len(frame), None, dtype=object)
    items = _text(frame, column).str.split(r"\s*[,;/]\s*", regex=True).explode().str.strip()
    items = items[items.notna() & (items != "")]
    items = items[~items.str.lower().isin(_UNKNOWN_WORDS)]
    codes = ctx.countries.code_of_names(items)
    named = codes.where(codes.notna(), items).astype(str).str.replace(r'["\\{},]', "", regex=True)
    literal = ('"' + named + '"').groupby(level=0).agg(",".join)
    result = pd.Series(None, index=frame.index, dtype=object)
    result.loc[literal.index] = "{" + literal + "}"
    return result.to_numpy(dtype=object)


def check_chunk(chunk: Chunk, ctx: Context) -> Checked:
    """Validate a chunk and build its rows for the store (see module docstring)."""
    frame = chunk.frame
    n = len(frame)
    cols = ctx.columns
    bad = _Collector(ctx, chunk.rows)

    lon, lat, places, shown = _coordinates(chunk, ctx, bad)
    named = np.full(n, None, dtype=object)
    unknown_countries: dict[str, int] = {}
    if cols.get("country"):
        country_text = _text(frame, cols.get("country"))
        named = ctx.countries.code_of_names(country_text).to_numpy(dtype=object)
        unrecognised = country_text[country_text.notna().to_numpy() & pd.isna(named)]
        unknown_countries = {str(k): int(v) for k, v in unrecognised.value_counts().items()}
    coord_field = (cols.get("coords") or (f"{cols.get('lat')}/{cols.get('lon')}" if cols.get("lat") else None)
                   or "geometry")
    location, fix_text, fixed = _place(lon, lat, named, shown, ctx, bad, coord_field)

    date_col = cols.get("date")
    dates = parse_dates(
        _text(frame, date_col) if date_col else pd.Series(pd.NA, index=frame.index, dtype="str"),
        order=cols.date_order,
        year=_text(frame, cols.get("year")) if cols.get("year") else None,
        month=_text(frame, cols.get("month")) if cols.get("month") else None,
    )
    date_field = date_col or cols.get("year") or "date"
    bad.add(dates.empty, date_field, dates.text,
            "The date is missing. Write it as 2021-04-03 or 03/04/2021.",
            "Falta la fecha. Escríbala como 2021-04-03 o 03/04/2021.", "missing_date")
    unreadable = ~dates.empty & dates.occurred_at.isna().to_numpy()
    bad.add(unreadable, date_field, dates.text,
            "The date cannot be read or does not exist (e.g. month 13). Write it as 2021-04-03 or "
            "03/04/2021.",
            "La fecha no se puede leer o no existe (p. ej. mes 13). Escríbala como 2021-04-03 o 03/04/2021.",
            "bad_date")
    stamp = dates.occurred_at
    now = pd.Timestamp(datetime.now(UTC))
    bad.add((stamp > now).to_numpy(), date_field, dates.text,
            "The date is in the future. Check the year and the day/month order.",
            "La fecha está en el futuro. Revise el año y el orden día/mes.", "future_date")
    earliest = pd.Timestamp(year=ctx.earliest_year, month=1, day=1, tz="UTC")
    bad.add((stamp < earliest).to_numpy(), date_field, dates.text,
            f"The date is before {ctx.earliest_year}; records that old are not accepted. Check the year.",
            f"La fecha es anterior a {ctx.earliest_year}; no se aceptan registros tan antiguos. "
            f"Revise el año.",
            "too_old")

    counts: dict[str, npt.NDArray[np.float64]] = {}
    for role in COUNT_ROLES:
        column = cols.get(role)
        if column is None:
            counts[role] = np.full(n, np.nan)
            continue
        text = _text(frame, column)
        value = _number(text)
        wrong = text.notna().to_numpy() & ~(np.isfinite(value) & (value >= 0) & (np.mod(value, 1) == 0))
        bad.add(wrong, column, text,
                "The number of persons must be a whole number, 0 or more; leave it empty when unknown.",
                "El número de personas debe ser un entero, 0 o más; déjelo vacío si se "
                "desconoce.", "bad_count")
        counts[role] = value

    owner = (np.full(n, ctx.owner_country, dtype=object) if ctx.owner_country is not None
             else location.copy())
    bad.add(pd.isna(owner) & ~bad.bad, cols.get("country") or "country", np.full(n, "", dtype=object),
            "Cannot tell which country the record belongs to: give --country or a country column.",
            "No se sabe a qué país pertenece el registro: indique --country o una columna de país.",
            "no_country")

    for row, detail in chunk.skipped:
        bad.problems.append(Problem(
            file=ctx.file, row=row, field="(row)", value=detail,
            reason="The row has more fields than the header: a delimiter inside a value that is not "
                   "quoted, or a stray delimiter. Quote the value or remove the extra delimiter.",
            reason_es="La fila tiene más campos que el encabezado: un separador dentro de un valor sin "
                      "comillas, o un separador de más. Ponga el valor entre comillas o quite el separador.",
            code="bad_row"))
    bad.problems.sort(key=lambda p: p.row or 0)
    keep = ~bad.bad
    rows = _stage_rows(frame, ctx, lon[keep], lat[keep], places[keep], dates, keep, location[keep],
                       owner[keep], fix_text[keep], {k: v[keep] for k, v in counts.items()},
                       chunk.rows[keep], _crime_type(frame, ctx)[keep], _nationalities(frame, ctx)[keep])
    ambiguous = chunk.rows[dates.ambiguous & keep].tolist() if not cols.date_order_given else []
    return Checked(rows=rows, problems=bad.problems, rejected=int(bad.bad.sum()) + len(chunk.skipped),
                   ambiguous_rows=ambiguous, fixed=int(np.sum(pd.notna(fix_text) & keep)) if fixed else 0,
                   unknown_countries=unknown_countries)


def _integers(values: npt.NDArray[np.float64]) -> pd.Series:
    """Whole numbers with NA where unknown (never 0 for unknown)."""
    unknown = np.isnan(values)
    whole = np.where(unknown, 0, np.round(values)).astype("int64")
    return pd.Series(pd.arrays.IntegerArray(whole, unknown))


def _ewkb_hex(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> pa.Array:
    """Hex EWKB of points with SRID 4326, built with numpy (no geometry objects)."""
    n = len(lon)
    raw = np.empty((n, 25), dtype=np.uint8)
    raw[:, :9] = np.frombuffer(bytes.fromhex("0101000020E6100000"), dtype=np.uint8)
    raw[:, 9:17] = np.ascontiguousarray(lon, dtype="<f8").view(np.uint8).reshape(n, 8)
    raw[:, 17:25] = np.ascontiguousarray(lat, dtype="<f8").view(np.uint8).reshape(n, 8)
    out = np.ascontiguousarray(_HEX_PAIRS[raw]).view(np.uint8)
    offsets = np.arange(0, 50 * n + 1, 50, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out))


def _strings(values: npt.NDArray[np.object_] | pa.Array) -> pd.Series:
    """A pandas ``str`` column over pyarrow strings (from Python strings and ``None``)."""
    if isinstance(values, pa.Array):
        return texts.series(values)
    # Columns of few distinct values (codes, levels): convert the distinct values only.
    index, uniques = pd.factorize(values, use_na_sentinel=True)
    if not all(isinstance(u, str) for u in uniques):
        return texts.series(pa.array(values, type=pa.large_string(), from_pandas=True))
    unique_array = pa.array(list(uniques), type=pa.large_string())
    if len(uniques) == 1 and bool((index == 0).all()):
        array = pa.repeat(unique_array[0], len(values))
    else:
        array = unique_array.take(pa.array(index, mask=index < 0))
    return texts.series(array)


def _attributes(frame: pd.DataFrame, extra: list[str], keep: npt.NDArray[np.bool_]) -> pd.Series:
    """The free attributes of the kept rows as JSON objects (``{}`` when there are none)."""
    rows = int(keep.sum())
    if not extra:
        return _strings(texts.json_objects({}, rows))
    if len(set(extra)) < len(extra) or not all(isinstance(frame[c].dtype, pd.StringDtype) for c in extra):
        attributes = frame[keep][extra].to_json(orient="records", lines=True, force_ascii=False).splitlines()
        return _strings(np.asarray(attributes, dtype=object))
    mask = pa.array(keep)
    return _strings(texts.json_objects({c: texts.arrow(frame[c]).filter(mask) for c in extra}, rows))


def _stage_rows(frame: pd.DataFrame, ctx: Context, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64],
                places: npt.NDArray[np.float64], dates: ParsedDates, keep: npt.NDArray[np.bool_],
                location: npt.NDArray[np.object_], owner: npt.NDArray[np.object_],
                fix_text: npt.NDArray[np.object_], counts: dict[str, npt.NDArray[np.float64]],
                rows: npt.NDArray[np.int64], crime: npt.NDArray[np.object_],
                nationalities: npt.NDArray[np.object_]) -> pd.DataFrame:
    """The kept rows in the columns of :data:`STAGE_COLUMNS` (``frame`` holds every row of the chunk)."""
    cols = ctx.columns
    n = len(lon)
    kept = pa.array(keep)
    used = {h for h in cols.roles.values()}
    # Free attributes: the columns no role uses and that hold something in this chunk.
    extra = [c for c in frame.columns if c not in used and (
        texts.arrow(frame[c]).null_count < len(frame) if isinstance(frame[c], pd.Series)
        else frame[c].notna().any())]
    attributes = _attributes(frame, extra, keep)
    record_column = cols.get("record_id")
    record_id = (texts.trimmed(frame[record_column]).filter(kept) if record_column
                 else pa.nulls(n, pa.large_string()))
    occurred = dates.occurred_at[keep]
    # Precision of the coordinates from their decimal places (1 degree of latitude ~ 111.32 km).
    precision_m = np.where(np.isfinite(places), 111_320.0 / np.power(10.0, np.nan_to_num(places)), np.nan)
    if cols.get("precision_m"):
        given = texts.numbers(texts.trimmed(frame[cols.get("precision_m")]).filter(kept))
        precision_m = np.where(np.isfinite(given), given, precision_m)
    has_id = np.asarray(record_id.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    dedupe = pc.binary_join_element_wise(pa.scalar("id:", pa.large_string()), record_id,
                                         pa.scalar("", pa.large_string()))
    if not has_id.all():
        # Rows without a record id are keyed by a hash of their content (row by row, so only
        # the rows that need it are hashed).
        hashless = ~has_id
        key_frame = pd.DataFrame({
            "t": occurred.to_numpy(dtype="datetime64[us]").astype("int64")[hashless],
            "p": dates.precision[keep][hashless].astype(str),
            "x": np.round(lon[hashless], 6), "y": np.round(lat[hashless], 6),
            "k": ctx.kind,
            **{role: counts[role][hashless] for role in COUNT_ROLES},
            "n": pd.Series(nationalities[hashless], dtype=object).fillna("").astype(str).to_numpy(),
        })
        h1 = pd.util.hash_pandas_object(key_frame, index=False).to_numpy()
        h2 = pd.util.hash_pandas_object(key_frame, index=False, hash_key="rutas-dedupe-v1!").to_numpy()
        hashed = np.full(n, None, dtype=object)
        hashed[hashless] = ("h:" + pd.Series(h1.astype(str)) + "-" + pd.Series(h2.astype(str))).to_numpy(
            dtype=object)
        dedupe = pc.coalesce(dedupe, pa.array(hashed, type=pa.large_string()))
    seconds = occurred.to_numpy(dtype="datetime64[s]")
    if np.all(seconds.astype("int64") % 86_400 == 0):  # dates start their day: format the day only
        days = pa.array(seconds.astype("datetime64[D]"), type=pa.date32()).cast(pa.large_string())
        occurred_at = pc.binary_join_element_wise(days, pa.scalar("T00:00:00Z", pa.large_string()),
                                                  pa.scalar("", pa.large_string()))
    else:
        occurred_at = pa.array(np.datetime_as_string(seconds, unit="s", timezone="UTC"),
                               type=pa.large_string())
    return pd.DataFrame({
        "kind": _strings(pa.repeat(pa.scalar(ctx.kind, pa.large_string()), n)),
        "crime_type": _strings(crime),
        "occurred_at": _strings(occurred_at),
        "occurred_text": _strings(texts.arrow(dates.text).filter(kept)),
        "date_precision": _strings(dates.precision[keep]),
        "owner_country": _strings(owner),
        "location_country": _strings(location),
        "geom": _strings(_ewkb_hex(lon, lat)),
        "coord_precision_m": precision_m,
        "coordinate_fix": fix_text,
        "dead": _integers(counts["dead"]),
        "missing": _integers(counts["missing"]),
        "survivors": _integers(counts["survivors"]),
        "victims": _integers(counts["victims"]),
        "nationalities": _strings(nationalities),
        "attributes": attributes,
        "source": _strings(pa.repeat(pa.scalar(ctx.source, pa.large_string()), n)),
        "source_record_id": _strings(record_id),
        "dedupe_key": _strings(dedupe),
        "source_row": rows,
    })
