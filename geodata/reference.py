"""Reference layers (roads, borders, crossings) as versioned, replaceable layers with provenance.

Loading a layer reads and checks the whole file first, then, in one transaction, stores the
new version, retires the previous one and recomputes what depends on it (crossings inferred
where roads meet borders). A failure at any point leaves the previous version in place.
Geometries are stored in EPSG:4326; lengths and distances in metres.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from geodata import borders as borders_mod
from geodata.db import scoped
from geodata.errors import InputError
from geodata.network import WGS84, NodingReport, build_edges
from geodata.settings import Settings

#: Credit the Global Map road layer requires on every product (non-commercial use only).
GLOBAL_MAP_CREDIT = (
    "Roads: Global Map (non-commercial use) (R) Global Map Mexico (C) ISCGM/INEGI; Global Map of Guatemala "
    "© ISCGM / Ing. Alfredo Obiols Gomez; Global Map of Belize copyright ISCGM; Global Map of El Salvador "
    "© ISCGM / Centro Nacional de Registros; Global Map of Honduras © ISCGM / Direccion General de "
    "Catastro y Geografia; Global Map of Nicaragua © ISCGM / INETER; Global Map of Panama © ISCGM / "
    "Instituto Geografico Nacional Tommy Guardia; Global Map of Colombia © ISCGM / IGAC; "
    "Global Map of Chile © ISCGM / Instituto Geografico Militar de Chile; Global Map of Brazil © ISCGM/IBGE"
)

#: Kinds of layers this module loads; other modules may load more kinds into ``reference_layers``.
NETWORK_KINDS = ("roads", "borders", "crossings")


@dataclass
class LayerReport:
    """What a load did: the new layer, what it replaced, and counts a user can check."""

    kind: str
    file: str
    source: str
    sha256: str
    layer_id: int = 0
    replaced_layer_id: int | None = None
    feature_count: int = 0
    inferred_crossings: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        """Plain dict, the JSON object ``rutas load --json`` prints."""
        return dict(self.__dict__)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_path(path: Path) -> None:
    if not path.is_file():
        raise InputError(
            f"{path}: file not found. Check the path.",
            f"{path}: no se encuentra el archivo. Revise la ruta.",
            code="not_found",
        )


def load_roads(
    engine: Engine, path: Path, *, settings: Settings, source: str | None = None, layer: str | None = None
) -> LayerReport:
    """Load a road file (OSM or line layer) as the new active road network, noded into a graph."""
    _check_path(path)
    noding = NodingReport()
    edges = build_edges(path, tolerance_m=settings.node_tolerance_m, layer=layer, report=noding)
    report = LayerReport("roads", path.name, source or path.name, file_sha256(path))
    report.details = noding.as_record()
    with scoped(engine) as conn:
        _lock(conn)
        layer_id, report.replaced_layer_id = _new_layer(conn, report, len(edges))
        base = int(conn.execute(sa.text("SELECT nextval('road_ids_seq')")).scalar_one())
        n_nodes = int(max(edges["source"].max(), edges["target"].max()) + 1)
        conn.execute(sa.text("SELECT setval('road_ids_seq', :last)"), {"last": base + len(edges) + n_nodes})
        node_pos = np.zeros((n_nodes, 2))
        geoms = np.asarray(edges.geometry.values)
        node_pos[edges["source"].to_numpy()] = shapely.get_coordinates(shapely.get_point(geoms, 0))
        node_pos[edges["target"].to_numpy()] = shapely.get_coordinates(shapely.get_point(geoms, -1))
        node_base = base + len(edges)
        _copy(
            conn,
            "road_nodes",
            ("id", "layer_id", "geom"),
            zip(
                (node_base + np.arange(n_nodes)).tolist(),
                [layer_id] * n_nodes,
                _ewkb(shapely.points(node_pos)),
                strict=True,
            ),
        )
        length = edges["length_m"].to_numpy()
        _copy(
            conn,
            "road_edges",
            (
                "id",
                "layer_id",
                "source",
                "target",
                "length_m",
                "cost",
                "reverse_cost",
                "road_class",
                "name",
                "country",
                "geom",
            ),
            zip(
                (base + np.arange(len(edges))).tolist(),
                [layer_id] * len(edges),
                (node_base + edges["source"].to_numpy()).tolist(),
                (node_base + edges["target"].to_numpy()).tolist(),
                length.tolist(),
                length.tolist(),
                length.tolist(),
                _texts(edges["road_class"]),
                _texts(edges["name"]),
                _texts(edges["country"]),
                _ewkb(geoms),
                strict=True,
            ),
        )
        _retire(conn, "roads", layer_id)
        report.inferred_crossings = _refresh_inferred_crossings(conn, settings)
    return report


def load_borders(engine: Engine, path: Path, *, settings: Settings, source: str | None = None) -> LayerReport:
    """Load border lines, or country polygons whose shared boundaries become border segments."""
    _check_path(path)
    segments = borders_mod.read_borders(path)
    if segments.empty:
        raise InputError(
            f"{path.name}: no land border found (no lines, or no two country polygons share a boundary).",
            f"{path.name}: no se encontró ninguna frontera terrestre.",
            code="no_borders",
        )
    report = LayerReport("borders", path.name, source or path.name, file_sha256(path))
    report.details = {
        "segments": len(segments),
        "country_pairs": int(segments[["country_a", "country_b"]].drop_duplicates().shape[0]),
    }
    with scoped(engine) as conn:
        _lock(conn)
        layer_id, report.replaced_layer_id = _new_layer(conn, report, len(segments))
        _copy(
            conn,
            "border_segments",
            ("layer_id", "country_a", "country_b", "geom"),
            zip(
                [layer_id] * len(segments),
                _texts(segments["country_a"]),
                _texts(segments["country_b"]),
                _ewkb(np.asarray(segments.geometry.values)),
                strict=True,
            ),
        )
        _retire(conn, "borders", layer_id)
        report.inferred_crossings = _refresh_inferred_crossings(conn, settings)
        _fill_crossing_countries(conn, settings.border_near_km * 1000.0)
    return report


def load_crossings(
    engine: Engine, path: Path, *, settings: Settings, source: str | None = None
) -> LayerReport:
    """Load official crossings (e.g. ports of entry) from a point layer; country pairs from borders."""
    _check_path(path)
    points = borders_mod.read_crossings(path)
    report = LayerReport("crossings", path.name, source or path.name, file_sha256(path))
    with scoped(engine) as conn:
        _lock(conn)
        layer_id, report.replaced_layer_id = _new_layer(conn, report, len(points))
        _copy_crossings(conn, layer_id, points, official=True)
        _retire(conn, "crossings", layer_id)
        report.details = {
            "country_pairs_from_borders": _fill_crossing_countries(conn, settings.border_near_km * 1000.0)
        }
    return report


#: ``rutas load KIND PATH`` dispatches here; other areas add their kinds (e.g. corridors).
LOADERS: dict[str, Callable[..., LayerReport]] = {
    "roads": load_roads,
    "borders": load_borders,
    "crossings": load_crossings,
}


def active_layers(conn: Connection) -> dict[str, int]:
    """Active layer id per kind of the snapping network (roads, borders, crossings, inferred)."""
    rows = conn.execute(
        sa.text(
            "SELECT kind, id FROM reference_layers WHERE active AND subkind = '' "
            "AND kind IN ('roads', 'borders', 'crossings', 'inferred_crossings') ORDER BY kind"
        )
    )
    return {str(kind): int(layer_id) for kind, layer_id in rows}


def credits(engine: Engine) -> list[str]:
    """The ``source`` (credit line) of every active reference layer, for a map's attribution."""
    with scoped(engine) as conn:
        rows = conn.execute(
            sa.text(
                "SELECT DISTINCT source FROM reference_layers WHERE active AND kind <> 'inferred_crossings' "
                "ORDER BY source"
            )
        )
        return [str(source) for source in rows.scalars()]


