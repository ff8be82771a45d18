"""kNN accuracy of every method's pretrained backbone against the same backbone at random init.

For each method (SimCLR, MoCo v2, BYOL, DINO on the ResNet-18; MAE on the ViT), pretrain with
``coursekit.engine.fit`` on a Fashion-MNIST training subset (real data, offline, 32 px), then score
the backbone's features with weighted kNN (k=200, t=0.1): ``--bank-images`` labeled training
images are the memory bank, ``--test-images`` test images the queries. The same architecture
built under the same seed, untrained, is scored the same way (computed once per architecture),
so ``gain = pretrained - random_init`` is what pretraining bought.

Sizes are small enough for a 2-core CPU (the demo profile's architectures, narrower / shallower
by default; ``--width 16 --vit-depth 12`` gives the demo profile's). Results are merged into
``benchmarks/results/knn_methods_<device>.json`` per method, so the methods can be run one at a
time::

    python benchmarks/knn_methods.py                       # all five
    python benchmarks/knn_methods.py --methods simclr byol # some
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from torch import nn

import common
from coursekit.data import ImageSet, load_images
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.methods import build_method
from coursekit.models import build_backbone
from coursekit.engine import TrainConfig, fit

METHODS = ("simclr", "moco", "byol", "dino", "mae")
KNN_K, KNN_T = 200, 0.1
NAME = "knn_methods"

# Per-method settings for a short run (few hundred steps at most): learning rates a little above
# the 1e-3 default since the runs are short; teachers with a lower EMA momentum, so that they
# move at all in a few dozen steps; MoCo's queue no longer than the keys seen in an epoch or two,
# so that its negatives are not mostly the random vectors it starts with; DINO with 2 local crops
# instead of 6 to save CPU. MAE uses more epochs (the encoder sees a quarter of the patches, so its
# steps are cheap) and a larger learning rate, as in the paper's recipe (1.5e-4 * batch / 256 with
# a much longer schedule).
HYPERPARAMETERS: dict[str, dict] = {
    "simclr": {"lr": 2e-3, "epochs": 20, "method": {"temperature": 0.5}},
    "moco": {"lr": 2e-3, "epochs": 20, "method": {"temperature": 0.2, "queue_size": 1024, "momentum": 0.98}},
    "byol": {"lr": 2e-3, "epochs": 20, "method": {"momentum": 0.98}},
    "dino": {"lr": 1e-3, "epochs": 20, "method": {"n_local": 2, "momentum": 0.98, "out_dim": 1024}},
    "mae": {"lr": 2e-3, "epochs": 30, "method": {"mask_ratio": 0.75}},
}


def backbone_spec(method: str, args: argparse.Namespace) -> tuple[str, dict]:
    if method == "mae":
        return "vit_tiny", {"img_size": args.image_size, "patch_size": args.patch_size, "depth": args.vit_depth}
    return "resnet18", {"width": args.width}


def seeded_backbone(name: str, kwargs: dict, seed: int) -> nn.Module:
    """The backbone as built right after ``torch.manual_seed(seed)``: identical for every method."""
    torch.manual_seed(seed)
    return build_backbone(name, **kwargs)


def knn_score(backbone: nn.Module, bank: ImageSet, test: ImageSet, device: torch.device) -> float:
    bank_features = extract_features(backbone, bank.images, device=device)
    test_features = extract_features(backbone, test.images, device=device)
    return round(knn_accuracy(bank_features, bank.labels.to(device), test_features, test.labels.to(device),
                              num_classes=10, k=KNN_K, temperature=KNN_T), 4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--train-images", type=int, default=2048, help="unlabeled pretraining images")
    parser.add_argument("--bank-images", type=int, default=4096, help="labeled training images (kNN memory bank)")
    parser.add_argument("--test-images", type=int, default=1000, help="labeled test images (kNN queries)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 width (demo profile: 16)")
    parser.add_argument("--patch-size", type=int, default=8, help="ViT patch size (demo profile: 8)")
    parser.add_argument("--vit-depth", type=int, default=4, help="ViT blocks (vit_tiny: 12)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, help="override every method's epochs")
    parser.add_argument("--seed", type=int, default=0, help="initialization, data order, augmentations")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads on the CPU (default: torch's)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--fresh", action="store_true", help="drop the methods already in the result file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = {key: getattr(args, key) for key in ("train_images", "bank_images", "test_images", "image_size",
                                                   "width", "patch_size", "vit_depth", "batch_size", "seed")}
    settings.update(dataset="fashion_mnist", knn_k=KNN_K, knn_temperature=KNN_T, optimizer="adamw",
                    weight_decay=1e-4, schedule="cosine, warmup 0.25 epoch", precision="fp32" if device.type == "cpu"
                    else "auto", pretraining_images="the first train_images of the memory bank")
    path = Path(args.results_dir) / f"{NAME}_{device.type}.json"
    previous = json.loads(path.read_text()) if path.exists() and not args.fresh else {}
    if previous.get("settings") != settings:
        previous = {}  # other settings: the old numbers do not compare
    result = {**common.environment(device), "settings": settings,
              "hyperparameters": {name: HYPERPARAMETERS[name] for name in METHODS},
              "methods": previous.get("methods", {}), "random_init": previous.get("random_init", {})}

    bank = load_images("fashion_mnist", "train", n=args.bank_images, image_size=args.image_size, seed=args.seed)
    test = load_images("fashion_mnist", "test", n=args.test_images, image_size=args.image_size, seed=args.seed)
    train_images = bank.images[:args.train_images]
    for method in args.methods:
        name, kwargs = backbone_spec(method, args)
        key = f"{name} {json.dumps(kwargs, sort_keys=True)} seed {args.seed}"
        load_start = common.load_average()
        if key not in result["random_init"]:
            result["random_init"][key] = knn_score(seeded_backbone(name, kwargs, args.seed).to(device), bank, test, device)
        random_init = result["random_init"][key]
        hyper = HYPERPARAMETERS[method]
        epochs = args.epochs or hyper["epochs"]
        model = build_method(method, seeded_backbone(name, kwargs, args.seed), image_size=args.image_size,
                             **hyper["method"])
        config = TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=hyper["lr"], weight_decay=1e-4,
                             warmup_epochs=0.25, precision=settings["precision"], seed=args.seed)
        start = time.perf_counter()
        history = fit(model, train_images, config, progress=False, device=device)
        common.synchronize(device)
        train_seconds = time.perf_counter() - start
        pretrained = knn_score(model.backbone, bank, test, device)
        result["methods"][method] = {
            "backbone": name, "backbone_kwargs": kwargs, "epochs": epochs, "steps": len(history.loss),
            "lr": hyper["lr"], "method_kwargs": hyper["method"],
            "random_init_knn_accuracy": random_init, "pretrained_knn_accuracy": pretrained,
            "gain": round(pretrained - random_init, 4), "train_seconds": round(train_seconds, 1),
            "first_loss": round(history.loss[0], 4), "last_epoch_loss": round(history.epoch_loss[-1], 4),
            "load_average_1min_start": load_start, "load_average_1min_end": common.load_average(),
        }
        print(f"{method:6s} {name:9s} random init {random_init:.4f}  pretrained {pretrained:.4f}  "
              f"gain {pretrained - random_init:+.4f}  ({epochs} epochs, {train_seconds:.0f} s training, "
              f"load {load_start} -> {common.load_average()})", flush=True)
        common.write_result(NAME, device, result, args.results_dir)  # after every method: a kill loses little
    return result


if __name__ == "__main__":
    main()
