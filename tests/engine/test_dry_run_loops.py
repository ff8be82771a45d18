"""The loops under the dry run (coursekit/dry_run.py): capped to a few steps, and a capped run's
checkpoint is never a real run's finished run. Without the variable nothing is capped."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from coursekit import dry_run
from coursekit.engine import TrainConfig, finished_run, fit, load_or_train
from coursekit.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from coursekit.engine.supervised import epoch_means, train_supervised
from tests.conftest import random_images, tiny_method

SIZE = 16
CONFIG = TrainConfig(epochs=3, batch_size=4, lr=0.01)  # 16 images: 4 steps per epoch, 12 steps
REAL_STEPS = 12


def train(tmp_path) -> tuple:
    method = tiny_method("simclr", SIZE)
    history = fit(method, random_images(16, SIZE), CONFIG, tmp_path, progress=False)
    return history, load_checkpoint(tmp_path / CHECKPOINT_NAME)


def test_fit_stops_after_the_cap_in_a_dry_run(monkeypatch, tmp_path):
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    history, state = train(tmp_path)
    assert history.step == list(range(1, dry_run.MAX_STEPS + 1))
    assert state["step"] == state["total_steps"] == dry_run.MAX_STEPS
    assert state["settings"]["dry_run"] == {"max_steps": dry_run.MAX_STEPS, "max_images": dry_run.MAX_IMAGES}
    assert finished_run(tmp_path)  # for another dry run


def test_fit_is_not_capped_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(dry_run.DRY_RUN_ENV, raising=False)
    history, state = train(tmp_path)
    assert len(history.step) == REAL_STEPS and state["total_steps"] == REAL_STEPS
    assert "dry_run" not in state["settings"]


def test_a_real_run_never_takes_a_dry_run_checkpoint_for_a_finished_run(monkeypatch, tmp_path):
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    train(tmp_path)
    monkeypatch.delenv(dry_run.DRY_RUN_ENV)
    assert not finished_run(tmp_path)
    with pytest.raises(CheckpointError, match="dry_run: checkpoint has"):
        load_or_train(tiny_method("simclr", SIZE), random_images(16, SIZE), CONFIG, tmp_path, progress=False)
    # and a dry run does not take a real run's checkpoint for its own
    real = tmp_path / "real"
    train(real)
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    assert not finished_run(real)


def supervised_steps(epochs: int) -> list[float]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    features, labels = torch.randn(10, 4), torch.arange(10) % 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = lambda step, index: nn.functional.cross_entropy(model(features[index]), labels[index])  # noqa: E731
    return train_supervised(model, 10, loss, optimizer, epochs=epochs, batch_size=4, seed=0, device="cpu",
                            cosine=True, progress=False)


def test_train_supervised_is_capped_only_in_a_dry_run(monkeypatch):
    monkeypatch.delenv(dry_run.DRY_RUN_ENV, raising=False)
    real = supervised_steps(epochs=5)
    assert len(real) == 5 * 3  # 10 items in batches of 4: 3 steps per epoch
    assert len(epoch_means(real, 5)) == 5
    monkeypatch.setenv(dry_run.DRY_RUN_ENV, "1")
    capped = supervised_steps(epochs=5)
    assert len(capped) == dry_run.MAX_STEPS
    assert epoch_means(capped, 5) == capped  # fewer steps than epochs: one step per epoch
