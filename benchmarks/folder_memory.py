"""Peak memory of ``coursekit pretrain --data DIR`` against the number of files in the folder.

Through the command line, as a user runs it: for each folder size in ``--counts`` (1,000 and
20,000) and each ``--workers`` value (0: decoded in the training process; 2: two DataLoader worker
processes), a fresh ``coursekit pretrain --data DIR --method simclr --backbone resnet18 --width 4
--image-size 16 --batch-size 64 --epochs 1 --device cpu --checkpoint-every 0`` (width 4 by
default: tiny, so that an epoch over 20,000 files takes minutes on a CPU; one epoch reads every
file once), while this script samples ``/proc`` every ``--interval`` seconds for the
command's process and all its descendants (the DataLoader workers). Reported per run:

- ``tree_peak_rss_mb``: the largest sum of the tree's RSS seen in one sample (shared pages, e.g.
  the libraries a worker inherits from its parent, count once per process);
- ``tree_peak_pss_mb``: the same with PSS (shared pages split between the processes that share them);
- ``main_peak_rss_mb`` and ``worker_peak_rss_mb``: the kernel's own peak (``VmHWM``) of the
  training process and of its largest worker, as last read before they exit.

The folders are generated into a temporary folder (``--cache DIR`` keeps them for another run):
procedural pictures (gradients, rectangles, ellipses, a little noise) of random sides in
``--min-side`` .. ``--max-side`` (64-320 px, any aspect ratio), alternately JPEG and PNG, in nested
folders of 100 files (``part_k/sub_j/``). The environment of the command gets
``OMP_NUM_THREADS=--threads`` (1), so that the runs leave the rest of a shared machine alone.

    python benchmarks/folder_memory.py [--counts 1000 20000] [--workers 0 2] [--report FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MB = 1024 * 1024


# ----------------------------------------------------------------------------------------------
# The folders


def write_picture(path: Path, rng: np.random.Generator, min_side: int, max_side: int) -> None:
    """One procedural picture of random sides (a gradient, a few shapes, a little noise) at ``path``
    (JPEG or PNG by its suffix)."""
    width, height = (int(s) for s in rng.integers(min_side, max_side + 1, size=2))
    low, high = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    pixels = low + (high - low) * ramp + rng.normal(0, 6, size=(height, width, 3))
    picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(2, 6))):
        x0, x1 = sorted(int(v) for v in rng.integers(0, width, size=2))
        y0, y1 = sorted(int(v) for v in rng.integers(0, height, size=2))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape((x0, y0, x1 + 1, y1 + 1), fill=tuple(int(v) for v in rng.integers(0, 256, size=3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        picture.save(path, format="PNG")
    else:
        picture.save(path, format="JPEG", quality=85)


def write_folder(root: Path, count: int, min_side: int = 64, max_side: int = 320, seed: int = 0) -> Path:
    """``count`` pictures under ``root`` (``part_{i // 100}/sub_{i % 2}/{i}.jpg|png``); a folder
    already complete (its ``.complete`` marker) is reused as it is."""
    marker = root / ".complete"
    if marker.exists() and marker.read_text() == f"{count} {min_side} {max_side} {seed}":
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    for i in range(count):
        suffix = ".png" if i % 2 else ".jpg"
        write_picture(root / f"part_{i // 100:04d}" / f"sub_{i % 2}" / f"{i:06d}{suffix}", rng, min_side, max_side)
    marker.write_text(f"{count} {min_side} {max_side} {seed}")
    return root


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Memory of a process tree, from /proc


def children_of() -> dict[int, list[int]]:
    """pid -> its child pids, for every process now in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as file:
                stat = file.read()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children, found, todo = children_of(), [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def status_kb(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    """Fields (kB) of /proc/PID/status; empty when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {name: int(m[1]) for name in fields if (m := re.search(rf"^{name}:\s+(\d+) kB", text, re.M))}


def pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match[1]) if match else 0


def run_sampled(command: list[str], env: dict, interval: float, log: Path) -> dict:
    """Run ``command`` to its end, sampling its process tree's memory every ``interval`` seconds."""
    with open(log, "w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        peak_rss = peak_pss = main_hwm = worker_hwm = 0
        most_processes = samples = 0
        trace, next_trace = [], 0.0  # (seconds, tree RSS MB) about once a second
        while process.poll() is None:
            pids = tree(process.pid)
            rss = pss = 0
            for pid in pids:
                values = status_kb(pid, ("VmRSS", "VmHWM"))
                rss += values.get("VmRSS", 0)
                pss += pss_kb(pid)
                if pid == process.pid:
                    main_hwm = max(main_hwm, values.get("VmHWM", 0))
                else:
                    worker_hwm = max(worker_hwm, values.get("VmHWM", 0))
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            most_processes, samples = max(most_processes, len(pids)), samples + 1
            if time.perf_counter() - start >= next_trace:
                trace.append((round(time.perf_counter() - start, 1), round(rss / 1024, 1)))
                next_trace += 1.0
            time.sleep(interval)
        seconds = time.perf_counter() - start
    output = log.read_text()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"tree_peak_rss_mb": round(peak_rss / 1024, 1), "tree_peak_pss_mb": round(peak_pss / 1024, 1),
            "main_peak_rss_mb": round(main_hwm / 1024, 1), "worker_peak_rss_mb": round(worker_hwm / 1024, 1),
            "processes": most_processes, "samples": samples, "seconds": round(seconds, 1),
            "rss_trace": trace}


# ----------------------------------------------------------------------------------------------
# The runs


def coursekit_command() -> list[str]:
    """The ``coursekit`` console script of this Python's environment (else ``python -m coursekit``)."""
    script = Path(sys.executable).parent / "coursekit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "coursekit"]


def pretrain_command(folder: Path, workers: int, args: argparse.Namespace) -> list[str]:
    return [*coursekit_command(), "pretrain", "--data", str(folder), "--method", "simclr", "--backbone", "resnet18",
            "--width", str(args.width), "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
            "--epochs", "1", "--workers", str(workers), "--device", "cpu", "--checkpoint-every", "0",
            "--profile", args.profile]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 20000], help="files per folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="--workers values of the command")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--profile", default="smoke", help="--profile of the command (the recipe's defaults)")
    parser.add_argument("--min-side", type=int, default=64)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the command")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between samples of /proc")
    parser.add_argument("--cache", type=Path, default=None, help="keep the generated folders here (default: a temporary folder)")
    parser.add_argument("--report", type=Path, default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONUNBUFFERED": "1"}
    env.pop("COURSEKIT_PROFILE", None)  # --profile decides
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"), "load_average_1min_start": round(os.getloadavg()[0], 2),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "pretrain_command": " ".join(pretrain_command(Path("DIR"), "W", args)).replace(coursekit_command()[0], "coursekit"),
        "folders": {}, "runs": [],
    }
    tmp = tempfile.TemporaryDirectory()
    cache = args.cache or Path(tmp.name)
    try:
        for count in args.counts:
            start = time.perf_counter()
            folder = write_folder(cache / f"folder_{count}", count, args.min_side, args.max_side)
            result["folders"][str(count)] = {"megabytes_on_disk": round(folder_bytes(folder) / MB, 1),
                                             "write_seconds": round(time.perf_counter() - start, 1)}
            print(f"{count} files: {result['folders'][str(count)]['megabytes_on_disk']} MB on disk", flush=True)
        for workers in args.workers:
            for count in args.counts:
                measured = run_sampled(pretrain_command(cache / f"folder_{count}", workers, args), env, args.interval,
                                       Path(tmp.name) / f"log_{count}_{workers}.txt")
                result["runs"].append({"files": count, "workers": workers, **measured})
                print(f"files {count:>6}  workers {workers}: "
                      f"{ {k: v for k, v in measured.items() if k != 'rss_trace'} }", flush=True)
    finally:
        tmp.cleanup()
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    result["growth"] = growth(result["runs"], args.counts)
    print_table(result)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.report}")
    return result


