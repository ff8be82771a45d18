"""Throughput of coursekit's batched SimCLR views vs torchvision's per-image v2 pipeline.

Both make two SimCLR views per image with the same ops (random resized crop, flip, color jitter
with p 0.8, grayscale 0.2, normalization; no blur, as SimCLR at 32 px) from uint8 images.
The batched recipe runs on --device; torchvision runs image by image on the CPU, as a DataLoader
worker would. ``--clock cpu`` (the CPU default) counts CPU seconds of one torch thread, which
other jobs on a shared machine do not inflate; ``wall`` (the CUDA default) wall-clock seconds.
Writes benchmarks/results/augment_<device>.json.

    python benchmarks/augment.py [--device cuda] [--batch-size 256] [--image-size 32] [--clock cpu]
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torchvision.transforms import v2

import common
from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD, SimCLRViews


def torchvision_simclr_view(image_size: int) -> v2.Compose:
    """The same view as SimCLRViews(image_size) at <= 64 px, per image with torchvision v2."""
    return v2.Compose([
        v2.RandomResizedCrop(image_size, scale=(0.08, 1.0)),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def images_per_second(make_views: Callable[[torch.Tensor], object], images: torch.Tensor, repeats: int,
                      clock: Callable[[], float]) -> float:
    """Best-of-``repeats`` throughput of make_views(images) in source images per clock second,
    after one untimed warm-up call."""
    make_views(images)
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        make_views(images)
        best = min(best, clock() - start)
    return len(images) / best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(common.default_device()))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=common.CLOCKS,
                        help="cpu: CPU seconds with one torch thread (default on the CPU); wall: wall-clock "
                             "seconds (default on CUDA)")
    parser.add_argument("--results-dir", help="where to write the JSON (default benchmarks/results)")
    args = parser.parse_args(argv)
    for name in ("batch_size", "image_size", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    with common.clock_for_run(args.clock, device) as clock:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size),
                               dtype=torch.uint8, generator=generator)
        recipe = SimCLRViews(args.image_size)
        view = torchvision_simclr_view(args.image_size)
        batched = images_per_second(lambda x: recipe(x, generator), images.to(device), args.repeats,
                                    common.make_clock(clock, device))
        per_image = images_per_second(lambda x: [[view(img), view(img)] for img in x], images, args.repeats,
                                      common.make_clock(clock, torch.device("cpu")))
        result = {
            **common.environment(device),
            "settings": {"recipe": "SimCLRViews (2 views)", "batch_size": args.batch_size,
                         "image_size": args.image_size, "repeats": args.repeats, "clock": clock,
                         "timing": "best of repeats, after one warm-up; source images per clock second"},
            "images_per_s": {"coursekit_batched": round(batched), "torchvision_v2_per_image_cpu": round(per_image)},
            "speedup": round(batched / per_image, 2),
        }
    path = common.write_result("augment", device, result, args.results_dir)
    print(result["images_per_s"], f"speedup {result['speedup']}")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
