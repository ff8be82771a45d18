"""Lesson 07's tables for the five-minute runs of lessons 02-06, stored so the lesson fits a class hour.

Lesson 07 scores the runs of lessons 02-06 (SimCLR, MoCo, BYOL, DINO, MAE, each its recipe under the
profile, seed 0) under kNN, the linear probe and fine-tuning with 1%, 10% and 100% of the labels, and
with 10 and 100 labeled images per class. With those runs in the checkpoint cache it computes the
tables live; with an empty cache, training the five first would take about 18 minutes on a laptop CPU,
so it trains only SimCLR's run (its walkthrough) and shows the tables this script stored. The script
makes the calls the lesson makes (``recipes.load_or_pretrain`` into the profile's checkpoint folders,
``evaluate.label_fraction_experiment``, ``evaluate.few_labels.few_label_accuracies``), so with the same
profile, seed and threads it prints the lesson's numbers::

    COURSEKIT_CACHE=DIR python benchmarks/label_fractions.py --profile demo --report coursekit/pretrained/label_fractions.json

The runs are shared with the lessons and ``coursekit prepare`` through ``COURSEKIT_CACHE``: a run
already there is loaded, not trained.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import common
from coursekit import evaluate
from coursekit.data import load_images
from coursekit.evaluate.few_labels import few_label_accuracies
from coursekit.profile import get_profile
from coursekit.recipes import get_recipe, load_or_pretrain

METHODS = ("simclr", "moco", "byol", "dino", "mae")
PROBE_SEARCH = dict(lrs=(1e-2, 1e-1), weight_decays=(0.0, 1e-3))  # the lesson's search, smaller than the default


def five_minute_row(method: str) -> str:
    """The row name of a method's run in the lesson's few-label table."""
    return f"{method}, 5 min (section 2)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--per-class", nargs="+", type=int, default=[10, 100],
                        help="labeled images per class of the few-label table")
    parser.add_argument("--draws", type=int, default=3, help="draws of those labels")
    parser.add_argument("--pool", type=int, default=2000, help="labeled images the draws come from")
    parser.add_argument("--report", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    if min(args.per_class) < 1 or args.draws < 1 or args.pool < 2:
        parser.error("--per-class and --draws must be >= 1 and --pool >= 2")
    profile = get_profile(args.profile)
    device = torch.device(profile.device)
    image_size = get_recipe("simclr", args.profile).image_size
    train_set = load_images(profile.dataset, "train", n=profile.num_train, image_size=image_size, seed=0)
    test_set = load_images(profile.dataset, "test", n=profile.num_test, image_size=image_size, seed=0)
    report = {**common.environment(device), "profile": args.profile}
    start = time.perf_counter()

    backbones = {}
    for name in METHODS:  # lesson 07's section 2
        method, _, status = load_or_pretrain(name, train_set.images, profile.checkpoint_dir(name), seed=0,
                                             profile_name=args.profile, device=device)
        print(f"{name}: {status}", flush=True)
        backbones[name] = method.pretrained_backbone.eval()

    # section 3: SimCLR fine-tuned with all the labels, reused by the table
    fine_tune_steps = profile.epochs * -(-len(train_set) // 64)
    tuned = evaluate.fine_tune(backbones["simclr"], train_set.images, train_set.labels, test_set.images,
                               test_set.labels, len(train_set.classes), min_steps=fine_tune_steps, device=device,
                               progress=False)

    # section 4: every backbone, every protocol, 1% / 10% / 100% of the labels
    def random_init(method):
        torch.manual_seed(0)
        return get_recipe(method, args.profile).build_backbone().to(device).eval()

    random_rows = {f"random init ({get_recipe(name, args.profile).backbone})": random_init(name) for name in METHODS}
    images_seen = get_recipe("simclr", args.profile).epochs * len(train_set)
    table = evaluate.label_fraction_experiment(
        {**random_rows, **backbones}, train_set, test_set, fine_tune_rows=["simclr"], fine_tune_steps=fine_tune_steps,
        measured={"simclr": {"fine_tune": {1.0: tuned.accuracy}}},
        scratch_factory=get_recipe("simclr", args.profile).build_backbone,
        scratch_epochs=lambda labels: max(profile.epochs, -(-images_seen // labels)),
        probe_search=PROBE_SEARCH, device=device)
    report.update(fine_tune_steps=fine_tune_steps, table=evaluate.table_to_json(table))

    # section 5: the five runs with a few labeled images per class, on Fashion-MNIST at 32 px
    few = {}
    if profile.dataset == "fashion_mnist" and image_size == 32:
        pool = load_images("fashion_mnist", "train", n=args.pool, image_size=32, seed=0)
        few_test = load_images("fashion_mnist", "test", n=profile.num_test, image_size=32, seed=0)
        for name, backbone in backbones.items():
            pool_features = evaluate.extract_features(backbone, pool.images, device=device)
            test_features = evaluate.extract_features(backbone, few_test.images, device=device)
            few[five_minute_row(name)] = {
                f"{protocol} {n}": few_label_accuracies(pool_features, pool.labels, test_features, few_test.labels,
                                                        n, protocol, subsets=args.draws)
                for protocol in ("linear", "knn") for n in args.per_class}
    report.update(few_labels={"per_class": args.per_class, "draws": args.draws, "pool": args.pool, "rows": few},
                  seconds=round(time.perf_counter() - start), load_average_1min_end=common.load_average())
    common.write_report(args.report, report)
    return report


if __name__ == "__main__":
    main()
