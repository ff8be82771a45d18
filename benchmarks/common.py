"""Helpers shared by the benchmark scripts (and used by nothing else): device and version info,
the machine's load, JSON results, clocks.

The scripts are run as files (``python benchmarks/throughput.py``), so they import this module as
``common`` from their own folder.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
DATE_FORMAT = "%Y-%m-%d"


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's architecture and the number of torch threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): CPU timings taken while other
    processes run are noisy, and this says how busy the machine was."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries a benchmark compares."""
    import lightly
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "lightly": lightly.__version__}


def environment(device: torch.device) -> dict:
    """What every result file starts with: device, versions, CPU count and load, date."""
    return {
        "device": device_name(device),
        "device_type": device.type,
        "versions": versions(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min_start": load_average(),
        "date": time.strftime(DATE_FORMAT),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def write_result(name: str, device: torch.device, result: dict, results_dir: Path | None = None) -> Path:
    """Write ``result`` (with the end-of-run load average added) to
    ``<results_dir>/<name>_<device type>.json`` and return the path."""
    result = {**result, "load_average_1min_end": load_average()}
    folder = Path(results_dir) if results_dir is not None else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_{device.type}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def write_report(path: Path, report: dict, indent: int = 1) -> None:
    """Write a ``--report`` file (its folder made if missing) and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n")
    print(f"report written to {path}")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a clock reading means something."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates the seconds between start() and stop() calls, synchronizing the device at each."""

    def __init__(self, device: torch.device):
        self.device, self.seconds, self._started = device, 0.0, None

    def start(self) -> None:
        synchronize(self.device)
        self._started = time.perf_counter()

    def stop(self) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._started
        self._started = None


CLOCKS = ("wall", "cpu")


def make_clock(kind: str, device: torch.device) -> Callable[[], float]:
    """A clock in seconds. "wall": ``time.perf_counter`` once the device's queued work is done.
    "cpu": this process's CPU time (``time.process_time``, all its threads), which other
    processes on a loaded machine do not inflate; CPU time says nothing about a GPU's work, so it
    needs the CPU device."""
    if kind not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}; got {kind!r}")
    if kind == "cpu":
        if device.type != "cpu":
            raise ValueError(f"the cpu clock measures CPU time and needs the CPU device; got {device}: use the wall clock")
        return time.process_time

    def wall() -> float:
        synchronize(device)
        return time.perf_counter()

    return wall


@contextmanager
def clock_for_run(requested: str | None, device: torch.device) -> Iterator[str]:
    """The clock a benchmark run uses: ``requested``, else "wall" on CUDA and "cpu" elsewhere,
    refused before any work when it does not fit the device. On the cpu clock the block runs with
    one torch thread, so that the CPU seconds of a step do not depend on how many cores the other
    jobs of a shared machine leave free."""
    clock = requested or ("wall" if device.type == "cuda" else "cpu")
    make_clock(clock, device)  # raises for the cpu clock on a GPU
    with torch_threads(1 if clock == "cpu" else torch.get_num_threads()):
        yield clock


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch threads, then restore the previous number."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
