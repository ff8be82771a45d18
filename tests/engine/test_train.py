"""The training loop: exact resume after a kill, load-or-train, settings checks, schedules, bad input.

A toy method stands in for the real ones: a tiny conv backbone with BatchNorm and dropout (global
RNG), an EMA teacher and a buffer updated every step, views made from the step's generator.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coursekit.engine.checkpoint import CheckpointError
from coursekit.methods import Method
from coursekit.engine import (CHECKPOINT_NAME, History, TrainConfig, cosine_schedule, epoch_indices, fit,
                             load_or_train)
from tests.conftest import random_images, tiny_backbone


class ToyMethod(Method):
    """Student (backbone + head, dropout) regressing an EMA teacher's output on another noisy view."""

    def __init__(self, seed: int = 0, noise: float = 0.1):
        super().__init__()
        torch.manual_seed(seed)
        self.noise = noise
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.backbone.feature_dim = 4
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(4, 4))
        self.teacher = copy.deepcopy(nn.Sequential(self.backbone, self.head)).requires_grad_(False)
        self.register_buffer("running_loss", torch.zeros(()))

    def training_step(self, images, generator):
        x = images.float() / 255
        noise = torch.randn((2, *x.shape), generator=generator, device=generator.device).to(x.device)
        student = self.head(self.backbone(x + self.noise * noise[0]))
        with torch.no_grad():
            target = self.teacher(x + self.noise * noise[1])
        loss = F.mse_loss(F.normalize(student, dim=1), F.normalize(target, dim=1))
        self.running_loss.mul_(0.9).add_(0.1 * loss.detach())
        return loss

    def hparams(self):
        return {"noise": self.noise}  # the seed only sets the initial weights: a resumed run may differ in it

    def on_after_step(self, progress):
        m = 0.9 + 0.1 * progress
        with torch.no_grad():
            online = list(self.backbone.parameters()) + list(self.head.parameters())
            for p_target, p_online in zip(self.teacher.parameters(), online):
                p_target.mul_(m).add_(p_online, alpha=1 - m)


class Killed(Exception):
    pass


def kill_at(step_to_die):
    def on_step(step):
        if step == step_to_die:
            raise Killed
    return on_step


def toy_images(n=24, seed=0):
    return random_images(n, 8, seed)


def toy_config(**changes):
    values = dict(epochs=3, batch_size=8, lr=0.05, warmup_epochs=1, grad_clip=1.0, checkpoint_every=2, log_every=2)
    values.update(changes)
    return TrainConfig(**values)


def assert_same_state(a: nn.Module, b: nn.Module):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        assert torch.equal(state_a[name], state_b[name]), name


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resume_after_kill_ends_with_exactly_the_same_weights(tmp_path, optimizer):
    images, config = toy_images(), toy_config(optimizer=optimizer)  # 3 steps per epoch, 9 steps
    uninterrupted = ToyMethod()
    reference = fit(uninterrupted, images, config, progress=False)

    torch.manual_seed(123)  # the kill leaves the global RNG elsewhere: the checkpoint must restore it
    with pytest.raises(Killed):
        fit(ToyMethod(), images, config, tmp_path, progress=False, on_step=kill_at(5))  # last checkpoint: step 4
    restarted = ToyMethod(seed=7)  # a fresh "process": other initial weights, fresh optimizer
    history = fit(restarted, images, config, tmp_path, progress=False)

    assert_same_state(restarted, uninterrupted)
    assert history.loss == reference.loss and history.lr == reference.lr
    assert history.step == list(range(1, 10)) and len(history.epoch_loss) == 3


def test_different_seed_gives_different_weights():
    images = toy_images()
    a, b = ToyMethod(), ToyMethod()
    fit(a, images, toy_config(), progress=False)
    fit(b, images, toy_config(seed=1), progress=False)
    assert not torch.equal(a.head[1].weight, b.head[1].weight)


