"""Coordinate reading, property-based: every way offices write a point reads back the same point.

These call the validation stage directly on small frames (no database needed for the check).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from geodata.countries import load_countries
from geodata.ingest.columns import Mapping, recognise
from geodata.ingest.readers import Chunk
from geodata.ingest.validate import Context, check_chunk
from geodata.settings import Settings, get_settings

LATS = st.floats(-89.99999, 89.99999).map(lambda v: round(v, 5)).filter(lambda v: abs(v) > 1e-4)
LONS = st.floats(-179.99999, 179.99999).map(lambda v: round(v, 5)).filter(lambda v: abs(v) > 1e-4)


def _context(headers: list[str], base: Settings) -> Context:
    return Context(file="p.csv", kind="incident", owner_country=None, source="prop",
                   columns=recognise(headers, Mapping(), file="p.csv", has_geometry=False),
                   countries=load_countries(base), fix_coordinates=False, earliest_year=1990,
                   max_km_outside_country=1000.0, border_tolerance_km=30.0)


def _read(frame: pd.DataFrame) -> tuple[float, float]:
    ctx = _context(list(frame.columns), get_settings())
    # Every row needs an owner: with no --country, the point's country (or none at sea).
    checked = check_chunk(Chunk(frame=frame.astype("str"), rows=np.arange(1, len(frame) + 1)), ctx)
    ewkb = checked.rows["geom"].tolist()
    points = shapely.from_wkb([bytes.fromhex(h) for h in ewkb])
    return float(shapely.get_y(points[0])), float(shapely.get_x(points[0]))


@settings(max_examples=80, deadline=None)
@given(LATS, LONS)
def test_written_forms_read_back_the_same_point(lat: float, lon: float) -> None:
    located = load_countries(get_settings()).locate(np.array([lon]), np.array([lat]))[0]
    if located is None:
        return  # at sea no owner can be inferred (tested elsewhere); the forms are the point here
    forms = [
        pd.DataFrame({"fecha": ["2021-01-01"], "latitud": [f"{lat}"], "longitud": [f"{lon}"]}),
        pd.DataFrame({"fecha": ["2021-01-01"], "Latitude": [f"{lat}".replace(".", ",")],
                      "LNG": [f"{lon}".replace(".", ",")]}),
        pd.DataFrame({"date": ["2021-01-01"], "Coordinates": [f"{lat}, {lon}"]}),
        pd.DataFrame({"data": ["2021-01-01"], "coordenadas": [f"({lat}; {lon})"]}),
        pd.DataFrame({"data": ["2021-01-01"], "coordenadas": [f"{lat} {lon}"]}),
    ]
    for frame in forms:
        read = _read(frame)
        assert read == (lat, lon), (frame.to_dict("records"), read)
