#!/usr/bin/env bash
# Installs everything Rutas needs on a fresh Debian machine, idempotently:
# Debian packages (PostgreSQL 15 + PostGIS 3, GDAL, Chromium), the virtual environment with
# the project, and the schema of the store (the embedded database unless RUTAS_DATABASE_URL is set).
# Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m[rutas]\033[0m %s\n' "$*" >&2; }

missing=()
[ -e /usr/share/postgresql/15/extension/postgis.control ] || missing+=(postgresql-15-postgis-3)
command -v ogrinfo >/dev/null 2>&1 || missing+=(gdal-bin)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ -e /usr/share/javascript/leaflet/leaflet.min.js ] || missing+=(libjs-leaflet)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=(); else SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

PY="${RUTAS_PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  say "Rutas needs Python 3.11 or newer; set RUTAS_PYTHON to one." && exit 1
fi
if [ ! -x .venv/bin/python ]; then
  say "creating the virtual environment in .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.rutas-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing Rutas and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

say "preparing the store"
.venv/bin/rutas db upgrade >&2