def _lock(conn: Connection) -> None:
    # one load of the network at a time: loads of roads and borders both rewrite inferred crossings
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('rutas.reference_layers'))"))


def _new_layer(conn: Connection, report: LayerReport, count: int) -> tuple[int, int | None]:
    old = conn.execute(
        sa.text("SELECT id FROM reference_layers WHERE kind = :kind AND subkind = '' AND active"),
        {"kind": report.kind},
    ).scalar()
    layer_id = int(
        conn.execute(
            sa.text(
                "INSERT INTO reference_layers (kind, source, file_name, sha256, feature_count, report) "
                "VALUES (:kind, :source, :file, :sha, :count, CAST(:report AS jsonb)) RETURNING id"
            ),
            {
                "kind": report.kind,
                "source": report.source,
                "file": report.file,
                "sha": report.sha256,
                "count": count,
                "report": json.dumps(report.details, default=str),
            },
        ).scalar_one()
    )
    report.layer_id, report.feature_count = layer_id, count
    return layer_id, None if old is None else int(old)


_DATA_TABLES = {
    "roads": ("road_edges", "road_nodes"),
    "borders": ("border_segments",),
    "crossings": ("crossings",),
    "inferred_crossings": ("crossings",),
}


def _retire(conn: Connection, kind: str, new_id: int) -> None:
    """Deactivate the previous version of ``kind`` (its rows go, its provenance row stays)."""
    old = [
        int(i)
        for i in conn.execute(
            sa.text(
                "SELECT id FROM reference_layers WHERE kind = :kind AND subkind = '' AND active"
                " AND id <> :new"
            ),
            {"kind": kind, "new": new_id},
        ).scalars()
    ]
    for table in _DATA_TABLES[kind]:
        conn.execute(sa.text(f"DELETE FROM {table} WHERE layer_id = ANY(:old)"), {"old": old})
    conn.execute(sa.text("UPDATE reference_layers SET active = false WHERE id = ANY(:old)"), {"old": old})
    conn.execute(sa.text("UPDATE reference_layers SET active = true WHERE id = :new"), {"new": new_id})