def test_load_or_train_statuses(tmp_path, capsys):
    images, config = toy_images(), toy_config()
    with pytest.raises(Killed):
        fit(ToyMethod(), images, config, tmp_path / "run", progress=False, on_step=kill_at(3))
    resumed = ToyMethod()
    history, status = load_or_train(resumed, images, config, tmp_path / "run", progress=False)
    assert status == "resumed" and "Resumed" in capsys.readouterr().out
    assert history.step[-1] == 9

    loaded = ToyMethod(seed=5)
    loaded_history, status = load_or_train(loaded, images, config, tmp_path / "run", progress=False)
    assert status == "loaded" and "Loaded" in capsys.readouterr().out
    assert_same_state(loaded, resumed)
    assert loaded_history.to_dict() == history.to_dict()

    _, status = load_or_train(ToyMethod(), images, config, tmp_path / "other", progress=False)
    assert status == "trained" and "Trained" in capsys.readouterr().out
    assert (tmp_path / "other" / CHECKPOINT_NAME).is_file()


def test_checkpoint_from_other_settings_is_refused_naming_the_differences(tmp_path):
    images = toy_images()
    fit(ToyMethod(), images, toy_config(), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"config\.lr: checkpoint has 0\.05, this run has 0\.1"):
        load_or_train(ToyMethod(), images, toy_config(lr=0.1), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"data\.sample_sha256"):
        load_or_train(ToyMethod(), toy_images(seed=1), toy_config(), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"extra\.width"):
        load_or_train(ToyMethod(), images, toy_config(), tmp_path, progress=False, settings={"width": 8})


def test_damaged_checkpoint_is_refused_and_kept(tmp_path):
    images, config = toy_images(), toy_config()
    fit(ToyMethod(), images, config, tmp_path, progress=False)
    path = tmp_path / CHECKPOINT_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_or_train(ToyMethod(), images, config, tmp_path, progress=False)
    assert len(path.read_bytes()) == len(data) // 2  # not overwritten by a new run

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="corrupt"):
        fit(ToyMethod(), images, config, tmp_path, progress=False)
    assert path.read_bytes() == bytes(flipped)


def test_resume_false_starts_over(tmp_path):
    images, config = toy_images(), toy_config()
    fit(ToyMethod(), images, config, tmp_path, progress=False)
    calls = []
    fit(ToyMethod(), images, config, tmp_path, resume=False, progress=False, on_step=calls.append)
    assert calls == list(range(1, 10))


def test_history_round_trip_and_lengths():
    history = fit(ToyMethod(), toy_images(), toy_config(log_every=4), progress=False)
    assert len(history.loss) == len(history.lr) == len(history.step) == 9
    assert history.throughput_step[-1] == 9 and all(v > 0 for v in history.images_per_sec)
    assert History.from_dict(history.to_dict()) == history


def test_cosine_schedule():
    values = [cosine_schedule(step, 10, 2, 1.0, 0.1) for step in range(11)]
    assert values[:2] == [0.5, 1.0]  # linear warmup
    assert values[2] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)  # final at step == total
    assert all(a > b for a, b in zip(values[2:], values[3:])) and values[-2] > 0.1  # every step still learns
    assert cosine_schedule(5, 10, 0, 0.0, 1.0) == pytest.approx(0.5)  # midpoint; rising works too


