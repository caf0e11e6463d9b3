"""Settings of Rutas, read once from the environment (prefix ``RUTAS_``).

Every module receives a :class:`Settings` object from its caller; none reads the
environment on its own. ``get_settings()`` builds it once per process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The checkout this code runs from (the folder holding ``geodata/``).
CHECKOUT_DIR = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path | None:
    shared = CHECKOUT_DIR.parent / "shared" / "data"
    return shared if shared.is_dir() else None


class Settings(BaseSettings):
    """Configuration of one Rutas process.

    Attributes
    ----------
    database_url
        SQLAlchemy URL of the PostGIS database. ``None`` means the embedded default: a
        private PostgreSQL cluster kept in ``state_dir``, reached over a Unix socket.
    data_dir
        Folder with the reference and demo data (``../shared/data`` when it exists).
    state_dir
        Folder for the embedded cluster, demo products and other local state.
    """

    model_config = SettingsConfigDict(env_prefix="RUTAS_", env_file=None, extra="ignore")

    database_url: str | None = None
    data_dir: Path | None = Field(default_factory=_default_data_dir)
    state_dir: Path = CHECKOUT_DIR / ".rutas"
    database_name: str = "rutas"

    # ingest
    ingest_chunk_rows: int = 50_000
    ingest_max_file_bytes: int = 2 * 1024**3
    earliest_event_year: int = 1990
    ingest_max_km_outside_country: float = 1_000.0
    ingest_border_tolerance_km: float = 30.0
    ingest_sea_tolerance_km: float = 200.0
    ingest_max_reported_problems: int = 10_000
    ingest_max_features_bytes: int = 50 * 1024**2
    #: Files at least this large are loaded into a table of their own, attached whole to
    #: ``events`` with its indexes built in bulk (migration 0011); smaller ones go to the shared one.
    ingest_bulk_min_bytes: int = 8 * 1024**2

    # snapping and reference layers
    snap_max_distance_m: float = 5_000.0
    border_near_km: float = 25.0
    node_tolerance_m: float = 20.0
    # an event's reach to the road network is its coordinate precision, kept within these bounds
    snap_min_distance_m: float = 2_000.0
    # radius in which the nearest border segment and crossing of an event are looked for
    snap_search_km: float = 100.0
    snap_chunk_rows: int = 50_000
    snap_workers: int = 2
    # point layer whose nearest place (30 km) names each inferred border crossing
    crossing_places_file: Path | None = None

    # emerging-route analysis
    segment_km: float = 10.0
    neighbour_km: float = 50.0
    time_step: int = 1
    slice: str = "month"
    alpha: float = 0.05
    gap_segments: int = 2
    h3_resolution: int = 5

    # corridor overlap and joint operations (the reach of crossings and border sectors is border_near_km)
    # corridor buffer within which a route's length counts as shared
    overlap_buffer_km: float = 5.0
    # a route within this distance of corridors of two kinds or more makes a convergence zone
    convergence_km: float = 25.0

    # privacy
    k_anonymity: int = 11

    # alerts
    webhook_allowed_hosts: str = ""
    # Fernet key (urlsafe base64 of 32 bytes) sealing webhook signing secrets at rest; unset: clear
    webhook_secret_key: str | None = None
    # seconds: first retry delay (doubled per try, with jitter), longest delay, give-up window
    webhook_retry_base_s: float = 5.0
    webhook_retry_max_s: float = 6 * 3600.0
    webhook_retry_window_s: float = 3 * 24 * 3600.0
    webhook_timeout_s: float = 10.0
    # seconds the delivery worker waits for new alerts between polls of the outbox
    alerts_poll_s: float = 1.0
    alerts_worker_batch: int = 200

    # API service (issue 6)
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    api_max_body_bytes: int = 50 * 1024**2
    api_max_upload_bytes: int = 200 * 1024**2
    api_max_limit: int = 10_000
    api_default_limit: int = 100
    api_max_cql2_nodes: int = 200
    aggregate_cell_km: float = 25.0
    api_rate_per_minute: int = 6_000
    api_pool_size: int = 10
    tiles_detail_min_zoom: int = 8
    #: Risk GeoTIFF the API's GET /risk reads (default: the demo's state_dir/products/rutas_risk.tif).
    api_risk_path: Path | None = None

    @property
    def embedded(self) -> bool:
        """True when no external database is configured and the private cluster is used."""
        return self.database_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
