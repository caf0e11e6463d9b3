"""Countries: polygons (Natural Earth 1:50m) and names in Spanish, Portuguese and English -> ISO3.

The key of a country is Natural Earth's ``ADM0_A3`` (equal to ISO 3166-1 alpha-3 for every
sovereign state of the region; France is ``FRA`` and Norway ``NOR`` where ``ISO_A3`` is -99).
Polygons are in EPSG:4326 (longitude, latitude in degrees). Point-in-country tests are
vectorised: a grid cell (1/16 degree) that lies inside one country, or touches none, answers
for all its points at once; the other points are tested against the prepared polygons.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from geodata.errors import ConfigurationError
from geodata.settings import Settings

COUNTRIES_FILE = Path("natural_earth") / "ne_50m_admin_0_countries.geojson"
#: Side of the grid cells (degrees) whose points are placed by one test of the cell.
_CELL_DEG = 1 / 16
#: Cells holding fewer points of one call are not worth classifying: their points are tested.
_MIN_CELL_POINTS = 8
_NO_COUNTRY = -1
_MIXED = -2

#: Spanish and Portuguese names (and common variants in source systems) that Natural Earth's
#: English names do not cover. Keys are compared after :func:`normalise_name`.
_EXTRA_NAMES: dict[str, str] = {
    # Spanish
    "argentina": "ARG", "bolivia": "BOL", "brasil": "BRA", "chile": "CHL", "colombia": "COL",
    "costa rica": "CRI", "cuba": "CUB", "ecuador": "ECU", "el salvador": "SLV", "espana": "ESP",
    "estados unidos": "USA", "estados unidos de america": "USA", "eeuu": "USA", "ee uu": "USA",
    "guatemala": "GTM", "guyana": "GUY", "guayana francesa": "FRA", "haiti": "HTI",
    "honduras": "HND", "jamaica": "JAM", "mexico": "MEX", "nicaragua": "NIC", "panama": "PAN",
    "paraguay": "PRY", "peru": "PER", "portugal": "PRT", "puerto rico": "PRI",
    "republica dominicana": "DOM", "surinam": "SUR", "trinidad y tobago": "TTO",
    "uruguay": "URY", "venezuela": "VEN", "belice": "BLZ", "bahamas": "BHS", "canada": "CAN",
    "barbados": "BRB", "granada": "GRD", "dominica": "DMA", "santa lucia": "LCA",
    "san vicente y las granadinas": "VCT", "san cristobal y nieves": "KNA",
    "antigua y barbuda": "ATG", "islas turcas y caicos": "TCA", "islas caiman": "CYM",
    "islas virgenes de los estados unidos": "VIR", "andorra": "AND", "francia": "FRA",
    "italia": "ITA", "alemania": "DEU", "china": "CHN", "india": "IND", "marruecos": "MAR",
    "senegal": "SEN", "camerun": "CMR", "ghana": "GHA", "nigeria": "NGA", "angola": "AGO",
    "egipto": "EGY", "bangladesh": "BGD", "pakistan": "PAK", "afganistan": "AFG",
    "nepal": "NPL", "ucrania": "UKR", "rusia": "RUS", "federacion de rusia": "RUS",
    "reino unido": "GBR", "paises bajos": "NLD", "holanda": "NLD", "curazao": "CUW",
    # Portuguese
    "brazil": "BRA", "estados unidos da america": "USA", "mexico ": "MEX", "colombia ": "COL",
    "peru ": "PER", "equador": "ECU", "paraguai": "PRY", "uruguai": "URY", "guiana": "GUY",
    "guiana francesa": "FRA", "suriname": "SUR", "venezuela ": "VEN", "bolivia ": "BOL",
    "republica dominicana ": "DOM", "haiti ": "HTI", "panama ": "PAN", "nicaragua ": "NIC",
    "belize": "BLZ", "canada ": "CAN", "espanha": "ESP", "franca": "FRA", "alemanha": "DEU",
    "angola ": "AGO", "mocambique": "MOZ", "cabo verde": "CPV", "guine bissau": "GNB",
    "camaroes": "CMR", "marrocos": "MAR", "egito": "EGY", "russia": "RUS", "ucrania ": "UKR",
    "paises baixos": "NLD", "reino unido ": "GBR", "china ": "CHN", "india ": "IND",
    # English variants used by UN agencies (IOM exports)
    "venezuela bolivarian republic of": "VEN", "bolivia plurinational state of": "BOL",
    "united states of america": "USA", "united states": "USA", "usa": "USA", "us": "USA",
    "united states virgin islands": "VIR", "us virgin islands": "VIR",
    "russian federation": "RUS", "iran islamic republic of": "IRN",
    "syrian arab republic": "SYR", "republic of korea": "KOR", "viet nam": "VNM",
    "united republic of tanzania": "TZA", "democratic republic of the congo": "COD",
    "congo": "COG", "cote d ivoire": "CIV", "turkiye": "TUR", "czechia": "CZE",
    "republic of moldova": "MDA", "lao people s democratic republic": "LAO",
    "state of palestine": "PSX", "netherlands": "NLD", "bahamas the": "BHS",
}


def normalise_name(text: str) -> str:
    """Lower-case ``text``, drop accents and punctuation, squeeze spaces (for name matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    return re.sub(r"[^a-z0-9]+", " ", plain).strip()


@dataclass(frozen=True)
class Countries:
    """Country polygons (EPSG:4326) with their ``ADM0_A3`` codes and a name index.

    Attributes
    ----------
    codes
        ``ADM0_A3`` code of each polygon, in the order of ``geoms``.
    bounds
        Bounding box of each polygon, degrees.
    geoms
        Prepared (Multi)Polygons in EPSG:4326, longitude/latitude degrees.
    names
        Normalised name or code (es/pt/en, ISO2, ISO3) -> ``ADM0_A3``.
    """

    codes: npt.NDArray[np.object_]
    geoms: npt.NDArray[np.object_]
    names: dict[str, str]
    #: Bounding box of each polygon (min lon, min lat, max lon, max lat); computed when not given.
    bounds: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 4)))
    #: Grid cells already classified: cell key -> the one country whose interior holds the whole
    #: cell, :data:`_NO_COUNTRY` when no country touches it, :data:`_MIXED` otherwise.
    cells: dict[int, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.geoms):
            object.__setattr__(self, "bounds", np.asarray(shapely.bounds(self.geoms), dtype=np.float64))

    def code_of_names(self, names: pd.Series) -> pd.Series:
        """ISO3 code of each country name or code in ``names`` (``None`` when not recognised).

        Names may be Spanish, Portuguese or English, with or without accents, or ISO
        alpha-2 / alpha-3 codes. The work is done once per distinct name.
        """
        text = names.astype("object").where(names.notna(), "")
        uniques = pd.unique(text.to_numpy())
        lookup = {u: self.names.get(normalise_name(str(u))) for u in uniques}
        codes = text.map(lookup).astype("object")
        return codes.where(codes.notna(), None)

    def locate(self, lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> npt.NDArray[np.object_]:
        """ISO3 code of the country containing each point (``None`` at sea or outside all).

        ``lon``/``lat`` are degrees in EPSG:4326; NaN gives ``None``.
        """
        result = np.full(len(lon), None, dtype=object)
        cell = self._cell_countries(lon, lat)
        whole = cell >= 0
        result[whole] = self.codes[cell[whole]]
        self._locate_exactly(np.flatnonzero(cell == _MIXED), lon, lat, result)
        return result

    def _locate_exactly(self, rows: npt.NDArray[np.intp], lon: npt.NDArray[np.float64],
                        lat: npt.NDArray[np.float64], result: npt.NDArray[np.object_]) -> None:
        """Point-in-polygon tests of ``rows`` against every country whose bounding box holds them."""
        valid = rows[np.isfinite(lon[rows]) & np.isfinite(lat[rows])]
        if len(valid) == 0:
            return
        # Sort once by longitude; each country then tests only the points inside its bounding
        # box, against its prepared polygon (faster than an STRtree of points here).
        order = valid[np.argsort(lon[valid], kind="stable")]
        sorted_lon = lon[order]
        bounds = self.bounds
        y = lat[valid]
        near = np.flatnonzero((bounds[:, 0] <= sorted_lon[-1]) & (bounds[:, 2] >= sorted_lon[0])
                              & (bounds[:, 1] <= y.max()) & (bounds[:, 3] >= y.min()))
        for i in near.tolist():
            lo = int(np.searchsorted(sorted_lon, bounds[i, 0], side="left"))
            hi = int(np.searchsorted(sorted_lon, bounds[i, 2], side="right"))
            found = order[lo:hi]
            found = found[(lat[found] >= bounds[i, 1]) & (lat[found] <= bounds[i, 3])]
            if len(found):
                inside = shapely.contains_xy(self.geoms[i], lon[found], lat[found])
                result[found[inside]] = self.codes[i]

    def _cell_countries(self, lon: npt.NDArray[np.float64],
                        lat: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
        """Per point, the country whose interior holds the point's whole grid cell.

        :data:`_NO_COUNTRY` where no country touches the cell (no point of it is in a country),
        :data:`_MIXED` where the points need an exact test (a border or coast crosses the cell,
        the cell holds too few points of this call to be worth classifying, or NaN). Cells are
        closed boxes of :data:`_CELL_DEG` degrees; classifications are kept for later calls.
        """
        out = np.full(len(lon), _MIXED, dtype=np.int64)
        finite = np.flatnonzero(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180)
                                & (np.abs(lat) <= 90))
        if len(finite) == 0:
            return out
        col = np.floor(lon[finite] / _CELL_DEG).astype(np.int64)
        row = np.floor(lat[finite] / _CELL_DEG).astype(np.int64)
        keys = (col + 4 * 180 * 16) * 100_000 + (row + 4 * 90 * 16)
        uniques, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        classes = np.full(len(uniques), _MIXED, dtype=np.int64)
        for j, (key, count) in enumerate(zip(uniques.tolist(), counts.tolist(), strict=True)):
            known = self.cells.get(key)
            if known is None and count >= _MIN_CELL_POINTS:
                known = self._classify(key)
                self.cells[key] = known
            if known is not None:
                classes[j] = known
        out[finite] = classes[inverse]
        return out

    def _classify(self, key: int) -> int:
        col = key // 100_000 - 4 * 180 * 16
        row = key % 100_000 - 4 * 90 * 16
        x0, y0 = col * _CELL_DEG, row * _CELL_DEG
        x1, y1 = x0 + _CELL_DEG, y0 + _CELL_DEG
        b = self.bounds
        near = np.flatnonzero((b[:, 0] <= x1) & (b[:, 2] >= x0) & (b[:, 1] <= y1) & (b[:, 3] >= y0))
        if len(near) == 0:
            return _NO_COUNTRY
        box = shapely.box(x0, y0, x1, y1)
        touching = near[shapely.intersects(self.geoms[near], box)]
        if len(touching) == 0:
            return _NO_COUNTRY
        if len(touching) == 1 and bool(shapely.contains_properly(self.geoms[touching[0]], box)):
            return int(touching[0])
        return _MIXED

    def contains(
        self,
        codes: npt.NDArray[np.object_],
        lon: npt.NDArray[np.float64],
        lat: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.bool_]:
        """Whether each point (degrees, EPSG:4326) lies inside the country named by ``codes``.

        A point whose code is ``None`` or unknown, or whose coordinates are NaN, gives False.
        The loop runs over distinct countries, never over rows.
        """
        result = np.zeros(len(lon), dtype=bool)
        finite = np.isfinite(lon) & np.isfinite(lat)
        position = {code: i for i, code in enumerate(self.codes)}
        bounds = self.bounds
        distinct = pd.unique(codes[finite])
        for code in distinct:
            if code is None or code not in position:
                continue
            i = position[code]
            named = finite if len(distinct) == 1 else finite & (codes == code)
            # Only points inside the polygon's bounding box can be inside the polygon; a cell
            # inside one country, or touched by none, answers for all its points.
            rows = np.flatnonzero(named & (lon >= bounds[i, 0]) & (lon <= bounds[i, 2])
                                  & (lat >= bounds[i, 1]) & (lat <= bounds[i, 3]))
            cell = self._cell_countries(lon[rows], lat[rows])
            result[rows] = cell == i
            exact = rows[cell == _MIXED]
            result[exact] = shapely.contains_xy(self.geoms[i], lon[exact], lat[exact])
        return result


def load_countries(settings: Settings) -> Countries:
    """The countries of the data dir's Natural Earth file (read once per process).

    Raises
    ------
    ConfigurationError
        When the data dir or the Natural Earth file is missing.
    """
    if settings.data_dir is None:
        raise ConfigurationError(
            "The data dir is not set: set RUTAS_DATA_DIR to the shared data folder.",
            "No se ha configurado la carpeta de datos: defina RUTAS_DATA_DIR.",
            code="no_data_dir",
        )
    return _load(settings.data_dir / COUNTRIES_FILE)


@lru_cache(maxsize=2)
def _load(path: Path) -> Countries:
    if not path.is_file():
        raise ConfigurationError(
            f"The country polygons {path} are missing; put Natural Earth's "
            "ne_50m_admin_0_countries.geojson in the data dir.",
            f"Faltan los polígonos de países {path} (Natural Earth ne_50m_admin_0_countries).",
            code="no_countries",
        )
    from pyogrio.raw import read  # local: only loading the polygons needs GDAL

    fields = ["ADM0_A3", "ISO_A3", "ISO_A2", "NAME", "NAME_LONG", "ADMIN", "NAME_SORT", "NAME_ALT",
              "FORMAL_EN", "BRK_NAME", "SOVEREIGNT"]
    # pyogrio.raw.read gives plain arrays (read_dataframe would import geopandas for a GeoDataFrame).
    meta, _, wkb, values = read(path, columns=fields)
    frame = dict(zip([str(f) for f in meta["fields"]], values, strict=True))
    codes = np.asarray([str(c) for c in frame["ADM0_A3"]], dtype=object)
    geoms = shapely.from_wkb(wkb)
    shapely.prepare(geoms)
    names: dict[str, str] = {}
    for column in ["NAME_SORT", "SOVEREIGNT", "FORMAL_EN", "NAME_ALT", "BRK_NAME", "ADMIN", "NAME_LONG",
                   "NAME", "ISO_A2", "ISO_A3", "ADM0_A3"]:
        for value, code in zip(list(frame[column]), codes, strict=True):
            if isinstance(value, str) and value and value != "-99":
                names[normalise_name(value)] = code
    for name, code in _EXTRA_NAMES.items():
        names[normalise_name(name)] = code
    return Countries(codes=codes, geoms=geoms, names=names)
