"""Fixtures shared by every test: a fresh PostGIS database per test run, migrated to head.

The database lives on the server the settings name (the embedded cluster unless
``RUTAS_DATABASE_URL`` is set), is created when the run starts and dropped when it ends.
A skipped test fails the run: every test here must run on a real PostGIS.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from geodata import db
from geodata.settings import Settings, get_settings


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a fresh, migrated database of this test run."""
    base = get_settings()
    server_url = db.database_url(base)
    name = f"rutas_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    test_url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    out_dir = tmp_path_factory.mktemp("state")
    test_settings = base.model_copy(update={"database_url": test_url, "state_dir": out_dir})
    db.upgrade(test_settings)
    try:
        yield test_settings
    finally:
        db.get_engine(test_settings).dispose()
        db.drop_database(test_url)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Engine:
    """Engine of the test run's database."""
    return db.get_engine(settings)


@pytest.fixture(scope="session")
def data_dir(settings: Settings) -> Path:
    """The bundled real data (``RUTAS_DATA_DIR`` or ``../shared/data``)."""
    if settings.data_dir is None or not settings.data_dir.is_dir():
        pytest.fail("The data dir is missing: set RUTAS_DATA_DIR to the shared data folder.")
    return settings.data_dir


@pytest.fixture()
def clean_events(engine: Engine) -> Iterator[None]:
    """Empty the record tables before a test that counts them."""
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, ingest_batches RESTART IDENTITY CASCADE"))
    yield


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} test(s) were skipped: every test must run; failing the run.", red=True
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = 1
