"""A folder of images streamed from disk vs the same images held in memory: speed and peak memory.

1. **Throughput** at each ``--sizes`` (32 and 96 px): ``--num-images`` procedural images written as
   a folder of mixed files (JPEG, PNG, WebP; RGB, grayscale, RGBA, palette; some stretched: see
   ``coursekit.data.folder.write_image_folder``). The in-memory pipeline holds those files decoded
   (the very items the folder gives) as one uint8 tensor and indexes batches, as ``engine.fit``
   does for tensors; the streaming pipeline reads ``ImageFolder`` through a ``DataLoader`` with
   ``--workers`` processes and ``fit``'s batch sampler and collate function. Both feed the same
   SimCLR training step (ResNet-18 width ``--width``, batch ``--batch-size``), and both are also
   timed alone (data only: batches per second without training). Pipelines alternate round by
   round, so a change in the machine's load hits both alike; the clock is the wall clock (the
   folder's decoding runs in worker processes, which this process's CPU time would not see).
2. **Peak memory** of ``engine.fit`` over ``--counts`` (1,000 and 4,000) files at ``--memory-size``
   (160 px), in fresh processes (peak RSS from ``/proc/self/status`` VmHWM), with a method that costs
   nothing but reading its input, so that the numbers are those of the data path: streamed from the
   folder vs decoded into memory first.

Writes benchmarks/results/folder_streaming_<device>.json.

    python benchmarks/folder_streaming.py [--sizes 32 96] [--counts 1000 4000] [--workers 1]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import common
from coursekit.data import make_shapes
from coursekit.data.folder import ImageFolder, write_image_folder
from coursekit.engine.batches import StepIndexBatches, stack_images
from coursekit.engine.loop import build_optimizer
from coursekit.engine import OptimizerStep, TrainConfig
from coursekit.methods import build_method
from coursekit.models import build_backbone


def decoded(folder: ImageFolder) -> torch.Tensor:
    """Every item of the folder, uint8 [N, 3, S, S]: the same images the streaming path reads."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged files are replaced by the next image, as when streaming
        return torch.stack([folder[i] for i in range(len(folder))])


def training_step(image_size: int, width: int, device: torch.device):
    """A SimCLR step as fit does it (OptimizerStep: fp32, AdamW with fit's parameter groups, the
    method's hooks): images uint8 [B, 3, S, S] -> None."""
    torch.manual_seed(0)
    method = build_method("simclr", build_backbone("resnet18", width=width), image_size=image_size).to(device)
    optimizer_step = OptimizerStep(build_optimizer(method, TrainConfig(), device), "fp32", device, hooks=method)
    generator = torch.Generator(device=device).manual_seed(0)

    def step(images: torch.Tensor) -> None:
        optimizer_step(method.training_step(images, generator), 0)
    return step


