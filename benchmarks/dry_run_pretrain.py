"""The full profile's dry run of ``coursekit pretrain``, for every registered method: wall seconds and peak memory.

Each method runs as a user would run it, in its own process:
``COURSEKIT_DRY_RUN=1 python -m coursekit pretrain --method M --profile full --checkpoint-dir DIR``
(the full recipe, its batch of 512, its models and image size; ``coursekit.dry_run`` caps the loop
to a few steps and gives the missing datasets random stand-in images). The child's wall seconds and
its peak resident memory (``os.wait4``'s rusage: ``ru_maxrss``, KiB on Linux) are what this prints:
inputs for the per-lesson estimates of issue 24, measured on the machine it runs on (not asserted
anywhere). Checkpoints go to a temporary cache, removed at the end.

    python benchmarks/dry_run_pretrain.py [--methods simclr mae] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coursekit.methods import METHODS  # noqa: E402


def measure(method: str, cache: Path, extra: list[str]) -> dict:
    """Run the dry-run pretraining of ``method`` in a child process -> exit code, seconds, peak RSS, last lines."""
    env = {**os.environ, "COURSEKIT_DRY_RUN": "1", "COURSEKIT_CACHE": str(cache), "YOLO_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "coursekit", "pretrain", "--method", method, "--profile", "full",
               "--checkpoint-dir", str(cache / method), *extra]
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"method": method, "exit_code": child.returncode, "seconds": round(seconds, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "tail": output.strip().splitlines()[-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="more coursekit pretrain options, after --")
    args = parser.parse_args()
    extra = [a for a in args.extra if a != "--"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="coursekit-dry-run-") as cache:
        for method in args.methods:
            row = measure(method, Path(cache), extra)
            rows.append(row)
            print(f"{method:8s} exit {row['exit_code']}  {row['seconds']:7.1f} s  {row['cpu_seconds']:7.1f} CPU-s  "
                  f"peak RSS {row['peak_rss_mib']:6d} MiB  | {row['tail'][-1] if row['tail'] else ''}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