def test_epoch_indices_shard_like_a_distributed_sampler():
    shards = [epoch_indices(20, 0, 3, rank, 2, steps=2, batch_size=4) for rank in range(2)]
    assert all(len(shard) == 8 for shard in shards)
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    assert torch.equal(epoch_indices(20, 0, 3, 0, 1, 5, 4)[0::2][:8], shards[0])  # the same permutation
    assert not torch.equal(epoch_indices(20, 0, 4, 0, 1, 5, 4), epoch_indices(20, 0, 3, 0, 1, 5, 4))


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="uint8"):
        fit(ToyMethod(), toy_images().float(), toy_config(), progress=False)
    with pytest.raises(ValueError, match="batch_size 64 is larger"):
        fit(ToyMethod(), toy_images(), toy_config(batch_size=64), progress=False)
    with pytest.raises(TypeError, match="Linear lacks training_step, on_before_optimizer_step, on_after_step, hparams"):
        fit(nn.Linear(2, 2), toy_images(), toy_config(), progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


@pytest.mark.parametrize("name", ["moco", "dino", "mae"])
def test_real_methods_resume_exactly(tmp_path, name):
    """The library's methods (queues, centers, teachers, masking) resume exactly too."""
    from coursekit.methods import build_method

    def make(seed):
        torch.manual_seed(seed)
        backbone = tiny_backbone("vit_tiny", 16, depth=1, embed_dim=16) if name == "mae" else tiny_backbone("resnet18", width=2)
        extra = {"queue_size": 16} if name == "moco" else {"n_local": 2, "out_dim": 16} if name == "dino" else {}
        return build_method(name, backbone, image_size=16, **extra)

    images = random_images(8, 16)
    config = TrainConfig(epochs=2, batch_size=4, lr=0.01, checkpoint_every=2, log_every=1)  # 4 steps
    uninterrupted = make(0)
    fit(uninterrupted, images, config, progress=False)
    with pytest.raises(Killed):
        fit(make(0), images, config, tmp_path, progress=False, on_step=kill_at(3))  # resumes from step 2
    resumed = make(1)
    fit(resumed, images, config, tmp_path, progress=False)
    assert_same_state(resumed, uninterrupted)


# --- a Dataset streamed by a DataLoader --------------------------------------------------------


class ImagesDataset(torch.utils.data.Dataset):
    """The images of a uint8 tensor as a Dataset of [C, H, W] items (as an image folder gives them)."""

    def __init__(self, images, fingerprint=None):
        self.images, self._fingerprint = images, fingerprint

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index].clone()


class FingerprintedDataset(ImagesDataset):
    def fingerprint(self):
        return {"files": "toy", "version": self._fingerprint}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_trains_exactly_as_the_same_images_in_memory(num_workers):
    images, config = toy_images(26), toy_config(num_workers=num_workers)  # 26 // 8 = 3 steps per epoch
    in_memory = ToyMethod()  # seeds the global RNG (dropout) too
    reference = fit(in_memory, images, config, progress=False)
    streamed = ToyMethod()
    history = fit(streamed, ImagesDataset(images), config, progress=False)
    assert_same_state(streamed, in_memory)
    assert history.loss == reference.loss


def test_a_resumed_dataset_run_equals_an_uninterrupted_one(tmp_path):
    data, config = ImagesDataset(toy_images()), toy_config(checkpoint_every=1)  # 3 steps per epoch, 9 steps
    uninterrupted = ToyMethod()
    reference = fit(uninterrupted, data, config, progress=False)
    with pytest.raises(Killed):
        fit(ToyMethod(), data, config, tmp_path, progress=False, on_step=kill_at(5))  # mid-epoch 1 (after step 5)
    resumed = ToyMethod(seed=7)
    history = fit(resumed, data, config, tmp_path, progress=False)
    assert_same_state(resumed, uninterrupted)
    assert history.loss == reference.loss


def test_a_dataset_fingerprint_replaces_the_image_hash(tmp_path):
    images, config = toy_images(), toy_config()
    fit(ToyMethod(), FingerprintedDataset(images, fingerprint=1), config, tmp_path, progress=False)
    _, status = load_or_train(ToyMethod(), FingerprintedDataset(images, fingerprint=1), config, tmp_path, progress=False)
    assert status == "loaded"
    with pytest.raises(CheckpointError, match=r"data\.fingerprint\.version: checkpoint has 1, this run has 2"):
        load_or_train(ToyMethod(), FingerprintedDataset(images, fingerprint=2), config, tmp_path, progress=False)
    _, status = load_or_train(ToyMethod(), images, config, tmp_path / "plain", progress=False)
    _, status = load_or_train(ToyMethod(), ImagesDataset(images), config, tmp_path / "plain", progress=False)
    assert status == "loaded"  # without a fingerprint(), a Dataset and its tensor hash alike


def test_bad_dataset_items_are_explained():
    with pytest.raises(ValueError, match=r"dataset item 0 must be a uint8 tensor \[C, H, W\]; got torch.float32"):
        fit(ToyMethod(), ImagesDataset(toy_images().float()), toy_config(), progress=False)
    with pytest.raises(ValueError, match="data must be a uint8 tensor"):
        fit(ToyMethod(), [toy_images()[0]], toy_config(), progress=False)
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-1)
