"""Same-epoch kNN accuracy and time to a fixed accuracy: coursekit's SimCLR and BYOL vs lightly's.

Both implementations train the same backbone (ResNet-18, CIFAR stem, same initial weights) with the
same batch size, epochs, optimizer (AdamW, coursekit's parameter groups), learning-rate schedule
(cosine, no warmup) and precision, on the same images:

- coursekit: ``coursekit.engine.fit`` (data and views on the device);
- lightly: lightly's transform in a DataLoader with workers, lightly's heads and loss
  (the reference models of ``throughput.py``), the same optimizer step.

Both sides run one recipe: lightly's standard one (its default transforms, heads, losses,
temperatures and momenta, which coursekit's method defaults mirror) with the same optimizer,
schedule, batch and epochs. After every epoch the backbone's features are scored by weighted kNN
(k=200, t=0.1; the training subset is the memory bank, the test subset, 2,000 images or more, the
queries). Training time excludes the evaluations. Every run is repeated for ``--seeds`` (0 1 2:
initial weights, data order, augmentations); the gap coursekit - lightly is reported per seed and
as mean and standard deviation, and called a tie when its mean is within two standard errors of 0.
Data: Fashion-MNIST (real, offline), resized to 32 px; on CUDA also CIFAR-10 when its files are
present. Writes benchmarks/results/quality_<device>.json.

    python benchmarks/quality.py [--epochs 20] [--train-images 20000] [--target 0.8] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict, replace

import torch
from torch import nn

import common
from coursekit.data import DatasetUnavailableError, ImageSet, load_images
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.methods import build_method
from coursekit.engine import TrainConfig, cosine_schedule, fit, resolve_precision
from throughput import (LIGHTLY_MODELS, Settings, Trainer, lightly_loader, lightly_transform, seeded_backbone,
                        to_device)

METHODS = ("simclr", "byol")
IMPLEMENTATIONS = ("coursekit", "lightly")
KNN_K, KNN_T = 200, 0.1
NOISE_STD_ERRORS = 2  # a mean gap within 2 standard errors of 0 is a tie


def knn_score(backbone: nn.Module, train: ImageSet, test: ImageSet, device: torch.device) -> float:
    """kNN accuracy (k=200, t=0.1) of the backbone's features: train subset as memory bank."""
    bank = extract_features(backbone, train.images, device=device)
    queries = extract_features(backbone, test.images, device=device)
    return round(knn_accuracy(bank, train.labels.to(device), queries, test.labels.to(device),
                              k=KNN_K, temperature=KNN_T), 4)


class EpochLog:
    """Training seconds (evaluations excluded) and kNN accuracy after every epoch."""

    def __init__(self, backbone: nn.Module, train: ImageSet, test: ImageSet, device: torch.device):
        self.backbone, self.train, self.test, self.device = backbone, train, test, device
        self.watch = common.Stopwatch(device)
        self.seconds: list[float] = []
        self.accuracy: list[float] = []

    def end_of_epoch(self) -> None:
        """Stop the clock, evaluate, restart the clock."""
        self.watch.stop()
        self.seconds.append(round(self.watch.seconds, 2))
        self.accuracy.append(knn_score(self.backbone, self.train, self.test, self.device))
        print(f"  epoch {len(self.accuracy)}: knn {self.accuracy[-1]:.4f} after {self.seconds[-1]:.1f} s", flush=True)
        self.watch.start()

    def summary(self, target: float) -> dict:
        reached = next((s for s, a in zip(self.seconds, self.accuracy) if a >= target), None)
        return {"knn_accuracy_per_epoch": self.accuracy, "train_seconds_per_epoch_cumulative": self.seconds,
                "final_knn_accuracy": self.accuracy[-1], "seconds_to_target": reached}


def train_coursekit(method: str, settings: Settings, epochs: int, data: ImageSet, log: EpochLog,
                    device: torch.device) -> None:
    """coursekit.engine.fit, evaluating at the end of every epoch (through its on_step hook)."""
    model = build_method(method, log.backbone, image_size=settings.image_size)
    config = TrainConfig(epochs=epochs, batch_size=settings.batch_size, lr=settings.lr, precision=settings.precision,
                         channels_last=settings.channels_last, seed=settings.seed)
    steps_per_epoch = len(data.images) // settings.batch_size
    log.watch.start()
    fit(model, data.images, config, progress=False, device=device,
        on_step=lambda step: log.end_of_epoch() if step % steps_per_epoch == 0 else None)
    log.watch.stop()


def train_lightly(method: str, settings: Settings, epochs: int, data: ImageSet, log: EpochLog,
                  device: torch.device) -> None:
    """lightly's standard pipeline with fit's optimizer, schedule and precision."""
    steps_per_epoch = len(data.images) // settings.batch_size
    total = epochs * steps_per_epoch
    log.watch.start()
    model = to_device(LIGHTLY_MODELS[method](log.backbone, total), device, settings.channels_last)
    trainer = Trainer(model, settings, device, total)
    loader = lightly_loader(data.images, lightly_transform(method, settings.image_size), settings.batch_size,
                            settings.workers, device, shuffle=True, seed=settings.seed)
    model.train()
    for _ in range(epochs):
        for views in loader:
            views = [view.to(device, non_blocking=True) for view in views]
            lr = cosine_schedule(trainer.steps_done, total, 0, settings.lr, 0.0)
            trainer.step(lambda: model.training_step(views), lr=lr)
        log.end_of_epoch()
    log.watch.stop()


