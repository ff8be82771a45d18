#!/usr/bin/env bash
# Creates .venv (once) and installs coursekit with everything the course uses.
# TORCH_SPEC picks the torch build; the default is the release the course is tested with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch, torchvision" 2>/dev/null; then
    # shellcheck disable=SC2086
    python -m pip install -q $TORCH_SPEC
fi
python -m pip install -q -e ".[all]"
python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "coursekit is installed in $(pwd)/.venv"
