"""CQL2 filters (OGC API Features Part 3): text or JSON, parsed to an AST, translated to bound SQL.

Parsing is done by the ``cql2`` library (text and JSON both become CQL2-JSON); this module walks
that tree and emits a SQL fragment whose every value is a bind parameter, and whose every
property is looked up in the collection's queryables (the allow-list): a user's value or name
is never pasted into SQL. Geometries are EPSG:4326 (lon, lat); ``S_DWITHIN`` distances are
metres on the spheroid (``geography``).

Temporal operators compare an instant property ``t`` with an instant or an interval
``[start, end]`` (``..`` is open): ``T_BEFORE`` t < start, ``T_AFTER`` t > end, ``T_INTERSECTS``
start <= t <= end, ``T_DURING`` start < t < end, ``T_EQUALS`` t = instant, ``T_DISJOINT`` not
intersects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import cql2 as _cql2

from geodata.errors import InputError

#: Queryable types, as JSON Schema describes them in ``/queryables``.
TYPES = ("string", "number", "integer", "boolean", "datetime", "geometry")
MAX_DEPTH = 30

_COMPARISONS = {"=": "=", "<>": "<>", "!=": "<>", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
_ARITHMETIC = {"+": "+", "-": "-", "*": "*", "/": "/"}
_SPATIAL = {
    "s_intersects": "ST_Intersects", "s_within": "ST_Within", "s_contains": "ST_Contains",
    "s_disjoint": "ST_Disjoint", "s_equals": "ST_Equals", "s_touches": "ST_Touches",
    "s_crosses": "ST_Crosses", "s_overlaps": "ST_Overlaps",
}
_TEMPORAL = ("t_before", "t_after", "t_intersects", "t_during", "t_equals", "t_disjoint")
_UNITS_M = {"meters": 1.0, "metres": 1.0, "m": 1.0, "kilometers": 1000.0, "kilometres": 1000.0,
            "km": 1000.0}


@dataclass(frozen=True)
class Queryable:
    """One property a filter may name: its SQL expression (trusted) and its JSON Schema type."""

    name: str
    sql: str
    type: str
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """JSON Schema of this queryable, as ``/queryables`` lists it."""
        if self.type == "datetime":
            out: dict[str, Any] = {"type": "string", "format": "date-time"}
        elif self.type == "geometry":
            out = {"$ref": "https://geojson.org/schema/Geometry.json"}
        else:
            out = {"type": self.type}
        out["title"] = self.name
        if self.description:
            out["description"] = self.description
        return out


@dataclass
class SqlFilter:
    """A SQL boolean expression with its bind parameters (names prefixed ``cql_``)."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)
    #: The queryables the filter names (a collection's default, such as the latest run, yields to them).
    properties: frozenset[str] = frozenset()


def _properties(node: Any) -> set[str]:
    """Every property a CQL2-JSON tree names."""
    if isinstance(node, dict):
        if set(node) == {"property"}:
            return {str(node["property"])}
        return {name for value in node.values() for name in _properties(value)}
    if isinstance(node, list):
        return {name for value in node for name in _properties(value)}
    return set()


def _literal_text(node: Any) -> str | None:
    """The text literal of ``node``, also inside CASEI/ACCENTI/LOWER/UPPER; None for anything else."""
    wrappers = ("casei", "accenti", "lower", "upper")
    while isinstance(node, dict) and str(node.get("op", "")).lower() in wrappers:
        args = node.get("args")
        if not isinstance(args, list) or len(args) != 1:
            return None
        node = args[0]
    return node if isinstance(node, str) else None


def _bad(message: str, message_es: str) -> InputError:
    return InputError(
        f"Bad filter: {message} Fix the filter parameter (CQL2 text or JSON).",
        f"Filtro no válido: {message_es} Corrija el parámetro filter (CQL2 en texto o JSON).",
        code="bad_filter",
    )