TRAINERS = {"coursekit": train_coursekit, "lightly": train_lightly}


def load_dataset(name: str, train_images: int, test_images: int, image_size: int, seed: int):
    """(train, test) subsets at image_size, or None when the files are missing."""
    try:
        return (load_images(name, "train", n=train_images, image_size=image_size, seed=seed),
                load_images(name, "test", n=test_images, image_size=image_size, seed=seed))
    except DatasetUnavailableError:
        return None


def gap_summary(gaps: list[float]) -> dict:
    """Gaps coursekit - lightly in points, one per seed -> mean, standard deviation, verdict."""
    mean = statistics.fmean(gaps)
    std = statistics.stdev(gaps) if len(gaps) > 1 else 0.0
    tie = len(gaps) < 2 or abs(mean) <= NOISE_STD_ERRORS * std / len(gaps) ** 0.5
    verdict = "tie" if tie else ("coursekit better" if mean > 0 else "lightly better")
    return {"per_seed": [round(gap, 2) for gap in gaps], "mean": round(mean, 2), "std": round(std, 2), "verdict": verdict}


def compare(dataset: str, train: ImageSet, test: ImageSet, settings: Settings, epochs: int, target: float,
            device: torch.device, seeds: list[int]) -> dict:
    """Every (method, implementation, seed) on one dataset, and the accuracy gaps over seeds."""
    initial = {str(seed): knn_score(seeded_backbone(settings.width, seed).to(device), train, test, device)
               for seed in seeds}
    out = {"train_images": len(train.images), "test_images": len(test.images), "seeds": seeds,
           "random_init_knn_accuracy": initial, "methods": {}}
    for method in METHODS:
        runs = {implementation: {} for implementation in IMPLEMENTATIONS}
        for seed in seeds:
            for implementation in IMPLEMENTATIONS:
                print(f"{dataset} {method} {implementation} seed {seed}", flush=True)
                log = EpochLog(seeded_backbone(settings.width, seed), train, test, device)
                TRAINERS[implementation](method, replace(settings, seed=seed), epochs, train, log, device)
                runs[implementation][str(seed)] = log.summary(target)
        gaps = [100 * (runs["coursekit"][str(seed)]["final_knn_accuracy"] - runs["lightly"][str(seed)]["final_knn_accuracy"])
                for seed in seeds]
        out["methods"][method] = {**runs, "coursekit_minus_lightly_points": gap_summary(gaps)}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(common.default_device()))
    parser.add_argument("--epochs", type=int, help="default: 20 on CUDA, 3 on the CPU")
    parser.add_argument("--train-images", type=int, help="default: 20000 on CUDA, 1024 on the CPU")
    parser.add_argument("--test-images", type=int, help="default: 5000 on CUDA, 2000 on the CPU")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="one run per seed and side")
    parser.add_argument("--width", type=int, help="ResNet-18 width (default: 64 on CUDA, 8 on the CPU)")
    parser.add_argument("--batch-size", type=int, help="default: 512 on CUDA, 128 on the CPU")
    parser.add_argument("--workers", type=int, help="DataLoader workers of the lightly pipeline")
    parser.add_argument("--target", type=float, help="kNN accuracy whose time is reported (default 0.80 on CUDA, 0.72 on the CPU)")
    parser.add_argument("--datasets", nargs="+", help="default: fashion_mnist, and cifar10 on CUDA when present")
    parser.add_argument("--results-dir", help="where to write the JSON (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    settings = Settings.defaults(device)
    settings.batch_size = args.batch_size or (512 if gpu else 128)
    settings.width = args.width or settings.width  # Settings.defaults: 64 on CUDA, 8 on the CPU
    settings.workers = args.workers if args.workers is not None else settings.workers
    epochs = args.epochs or (20 if gpu else 3)
    train_n, test_n = args.train_images or (20000 if gpu else 1024), args.test_images or (5000 if gpu else 2000)
    target = args.target if args.target is not None else (0.80 if gpu else 0.72)
    datasets = args.datasets or (["fashion_mnist", "cifar10"] if gpu else ["fashion_mnist"])
    result = {
        **common.environment(device),
        "settings": {**asdict(settings), "backbone": "resnet18 (CIFAR stem)", "epochs": epochs,
                     "precision_resolved": resolve_precision(settings.precision, device),
                     "optimizer": "adamw, weight decay 1e-4, cosine schedule, no warmup",
                     "knn": {"k": KNN_K, "temperature": KNN_T, "bank": "the training subset"},
                     "seeds": args.seeds,
                     "target_accuracy": target,
                     "subset": f"{train_n} train / {test_n} test images, seeded, resized to {settings.image_size} px"
                               + ("" if gpu else " (small: CPU default; accuracies are far from converged)")},
        "datasets": {},
    }
    for name in datasets:
        data = load_dataset(name, train_n, test_n, settings.image_size, settings.seed)
        if data is None:
            result["datasets"][name] = "files not present; not measured"
            continue
        result["datasets"][name] = compare(name, *data, settings, epochs, target, device, args.seeds)
    path = common.write_result("quality", device, result, args.results_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
