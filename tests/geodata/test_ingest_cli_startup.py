"""``rutas ingest`` starts without loading the rest of the command line (API, maps, analysis)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]

# Runs the console script's entry point as ``rutas ARGS...`` and prints which heavy modules it loaded.
_PROBE = """
import json, sys
sys.argv = ["rutas", *sys.argv[1:]]
from scripts.cli import main
try:
    main()
except SystemExit:
    pass
heavy = ["fastapi", "folium", "scipy", "routes.emerging", "maps.risk", "api.app", "scripts.cli_demo",
         "geodata.reference", "alembic"]
sys.stderr.write(json.dumps([name for name in heavy if name in sys.modules]) + "\\n")
"""


def _rutas(*args: str) -> tuple[str, list[str]]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=CHECKOUT, capture_output=True,
                          text=True, timeout=120)
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])


def test_ingest_loads_only_its_own_command() -> None:
    shown, loaded = _rutas("ingest", "--help")
    assert "--kind" in shown and "--country" in shown
    assert loaded == []


def test_help_still_lists_every_command() -> None:
    shown, _ = _rutas("--help")
    for command in ("db", "ingest", "load", "snap", "run", "export", "serve", "keys", "audit", "demo",
                    "maps", "alerts"):
        assert f" {command} " in shown, command
