"""The embedded default store: a private PostgreSQL + PostGIS cluster inside the checkout.

When ``RUTAS_DATABASE_URL`` is not set, Rutas keeps its own cluster under
``<state_dir>/pgdata``, reachable only through a Unix socket in ``<state_dir>/run`` (no TCP
port is opened). Starting and stopping are idempotent. When the current user is root the
server runs as the ``postgres`` system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from geodata.errors import ConfigurationError
from geodata.settings import Settings

_PG_ROOT = Path("/usr/lib/postgresql")
_SOCKET_PORT = 5432
#: Server settings of the embedded cluster. Durability stays whole (fsync, full-page writes,
#: synchronous commit); the rest suits bulk loads of a million rows in one transaction: WAL
#: buffered in large blocks, checkpoints spaced by volume rather than every five minutes (a
#: checkpoint in the middle of a load makes every index page it touches again log a full image).
#: WAL compression was measured and left off: a load into fresh pages logs no full-page images,
#: so it saved no WAL (191 MB either way for 300,000 rows) and cost backend CPU.
SERVER_OPTIONS: dict[str, str] = {
    "max_connections": "200",
    "shared_buffers": "512MB",
    "fsync": "on",
    "full_page_writes": "on",
    "synchronous_commit": "on",
    "wal_buffers": "64MB",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "checkpoint_completion_target": "0.9",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
}


@dataclass(frozen=True)
class EmbeddedCluster:
    """Paths and binaries of the project's private cluster."""

    bin_dir: Path
    data_dir: Path
    socket_dir: Path
    log_file: Path

    @property
    def url_host(self) -> str:
        return str(self.socket_dir)


def find_bin_dir() -> Path:
    """Newest PostgreSQL server binaries that have PostGIS available.

    Raises
    ------
    ConfigurationError
        When no PostgreSQL with PostGIS is installed (install ``postgresql-15-postgis-3``).
    """
    candidates = sorted(_PG_ROOT.glob("*/bin/postgres"), reverse=True)
    for postgres in candidates:
        version = postgres.parent.parent.name
        control = Path(f"/usr/share/postgresql/{version}/extension/postgis.control")
        if control.exists():
            return postgres.parent
    raise ConfigurationError(
        "PostgreSQL with PostGIS is not installed. Run the README's set-up command, or "
        "`apt-get install postgresql-15-postgis-3`, or set RUTAS_DATABASE_URL to a PostGIS server.",
        "PostgreSQL con PostGIS no está instalado. Ejecute el comando de instalación del README, "
        "o `apt-get install postgresql-15-postgis-3`, o defina RUTAS_DATABASE_URL.",
        code="no_postgis",
    )


def embedded_cluster(settings: Settings) -> EmbeddedCluster:
    """Where the embedded cluster of these settings lives."""
    state = settings.state_dir.resolve()
    return EmbeddedCluster(
        bin_dir=find_bin_dir(),
        data_dir=state / "pgdata",
        socket_dir=state / "run",
        log_file=state / "postgres.log",
    )


def _as_server_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return ["runuser", "-u", "postgres", "--", *args]


def _chown_for_server(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(args: list[str], what: str) -> str:
    done = subprocess.run(_as_server_user(args), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ConfigurationError(
            f"Could not {what} the embedded database: {done.stderr.strip() or done.stdout.strip()}",
            f"No se pudo {what} la base de datos integrada.",
            code="embedded_db",
        )
    return done.stdout


def is_running(cluster: EmbeddedCluster) -> bool:
    """Whether the embedded server answers on its data folder."""
    if not (cluster.data_dir / "PG_VERSION").exists():
        return False
    args = [str(cluster.bin_dir / "pg_ctl"), "status", "-D", str(cluster.data_dir)]
    done = subprocess.run(_as_server_user(args), capture_output=True, text=True, check=False)
    return done.returncode == 0


def ensure_running(settings: Settings) -> EmbeddedCluster:
    """Create (first time) and start the embedded cluster; do nothing when it already runs."""
    cluster = embedded_cluster(settings)
    if is_running(cluster):
        return cluster
    state = settings.state_dir.resolve()
    for folder in (state, cluster.socket_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _chown_for_server(cluster.socket_dir)
    if not (cluster.data_dir / "PG_VERSION").exists():
        if cluster.data_dir.exists():
            shutil.rmtree(cluster.data_dir)
        cluster.data_dir.mkdir(mode=0o700)
        _chown_for_server(cluster.data_dir)
        _run(
            [
                str(cluster.bin_dir / "initdb"),
                "-D", str(cluster.data_dir),
                "-U", "postgres",
                "--auth=trust",
                "-E", "UTF8",
                "--locale=C.UTF-8",
                "--lc-collate=C",
            ],
            "create",
        )
    if not cluster.log_file.exists():
        cluster.log_file.touch()
    _chown_for_server(cluster.log_file)
    options = f"-k {cluster.socket_dir} -c listen_addresses='' -p {_SOCKET_PORT} " + " ".join(
        f"-c {name}={value}" for name, value in SERVER_OPTIONS.items())
    _run(
        [
            str(cluster.bin_dir / "pg_ctl"), "start", "-w", "-t", "60",
            "-D", str(cluster.data_dir), "-l", str(cluster.log_file), "-o", options,
        ],
        "start",
    )
    return cluster


def stop(settings: Settings) -> bool:
    """Stop the embedded cluster. Returns whether it was running."""
    cluster = embedded_cluster(settings)
    if not is_running(cluster):
        return False
    _run([str(cluster.bin_dir / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(cluster.data_dir)],
         "stop")
    return True


def embedded_url(settings: Settings, database: str | None = None) -> str:
    """SQLAlchemy URL of a database in the embedded cluster (started if needed)."""
    cluster = ensure_running(settings)
    name = database or settings.database_name
    return f"postgresql+psycopg://postgres@/{name}?host={cluster.url_host}&port={_SOCKET_PORT}"
