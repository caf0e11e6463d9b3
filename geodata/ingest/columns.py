"""Which column of a file holds what: names in Spanish, Portuguese and English, or a mapping file.

A mapping file is JSON (UTF-8), for headers the built-in names do not cover::

    {
      "columns": {"lat": "Y_WGS84", "lon": "X_WGS84", "date": "FechaHecho",
                  "record_id": "NroCaso", "country": "PaisHecho"},
      "date_order": "mdy",
      "values": {"crime_type": "smuggling"}
    }

``columns`` maps a role (see :data:`ROLES`) to the file's header, exactly as written.
``date_order`` is ``dmy`` (default, the norm in the region), ``mdy`` or ``ymd`` and decides
how ambiguous dates such as 03/04/2021 are read. ``values`` gives a constant for a role the
file lacks (for instance every row of the file is ``smuggling``).
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geodata.errors import InputError

#: role -> accepted header names (compared after :func:`normalise_header`), best first.
ROLES: dict[str, tuple[str, ...]] = {
    "lat": ("latitud", "latitude", "lat", "y", "coord y", "coordenada y", "latitud wgs84",
            "latitude wgs84", "lat dd", "latitud decimal"),
    "lon": ("longitud", "longitude", "lon", "lng", "long", "x", "coord x", "coordenada x",
            "longitud wgs84", "longitude wgs84", "lon dd", "longitud decimal"),
    "coords": ("coordinates", "coordenadas", "coords", "lat lon", "lat long", "latlon",
               "latitud longitud", "latitude longitude", "ubicacion gps", "gps", "location coordinates"),
    "date": ("fecha", "data", "date", "incident date", "fecha del hecho", "fecha hecho",
             "fecha del incidente", "fecha incidente", "fecha de ocurrencia", "fecha ocurrencia",
             "data do fato", "data da ocorrencia", "data do incidente", "occurred at",
             "occurred on", "event date", "fecha del evento", "fecha de interceptacion",
             "fecha de identificacion", "data da identificacao", "incident date yyyy mm dd",
             "timestamp", "when"),
    "year": ("ano", "anio", "year", "incident year", "ano del hecho", "ano do fato"),
    "month": ("mes", "month", "mes del hecho", "mes do fato"),
    "country": ("pais", "country", "country of incident", "pais del hecho", "pais del incidente",
                "pais de ocurrencia", "pais do fato", "pais do incidente", "pais da ocorrencia",
                "location country", "country of location", "pais de ubicacion"),
    "record_id": ("incident id", "id", "record id", "source record id", "id registro", "id caso",
                  "codigo", "codigo caso", "numero de caso", "nro caso", "caso", "case id",
                  "case number", "numero do caso", "id do caso", "id incidente", "main id",
                  "fid", "objectid"),
    "dead": ("number of dead", "dead", "deaths", "muertos", "fallecidos", "numero de muertos",
             "numero de fallecidos", "mortos", "obitos", "numero de mortos"),
    "missing": ("minimum estimated number of missing", "missing", "number of missing",
                "desaparecidos", "numero de desaparecidos"),
    "survivors": ("number of survivors", "survivors", "sobrevivientes", "sobreviventes",
                  "numero de sobrevivientes", "numero de sobreviventes"),
    "victims": ("number of victims", "victims", "victimas", "numero de victimas",
                "victimas identificadas", "vitimas", "numero de vitimas", "persons", "personas",
                "pessoas"),
    "nationalities": ("nationalities", "nationality", "country of origin", "nacionalidad",
                      "nacionalidades", "nacionalidade", "pais de origen", "pais de origem",
                      "origen", "origem"),
    "crime_type": ("crime type", "crime", "tipo de delito", "delito", "tipo delito",
                   "tipo de crime", "crime tipo", "tipologia"),
    "precision_m": ("coord precision m", "coordinate precision m", "precision m", "precision",
                    "precision metros", "precisao m", "precisao", "accuracy m", "accuracy"),
}

DATE_ORDERS = ("dmy", "mdy", "ymd")


def normalise_header(text: str) -> str:
    """Lower-case, accent-free, punctuation-free form of a header, for matching."""
    decomposed = unicodedata.normalize("NFKD", str(text))
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^a-z0-9]+", " ", plain).strip()


@dataclass(frozen=True)
class Mapping:
    """What a mapping file says: explicit columns per role, date order, constant values."""

    columns: dict[str, str] = field(default_factory=dict)
    date_order: str | None = None
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnMap:
    """The file's header for each role it has (roles it lacks are absent)."""

    roles: dict[str, str]
    date_order: str
    date_order_given: bool
    values: dict[str, str]

    def get(self, role: str) -> str | None:
        """The header holding ``role``, or ``None``."""
        return self.roles.get(role)