def growth(runs: list[dict], counts: list[int]) -> dict:
    """Per ``--workers`` value: the tree's peak RSS at the largest folder minus at the smallest (MB),
    and per file (KB)."""
    out = {}
    small, large = min(counts), max(counts)
    for workers in sorted({run["workers"] for run in runs}):
        peak = {run["files"]: run["tree_peak_rss_mb"] for run in runs if run["workers"] == workers}
        if small in peak and large in peak and large > small:
            delta = peak[large] - peak[small]
            out[str(workers)] = {"tree_peak_rss_mb_delta": round(delta, 1),
                                 "kb_per_file": round(delta * 1024 / (large - small), 2)}
    return out


def print_table(result: dict) -> None:
    print(f"\n{result['pretrain_command']}")
    print(f"{'workers':>7} {'files':>7} {'tree RSS MB':>12} {'tree PSS MB':>12} {'main MB':>8} {'worker MB':>10} {'s':>6}")
    for run in result["runs"]:
        print(f"{run['workers']:>7} {run['files']:>7} {run['tree_peak_rss_mb']:>12} {run['tree_peak_pss_mb']:>12} "
              f"{run['main_peak_rss_mb']:>8} {run['worker_peak_rss_mb']:>10} {run['seconds']:>6}")
    for workers, change in result["growth"].items():
        print(f"workers {workers}: {change['tree_peak_rss_mb_delta']:+} MB ({change['kb_per_file']} KB per file)")


if __name__ == "__main__":
    main()
