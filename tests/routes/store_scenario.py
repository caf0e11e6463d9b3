"""A planted scenario stored as real records: Global Map roads of El Salvador loaded as the
active road layer, and synthetic events inserted as incidents, ready for ``rutas run``.

Events are stored at their points on the roads (EPSG:4326), unsnapped, so the pipeline's
snapping stage runs on them. ``source_row`` of each event is its row in the scenario's frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from geodata.network import read_edges
from geodata.reference import load_roads
from geodata.settings import Settings
from routes.synthetic import Scenario, make_scenario
from tests.factories import country_roads_file, make_batch


def reset_store(engine: Engine) -> None:
    """Empty the records and the runs (routes and route events go with them)."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, ingest_batches, analysis_runs RESTART IDENTITY CASCADE"))


def insert_events(
    engine: Engine,
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    days: list[str],
    *,
    crime_type: str,
    owner_country: str = "SLV",
) -> dict[int, int]:
    """Insert incidents (days as YYYY-MM-DD) in one statement; returns {row in the arrays: event id}."""
    batch = make_batch(engine, owner_country=owner_country)
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(
                "INSERT INTO events (kind, crime_type, occurred_at, occurred_text, date_precision, "
                "owner_country, location_country, geom, source, dedupe_key, batch_id, source_row) "
                "SELECT 'incident', :crime, CAST(d AS date), d, 'day', :owner, :owner, "
                "ST_SetSRID(ST_MakePoint(x, y), 4326), 'tests', md5(random()::text || n::text), :batch, n "
                "FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[]), CAST(:d AS text[])) "
                "WITH ORDINALITY AS t(x, y, d, n) RETURNING source_row, id"
            ),
            {
                "crime": crime_type,
                "owner": owner_country,
                "batch": batch,
                "x": np.asarray(lon).tolist(),
                "y": np.asarray(lat).tolist(),
                "d": days,
            },
        ).all()
    return {int(row) - 1: int(event_id) for row, event_id in rows}


def store_scenario(
    engine: Engine, settings: Settings, data_dir: Path, tmp_dir: Path
) -> tuple[Scenario, dict[int, int]]:
    """Load El Salvador's roads, plant an intensifying and a persistent route, store the events as smuggling.

    Returns the scenario (built on the stored edges, so its edge ids are the store's) and
    the stored id of each of its events.
    """
    reset_store(engine)
    load_roads(
        engine, country_roads_file(data_dir, tmp_dir, "SLV"), settings=settings, source="Global Map SLV"
    )
    edges = read_edges(engine)
    scenario = make_scenario(
        edges,
        behaviours=("intensifying", "persistent"),
        n_slices=18,
        route_km=40.0,
        separation_km=60.0,
        peak=20.0,
        off_network_share=0.0,
        seed=1,
    )
    ev = scenario.events
    ids = insert_events(
        engine,
        ev["lon"].to_numpy(),
        ev["lat"].to_numpy(),
        ev["occurred_at"].dt.strftime("%Y-%m-%d").tolist(),
        crime_type="smuggling",
    )
    return scenario, ids
