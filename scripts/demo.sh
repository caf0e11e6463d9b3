#!/usr/bin/env bash
# The README's first command: set everything up and run the demo on the bundled data.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec .venv/bin/rutas demo "$@"
