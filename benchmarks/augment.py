"""Throughput of coursekit's batched SimCLR views vs torchvision's per-image v2 pipeline.

Both make two SimCLR views per image with the same ops (random resized crop, flip, color jitter
with p 0.8, grayscale 0.2, normalization; no blur, as SimCLR at 32 px) from uint8 images.
The batched recipe runs on --device; torchvision runs image by image on the CPU, as a DataLoader
worker would. Writes benchmarks/results/augment_<device>.json.

    python benchmarks/augment.py [--device cuda] [--batch-size 256] [--image-size 32]
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD, SimCLRViews

RESULTS = Path(__file__).parent / "results"


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


def images_per_second(make_views, images: torch.Tensor, repeats: int,
                      device: torch.device) -> float:
    """Best-of-`repeats` throughput of make_views(images) in source images per second."""
    make_views(images)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        make_views(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size),
                           dtype=torch.uint8, generator=generator)
    recipe = SimCLRViews(args.image_size)
    view = torchvision_simclr_view(args.image_size)

    batched = images_per_second(lambda x: recipe(x, generator), images.to(device), args.repeats,
                                device)
    per_image = images_per_second(lambda x: [[view(img), view(img)] for img in x], images,
                                  args.repeats, torch.device("cpu"))
    result = {
        "device": device_name(device),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "settings": {"recipe": "SimCLRViews (2 views)", "batch_size": args.batch_size,
                     "image_size": args.image_size, "repeats": args.repeats,
                     "timing": "best of repeats, after one warm-up",
                     "cpu_threads": torch.get_num_threads()},
        "images_per_s": {"coursekit_batched": round(batched), "torchvision_v2_per_image_cpu":
                         round(per_image)},
        "speedup": round(batched / per_image, 2),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"augment_{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