def read_mapping(path: Path | None) -> Mapping:
    """Parse a JSON mapping file (see the module docstring); ``None`` gives an empty mapping.

    Raises
    ------
    InputError
        When the file is not valid JSON, names an unknown role or an unknown date order.
    """
    if path is None:
        return Mapping()
    try:
        raw: Any = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"The mapping file {path} cannot be read as JSON ({exc}). Write it as in the "
            "README's 'Loading records' section.",
            f"El archivo de correspondencias {path} no es JSON válido ({exc}). Escríbalo como "
            "indica la sección 'Loading records' del README.",
            code="bad_mapping",
        ) from exc
    if not isinstance(raw, dict):
        raise InputError(
            f"The mapping file {path} must hold a JSON object with 'columns'.",
            f"El archivo de correspondencias {path} debe contener un objeto JSON con 'columns'.",
            code="bad_mapping",
        )
    columns = {str(k): str(v) for k, v in dict(raw.get("columns", {})).items()}
    values = {str(k): str(v) for k, v in dict(raw.get("values", {})).items()}
    unknown = sorted((set(columns) | set(values)) - set(ROLES))
    if unknown:
        raise InputError(
            f"The mapping file {path} names unknown roles {unknown}; use some of {sorted(ROLES)}.",
            f"El archivo de correspondencias {path} usa roles desconocidos {unknown}; use "
            f"algunos de {sorted(ROLES)}.",
            code="bad_mapping",
        )
    order = raw.get("date_order")
    if order is not None and order not in DATE_ORDERS:
        raise InputError(
            f"The mapping file {path} has date_order {order!r}; use one of {list(DATE_ORDERS)}.",
            f"El archivo de correspondencias {path} tiene date_order {order!r}; use uno de "
            f"{list(DATE_ORDERS)}.",
            code="bad_mapping",
        )
    return Mapping(columns=columns, date_order=order, values=values)


def recognise(headers: list[str], mapping: Mapping, *, file: str, has_geometry: bool) -> ColumnMap:
    """Decide which header holds each role: the mapping first, then the built-in names.

    Parameters
    ----------
    headers
        The file's column names, as written.
    mapping
        An explicit mapping (may be empty).
    file
        File name, for messages.
    has_geometry
        True when the format carries a geometry (GeoJSON, GeoPackage, KML, Shapefile), so no
        coordinate columns are needed.

    Raises
    ------
    InputError
        When a mapped column is missing, or no way to place the records or date them exists.
    """
    missing = [h for h in mapping.columns.values() if h not in headers]
    if missing:
        raise InputError(
            f"{file}: the mapping names columns {missing} that the file does not have. "
            f"Its columns are: {headers}.",
            f"{file}: el archivo de correspondencias nombra columnas {missing} que el archivo "
            f"no tiene. Sus columnas son: {headers}.",
            code="bad_mapping",
        )
    roles: dict[str, str] = dict(mapping.columns)
    taken = set(roles.values())
    by_name: dict[str, str] = {}
    for header in headers:
        by_name.setdefault(normalise_header(header), header)
    for role, names in ROLES.items():
        if role in roles:
            continue
        for name in names:
            found = by_name.get(name)
            if found is not None and found not in taken:
                roles[role] = found
                taken.add(found)
                break
    placed = has_geometry or "coords" in roles or ("lat" in roles and "lon" in roles)
    dated = "date" in roles or "year" in roles
    if not placed or not dated:
        need = []
        if not placed:
            need.append("latitude + longitude (latitud/longitud, latitude/longitude, lat/lon/lng) "
                        "or one 'lat, lon' column (coordenadas/coordinates)")
        if not dated:
            need.append("a date (fecha/data/date) or a year (año/ano/year)")
        raise InputError(
            f"{file}: cannot find {' and '.join(need)} among the columns {headers}. Rename the "
            "columns or give a mapping file (--mapping) as the README's 'Loading records' explains.",
            f"{file}: no se encuentran las columnas de {'coordenadas' if not placed else 'fecha'} "
            f"entre {headers}. Renombre las columnas o indique un archivo de correspondencias "
            "(--mapping), como explica la sección 'Loading records' del README.",
            code="unknown_columns",
        )
    return ColumnMap(
        roles=roles,
        date_order=mapping.date_order or "dmy",
        date_order_given=mapping.date_order is not None,
        values=dict(mapping.values),
    )