def parse(filter_text: str, lang: str | None = None) -> dict[str, Any]:
    """Parse a CQL2 filter (``cql2-text`` or ``cql2-json``) into its CQL2-JSON tree.

    Raises
    ------
    InputError
        With code ``bad_filter`` and the parser's position when the text is not CQL2.
    """
    if lang == "cql-text":  # the draft's name, still sent by GDAL and other clients
        lang = "cql2-text"
    if lang not in (None, "cql2-text", "cql2-json"):
        raise _bad(f"filter-lang {lang!r} is not supported (use cql2-text or cql2-json).",
                   f"filter-lang {lang!r} no es compatible (use cql2-text o cql2-json).")
    source: str | dict[str, Any] = filter_text
    stripped = filter_text.strip()
    if lang == "cql2-json" or (lang is None and stripped.startswith("{")):
        try:
            source = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise _bad(f"the JSON is not valid ({exc.msg} at position {exc.pos}).",
                       f"el JSON no es válido ({exc.msg} en la posición {exc.pos}).") from None
        if not isinstance(source, dict):
            raise _bad("a CQL2-JSON filter must be an object.", "un filtro CQL2-JSON debe ser un objeto.")
    try:
        tree = _cql2.Expr(source).to_json()
    except Exception as exc:  # the parser raises a bare Exception with a caret diagram
        detail = " ".join(str(exc).split())[:300]
        raise _bad(f"it cannot be parsed: {detail}", f"no se puede interpretar: {detail}") from None
    if isinstance(tree, bool):
        return {"op": "=", "args": [True, tree]}
    if not isinstance(tree, dict):
        raise _bad("it is not a boolean expression.", "no es una expresión booleana.")
    return tree


def count_nodes(tree: Any, depth: int = 0) -> int:
    """Number of nodes in a CQL2-JSON tree (its complexity); raises past ``MAX_DEPTH`` levels."""
    if depth > MAX_DEPTH:
        raise _bad(f"it nests deeper than {MAX_DEPTH} levels.", f"anida más de {MAX_DEPTH} niveles.")
    if isinstance(tree, dict):
        children = tree.get("args", []) if "op" in tree else []
        return 1 + sum(count_nodes(c, depth + 1) for c in children)
    if isinstance(tree, list):
        return 1 + sum(count_nodes(c, depth + 1) for c in tree)
    return 1


