"""What more pretraining epochs buy: one method's recipe at several epoch counts, against raw pixels.

Lesson 07 finds the demo-budget SSL backbones at or below raw-pixel kNN on Fashion-MNIST. This
script measures the curve behind that sentence: the method's recipe, unchanged except for its
epochs, pretrained from the same seeded backbone on the same images (``knn_methods.run_one``),
scored by the recipe's protocol, next to the same protocol on the raw pixels (kNN on the
normalized pixels, lesson 07's "raw pixels" row) and on the untrained backbone.

Results: ``benchmarks/results/epochs_curve_<method>_<device>.json`` and a plot ``.png`` beside it::

    python benchmarks/epochs_curve.py --method simclr --epochs 4 8 16 32
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import torch

matplotlib.use("Agg")

import common
from coursekit import viz
from coursekit.evaluate import default_normalize, knn_accuracy
from coursekit.methods import METHODS
from coursekit.recipes import KNN_K, KNN_TEMPERATURE, get_recipe
from knn_methods import evaluation_data, run_one

NAME = "epochs_curve"


def raw_pixel_knn(profile: str, method: str, test_images: int, train_images: int | None) -> float:
    """Weighted kNN (the reports' k and t) on the normalized pixels of the images ``run_one`` uses."""
    bank, test = evaluation_data(method, profile, test_images, train_images)
    pixels = [default_normalize(data.images).flatten(1) for data in (bank, test)]
    return round(knn_accuracy(pixels[0], bank.labels, pixels[1], test.labels, len(bank.classes),
                              k=KNN_K, temperature=KNN_TEMPERATURE), 4)


def plot(result: dict, path: Path) -> None:
    epochs = [run["epochs"] for run in result["runs"]]
    figure = viz.plot_curves(
        epochs, {f"{result['method']} pretrained": [run["knn"]["pretrained"] for run in result["runs"]],
                 "raw pixels": [result["raw_pixel_knn"]] * len(epochs),
                 "random init (same backbone)": [result["runs"][0]["knn"]["random_init"]] * len(epochs)},
        xlabel="pretraining epochs (log scale)", ylabel="kNN test accuracy (fraction correct)", logx=True,
        title=f"{result['method']}, {result['profile']} profile, seed {result['seed']}: what more epochs buy")
    figure.savefig(path, dpi=100, bbox_inches="tight")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=list(METHODS), default="simclr")
    parser.add_argument("--epochs", nargs="+", type=int, default=[4, 8, 16, 32])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--train-images", type=int, help="override the profile's pretraining images (smoke tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (1: CPU seconds comparable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    args = parser.parse_args(argv)
    if any(e < 1 for e in args.epochs):
        parser.error(f"--epochs must be positive, got {args.epochs}")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    result = {**common.environment(device), "method": args.method, "profile": args.profile, "seed": args.seed,
              "recipe": get_recipe(args.method, args.profile).to_dict(),
              "raw_pixel_knn": raw_pixel_knn(args.profile, args.method, args.test_images, args.train_images),
              "runs": []}
    for epochs in sorted(args.epochs):
        report = run_one(args.method, args.profile, args.seed, args.test_images, device, epochs, args.train_images)
        result["runs"].append(report)
        print(f"{args.method} {epochs} epochs: kNN {report['knn']['pretrained']:.4f} (random init "
              f"{report['knn']['random_init']:.4f}, raw pixels {result['raw_pixel_knn']:.4f}), "
              f"{report['cpu_seconds']:.0f} CPU-s", flush=True)
        path = common.write_result(f"{NAME}_{args.method}", device, result, args.results_dir)  # a kill loses little
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    main()
