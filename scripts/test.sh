#!/usr/bin/env bash
# Sets up the course (see setup.sh), then runs the unit tests and every notebook under nbval
# in the smoke profile, offline (extra arguments go to this pytest), then the full profile's dry run
# of the notebooks (scripts/test_dry_run.sh; COURSEKIT_SKIP_DRY_RUN=1 leaves it out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export COURSEKIT_PROFILE=smoke YOLO_OFFLINE=1 MPLBACKEND=Agg
# A fresh checkpoint cache: notebooks train what they need instead of reusing old runs.
COURSEKIT_CACHE=$(mktemp -d)
export COURSEKIT_CACHE
trap 'rm -rf "$COURSEKIT_CACHE"' EXIT
start=$(date +%s)
status=0
python -m pytest -n "${COURSEKIT_TEST_WORKERS:-2}" --dist loadfile -p no:cacheprovider --durations=15 \
    --nbval-lax --nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg \
    tests notebooks solutions exercises "$@" || status=$?
echo "test suite took $(( $(date +%s) - start )) s"
if [ "${COURSEKIT_SKIP_DRY_RUN:-0}" != 1 ]; then
    bash scripts/test_dry_run.sh || status=$?
fi
exit $status