class _Translator:
    def __init__(self, queryables: dict[str, Queryable]) -> None:
        self.queryables = queryables
        self.params: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        if isinstance(value, str) and "\x00" in value:
            raise _bad("text values cannot contain the NUL character.",
                       "los textos no pueden contener el carácter NUL.")
        name = f"cql_{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    # -- values -------------------------------------------------------------------------------
    def prop(self, node: dict[str, Any]) -> Queryable:
        name = str(node["property"])
        found = self.queryables.get(name) or self.queryables.get(name.lower())
        if found is None:
            allowed = ", ".join(sorted(self.queryables))
            raise _bad(f"property {name!r} is not queryable here; queryables: {allowed}.",
                       f"la propiedad {name!r} no se puede consultar aquí; consultables: {allowed}.")
        return found

    def scalar(self, node: Any) -> tuple[str, str]:
        """SQL and type ('string', 'number', 'boolean', 'datetime', 'geometry', 'null') of a value."""
        if isinstance(node, bool):
            return self.bind(node), "boolean"
        if isinstance(node, int | float):
            return self.bind(float(node)), "number"
        if isinstance(node, str):
            return self.bind(node), "string"
        if node is None:
            return "NULL", "null"
        if isinstance(node, dict):
            if "property" in node:
                q = self.prop(node)
                kind = "number" if q.type == "integer" else q.type
                return q.sql, kind
            if "timestamp" in node or "date" in node:
                return self.bind(parse_instant(node.get("timestamp", node.get("date")))), "datetime"
            if "bbox" in node or "type" in node:
                return self.geometry(node), "geometry"
            op = str(node.get("op", "")).lower()
            if op in _ARITHMETIC:
                a, b = self._args(node, 2)
                left, lt = self.scalar(a)
                right, rt = self.scalar(b)
                if lt != "number" or rt != "number":
                    raise _bad(f"'{op}' needs numbers.", f"'{op}' necesita números.")
                return f"({left} {_ARITHMETIC[op]} {right})", "number"
            if op in ("casei", "lower", "upper"):
                (a,) = self._args(node, 1)
                inner, kind = self.scalar(a)
                if kind != "string":
                    raise _bad(f"{op.upper()} needs text.", f"{op.upper()} necesita texto.")
                return f"lower({inner})", "string"
            if op == "accenti":
                (a,) = self._args(node, 1)
                return self.scalar(a)
        raise _bad(f"{json.dumps(node)[:80]} is not a value Rutas can compare.",
                   f"{json.dumps(node)[:80]} no es un valor que Rutas pueda comparar.")

    def geometry(self, node: dict[str, Any]) -> str:
        if "bbox" in node:
            box = node["bbox"]
            if not isinstance(box, list) or len(box) not in (4, 6):
                raise _bad("BBOX needs 4 numbers.", "BBOX necesita 4 números.")
            minx, miny, maxx, maxy = (box[0], box[1], box[2], box[3]) if len(box) == 4 else (
                box[0], box[1], box[3], box[4])
            coords = [self.bind(float(v)) for v in (minx, miny, maxx, maxy)]
            return f"ST_MakeEnvelope({', '.join(coords)}, 4326)"
        if "property" in node:
            q = self.prop(node)
            if q.type != "geometry":
                raise _bad(f"{q.name!r} is not a geometry.", f"{q.name!r} no es una geometría.")
            return q.sql
        if node.get("type") not in ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon",
                                    "MultiPolygon", "GeometryCollection"):
            raise _bad("a spatial operator needs a geometry (WKT or GeoJSON) or BBOX.",
                       "un operador espacial necesita una geometría (WKT o GeoJSON) o BBOX.")
        return f"ST_SetSRID(ST_GeomFromGeoJSON({self.bind(json.dumps(node))}), 4326)"

    def interval(self, node: Any) -> tuple[str | None, str | None]:
        """Bound SQL of an instant or interval's start and end (None when open)."""
        if isinstance(node, dict) and "interval" in node:
            ends = node["interval"]
            if not isinstance(ends, list) or len(ends) != 2:
                raise _bad("INTERVAL needs a start and an end.", "INTERVAL necesita inicio y fin.")
            start = None if ends[0] in ("..", None) else self.bind(parse_instant(ends[0]))
            end = None if ends[1] in ("..", None) else self.bind(parse_instant(ends[1], end=True))
            return start, end
        if isinstance(node, dict) and ("timestamp" in node or "date" in node):
            raw = node.get("timestamp", node.get("date"))
            if "date" in node:  # a date is the whole day
                return self.bind(parse_instant(raw)), self.bind(parse_instant(raw, end=True))
            sql = self.bind(parse_instant(raw))
            return sql, sql
        if isinstance(node, str):
            sql = self.bind(parse_instant(node))
            return sql, sql
        raise _bad("a temporal operator needs TIMESTAMP, DATE or INTERVAL.",
                   "un operador temporal necesita TIMESTAMP, DATE o INTERVAL.")

    def _args(self, node: dict[str, Any], n: int) -> list[Any]:
        args = node.get("args")
        if not isinstance(args, list) or len(args) != n:
            raise _bad(f"'{node.get('op')}' takes {n} arguments.",
                       f"'{node.get('op')}' lleva {n} argumentos.")
        return args

    # -- predicates ---------------------------------------------------------------------------
    def predicate(self, node: Any) -> str:
        if isinstance(node, bool):
            return "TRUE" if node else "FALSE"
        if not isinstance(node, dict) or "op" not in node:
            raise _bad(f"{json.dumps(node)[:80]} is not a condition.",
                       f"{json.dumps(node)[:80]} no es una condición.")
        op = str(node["op"]).lower()
        args = node.get("args", [])
        if op in ("and", "or"):
            if not isinstance(args, list) or len(args) < 2:
                raise _bad(f"{op.upper()} needs two conditions.", f"{op.upper()} necesita dos condiciones.")
            return "(" + f" {op.upper()} ".join(self.predicate(a) for a in args) + ")"
        if op == "not":
            (a,) = self._args(node, 1)
            return f"(NOT {self.predicate(a)})"
        if op in _COMPARISONS:
            a, b = self._args(node, 2)
            left, lt = self.scalar(a)
            right, rt = self._coerced(b, lt)
            if lt != rt and "null" not in (lt, rt):
                raise _bad(f"cannot compare {lt} with {rt} in '{op}'.",
                           f"no se puede comparar {lt} con {rt} en '{op}'.")
            return f"({left} {_COMPARISONS[op]} {right})"
        if op == "like":
            a, b = self._args(node, 2)
            left, lt = self.scalar(a)
            right, rt = self.scalar(b)
            if lt != "string" or rt != "string":
                raise _bad("LIKE needs text on both sides.", "LIKE necesita texto en ambos lados.")
            pattern = _literal_text(b)
            if pattern is not None and (len(pattern) - len(pattern.rstrip("\\"))) % 2:
                raise _bad(f"the LIKE pattern {pattern!r} ends with a lone backslash, the escape "
                           "character: double it to match a backslash.",
                           f"el patrón LIKE {pattern!r} termina en una barra invertida sola, el carácter "
                           "de escape: duplíquela para buscar una barra invertida.")
            return f"({left} LIKE {right})"
        if op == "between":
            a, lo, hi = self._args(node, 3)
            left, lt = self.scalar(a)
            low, _ = self._coerced(lo, lt)
            high, _ = self._coerced(hi, lt)
            return f"({left} BETWEEN {low} AND {high})"
        if op == "in":
            a, values = self._args(node, 2)
            left, lt = self.scalar(a)
            if not isinstance(values, list) or not values:
                raise _bad("IN needs a non-empty list.", "IN necesita una lista no vacía.")
            items = ", ".join(self._coerced(v, lt)[0] for v in values)
            return f"({left} IN ({items}))"
        if op == "isnull":
            (a,) = self._args(node, 1)
            return f"({self.scalar(a)[0]} IS NULL)"
        if op in _SPATIAL:
            a, b = self._args(node, 2)
            return f"{_SPATIAL[op]}({self.geometry(a)}, {self.geometry(b)})"
        if op == "s_dwithin":
            return self.dwithin(node)
        if op in _TEMPORAL:
            return self.temporal(op, node)
        raise _bad(f"operator {node['op']!r} is not supported.", f"el operador {node['op']!r} no se admite.")

    def _coerced(self, node: Any, want: str) -> tuple[str, str]:
        """A literal compared with a datetime property may be written as a plain ISO string."""
        if want == "datetime" and isinstance(node, str):
            return self.bind(parse_instant(node)), "datetime"
        return self.scalar(node)

    def dwithin(self, node: dict[str, Any]) -> str:
        args = node.get("args")
        if not isinstance(args, list) or len(args) not in (3, 4):
            raise _bad("S_DWITHIN takes a geometry, a geometry, a distance and optionally units "
                       "(meters or kilometers).",
                       "S_DWITHIN lleva geometría, geometría, distancia y opcionalmente unidades "
                       "(meters o kilometers).")
        distance = args[2]
        if isinstance(distance, bool) or not isinstance(distance, int | float) or distance < 0:
            raise _bad("S_DWITHIN's distance must be a number >= 0.",
                       "la distancia de S_DWITHIN debe ser un número >= 0.")
        factor = 1.0
        if len(args) == 4:
            unit = args[3]
            unit_name = str(unit.get("property", "") if isinstance(unit, dict) else unit).lower()
            if unit_name not in _UNITS_M:
                raise _bad(f"unit {unit_name!r} is not known (use meters or kilometers).",
                           f"la unidad {unit_name!r} no se conoce (use meters o kilometers).")
            factor = _UNITS_M[unit_name]
        left, right = self.geometry(args[0]), self.geometry(args[1])
        return (f"ST_DWithin(({left})::geography, ({right})::geography, "
                f"{self.bind(float(distance) * factor)})")

    def temporal(self, op: str, node: dict[str, Any]) -> str:
        a, b = self._args(node, 2)
        if not (isinstance(a, dict) and "property" in a):
            a, b = b, a
        left, lt = self.scalar(a)
        if lt != "datetime":
            raise _bad(f"{op.upper()} needs a date-time property.",
                       f"{op.upper()} necesita una propiedad de fecha y hora.")
        start, end = self.interval(b)
        parts: list[str] = []
        if op == "t_before":
            parts = [f"{left} < {start}"] if start else ["FALSE"]
        elif op == "t_after":
            parts = [f"{left} > {end}"] if end else ["FALSE"]
        elif op in ("t_intersects", "t_disjoint", "t_equals"):
            if start:
                parts.append(f"{left} >= {start}")
            if end:
                parts.append(f"{left} <= {end}")
        elif op == "t_during":
            if start:
                parts.append(f"{left} > {start}")
            if end:
                parts.append(f"{left} < {end}")
        sql = "(" + (" AND ".join(parts) or "TRUE") + ")"
        return f"(NOT {sql})" if op == "t_disjoint" else sql


