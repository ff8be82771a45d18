"""The dry-run switch (coursekit/dry_run.py) and what the profile says of it."""
from __future__ import annotations

import pytest
import torch

from coursekit import dry_run
from coursekit.profile import get_profile
from coursekit.recipes import get_recipe
from coursekit.methods import METHODS


@pytest.mark.parametrize("value, on", [("", False), ("0", False), ("false", False), ("off", False),
                                       ("1", True), ("yes", True), ("true", True)])
def test_the_variable_switches_the_dry_run(monkeypatch, value, on):
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, value)
    assert dry_run.is_dry_run() is on
    assert dry_run.cap_steps(1000) == (dry_run.MAX_STEPS if on else 1000)
    assert dry_run.cap_count(50000) == (dry_run.MAX_IMAGES if on else 50000)
    assert dry_run.cap_count(10000, "test") == (dry_run.MAX_TEST_IMAGES if on else 10000)
    assert dry_run.cap_eval(10000) == (dry_run.MAX_EVAL_IMAGES if on else 10000)
    assert bool(dry_run.checkpoint_marker()) is on


def test_caps_never_raise_a_count(monkeypatch):
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    assert dry_run.cap_steps(1) == 1 and dry_run.cap_count(10) == 10 and dry_run.cap_eval(10) == 10


def test_a_split_holds_two_batches_of_every_full_recipe():
    largest = max(get_recipe(method, "full").batch_size for method in METHODS)
    assert largest == 512  # the full profile's batch
    assert dry_run.MAX_IMAGES >= 2 * max(largest, get_profile("full", device="cpu").batch_size)


def test_the_banner_says_dry_run_only_in_a_dry_run(monkeypatch):
    monkeypatch.delenv(dry_run.DRY_RUN_ENV, raising=False)
    profile = get_profile("full", device="cpu")
    assert "dry run" not in profile.banner()
    assert profile.banner().startswith("coursekit profile 'full' on cpu: cifar10")
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    assert profile.banner().startswith(
        f"coursekit profile 'full' (dry run): random stand-in images, {dry_run.MAX_STEPS} steps per loop")


def test_a_dry_run_keeps_its_checkpoints_apart(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path))
    monkeypatch.delenv(dry_run.DRY_RUN_ENV, raising=False)
    profile = get_profile("full", device="cpu")
    real = profile.checkpoint_dir("simclr")
    assert real == tmp_path / "checkpoints" / "full-simclr"
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    assert profile.checkpoint_dir("simclr") == tmp_path / "dry-run" / "checkpoints" / "full-simclr"


@pytest.mark.parametrize("on", [False, True])
def test_a_dry_run_extracts_features_of_a_few_images_and_repeats_them(monkeypatch, on):
    """The backbone sees at most MAX_EVAL_IMAGES images (in batches as asked); every image still gets a
    row, so kNN and probes downstream run on the split they were given. Off, every image is computed."""
    from coursekit.evaluate import extract_features
    from tests.conftest import random_images, tiny_backbone

    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1" if on else "0")
    monkeypatch.setattr(dry_run, "MAX_EVAL_IMAGES", 6)
    backbone = tiny_backbone("resnet18")
    seen = []
    backbone.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
    images = random_images(20, 32)
    features = extract_features(backbone, images, batch_size=4)
    assert features.shape == (20, backbone.feature_dim)
    if on:
        assert seen == [4, 2]
        assert torch.equal(features[6:12], features[:6]) and torch.equal(features[18:], features[:2])
    else:
        assert seen == [4, 4, 4, 4, 4]
        assert torch.allclose(features, extract_features(backbone, images, batch_size=20), atol=1e-5)
