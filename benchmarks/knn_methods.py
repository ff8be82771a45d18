"""Every method's recipe against the same backbone at random init, over seeds: what pretraining buys.

For each method and seed, build the recipe's backbone under ``torch.manual_seed(seed)``, keep a
copy of it untrained, pretrain it with the recipe (``coursekit.recipes.get_recipe(method,
profile)``, ``coursekit.engine.fit``) on the profile's training images, and score both backbones
with the recipe's protocol on the same data: weighted kNN (k=200, t=0.1) always, a linear probe
for MAE. The labeled memory bank (and the probe's training set) is the pretraining images with
their labels; the queries are ``--test-images`` test images (2,000 by default). Training time is
measured as wall seconds and as process CPU seconds (one torch thread by default, so that the CPU
seconds do not depend on how busy the machine is).

Results go to ``benchmarks/results/knn_methods_<method>_<device>.json`` (one file per method, so
that methods can run in parallel processes) and the table of all methods measured so far to
``benchmarks/results/knn_methods_<device>.md``::

    python benchmarks/knn_methods.py                                  # 5 methods x seeds 0-2, demo
    python benchmarks/knn_methods.py --methods simclr moco --seeds 0  # some
    python benchmarks/knn_methods.py --table                           # only rebuild the table
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

import common
from coursekit.data import ImageSet, load_images
from coursekit.engine import fit
from coursekit.evaluate.few_labels import mean_and_std
from coursekit.methods import METHODS
from coursekit.profile import get_profile
from coursekit.recipes import build_report, get_recipe, protocol_scores

NAME = "knn_methods"
NOISE_STD_ERRORS = 2  # a mean gain within 2 standard errors of 0 is a tie with random init


def evaluation_data(method: str, profile: str, test_images: int,
                    train_images: int | None) -> tuple[ImageSet, ImageSet]:
    """(bank, test): the profile's pretraining images with their labels (the kNN memory bank) and
    ``test_images`` labeled test images, at the recipe's image size; the same for every seed."""
    recipe = get_recipe(method, profile)
    sizes = get_profile(profile, device="cpu")  # the data: dataset (COURSEKIT_DATASET applies), images
    bank = load_images(sizes.dataset, "train", n=train_images or sizes.num_train, image_size=recipe.image_size, seed=0)
    test = load_images(sizes.dataset, "test", n=test_images, image_size=recipe.image_size, seed=0)
    return bank, test


def run_one(method: str, profile: str, seed: int, test_images: int, device: torch.device,
            epochs: int | None, train_images: int | None, keep_checkpoint: bool = False) -> dict:
    """Pretrain ``method`` with its recipe under ``seed``; -> build_report's dict (plus cpu_seconds)."""
    recipe = get_recipe(method, profile)
    sizes = get_profile(profile, device="cpu")
    bank, test = evaluation_data(method, profile, test_images, train_images)
    torch.manual_seed(seed)
    backbone = recipe.build_backbone()
    random_init = protocol_scores(copy.deepcopy(backbone), recipe.protocol, bank, test, device, seed)
    model = recipe.build_method(backbone)
    config = recipe.train_config(epochs=epochs, seed=seed, precision="fp32" if device.type == "cpu" else "auto")
    load_start = common.load_average()
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    # --keep-checkpoints: the run is saved where the lessons look for it (seed 0: the lesson's own
    # run, which a lesson then loads instead of training it again); it is always trained anew here.
    checkpoint_dir = sizes.checkpoint_dir(method if seed == 0 else f"{method}-seed{seed}") if keep_checkpoint else None
    history = fit(model, bank.images, config, checkpoint_dir=checkpoint_dir, resume=False, progress=False,
                  device=device)
    common.synchronize(device)
    seconds, cpu_seconds = time.perf_counter() - wall_start, time.process_time() - cpu_start
    pretrained = protocol_scores(model.pretrained_backbone, recipe.protocol, bank, test, device, seed)
    scores = {protocol: {"random_init": round(random_init[protocol], 4), "pretrained": round(pretrained[protocol], 4)}
              for protocol in random_init}
    return build_report(recipe, sizes.dataset, seed, len(history.loss), seconds, scores,
                        cpu_seconds=round(cpu_seconds, 1), epochs=config.epochs, num_train=len(bank),
                        num_test=len(test), first_loss=round(history.loss[0], 4),
                        last_epoch_loss=round(history.epoch_loss[-1], 4), load_average_1min_start=load_start,
                        load_average_1min_end=common.load_average())