def parse_instant(raw: Any, *, end: bool = False) -> datetime:
    """A timezone-aware UTC datetime from an ISO 8601 date or timestamp (a date's end is 23:59:59.999999)."""
    if not isinstance(raw, str):
        raise _bad(f"{raw!r} is not a date or timestamp.", f"{raw!r} no es una fecha ni un instante.")
    text = raw.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end:
                moment = moment.replace(hour=23, minute=59, second=59, microsecond=999_999)
            return moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad(f"{raw!r} is not an ISO 8601 date or timestamp (e.g. 2024-03-01T00:00:00Z).",
                   f"{raw!r} no es una fecha ISO 8601 (p. ej. 2024-03-01T00:00:00Z).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_sql(tree: dict[str, Any], queryables: dict[str, Queryable], *, max_nodes: int) -> SqlFilter:
    """Translate a CQL2-JSON tree into a SQL boolean expression with bind parameters.

    Parameters
    ----------
    tree
        CQL2-JSON, as :func:`parse` returns it.
    queryables
        The collection's allow-list: name to trusted SQL expression and type.
    max_nodes
        Complexity bound: filters with more nodes are refused.
    """
    nodes = count_nodes(tree)
    if nodes > max_nodes:
        raise _bad(f"it has {nodes} terms; at most {max_nodes} are allowed.",
                   f"tiene {nodes} términos; se admiten como máximo {max_nodes}.")
    translator = _Translator(queryables)
    sql = translator.predicate(tree)
    return SqlFilter(sql=sql, params=translator.params)


def compile_filter(filter_text: str | None, lang: str | None, queryables: dict[str, Queryable],
                   *, max_nodes: int, equals: list[tuple[str, str]] | None = None) -> SqlFilter:
    """Parse and translate a filter, ANDed with ``name=value`` query parameters, in one step.

    ``equals`` are queryables given as plain query parameters (OGC "queryables as query
    parameters"): each value is read as the queryable's type.
    """
    trees: list[Any] = [parse(filter_text, lang)] if filter_text else []
    for name, value in equals or []:
        trees.append({"op": "=", "args": [{"property": name}, _typed(queryables[name], value)]})
    if not trees:
        return SqlFilter(sql="TRUE")
    tree = trees[0] if len(trees) == 1 else {"op": "and", "args": trees}
    compiled = to_sql(tree, queryables, max_nodes=max_nodes)
    compiled.properties = frozenset(_properties(tree))
    return compiled


def _typed(queryable: Queryable, value: str) -> Any:
    """A query parameter's text as a CQL2-JSON literal of the queryable's type."""
    if queryable.type in ("number", "integer"):
        try:
            return float(value)
        except ValueError:
            raise _bad(f"{queryable.name}={value!r} must be a number.",
                       f"{queryable.name}={value!r} debe ser un número.") from None
    if queryable.type == "boolean":
        if value.lower() not in ("true", "false"):
            raise _bad(f"{queryable.name}={value!r} must be true or false.",
                       f"{queryable.name}={value!r} debe ser true o false.")
        return value.lower() == "true"
    if queryable.type == "datetime":
        return {"timestamp": value}
    return value
