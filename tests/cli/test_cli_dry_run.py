"""``coursekit pretrain --profile full`` under ``COURSEKIT_DRY_RUN=1``, as a user runs it: offline,
on the CPU, with the full profile's recipe, backbone and image size, its loop capped.

The full recipes' batch of 512 on a ResNet-18 of width 64 takes minutes a step on a 2-core CPU, so
these tests lower the batch and the number of images with the command's own flags (``--batch-size
8 --num-images 64 --num-test 64``: the documented way to change a recipe's value); everything else
is the full profile's. ``benchmarks/dry_run_pretrain.py`` runs the dry run at the full batch.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coursekit import dry_run
from coursekit.engine.checkpoint import CHECKPOINT_NAME, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--batch-size", "8", "--num-images", "64", "--num-test", "64"]


def dry_pretrain(method: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path]:
    env = {**os.environ, "COURSEKIT_DRY_RUN": "1", "COURSEKIT_CACHE": str(tmp_path / "cache"),
           "COURSEKIT_DATA": str(tmp_path / "data"), "YOLO_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("COURSEKIT_PROFILE", None)  # --profile full decides
    folder = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "coursekit", "pretrain", "--method", method, "--profile", "full",
                             "--checkpoint-dir", str(folder), *SMALL],
                            capture_output=True, text=True, env=env, timeout=300)
    return result, folder


# the full profile's backbones: ResNet-18 of width 64, ViT-small with 4-pixel patches on 32 px images
@pytest.mark.parametrize("method, backbone, kwargs", [("simclr", "resnet18", {"width": 64}),
                                                      ("mae", "vit_small", {"img_size": 32, "patch_size": 4})])
def test_full_profile_dry_run_from_the_command_line(tmp_path, method, backbone, kwargs):
    result, folder = dry_pretrain(method, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    banner = result.stdout.splitlines()[0]
    assert banner.startswith(f"coursekit profile 'full' (dry run): random stand-in images, {dry_run.MAX_STEPS} "
                             "steps per loop")
    assert "cifar10" in banner  # the full profile's dataset, not downloaded: stood in for
    history = json.loads((folder / "history.json").read_text())
    assert history["step"] == list(range(1, dry_run.MAX_STEPS + 1))
    state = load_checkpoint(folder / CHECKPOINT_NAME)
    assert state["step"] == state["total_steps"] == dry_run.MAX_STEPS
    settings = state["settings"]
    assert settings["data"]["shape"] == [3, 32, 32] and settings["data"]["num_images"] == 64  # CIFAR-10's images
    assert settings["extra"] == {"dataset": "cifar10", "backbone": backbone, "backbone_kwargs": kwargs}
    assert "dry_run" in settings
    assert "on cifar10 test (64 images)" in result.stdout  # evaluated on the stand-in test split
