"""Ingest of records (incidents, interceptions, victim identifications): read, check, load.

``ingest_file`` loads a file (CSV, Excel, GeoJSON, GeoPackage, KML/KMZ, zipped Shapefile);
``ingest_features`` loads a GeoJSON FeatureCollection already in memory (OGC API Part 4
create). Both validate every row, store a batch all or nothing, and return a
:class:`BatchReport`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from geodata.errors import InputError
from geodata.ingest.load import BatchReport, OnLoaded, ingest_file
from geodata.settings import Settings

__all__ = ["BatchReport", "ingest_features", "ingest_file"]


def ingest_features(
    engine: Engine,
    feature_collection: dict[str, Any],
    *,
    settings: Settings,
    name: str,
    kind: str,
    owner_country: str | None,
    source: str | None = None,
    strict: bool = False,
    fix_coordinates: bool = False,
    loaded_by: str = "api",
    on_loaded: OnLoaded | None = None,
) -> BatchReport:
    """Validate and load a GeoJSON FeatureCollection (EPSG:4326) as one batch.

    The collection goes through the same reader and checks as a GeoJSON file named
    ``name``; see :func:`ingest_file` for the other parameters.

    Raises
    ------
    InputError
        When the body is not a FeatureCollection, is too large, or (``strict``) has bad rows.
    """
    if not isinstance(feature_collection, dict) or feature_collection.get("type") != "FeatureCollection" \
            or not isinstance(feature_collection.get("features"), list):
        raise InputError(
            f"{name}: the body must be a GeoJSON FeatureCollection with a 'features' list.",
            f"{name}: el cuerpo debe ser una FeatureCollection GeoJSON con una lista 'features'.",
            code="bad_body",
        )
    body = json.dumps(feature_collection, ensure_ascii=False).encode("utf-8")
    if len(body) > settings.ingest_max_features_bytes:
        raise InputError(
            f"{name}: the collection is {len(body) / 1e6:.1f} MB, above the "
            f"{settings.ingest_max_features_bytes / 1e6:.0f} MB limit; send it in parts or as a file.",
            f"{name}: la colección pesa {len(body) / 1e6:.1f} MB, más que el límite de "
            f"{settings.ingest_max_features_bytes / 1e6:.0f} MB; envíela por partes o como archivo.",
            code="too_large",
        )
    with tempfile.TemporaryDirectory(prefix="rutas-features-") as folder:
        path = Path(folder) / "features.geojson"
        path.write_bytes(body)
        return ingest_file(
            engine, path, settings=settings, kind=kind, owner_country=owner_country, source=source,
            strict=strict, fix_coordinates=fix_coordinates, loaded_by=loaded_by, on_loaded=on_loaded,
            display_name=name,
        )
