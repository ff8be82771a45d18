"""The dry run: ``COURSEKIT_DRY_RUN=1`` runs any profile's code paths in minutes, offline, on a CPU.

Why: the ``full`` profile (CIFAR-10, STL-10 and Oxford-IIIT Pet, ResNet-18 of width 64, ViT-small,
batch 512, DINOv2 and YOLO at 224 px) is what a Colab learner with a GPU gets, yet its datasets
cannot be downloaded here and a real run takes hours. The dry run keeps everything that can break
(the profile's models, image sizes, batch sizes, recipes, code paths) and cuts what only costs
time, with the switch read here and nowhere else:

- every training loop stops after ``MAX_STEPS`` optimizer steps (``cap_steps``: ``engine.fit``,
  ``engine.train_supervised``; ultralytics' YOLO training runs one epoch on a fraction);
- every dataset keeps at most ``MAX_IMAGES`` images per split, and its test split ``MAX_TEST_IMAGES``
  (``cap_count``), and a dataset whose
  files are missing is not downloaded but replaced by random stand-in images of its exact shape,
  dtype and classes (``coursekit.data.standin``);
- every feature extraction (``evaluate.extract_features``, what kNN, probes and retrieval read) runs
  the backbone on at most ``MAX_EVAL_IMAGES`` images of a call (``cap_eval``) and repeats their
  features for the others (``repeat_rows``; detections and masks alike), so the evaluations downstream get every row they expect;
- missing pretrained weights (DINOv2, ``coursekit.foundation``) are not downloaded: the model gets
  random weights, and its banner says so;
- its checkpoints go to their own cache folder and record the dry run in their settings
  (``checkpoint_marker``), so that a real run never takes a capped run for a finished one.

Unset (or ``0``), nothing changes: a real run never swaps data and no loop is capped.
"""
from __future__ import annotations

import os

DRY_RUN_ENV = "COURSEKIT_DRY_RUN"
# Optimizer steps per training loop: two, so that the second step runs on state the first one
# changed (MoCo's queue, the EMA teachers, DINO's center, the optimizer's moments).
MAX_STEPS = 2
# Images kept per dataset split: two batches of 512, the largest batch of any profile or recipe
# (tests/test_dry_run.py checks it), so that a full-profile pretraining gets full batches for its
# MAX_STEPS steps, while a whole split stays small (1024 images of 224 px: 154 MB of uint8).
MAX_IMAGES = 1024
# Images a test split keeps: only evaluations read it (kNN and probes score it, lesson 06 fills its
# masked patches at four ratios, lesson 09 detects on it), never a pretraining's full batches.
MAX_TEST_IMAGES = 256
# Images a feature extraction runs the backbone on: one batch of extract_features' default 256. The
# evaluations read features of whole splits (twice per backbone: bank and test), and at 224 px
# (DINOv2) or for several backbones a lesson would otherwise spend most of its dry run there.
MAX_EVAL_IMAGES = 256


def is_dry_run() -> bool:
    """Whether ``COURSEKIT_DRY_RUN`` is set to anything but empty, ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(DRY_RUN_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def cap_steps(total_steps: int) -> int:
    """The optimizer steps a loop of ``total_steps`` runs: at most ``MAX_STEPS`` in a dry run."""
    return min(total_steps, MAX_STEPS) if is_dry_run() else total_steps


def cap_count(n: int, split: str = "train") -> int:
    """The number of images a split of ``n`` keeps: at most ``MAX_IMAGES`` in a dry run, or
    ``MAX_TEST_IMAGES`` for the split named ``test``."""
    if not is_dry_run():
        return n
    return min(n, MAX_TEST_IMAGES if split == "test" else MAX_IMAGES)


def cap_eval(n: int) -> int:
    """The number of images a feature extraction of ``n`` runs the backbone on: at most
    ``MAX_EVAL_IMAGES`` in a dry run (the other rows repeat their features)."""
    return min(n, MAX_EVAL_IMAGES) if is_dry_run() else n


def repeat_rows(rows, n: int):
    """The rows a capped evaluation computed (``cap_eval``), repeated in order to ``n``: a tensor
    (indexed along its first dimension) or a list. Unchanged when it holds ``n`` rows already."""
    if len(rows) == n:
        return rows
    index = [i % len(rows) for i in range(n)]
    return [rows[i] for i in index] if isinstance(rows, list) else rows[index]


def checkpoint_marker() -> dict:
    """What a dry run adds to a checkpoint's settings (empty otherwise): a real run, whose settings
    lack it, refuses such a checkpoint instead of loading a capped run as finished."""
    return {"dry_run": {"max_steps": MAX_STEPS, "max_images": MAX_IMAGES}} if is_dry_run() else {}


def describe() -> str:
    """The words the profile banner adds in a dry run."""
    return (f"(dry run): random stand-in images, {MAX_STEPS} steps per loop, "
            f"at most {MAX_IMAGES} images per split ({MAX_TEST_IMAGES} for test), features of at most {MAX_EVAL_IMAGES}")
