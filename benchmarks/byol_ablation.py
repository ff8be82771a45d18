"""What stops BYOL's collapse: its recipe against the same run without the predictor or without the EMA.

Lesson 04's section 4 compares three short BYOL runs: ``byol_short`` (the recipe, a quarter of its
epochs), ``byol_no_predictor`` (``predictor=False``) and ``byol_no_ema`` (``ema=False``: the target is
the online network itself). Three more pretrainings do not fit a class hour on a laptop CPU, so this
script trains them as the lesson would (``coursekit.recipes.load_or_pretrain`` on the lesson's
images, only the named option changed) for several seeds, and the lesson shows its report:
per run and seed the loss and collapse-monitor curves, the std of the normalized test projections
and the weighted kNN accuracy (k=200, t=0.1), next to the random-init backbone's.

    python benchmarks/byol_ablation.py --seeds 0 1 2 --report coursekit/pretrained/byol_ablation.json
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import common
from coursekit.evaluate import extract_features
from coursekit.profile import get_profile
from coursekit.recipes import get_recipe, load_or_pretrain, protocol_scores
from knn_methods import evaluation_data

RUNS = {"byol_short": {}, "byol_no_predictor": {"predictor": False}, "byol_no_ema": {"ema": False}}


@torch.no_grad()
def projection_std(method, images: torch.Tensor, device: torch.device) -> float:
    """Mean over dimensions of the per-dimension std of the L2-normalized online projections (lesson 04's)."""
    z = extract_features(nn.Sequential(method.backbone, method.projection_head), images, device=device)
    return F.normalize(z, dim=1).std(dim=0).mean().item()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--test-images", type=int, help="default: the profile's (the lesson's test images)")
    parser.add_argument("--train-images", type=int, help="override the profile's pretraining images (smoke tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (1: CPU seconds comparable)")
    parser.add_argument("--report", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    recipe = get_recipe("byol", args.profile)
    epochs = max(1, recipe.epochs // 4)  # the lesson's budget: equal for the three, shorter than the recipe
    bank, test = evaluation_data("byol", args.profile, args.test_images or get_profile(args.profile).num_test,
                                 args.train_images)
    report = {**common.environment(device), "profile": args.profile, "epochs": epochs, "seeds": args.seeds,
              "train_images": len(bank), "test_images": len(test), "runs": {name: {} for name in RUNS},
              "random_init_knn": []}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            torch.manual_seed(seed)
            report["random_init_knn"].append(round(protocol_scores(recipe.build_backbone(), "knn", bank, test,
                                                                   device)["knn"], 4))
            for name, options in RUNS.items():
                start = time.process_time()
                method, history, _ = load_or_pretrain("byol", bank.images, Path(work) / f"{name}-{seed}", seed=seed,
                                                      profile_name=args.profile, device=device, progress=False,
                                                      epochs=epochs, method_kwargs=options)
                run = {"loss": [round(v, 4) for v in history.loss], "step": history.step,
                       "embedding_std": [round(v, 5) for v in history.metrics["embedding_std"]],
                       "metrics_step": history.metrics_step,
                       "projection_std": round(projection_std(method, test.images, device), 5),
                       "knn": round(protocol_scores(method.backbone, "knn", bank, test, device)["knn"], 4),
                       "cpu_seconds": round(time.process_time() - start)}
                report["runs"][name][str(seed)] = run
                print(f"seed {seed}  {name:<18} final loss {run['loss'][-1]:.3f}  std {run['projection_std']:.4f}  "
                      f"kNN {run['knn']:.4f}  ({run['cpu_seconds']} CPU-s)", flush=True)
            common.write_report(args.report, report)  # after every seed: a kill loses little
    report["load_average_1min_end"] = common.load_average()
    common.write_report(args.report, report)
    return report


if __name__ == "__main__":
    main()