def summarize(runs: list[dict], protocol: str) -> dict:
    """Mean and spread over the runs (seeds) of random init, pretrained and gain under ``protocol``;
    ``verdict`` says whether the mean gain is beyond NOISE_STD_ERRORS standard errors (it needs 2+ seeds)."""
    random_init = [run[protocol]["random_init"] for run in runs]
    pretrained = [run[protocol]["pretrained"] for run in runs]
    gains = [p - r for p, r in zip(pretrained, random_init)]
    gain_mean, gain_std = mean_and_std(gains)
    std_error = gain_std / len(gains) ** 0.5
    if len(gains) < 2:
        verdict = "one seed: no spread"
    else:
        verdict = "tie" if abs(gain_mean) <= NOISE_STD_ERRORS * std_error else "gain" if gain_mean > 0 else "loss"
    return {"seeds": [run["seed"] for run in runs], "random_init": mean_and_std(random_init),
            "pretrained": mean_and_std(pretrained), "gain": (gain_mean, gain_std), "gains": gains,
            "verdict": verdict}


def table(results: dict[str, dict]) -> str:
    """Markdown: one row per method and protocol (kNN for all, plus MAE's linear probe)."""
    lines = ["| method | protocol | seeds | random init | pretrained | gain (mean ± std) | gain per seed | verdict | "
             "steps | wall s (mean) | CPU s (mean, max) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in (name for name in METHODS if name in results):
        runs = [results[method]["runs"][seed] for seed in sorted(results[method]["runs"], key=int)]
        protocols = ["knn"] + [runs[0]["protocol"]] * (runs[0]["protocol"] != "knn")
        cpu = [run["cpu_seconds"] for run in runs]
        for protocol in protocols:
            s = summarize(runs, protocol)
            lines.append(
                f"| {method} | {protocol} | {','.join(map(str, s['seeds']))} | "
                f"{s['random_init'][0]:.3f} ± {s['random_init'][1]:.3f} | {s['pretrained'][0]:.3f} ± {s['pretrained'][1]:.3f} | "
                f"{s['gain'][0]:+.3f} ± {s['gain'][1]:.3f} | {', '.join(f'{g:+.3f}' for g in s['gains'])} | {s['verdict']} | {runs[0]['steps']} | "
                f"{statistics.fmean(run['seconds'] for run in runs):.0f} | {statistics.fmean(cpu):.0f}, {max(cpu):.0f} |")
    return "\n".join(lines) + "\n"


def write_table(results_dir: Path, device: torch.device) -> Path:
    results = {}
    for path in sorted(Path(results_dir).glob(f"{NAME}_*_{device.type}.json")):
        result = json.loads(path.read_text())
        results[result["method"]] = result
    path = Path(results_dir) / f"{NAME}_{device.type}.md"
    path.write_text(table(results))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--profile", default="demo", help="whose recipes and data (default: demo)")
    parser.add_argument("--test-images", type=int, default=2000, help="labeled test images (queries)")
    parser.add_argument("--train-images", type=int, help="override the profile's pretraining images (smoke tests)")
    parser.add_argument("--epochs", type=int, help="override every recipe's epochs (smoke tests)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (1: CPU seconds comparable)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--keep-checkpoints", action="store_true",
                        help="save each run in the profile's checkpoint folder of the cache (seed 0: the lessons' run)")
    parser.add_argument("--table", action="store_true", help="only rebuild the markdown table from the JSON files")
    return parser.parse_args(argv)


def runs_on_file(path: Path, result: dict) -> dict:
    """The runs already in ``path`` made with the same profile and recipe (other seeds run by a
    parallel process, or earlier): kept next to this process's runs. A changed recipe drops them."""
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    recipe = json.loads(json.dumps(result["recipe"]))  # as saved: tuples become lists
    same = saved.get("profile") == result["profile"] and saved.get("recipe") == recipe
    return saved.get("runs", {}) if same else {}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {}
    for method in [] if args.table else args.methods:
        result = {**common.environment(device), "method": method, "profile": args.profile,
                  "recipe": get_recipe(method, args.profile).to_dict(), "runs": {}}
        for seed in args.seeds:
            report = run_one(method, args.profile, seed, args.test_images, device, args.epochs, args.train_images,
                             args.keep_checkpoints)
            path = Path(args.results_dir) / f"{NAME}_{method}_{device.type}.json"
            result["runs"] = {**runs_on_file(path, result), **result["runs"], str(seed): report}
            print(json.dumps({key: report[key] for key in ("method", "seed", "steps", "seconds", "cpu_seconds", "knn")}
                             | {report["protocol"]: report[report["protocol"]]}), flush=True)
            common.write_result(f"{NAME}_{method}", device, result, args.results_dir)  # a kill loses little
        results[method] = result
    print(write_table(args.results_dir, device).read_text())
    return results


if __name__ == "__main__":
    main()
