"""What a Colab learner on a T4 should expect from each lesson in the full profile: an estimate, from
FLOPs and memory measured here on the CPU (issue 24, item 3).

For each training (or inference) run a lesson does in the full profile, one step of it runs here on
the CPU, under ``torch.utils.flop_counter.FlopCounterMode`` (the matmul and convolution FLOPs of the
forward and backward pass), at two small batches; its peak resident memory is measured in a child
process per batch. Both grow linearly with the batch (checked: the FLOPs of the larger batch are
reported against twice the smaller's), so they are scaled to the full profile's batch:

- time on a T4 = FLOPs per step at the full batch x the full recipe's steps / the sustained rate.
  Assumed: ``--tflops`` (default 20) sustained TFLOP/s in fp16 with tensor cores, of the T4's 65
  peak; this is optimistic for small convolutions at 32 px and for the CPU-bound data pipelines of
  ultralytics, so the estimate is a lower bound. Elementwise work (optimizers, augmentations, norms)
  is not counted.
- peak GPU memory = the weights, gradients and AdamW state of the model (16 bytes per parameter
  in fp32 master weights) + the activation memory per image measured here (the slope of the peak
  RSS between the two batches) x the full batch x ``--activation-scale`` (default 0.5: fp16
  activations take half of fp32's) + 0.5 GiB for the CUDA context.

Not counted: lesson 01 (a supervised baseline, minutes on any GPU), lesson 09's ultralytics
fine-tunings and Faster R-CNN, lesson 10's segmentation trainings (100 labeled images, a few epochs:
seconds to minutes), the evaluations (kNN, probes). Lessons 08 and 10 reuse the runs of 02, 06 and
09 from the cache (the lessons' own design); their rows count what they run themselves.

    python benchmarks/t4_estimate.py [--lessons 02 05] [--tflops 20] [--json benchmarks/results/t4_estimate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

T4_MEMORY_GIB = 16.0
CUDA_CONTEXT_GIB = 0.5
SMALL_BATCHES = (32, 64)  # large enough that the allocator's noise is small next to the slope


# ---------------------------------------------------------------------------------------------------
# The runs of each lesson in the full profile: (lesson, run, kind, batch, steps, image count). Steps
# follow the notebooks: load_or_pretrain trains the recipe's epochs over profile.num_train images
# (full: 30 epochs of 50,000 CIFAR-10 images at batch 512, 97 steps an epoch, the last partial batch
# dropped).


def full_runs() -> list[dict]:
    from coursekit.profile import get_profile
    from coursekit.recipes import get_recipe

    profile = get_profile("full", device="cpu")
    runs = []

    def pretraining(lesson, method, epochs=None, images=profile.num_train, **extra):
        recipe = get_recipe(method, "full")
        batch = extra.pop("batch", recipe.batch_size)
        epochs = recipe.epochs if epochs is None else epochs
        runs.append({"lesson": lesson, "run": extra.pop("name", f"{method} pretraining"), "kind": "train",
                     "method": method, "batch": batch, "steps": epochs * (images // batch), **extra})

    pretraining("02", "simclr")
    pretraining("03", "moco")
    pretraining("04", "byol")
    pretraining("05", "dino")
    # lesson 05's second run: DINO's recipe on the profile's ViT, a quarter of the epochs, on shapes
    pretraining("05", "dino", epochs=max(1, get_recipe("dino", "full").epochs // 4), name="dino ViT-small (shapes)",
                backbone=profile.vit, backbone_kwargs={"img_size": 32, "patch_size": profile.patch_size})
    pretraining("06", "mae")
    # lesson 07 loads the five runs of 02-06 from the cache (retrained there when the cache is empty),
    # then fine-tunes SimCLR's backbone: evaluate.fine_tune's 10 epochs at batch 64 on the training images
    runs.append({"lesson": "07", "run": "simclr fine-tuning (10 epochs)", "kind": "finetune", "method": "simclr",
                 "batch": 64, "steps": 10 * -(-profile.num_train // 64)})
    # lesson 08: DINOv2 ViT-S/14 at 224 px, features of the training and test images, pretrained and random
    runs.append({"lesson": "08", "run": "DINOv2 ViT-S/14 features at 224 px (x2 models)", "kind": "features",
                 "batch": 64, "steps": 2 * -(-(profile.num_train + profile.num_test) // 64)})
    # lesson 09 (and 10, which loads it): DINO on YOLO11n at 224 px over the 3,680 Pets training photos,
    # the DINO recipe's epochs, batch min(512, 3680 // 2), 2 global + n_local local crops
    pets_train = 3680
    ssl_batch = min(get_recipe("dino", "full").batch_size, pets_train // 2)
    runs.append({"lesson": "09", "run": "DINO on YOLO11n at 224 px (Pets)", "kind": "yolo_dino", "batch": ssl_batch,
                 "steps": get_recipe("dino", "full").epochs * (pets_train // ssl_batch)})
    return runs


# ---------------------------------------------------------------------------------------------------
# One step of a run at a small batch (in a child process: its own peak RSS)


def build_step(run: dict, batch: int):
    """-> (step(): one training step at ``batch`` (forward, backward and the optimizer, through the
    engine's one ``OptimizerStep`` as every loop of the package), the model)."""
    from coursekit.engine import OptimizerStep, TrainConfig, build_optimizer, create_optimizer
    from coursekit.recipes import get_recipe

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)

    def pretraining_step(method, image_size: int):
        """One step of a self-supervised method, as engine.fit takes it."""
        images = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8)
        optimizer_step = OptimizerStep(build_optimizer(method, TrainConfig(), "cpu"), "fp32", "cpu", hooks=method)

        def step():
            optimizer_step(method.training_step(images, generator), 0)
        return step, method

    if run["kind"] == "train":
        import dataclasses
        recipe = get_recipe(run["method"], "full")
        if "backbone" in run:
            recipe = dataclasses.replace(recipe, backbone=run["backbone"], backbone_kwargs=run["backbone_kwargs"])
        return pretraining_step(recipe.build_method(recipe.build_backbone()), recipe.image_size)
    if run["kind"] == "finetune":
        from coursekit.augment import normalize, to_float
        recipe = get_recipe(run["method"], "full")
        backbone = recipe.build_backbone()
        head = torch.nn.Linear(backbone.feature_dim, 10)
        model = torch.nn.Sequential(backbone, head)
        x = normalize(to_float(torch.randint(0, 256, (batch, 3, recipe.image_size, recipe.image_size),
                                             dtype=torch.uint8)))
        y = torch.randint(0, 10, (batch,))
        optimizer_step = OptimizerStep(create_optimizer([{"params": list(model.parameters())}]), "fp32", "cpu")

        def step():
            optimizer_step(torch.nn.functional.cross_entropy(model(x), y), 0)
        return step, model
    if run["kind"] == "features":
        from coursekit.foundation import create_dinov2
        model = create_dinov2("dinov2_vits14").eval()
        x = torch.randn(batch, 3, 224, 224)

        def step():
            with torch.no_grad():
                model(x)
        return step, model
    if run["kind"] == "yolo_dino":
        from coursekit.methods.dino import DINO
        from coursekit.models import build_backbone
        from coursekit.models.yolo import dino_local_size
        options = {k: v for k, v in get_recipe("dino", "full").method_kwargs.items() if k != "local_size"}
        return pretraining_step(DINO(build_backbone("yolo11n"), image_size=224, local_size=dino_local_size(224),
                                     **options), 224)
    raise ValueError(run["kind"])


