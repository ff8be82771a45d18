"""What MoCo's queue buys at a small batch: SimCLR, MoCo with its queue, and MoCo without one.

Lesson 03 asks whether MoCo's queue (K negatives whatever the batch) lets it learn at a small batch
where SimCLR has only 2N - 2 negatives. Comparing MoCo with SimCLR mixes the queue with everything
else that differs (the momentum key encoder, one view through the query encoder per step), so this
script also runs the control that isolates the queue: MoCo with a queue of one batch (K = N), the
same recipe otherwise. Each run is the method's recipe with only the batch and the epochs changed,
through ``coursekit.recipes.load_or_pretrain`` as the lesson calls it (seed 0 is the lesson's own
run), scored by weighted kNN (k=200, t=0.1) on the recipe's data.

Results: ``benchmarks/results/queue_ablation_b<batch>_e<epochs>_<device>.json``, and with ``--report`` a
copy where lesson 03 reads it (``coursekit.pretrained.results("queue_ablation")``)::

    python benchmarks/queue_ablation.py --batch-size 32 --epochs 2 --seeds 0 1 2 --report coursekit/pretrained/queue_ablation.json
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import common
from coursekit.recipes import get_recipe, load_or_pretrain, protocol_scores
from knn_methods import evaluation_data

NAME = "queue_ablation"


def runs(batch_size: int, profile: str) -> dict[str, tuple[str, dict]]:
    """Row name -> (method, load_or_pretrain changes) of the three runs at ``batch_size``."""
    queue = get_recipe("moco", profile).method_kwargs["queue_size"]  # the recipe's K
    return {f"SimCLR ({2 * batch_size - 2} negatives)": ("simclr", {}),
            f"MoCo, queue K = {queue}": ("moco", {}),
            f"MoCo, queue K = {batch_size} (one batch)": ("moco", {"method_kwargs": {"queue_size": batch_size}})}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--train-images", type=int, help="override the profile's pretraining images (smoke tests)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (1: CPU seconds comparable)")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS)
    parser.add_argument("--report", type=Path, help="also write the results here (the lesson's copy)")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.epochs < 1:
        parser.error(f"--batch-size must be >= 2 and --epochs >= 1; got {args.batch_size} and {args.epochs}")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    bank, test = evaluation_data("moco", args.profile, args.test_images, args.train_images)
    result = {**common.environment(device), "profile": args.profile, "batch_size": args.batch_size,
              "epochs": args.epochs, "seeds": args.seeds, "test_images": len(test), "knn": {}}
    rows = runs(args.batch_size, args.profile)
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            for row, (method, changes) in rows.items():
                start = time.process_time()
                model, _, _ = load_or_pretrain(method, bank.images, Path(work) / f"{row}-{seed}", seed=seed,
                                               profile_name=args.profile, device=device, progress=False,
                                               batch_size=args.batch_size, epochs=args.epochs, **changes)
                knn = protocol_scores(model.backbone, "knn", bank, test, device)["knn"]
                result["knn"].setdefault(row, []).append(round(knn, 4))
                print(f"seed {seed}  {row:<34} kNN {knn:.4f}  ({time.process_time() - start:.0f} CPU-s)", flush=True)
            common.write_result(f"{NAME}_b{args.batch_size}_e{args.epochs}", device, result,
                                args.results_dir)  # a kill loses little
    if args.report:
        common.write_report(args.report, result)
    for row, scores in result["knn"].items():
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        print(f"{row:<34} mean {statistics.fmean(scores):.4f} ± {spread:.4f} over seeds {args.seeds}")
    return result


if __name__ == "__main__":
    main()
