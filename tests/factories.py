"""Factories for tests: events straight into the store with SQL, and small road networks.

Events need an ``ingest_batches`` row for their foreign key; :func:`make_events` creates one
per call. Coordinates are EPSG:4326 degrees (lon, lat).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.network import WGS84, geodesic_lengths_m


def make_batch(engine: Engine, *, kind: str = "incident", owner_country: str = "SLV") -> int:
    """Insert an ingest batch and return its id."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO ingest_batches (file_name, sha256, kind, owner_country, source, loaded_by) "
                    "VALUES ('factory.csv', :sha, :kind, :owner, 'tests', 'tests') RETURNING id"
                ),
                {"sha": uuid.uuid4().hex, "kind": kind, "owner": owner_country},
            ).scalar_one()
        )


def make_events(
    engine: Engine,
    points: Sequence[tuple[float, float]],
    *,
    kind: str = "incident",
    owner_country: str = "SLV",
    precision_m: Sequence[float | None] | None = None,
    occurred_at: str = "2024-03-15",
) -> list[int]:
    """Insert one event per (lon, lat) point; returns their ids in the same order."""
    batch = make_batch(engine, kind=kind, owner_country=owner_country)
    precision = list(precision_m) if precision_m is not None else [None] * len(points)
    rows = [
        {
            "kind": kind,
            "at": occurred_at,
            "owner": owner_country,
            "lon": lon,
            "lat": lat,
            "prec": prec,
            "key": uuid.uuid4().hex,
            "batch": batch,
            "row": i + 1,
        }
        for i, ((lon, lat), prec) in enumerate(zip(points, precision, strict=True))
    ]
    with engine.begin() as conn:
        ids = [
            int(
                conn.execute(
                    sa.text(
                        "INSERT INTO events (kind, occurred_at, occurred_text, date_precision, "
                        "owner_country, geom, coord_precision_m, source, dedupe_key, batch_id, source_row) "
                        "VALUES (:kind, CAST(:at AS date), :at, 'day', :owner, "
                        "ST_SetSRID(ST_MakePoint(:lon, :lat), 4326), :prec, 'tests', :key, :batch, :row) "
                        "RETURNING id"
                    ),
                    row,
                ).scalar_one()
            )
            for row in rows
        ]
    return ids


def grid_edges(lon0: float, lat0: float, *, cells: int = 3, step_deg: float = 0.01) -> gpd.GeoDataFrame:
    """A small routable grid of road edges (EPSG:4326) with ids, nodes and geodesic lengths."""
    xs = lon0 + step_deg * np.arange(cells + 1)
    ys = lat0 + step_deg * np.arange(cells + 1)
    node = {(i, j): i * (cells + 1) + j for i in range(cells + 1) for j in range(cells + 1)}
    lines, source, target = [], [], []
    for i in range(cells + 1):
        for j in range(cells + 1):
            if i < cells:
                lines.append(shapely.LineString([(xs[i], ys[j]), (xs[i + 1], ys[j])]))
                source.append(node[i, j])
                target.append(node[i + 1, j])
            if j < cells:
                lines.append(shapely.LineString([(xs[i], ys[j]), (xs[i], ys[j + 1])]))
                source.append(node[i, j])
                target.append(node[i, j + 1])
    geoms = np.asarray(lines)
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(lines) + 1),
            "source": source,
            "target": target,
            "length_m": geodesic_lengths_m(geoms),
            "road_class": "primary",
            "name": None,
            "country": None,
        },
        geometry=geoms,
        crs=WGS84,
    )


def country_roads_file(data_dir: Path, out_dir: Path, country: str = "SLV") -> Path:
    """The Global Map road lines of one country, written as a small GeoPackage for a test."""
    target = out_dir / f"globalmap_{country.lower()}.gpkg"
    if not target.exists():
        frame = pyogrio.read_dataframe(
            data_dir / "globalmap_roads" / "globalmap_roads_latam.gpkg",
            layer="roads",
            where=f"country = '{country}'",
        )
        pyogrio.write_dataframe(frame, target, layer="roads")
    return target