def _refresh_inferred_crossings(conn: Connection, settings: Settings) -> int | None:
    """Recompute crossings where active roads meet active borders; ``None`` when one is missing.

    With ``settings.crossing_places_file``, each takes the name of the nearest place (30 km).
    """
    layers = active_layers(conn)
    if "roads" not in layers or "borders" not in layers:
        return None
    roads = gpd.read_postgis(
        sa.text(
            "SELECT e.geom FROM road_edges e JOIN border_segments b ON ST_Intersects(e.geom, b.geom) "
            "WHERE e.layer_id = :r AND b.layer_id = :b"
        ),
        conn,
        geom_col="geom",
        params={"r": layers["roads"], "b": layers["borders"]},
    )
    border = gpd.read_postgis(
        sa.text("SELECT country_a, country_b, geom FROM border_segments WHERE layer_id = :b"),
        conn,
        geom_col="geom",
        params={"b": layers["borders"]},
    )
    inferred = borders_mod.infer_crossings(roads, border)
    if settings.crossing_places_file is not None and len(inferred):
        inferred = borders_mod.name_after_places(inferred, settings.crossing_places_file)
    report = LayerReport(
        "inferred_crossings", "", f"roads layer {layers['roads']} x borders layer {layers['borders']}", ""
    )
    layer_id, _ = _new_layer(conn, report, len(inferred))
    _copy_crossings(conn, layer_id, inferred, official=False)
    _retire(conn, "inferred_crossings", layer_id)
    return len(inferred)


def _fill_crossing_countries(conn: Connection, within_m: float) -> int:
    """Give official crossings without a country pair the pair of the nearest border within ``within_m``."""
    result = conn.execute(
        sa.text(
            "UPDATE crossings c SET country_a = n.country_a, country_b = n.country_b FROM ("
            " SELECT c2.id, b.country_a, b.country_b FROM crossings c2"
            " JOIN reference_layers l ON l.id = c2.layer_id AND l.active AND l.kind = 'crossings'"
            " CROSS JOIN LATERAL (SELECT s.country_a, s.country_b, s.geom FROM border_segments s"
            "   JOIN reference_layers lb ON lb.id = s.layer_id AND lb.active AND lb.kind = 'borders'"
            "   ORDER BY s.geom <-> c2.geom LIMIT 1) b"
            " WHERE c2.country_a IS NULL"
            "   AND ST_Distance(b.geom::geography, c2.geom::geography) <= :within) n "
            "WHERE c.id = n.id"
        ),
        {"within": within_m},
    )
    return int(result.rowcount or 0)


def _ewkb(geoms: np.ndarray[Any, Any]) -> list[str]:
    return list(shapely.to_wkb(shapely.set_srid(geoms, 4326), hex=True, include_srid=True))


def _texts(values: Iterable[Any]) -> list[str | None]:
    return [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]


def _copy_crossings(conn: Connection, layer_id: int, points: gpd.GeoDataFrame, *, official: bool) -> None:
    """Store crossing points (columns name, country_a, country_b; EPSG:4326) under ``layer_id``."""
    _copy(
        conn,
        "crossings",
        ("layer_id", "name", "official", "country_a", "country_b", "geom"),
        zip(
            [layer_id] * len(points),
            _texts(points["name"]),
            [official] * len(points),
            _texts(points["country_a"]),
            _texts(points["country_b"]),
            _ewkb(np.asarray(points.geometry.values)),
            strict=True,
        ),
    )


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Bulk insert with PostgreSQL COPY on the transaction's own connection."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def read_layer(engine: Engine, table: str, columns: Sequence[str]) -> gpd.GeoDataFrame:
    """The active rows of a reference table (``border_segments`` or ``crossings``) in EPSG:4326."""
    kinds = {"border_segments": "('borders')", "crossings": "('crossings', 'inferred_crossings')"}[table]
    sql = (
        f"SELECT t.id, {', '.join('t.' + c for c in columns)}, t.geom FROM {table} t "
        f"JOIN reference_layers l ON l.id = t.layer_id WHERE l.active AND l.kind IN {kinds} ORDER BY t.id"
    )
    with engine.connect() as conn:
        frame = gpd.read_postgis(sa.text(sql), conn, geom_col="geom", crs=WGS84)
    return frame.rename_geometry("geometry")