def measure_child(run: dict, batch: int) -> dict:
    """FLOPs of one step and the peak RSS of a process that ran it (and nothing bigger)."""
    import resource
    from torch.utils.flop_counter import FlopCounterMode

    step, model = build_step(run, batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with FlopCounterMode(display=False) as counter:
        step()
    return {"flops": counter.get_total_flops(),
            "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_before_step_mib": before / 1024}


def measure(run: dict, batches: tuple[int, int] = SMALL_BATCHES) -> dict:
    points = []
    for batch in batches:
        child = subprocess.run([sys.executable, __file__, "--child", json.dumps(run), str(batch)],
                               capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if child.returncode != 0:
            raise RuntimeError(f"{run['run']} at batch {batch}: {child.stderr[-2000:]}")
        points.append(json.loads(child.stdout.strip().splitlines()[-1]))
    (b0, small), (b1, large) = zip(batches, points)
    flops_per_image = large["flops"] / b1
    memory_per_image_mib = max(0.0, (large["peak_rss_mib"] - small["peak_rss_mib"]) / (b1 - b0))
    return {"flops_per_image": flops_per_image, "flops_linearity": large["flops"] / (small["flops"] * b1 / b0),
            "params": large["params"], "activation_mib_per_image_fp32": round(memory_per_image_mib, 2),
            "cpu_peak_rss_mib_at_small_batches": [round(p["peak_rss_mib"]) for p in points]}


def estimate(run: dict, measured: dict, tflops: float, activation_scale: float) -> dict:
    flops_per_step = measured["flops_per_image"] * run["batch"]
    seconds = flops_per_step * run["steps"] / (tflops * 1e12)
    train = run["kind"] != "features"
    state_gib = measured["params"] * (16 if train else 2) / 2**30  # fp32 weights, grads, AdamW moments / fp16 weights
    activations_gib = measured["activation_mib_per_image_fp32"] * run["batch"] * activation_scale / 1024
    memory_gib = state_gib + activations_gib + CUDA_CONTEXT_GIB
    return {**run, **measured, "tflop_per_step": round(flops_per_step / 1e12, 3),
            "t4_minutes": round(seconds / 60, 1), "t4_peak_memory_gib": round(memory_gib, 1),
            "fits_t4_memory": memory_gib <= T4_MEMORY_GIB}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", nargs="+", help="only these lessons (e.g. 02 05)")
    parser.add_argument("--tflops", type=float, default=20.0, help="sustained fp16 TFLOP/s assumed on a T4")
    parser.add_argument("--activation-scale", type=float, default=0.5,
                        help="activation memory on the GPU / measured fp32 on the CPU")
    parser.add_argument("--batches", nargs=2, type=int, default=SMALL_BATCHES,
                        help="the two small batches measured here (their slope scales to the full batch)")
    parser.add_argument("--json", type=Path, help="write the rows and assumptions as JSON")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_child(json.loads(args.child[0]), int(args.child[1]))))
        return
    rows = []
    print(f"{'lesson':<6} {'run':<48} {'batch':>5} {'steps':>6} {'TFLOP/step':>10} {'T4 min':>7} "
          f"{'T4 GiB':>7}  fits")
    for run in full_runs():
        if args.lessons and run["lesson"] not in args.lessons:
            continue
        row = estimate(run, measure(run, tuple(args.batches)), args.tflops, args.activation_scale)
        rows.append(row)
        print(f"{row['lesson']:<6} {row['run']:<48} {row['batch']:>5} {row['steps']:>6} {row['tflop_per_step']:>10.3f} "
              f"{row['t4_minutes']:>7.1f} {row['t4_peak_memory_gib']:>7.1f}  {'yes' if row['fits_t4_memory'] else 'NO'}",
              flush=True)
    per_lesson = {}
    for row in rows:
        lesson = per_lesson.setdefault(row["lesson"], {"t4_minutes": 0.0, "t4_peak_memory_gib": 0.0})
        lesson["t4_minutes"] = round(lesson["t4_minutes"] + row["t4_minutes"], 1)
        lesson["t4_peak_memory_gib"] = max(lesson["t4_peak_memory_gib"], row["t4_peak_memory_gib"])
    print("per lesson (runs added up, memory the largest run's):")
    for lesson, total in per_lesson.items():
        print(f"  lesson {lesson}: {total['t4_minutes']:.0f} min, {total['t4_peak_memory_gib']:.1f} GiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "assumptions": {"sustained_tflops_fp16": args.tflops, "activation_scale": args.activation_scale,
                            "state_bytes_per_parameter": 16, "cuda_context_gib": CUDA_CONTEXT_GIB,
                            "small_batches": list(args.batches), "t4_memory_gib": T4_MEMORY_GIB,
                            "method": " ".join(__doc__.split("\n\n")[1:4])},
            "device_measured_on": "cpu", "torch": torch.__version__, "runs": rows, "lessons": per_lesson},
            indent=1) + "\n")
        print("wrote", args.json)


if __name__ == "__main__":
    main()
