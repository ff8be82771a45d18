#!/usr/bin/env bash
# Sets up the course (see setup.sh) and opens the lessons in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m coursekit profile
exec jupyter lab notebooks "$@"
