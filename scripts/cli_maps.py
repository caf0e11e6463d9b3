"""``rutas maps``: the risk GeoTIFF, the interactive HTML map and the PNG map of the store.

Importing this module also makes ``rutas export risk --format tif`` available (the ``risk``
product of :mod:`maps.products`).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from geodata import corridors as _corridors  # also registers `rutas load corridors`
from geodata import db
from geodata.db import SYSTEM, Scope
from geodata.errors import InputError
from geodata.settings import CHECKOUT_DIR, Settings, get_settings
from maps.basemap import countries_path
from maps.folium_map import LANGUAGES
from maps.products import ProductParams, ProductPaths, joint_operations_for_export, make_products
from maps.risk import RiskParams
from routes.export import ExportRequest, write_frame
from scripts.console import console, friendly_errors, out, print_json

#: The IOM demo data is sparse (about 5,700 incidents over 11 years and the whole Americas):
#: yearly slices keep cells of at least k records where monthly ones keep none.
DEMO_SLICE = "year"
#: The illustrative corridors drawn from public reporting (see geodata/illustrative/README.md),
#: loaded for the demo as if an office owned them.
ILLUSTRATIVE_DIR = CHECKOUT_DIR / "geodata" / "illustrative"
DEMO_CORRIDOR_OWNER = "COL"
#: How the demo's table names each ``candidate_type``.
CANDIDATE_TYPES = {"crossing": "paso / crossing", "border_sector": "sector / border sector"}


def _scope(role: str | None, country: str | None, partners: str) -> Scope:
    if role is None:
        return SYSTEM
    shared: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in partners.split(","))):
        code, _, level = item.partition(":")
        if level not in ("aggregate", "detail") or len(code) != 3:
            raise InputError(
                f"Partner {item!r} must look like ISO3:aggregate or ISO3:detail (e.g. COL:aggregate).",
                f"El socio {item!r} debe tener la forma ISO3:aggregate o ISO3:detail (p. ej. COL:aggregate).",
                code="bad_parameter",
            )
        shared[code.upper()] = level
    return Scope(role=role, country=country.upper() if country else None, partners=shared)


def _print_paths(paths: ProductPaths) -> None:
    out.print(f"Mapa interactivo / interactive map (HTML): {paths.html}")
    out.print(f"Mapa estático / static map (PNG): {paths.png}")
    out.print(f"Superficie de riesgo / risk surface (GeoTIFF): {paths.tif}")


def register(app: typer.Typer) -> None:
    """Add ``maps`` to the ``rutas`` command line."""

    @app.command("maps")
    @friendly_errors
    def maps_(
        out_dir: Annotated[Path, typer.Option("--out", help="Folder for the products")] = Path("products"),
        role: Annotated[
            str | None, typer.Option(help="Make the products as this role (prosecutor, ...); default: system")
        ] = None,
        country: Annotated[str | None, typer.Option(help="ISO3 of the reader's office")] = None,
        partners: Annotated[str, typer.Option(help="Sharing agreements, e.g. COL:aggregate,PER:detail")] = "",
        lang: Annotated[str, typer.Option("--lang", help="es, en or pt")] = "es",
        since: Annotated[datetime | None, typer.Option(help="First day (UTC)")] = None,
        until: Annotated[datetime | None, typer.Option(help="Last day (UTC), its month included")] = None,
        slice_: Annotated[str, typer.Option("--slice", help="month, quarter or year")] = "month",
        res_km: Annotated[float, typer.Option("--res-km", help="Risk surface cell size, km")] = 5.0,
        half_life_days: Annotated[float, typer.Option("--half-life-days")] = 180.0,
        json_out: Annotated[bool, typer.Option("--json", help="Print the paths as JSON")] = False,
    ) -> None:
        """Write the risk GeoTIFF, the HTML map and the PNG map for a reader's scope."""
        if lang not in LANGUAGES:
            raise InputError(
                f"--lang {lang!r}: use one of {', '.join(LANGUAGES)}.",
                f"--lang {lang!r}: use uno de {', '.join(LANGUAGES)}.",
                code="bad_parameter",
            )
        settings = get_settings()
        params = ProductParams.from_settings(
            settings,
            language=lang,
            slice=slice_,
            risk=RiskParams(res_m=res_km * 1000.0, half_life_days=half_life_days),
            countries_path=countries_path(settings.data_dir),
        )
        with console.status("Dibujando los mapas / drawing the maps"):
            paths = make_products(
                db.get_engine(settings),
                out_dir,
                scope=_scope(role, country, partners),
                params=params,
                since=since.date() if since else None,
                until=until.date() if until else None,
            )
        if json_out:
            print_json({"html": str(paths.html), "png": str(paths.png), "tif": str(paths.tif)})
        else:
            _print_paths(paths)


def demo_corridors_stage(settings: Settings) -> None:
    """Load the illustrative corridors (before ``rutas run``, so the run stores its overlaps)."""
    engine = db.get_engine(settings)
    for kind in ("drug", "fuel", "arms"):
        report = _corridors.load_corridors(
            engine,
            ILLUSTRATIVE_DIR / f"corridors_demo_{kind}.geojson",
            settings=settings,
            kind=kind,
            country=DEMO_CORRIDOR_OWNER,
            source="Rutas demo: illustrative, not intelligence",
        )
        out.print(
            f"Corredores ilustrativos (no son inteligencia) / illustrative corridors (not intelligence): "
            f"{kind}: {report.feature_count}"
        )


def demo_stage(settings: Settings) -> None:
    """Write the HTML map, the PNG and the GeoTIFF of the demo data, print their paths and the
    joint-operation candidates."""
    engine = db.get_engine(settings)
    params = ProductParams.from_settings(
        settings,
        slice=DEMO_SLICE,
        countries_path=countries_path(settings.data_dir),
    )
    with console.status("Dibujando los mapas / drawing the maps"):
        paths = make_products(engine, Path(settings.state_dir) / "products", params=params)
    _print_paths(paths)
    joint_path = Path(settings.state_dir) / "products" / "joint_operations.geojson"
    candidates = joint_operations_for_export(
        engine, ExportRequest(format="geojson", out=joint_path), params
    )
    write_frame(candidates, "geojson", joint_path, layer="joint-operations")
    out.print(
        f"Candidatos a operaciones conjuntas / joint-operation candidates: {len(candidates)} -> {joint_path}"
    )
    table = Table(
        "tipo / type",
        "nombre / name",
        "países / countries",
        "registros / records",
        "rutas / routes",
        "período / period",
        "puntuación / score",
    )
    for row in candidates.head(10).itertuples(index=False):
        table.add_row(
            CANDIDATE_TYPES.get(str(row.candidate_type), str(row.candidate_type)),
            str(row.name),
            str(row.countries),
            ", ".join(f"{c} {n}" for c, n in row.records_by_country.items()),
            ",".join(str(r) for r in row.route_ids),
            # no period is stored when no month holds k of the candidate's records
            "—" if pd.isna(row.period_start) else f"{row.period_start:%Y-%m} – {row.period_end:%Y-%m}",
            # the score would give a count under k back: withheld as in the API
            "— (k)" if pd.isna(row.score) else f"{row.score:.2f}",
        )
    out.print(table)
