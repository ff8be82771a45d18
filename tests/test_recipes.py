"""Recipes: every method has one in every profile, its values are sane, and what it builds runs."""
from __future__ import annotations

import pytest
import torch

from coursekit.augment import BYOLViews, DINOViews, SimCLRViews
from coursekit.data import load_images
from coursekit.engine import TrainConfig
from coursekit.methods import METHODS
from coursekit.profile import PROFILE_NAMES, get_profile
from coursekit.recipes import (PROTOCOLS, REFERENCE_BATCH, build_report, get_recipe, load_or_pretrain, protocol_scores,
                               recipe_names)


def test_every_method_has_a_recipe_in_every_profile():
    assert set(recipe_names()) == {(method, profile) for method in METHODS for profile in PROFILE_NAMES}


@pytest.mark.parametrize("method,profile", recipe_names())
def test_recipe_values_are_sane_and_its_config_builds(method, profile):
    recipe = get_recipe(method, profile)
    assert recipe.method == method and recipe.profile == profile
    assert recipe.epochs >= 1 and recipe.batch_size >= 2 and recipe.protocol in PROTOCOLS
    assert 0 < recipe.lr() < 10 and 0 <= recipe.weight_decay < 1 and 0 <= recipe.warmup_epochs < recipe.epochs
    assert recipe.batch_size <= get_profile(profile).num_train  # at least one step per epoch
    config = recipe.train_config(seed=3)
    assert isinstance(config, TrainConfig)
    assert config.lr == pytest.approx(recipe.base_lr * recipe.batch_size / REFERENCE_BATCH)
    assert (config.epochs, config.batch_size, config.optimizer, config.seed) == (
        recipe.epochs, recipe.batch_size, recipe.optimizer, 3)
    for key in ("temperature", "teacher_temp", "student_temp"):
        assert 0 < recipe.method_kwargs.get(key, 0.1) <= 1
    assert 0.9 <= recipe.method_kwargs.get("momentum", 0.99) < 1  # a teacher that moves, but slowly
    assert method in recipe.describe() and f"{recipe.lr():.3g}" in recipe.describe()


@pytest.mark.parametrize("method,profile", recipe_names())
def test_recipe_builds_its_method(method, profile):
    recipe = get_recipe(method, profile)
    torch.manual_seed(0)
    model = recipe.build_method(recipe.build_backbone())
    assert type(model) is METHODS[method] and type(model.views) is type(recipe.build_views())
    for key, value in recipe.method_kwargs.items():
        assert getattr(model, key, value) == value  # the options reached the method (where it keeps them)


@pytest.mark.parametrize("method", list(METHODS))
def test_smoke_recipe_trains_a_step(method):
    recipe = get_recipe(method, "smoke")
    torch.manual_seed(0)
    model = recipe.build_method(recipe.build_backbone())
    images = torch.randint(0, 256, (8, 3, recipe.image_size, recipe.image_size), dtype=torch.uint8)
    loss = model.training_step(images, torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_overrides_replace_recipe_values():
    recipe = get_recipe("simclr", "demo")
    config = recipe.train_config(epochs=2, batch_size=32)
    assert config.epochs == 2 and config.batch_size == 32
    assert config.lr == pytest.approx(recipe.base_lr * 32 / REFERENCE_BATCH)  # the rate follows the batch
    assert recipe.train_config(lr=0.5).lr == 0.5


def test_default_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "smoke")
    assert get_recipe("byol").profile == "smoke"


def test_unknown_names_are_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="simclr"):
        get_recipe("swav", "demo")
    with pytest.raises(ValueError, match="smoke"):
        get_recipe("simclr", "turbo")


def test_gray_views_jitter_only_brightness_and_contrast():
    for views in (SimCLRViews(32, color=False), BYOLViews(32, color=False), DINOViews(32, n_local=1, color=False)):
        for view in views.views:
            assert view.jitter[2:] == (0.0, 0.0) and view.jitter[:2] != (0.0, 0.0) and view.gray_p == 0.0
    color = SimCLRViews(32)  # the defaults are unchanged: SimCLR's CIFAR jitter, grayscale 0.2
    assert color.views[0].jitter == (0.4, 0.4, 0.4, 0.1) and color.views[0].gray_p == 0.2
    assert DINOViews(32, global_scale=(0.3, 1.0), n_local=1).views[0].scale == (0.3, 1.0)


def test_dataset_override(monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATASET", "fashion_mnist")
    assert get_profile("full").dataset == "fashion_mnist"
    monkeypatch.setenv("COURSEKIT_DATASET", "imagenet")
    with pytest.raises(ValueError, match="COURSEKIT_DATASET.*cifar10"):
        get_profile("full")
    monkeypatch.delenv("COURSEKIT_DATASET")
    assert get_profile("full").dataset == "cifar10"


def test_report_has_the_documented_keys():
    recipe = get_recipe("mae", "demo")
    scores = {"knn": {"random_init": 0.5, "pretrained": 0.4}, "linear": {"random_init": 0.6, "pretrained": 0.7}}
    report = build_report(recipe, "fashion_mnist", 1, 100, 12.34, scores, cpu_seconds=10.0)
    assert report["protocol"] == "linear" and report["linear"] == scores["linear"] and report["knn"] == scores["knn"]
    assert (report["method"], report["profile"], report["dataset"], report["seed"], report["steps"]) == (
        "mae", "demo", "fashion_mnist", 1, 100)
    assert report["seconds"] == 12.3 and report["cpu_seconds"] == 10.0 and report["recipe"]["lr"] == recipe.lr()
    with pytest.raises(ValueError, match="linear"):
        build_report(recipe, "fashion_mnist", 1, 100, 1.0, {"knn": scores["knn"]})


def test_protocol_scores_on_shapes():
    bank = load_images("shapes", "train", n=64)
    test = load_images("shapes", "test", n=32)
    torch.manual_seed(0)
    backbone = get_recipe("mae", "smoke").build_backbone()
    scores = protocol_scores(backbone, "linear", bank, test)
    assert set(scores) == {"knn", "linear"} and all(0 <= value <= 1 for value in scores.values())
    assert scores == protocol_scores(backbone, "linear", bank, test)  # deterministic


def test_an_explicit_zero_is_refused_not_replaced_by_the_recipe():
    recipe = get_recipe("simclr", "demo")
    for override in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}):
        with pytest.raises(ValueError):
            recipe.train_config(**override)


def test_load_or_pretrain_trains_once_then_loads_and_merges_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path))
    images = load_images("shapes", "train", n=64, image_size=32, seed=0).images
    model, history, status = load_or_pretrain("byol", images, tmp_path / "byol", profile_name="smoke",
                                              device="cpu", progress=False)
    assert status == "trained" and len(history.loss) == 64 // get_recipe("byol", "smoke").batch_size
    again, _, status = load_or_pretrain("byol", images, tmp_path / "byol", profile_name="smoke", device="cpu",
                                        progress=False)
    assert status == "loaded"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    # a change names only what differs: the recipe's other options stay
    changed, history, _ = load_or_pretrain("byol", images, tmp_path / "byol-fast-target", profile_name="smoke",
                                           device="cpu", progress=False, epochs=2, method_kwargs={"momentum": 0.9})
    assert changed.hparams()["momentum"] == 0.9 and len(history.loss) == 2 * 64 // 64