def time_alternating(steps: dict[str, Callable[[], None]], batch_size: int, device: torch.device, warmup: int,
                     rounds: int, steps_per_round: int) -> dict[str, dict]:
    """Images per second of every pipeline (``step()`` = one batch of ``batch_size`` images): after
    ``warmup`` untimed steps each, ``rounds`` rounds in which every pipeline in turn runs
    ``steps_per_round`` timed steps -> {name: {"images_per_s": median over rounds, "rounds_images_per_s"}}."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    per_round: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            watch = common.Stopwatch(device)
            watch.start()
            for _ in range(steps_per_round):
                step()
            watch.stop()
            per_round[name].append(steps_per_round * batch_size / watch.seconds)
    return {name: {"images_per_s": round(statistics.median(values), 1),
                   "rounds_images_per_s": [round(v, 1) for v in values]} for name, values in per_round.items()}


def pipelines(folder: ImageFolder, args, device: torch.device) -> dict[str, Callable[[], None]]:
    images = decoded(folder).to(device)
    steps = 10**6  # an endless run: the sampler yields fit's batches epoch after epoch
    sampler = StepIndexBatches(len(folder), 0, args.batch_size, 0, 1, len(folder) // args.batch_size, 0, steps)
    loader = torch.utils.data.DataLoader(folder, batch_sampler=sampler, num_workers=args.workers,
                                         collate_fn=stack_images, pin_memory=device.type == "cuda")
    streamed = iter(loader)
    in_memory = sampler.on_device(device)
    train = training_step(folder.image_size, args.width, device)

    def memory_batch() -> torch.Tensor:
        return images[next(in_memory)]

    def folder_batch() -> torch.Tensor:
        return next(streamed).to(device, non_blocking=True)

    return {
        "in_memory": lambda: train(memory_batch()),
        "folder": lambda: train(folder_batch()),
        "in_memory_data_only": memory_batch,
        "folder_data_only": folder_batch,
    }


PEAK_SCRIPT = """
import re, sys, warnings
from pathlib import Path
import torch
from torch import nn
from coursekit.data.folder import ImageFolder
from coursekit.engine import TrainConfig, fit
from coursekit.methods.base import Method

class MeanColor(Method):
    # costs nothing but reading its input: the peak is that of the data path
    def __init__(self):
        super().__init__()
        self.backbone, self.views = nn.Linear(3, 1), None

    def training_step(self, images, generator):
        return self.backbone(images.float().mean(dim=(2, 3))).square().mean()

    def on_after_step(self, progress):
        pass

warnings.simplefilter("ignore")
folder_path, size, mode, workers, batch_size = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
data = ImageFolder(folder_path, size)
if mode == "in_memory":
    data = torch.stack([data[i] for i in range(len(data))])
fit(MeanColor(), data, TrainConfig(epochs=1, batch_size=batch_size, precision="fp32", num_workers=workers), progress=False)
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024)
"""


def peak_rss_mb(folder: Path, size: int, mode: str, workers: int, batch_size: int) -> float:
    """Peak RSS (MB) of a fresh process that fits the cheap method on the folder (streamed or in memory)."""
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(folder), str(size), mode, str(workers),
                             str(batch_size)],
                            capture_output=True, text=True, check=True)
    return round(float(result.stdout.split()[-1]), 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--num-images", type=int, default=512, help="images of the throughput folders")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers of the streaming pipeline")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 4000], help="folder sizes of the memory runs")
    parser.add_argument("--memory-size", type=int, default=160)
    parser.add_argument("--memory-batch-size", type=int, default=50, help="batch of the memory runs")
    parser.add_argument("--results-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else common.default_device()
    result = {**common.environment(device), "settings": vars(args) | {"results_dir": None}, "throughput": {},
              "peak_rss_mb": {}}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_shapes(args.num_images, image_size=32, seed=0).images
        write_image_folder(files, Path(tmp) / "throughput", damaged=4)
        for size in args.sizes:
            folder = ImageFolder(Path(tmp) / "throughput", size)
            timings = time_alternating(pipelines(folder, args, device), args.batch_size, device, args.warmup,
                                       args.rounds, args.steps)
            timings["folder_over_in_memory"] = round(
                timings["folder"]["images_per_s"] / timings["in_memory"]["images_per_s"], 3)
            result["throughput"][f"{size}px"] = timings
            print(size, "px:", {k: v if isinstance(v, float) else v["images_per_s"] for k, v in timings.items()})
        for count in args.counts:
            path = Path(tmp) / f"memory_{count}"
            write_image_folder(make_shapes(count, image_size=32, seed=count).images, path, damaged=8)
            result["peak_rss_mb"][str(count)] = {mode: peak_rss_mb(path, args.memory_size, mode, args.workers, args.memory_batch_size)
                                                 for mode in ("folder", "in_memory")}
            print(count, "images:", result["peak_rss_mb"][str(count)])
    path = common.write_result("folder_streaming", device, result, args.results_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
