#!/usr/bin/env bash
# The README's second command: set everything up, check style and types, run the tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
say "ruff"
.venv/bin/ruff check geodata routes maps api scripts tests
say "mypy"
.venv/bin/mypy
say "pytest"
exec .venv/bin/python -m pytest "$@"
