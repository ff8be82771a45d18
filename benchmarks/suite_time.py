"""Wall-clock time of the unit tests and of every notebook under the smoke profile, so that
regressions show.

The unit tests run as one ``pytest tests/``; each notebook of notebooks/, solutions/ and exercises/
runs separately under nbval (``--nbval-lax --nbval-current-env``, the repository's sanitizer), one
process at a time, with COURSEKIT_PROFILE=smoke, YOLO_OFFLINE=1, MPLBACKEND=Agg, as scripts/test.sh
sets them. Writes benchmarks/results/suite_<device>.json.

    python benchmarks/suite_time.py [--notebooks notebooks/00_*.ipynb] [--tests tests/test_augment.py]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_FOLDERS = ("notebooks", "solutions", "exercises")
SMOKE_ENV = {"COURSEKIT_PROFILE": "smoke", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
NBVAL = ["--nbval-lax", "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg"]


def timed_run(command: list[str]) -> dict:
    """Run ``command`` in the repository root under the smoke profile: seconds, exit code, and
    pytest's summary line."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **SMOKE_ENV}, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"seconds": round(time.perf_counter() - start, 1), "returncode": done.returncode,
            "passed": done.returncode == 0, "summary": lines[-1] if lines else ""}


def all_notebooks() -> list[str]:
    """Every notebook of the three folders, relative to the repository root, sorted."""
    return [str(path.relative_to(ROOT)) for folder in NOTEBOOK_FOLDERS for path in sorted((ROOT / folder).glob("*.ipynb"))]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", nargs="*", default=["tests"],
                        help="what the unit-test run collects (default tests; none given: skip it)")
    parser.add_argument("--notebooks", nargs="*", help="notebooks to time (default: all of notebooks/, "
                                                       "solutions/, exercises/)")
    parser.add_argument("--results-dir", help="where to write the JSON (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    import torch

    args = parse_args(argv)
    device = common.default_device()
    notebooks = args.notebooks if args.notebooks is not None else all_notebooks()
    result = {**common.environment(device), "settings": {"environment": SMOKE_ENV, "tests": args.tests,
                                                          "notebook_runner": " ".join(["pytest", *NBVAL])},
              "torch_cuda_available": torch.cuda.is_available()}
    if args.tests:
        print("unit tests:", *args.tests, flush=True)
        result["unit_tests"] = timed_run(PYTEST + args.tests)
    result["notebooks"] = {}
    for notebook in notebooks:
        print("notebook:", notebook, flush=True)
        result["notebooks"][notebook] = timed_run(PYTEST + NBVAL + [notebook])
    result["notebooks_seconds_total"] = round(sum(run["seconds"] for run in result["notebooks"].values()), 1)
    path = common.write_result("suite", device, result, args.results_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
