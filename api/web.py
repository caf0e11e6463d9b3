"""The web map (``/map``): MapLibre GL JS drawing this server's vector tiles, with the caller's key.

The page is static; its only data are the scoped tiles of :mod:`api.tiles`, so it shows no more
than the key's role may see (victim identifications outside the owner's country only as
k-suppressed cells). MapLibre GL JS comes from the npm registry (``npm pack``), installed once
into ``<state_dir>/web`` by :func:`install_assets` (``rutas serve`` calls it).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from api.deps import StateDep
from geodata.errors import ConfigurationError, RutasError
from geodata.settings import Settings

router = APIRouter()

MAPLIBRE = "maplibre-gl@4.7.1"
ASSETS = {"maplibre-gl.js": "text/javascript", "maplibre-gl.css": "text/css"}
PAGE = Path(__file__).resolve().parent / "web" / "map.html"


def assets_dir(settings: Settings) -> Path:
    """Where the map's JavaScript and CSS are kept."""
    return settings.state_dir / "web"


def install_assets(settings: Settings) -> Path:
    """Install MapLibre GL JS's bundle into :func:`assets_dir` when missing; returns the folder."""
    folder = assets_dir(settings)
    if all((folder / name).is_file() for name in ASSETS):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise ConfigurationError(
            "The web map needs MapLibre GL JS from npm, and npm is not installed (apt-get install npm).",
            "El mapa web necesita MapLibre GL JS de npm, y npm no está instalado (apt-get install npm).",
            code="missing_npm",
        )
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rutas-maplibre-") as work:
        done = subprocess.run([npm, "pack", MAPLIBRE, "--pack-destination", work], capture_output=True,
                              text=True, timeout=300)
        packs = list(Path(work).glob("maplibre-gl-*.tgz"))
        if done.returncode != 0 or not packs:
            raise ConfigurationError(
                f"npm could not fetch {MAPLIBRE}: {done.stderr.strip()[-300:]}",
                f"npm no pudo descargar {MAPLIBRE}: {done.stderr.strip()[-300:]}",
                code="missing_npm",
            )
        with tarfile.open(packs[0]) as archive:
            for name in ASSETS:
                member = archive.extractfile(f"package/dist/{name}")
                if member is None:
                    raise ConfigurationError(f"{MAPLIBRE} has no dist/{name}.",
                                             f"{MAPLIBRE} no trae dist/{name}.", code="missing_npm")
                (folder / name).write_bytes(member.read())
    return folder


@router.get("/map", response_class=HTMLResponse, tags=["Web map"], summary="The web map")
def web_map() -> HTMLResponse:
    """The map page; it asks for an API key (or reads ``#key=...``) and draws the scoped tiles."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))


@router.get("/map/static/{name}", tags=["Web map"], summary="The map's script and style")
def web_asset(name: str, state: StateDep) -> FileResponse:
    """MapLibre GL JS's bundle (404 for any other name, 503 when not installed yet)."""
    if name not in ASSETS:
        raise RutasError(f"There is no map file {name!r}.", f"No existe el archivo de mapa {name!r}.",
                         code="not_found")
    path = assets_dir(state.settings) / name
    if not path.is_file():
        raise RutasError("The web map's files are not installed: start the server with 'rutas serve'.",
                         "Los archivos del mapa web no están instalados: inicie el servidor con "
                         "'rutas serve'.",
                         code="unavailable")
    return FileResponse(path, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})
