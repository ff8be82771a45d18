"""The training loop: one loop for every self-supervised method.

A method (``coursekit.methods``) knows its idea: ``training_step(images, generator) -> loss``
makes its views and computes its loss, ``on_after_step(progress)`` updates its teacher. This
module does everything else, the same way for every method::

    for step in range(total_steps):
        images = this epoch's permutation, this step's batch          (data on the device)
        lr = cosine_schedule(step, ...)                                (linear warmup, cosine decay)
        with autocast: loss = method.training_step(images, generator)  (bf16 / fp16 on CUDA)
        loss.backward(); clip; optimizer.step()
        method.on_after_step(progress)                                 (EMA teachers, centers)
        every checkpoint_every steps: save everything, atomically

Resume is exact: the order of the images in an epoch comes from a generator seeded by
``(seed, epoch)``, the augmentations of a step from one seeded by ``(seed, step, rank)``, and a
checkpoint holds the method (teachers, queues, centers included), the optimizer, the gradient
scaler, the step, the history and the RNG states. A run killed at any step and resumed ends with
the very same weights as an uninterrupted one.

Under ``torchrun`` (a process group initialized, see ``coursekit.engine.distributed``) each process
takes its share of every epoch's permutation (``DistributedSampler`` semantics: rank r takes
positions r, r + W, r + 2W, ...), the method is wrapped in ``DistributedDataParallel``
(BatchNorm synchronized across GPUs), and only rank 0 writes checkpoints and shows progress.
``config.batch_size`` is the batch of one process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from coursekit.engine import distributed
from coursekit.engine.checkpoint import check_settings, load_checkpoint, save_checkpoint
from coursekit.engine.device import PRECISIONS, autocast, make_grad_scaler, module_device, resolve_precision
from coursekit.engine.schedules import cosine_schedule
from coursekit.engine.seeding import derived_seed

CHECKPOINT_NAME = "checkpoint.pt"
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    """How to train (not what): every field but the last three changes the result.

    Attributes:
        epochs: passes over the images.
        batch_size: images per step and per process (the global batch is batch_size * processes).
        lr: peak learning rate, reached after the warmup.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD); never on biases and norm weights.
        optimizer: "adamw" or "sgd" (with ``momentum``).
        momentum: SGD momentum.
        warmup_epochs: linear warmup of the learning rate from 0 (may be fractional).
        min_lr: learning rate at the end of the cosine decay.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        precision: "auto" (bf16 on CUDA where supported, else fp16 with a gradient scaler; fp32
            on the CPU), "bf16", "fp16" or "fp32".
        channels_last: NHWC memory format (faster convolutions on tensor-core GPUs).
        seed: seed of the data order and of the augmentations.
        compile: ``torch.compile`` the training step (does not change the result).
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        log_every: update the progress bar and the throughput this often (steps).
    """

    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    grad_clip: float | None = None
    precision: str = "auto"
    channels_last: bool = False
    seed: int = 0
    compile: bool = False
    checkpoint_every: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int; got {getattr(self, name)!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig.checkpoint_every must be >= 0 (0: only at the end); got {self.checkpoint_every}")
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig needs lr > 0 and min_lr, weight_decay, warmup_epochs >= 0; got lr={self.lr}, "
                             f"min_lr={self.min_lr}, weight_decay={self.weight_decay}, warmup_epochs={self.warmup_epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None; got {self.grad_clip}")

    def settings(self) -> dict:
        """The fields that change the result (all but compile, checkpoint_every, log_every)."""
        values = dataclasses.asdict(self)
        for name in ("compile", "checkpoint_every", "log_every"):
            values.pop(name)
        return values


@dataclass
class History:
    """What happened during training, for the plots.

    Per optimizer step: ``step`` (1-based count of steps done), ``loss`` (mean over processes),
    ``lr``. Per log window: ``throughput_step`` and ``images_per_sec`` (all processes together).
    Per epoch: ``epoch_loss`` (mean of the epoch's step losses).
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    throughput_step: list[int] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> "History":
        return cls(**{name: list(value) for name, value in values.items()})


# ----------------------------------------------------------------------------------------------
# The optimizer


def build_optimizer(method: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters; matrices and kernels decay, biases and norm
    weights (1-D parameters) do not."""
    trainable = [p for p in method.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def epoch_indices(num_images: int, seed: int, epoch: int, rank: int, world: int, steps: int,
                  batch_size: int) -> Tensor:
    """This process's image indices for an epoch, long [steps * batch_size]: a permutation seeded
    by (seed, epoch), the same on every process, of which rank r takes positions r, r + W, ..."""
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(derived_seed(seed, "epoch", epoch)))
    return order[rank::world][:steps * batch_size]


# ----------------------------------------------------------------------------------------------
# Settings a checkpoint must match


def data_fingerprint(images: Tensor) -> dict:
    """Number and shape of the images, and a hash of 16 of them spread over the set."""
    sample = images[::max(1, len(images) // 16)][:16].cpu().contiguous()
    return {"num_images": len(images), "shape": list(images.shape[1:]),
            "sample_sha256": hashlib.sha256(sample.numpy().tobytes()).hexdigest()[:16]}


def architecture_fingerprint(method: nn.Module) -> str:
    """A hash of the names and shapes of everything in the method's state_dict."""
    layout = ";".join(f"{name}:{list(value.shape)}" for name, value in method.state_dict().items())
    return hashlib.sha256(layout.encode()).hexdigest()[:16]


def run_settings(method: nn.Module, images: Tensor, config: TrainConfig, precision: str,
                 settings: dict | None) -> dict:
    """Everything a checkpoint must agree on to be reused: method, architecture, training
    settings (precision resolved), data, number of processes, and the caller's own ``settings``
    (e.g. backbone name and width, method options)."""
    backbone = getattr(method, "backbone", None)
    return {
        "method": type(method).__name__,
        "backbone": type(backbone).__name__ if backbone is not None else None,
        "architecture": architecture_fingerprint(method),
        "config": {**config.settings(), "precision": precision},
        "data": data_fingerprint(images),
        "world_size": distributed.world_size(),
        "extra": dict(settings or {}),
    }


def checkpoint_path(checkpoint_dir: str | Path | None) -> Path | None:
    return None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME


# ----------------------------------------------------------------------------------------------
# The model as DDP and torch.compile see it


class TrainingStep(nn.Module):
    """Makes ``method.training_step`` the ``forward`` that DDP and ``torch.compile`` hook into."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.method.training_step(images, generator)


def prepare_method(method: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """Move the method to the device (channels-last if asked); under DDP on CUDA, BatchNorm becomes
    SyncBatchNorm (in place: the same parameters, the same state_dict keys)."""
    method.to(device)
    if config.channels_last:
        method.to(memory_format=torch.channels_last)
    if distributed.world_size() > 1 and device.type == "cuda":
        for name, child in list(method.named_children()):
            setattr(method, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return method


def wrap_for_training(method: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """TrainingStep(method), in DistributedDataParallel when a process group runs, compiled if asked."""
    model: nn.Module = TrainingStep(method)
    if distributed.world_size() > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)
    return model


# ----------------------------------------------------------------------------------------------
# Checkpoints


def rng_states(device: torch.device) -> dict:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def training_state(method, optimizer, scaler, history, step, total_steps, settings, device) -> dict:
    """Everything needed to continue (or reuse) a run after ``step`` of ``total_steps`` steps."""
    return {
        "settings": settings, "step": step, "total_steps": total_steps, "finished": step == total_steps,
        "method": method.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "history": history.to_dict(), "rng": rng_states(device),
    }


def restore_training_state(path: Path, method, optimizer, scaler, settings: dict,
                           device: torch.device) -> tuple[int, History]:
    """Load the checkpoint at ``path`` into method, optimizer and scaler -> (step, history).
    Refuses (CheckpointError) a damaged checkpoint or one made with other settings."""
    state = load_checkpoint(path, map_location=device)
    check_settings(path, state["settings"], settings)
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"], device)
    return state["step"], History.from_dict(state["history"])


# ----------------------------------------------------------------------------------------------
# The loop


def fit(method: nn.Module, images: Tensor, config: TrainConfig, checkpoint_dir: str | Path | None = None,
        resume: bool = True, progress: bool = True, device: torch.device | str | None = None,
        settings: dict | None = None, on_step: Callable[[int], None] | None = None) -> History:
    """Train ``method`` on ``images`` and return the History; the method is trained in place.

    Args:
        method: a coursekit method (``training_step``, ``on_after_step``; see CONTRIBUTING.md).
        images: uint8 [N, C, H, W], on any device; moved once to ``device``.
        config: the TrainConfig.
        checkpoint_dir: where ``checkpoint.pt`` is saved every ``config.checkpoint_every`` steps and
            at the end (rank 0 only). None: no checkpoints.
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (a finished one is
            loaded without training). False: start over (the old checkpoint is replaced only when
            the first new one is safely written).
        progress: show a tqdm bar with the loss and images/s (rank 0 only).
        device: where to train; default: where the method's parameters are.
        settings: extra settings a checkpoint must match (backbone name, width, method options...).
        on_step: called with the number of steps done after every step (and after its checkpoint).

    Raises:
        ValueError: images of the wrong dtype or shape, or fewer images than one batch per process.
        CheckpointError: the checkpoint to resume is damaged or was made with other settings.
    """
    return _fit(method, images, config, checkpoint_dir, resume, progress, device, settings, on_step)[0]


def _check_uint8_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor [N, C, H, W]; got {got}")


def _fit(method, images, config, checkpoint_dir, resume, progress, device, settings, on_step) -> tuple[History, str]:
    _check_uint8_images(images)
    if device is None:
        device = module_device(method)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = distributed.rank(), distributed.world_size()
    steps_per_epoch = len(images) // world // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {len(images) // world} images "
                         f"per process ({len(images)} images, {world} processes): lower batch_size")
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    precision = resolve_precision(config.precision, device)
    run = run_settings(method, images, config, precision, settings)

    method = prepare_method(method, config, device)
    optimizer = build_optimizer(method, config)
    scaler = make_grad_scaler(precision, device)
    step, history, status = 0, History(), "trained"
    path = checkpoint_path(checkpoint_dir)
    if path is not None and resume and path.exists():
        step, history = restore_training_state(path, method, optimizer, scaler, run, device)
        status = "loaded" if step == total_steps else "resumed"
    model = wrap_for_training(method, config, device)
    images = images.to(device)

    bar = tqdm(total=total_steps, initial=step, desc=type(method).__name__, disable=not progress or rank != 0)
    pending: list[Tensor] = []  # losses not yet copied to the CPU (one sync per log window, not per step)
    window_start, window_step = time.perf_counter(), step
    indices_epoch = None
    method.train()
    while step < total_steps:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != indices_epoch:
            indices = epoch_indices(len(images), config.seed, epoch, rank, world, steps_per_epoch,
                                    config.batch_size).to(device)
            indices_epoch = epoch
        batch = images[indices[i * config.batch_size:(i + 1) * config.batch_size]]  # uint8 [B, C, H, W]
        generator = torch.Generator(device).manual_seed(derived_seed(config.seed, "step", step, rank))
        lr = cosine_schedule(step, total_steps, warmup_steps, config.lr, config.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr

        with autocast(precision, device):
            loss = model(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(method.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        step += 1
        method.on_after_step(step / total_steps)

        pending.append(loss.detach().float())
        history.step.append(step)
        history.lr.append(lr)
        end_of_epoch = step % steps_per_epoch == 0
        checkpoint_due = step == total_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if step % config.log_every == 0 or end_of_epoch or checkpoint_due:
            losses = distributed.all_reduce_mean(torch.stack(pending)).tolist()  # one sync for the window
            history.loss.extend(losses)
            pending.clear()
            seconds = time.perf_counter() - window_start
            history.throughput_step.append(step)
            history.images_per_sec.append((step - window_step) * config.batch_size * world / max(seconds, 1e-9))
            window_start, window_step = time.perf_counter(), step
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{lr:.2e}", img_s=f"{history.images_per_sec[-1]:.0f}")
        if end_of_epoch:
            history.epoch_loss.append(sum(history.loss[-steps_per_epoch:]) / steps_per_epoch)
        if checkpoint_due and path is not None and rank == 0:
            save_checkpoint(path, training_state(method, optimizer, scaler, history, step, total_steps, run, device))
        bar.update()
        if on_step is not None:
            on_step(step)
    bar.close()
    if distributed.is_distributed():
        dist.barrier()  # rank 0's checkpoint is on disk before any process returns
    return history, status


def load_or_train(method: nn.Module, images: Tensor, config: TrainConfig, checkpoint_dir: str | Path,
                  progress: bool = True, device: torch.device | str | None = None,
                  settings: dict | None = None) -> tuple[History, str]:
    """For notebooks: reuse a finished checkpoint with matching settings ("loaded"), continue an
    unfinished one ("resumed"), or train from the start ("trained"); prints which and returns
    (History, status). Raises CheckpointError for a damaged checkpoint or one with other settings."""
    if checkpoint_dir is None:
        raise ValueError("load_or_train needs a checkpoint_dir (a folder; on Colab it can be on Google Drive)")
    history, status = _fit(method, images, config, checkpoint_dir, True, progress, device, settings, None)
    path = checkpoint_path(checkpoint_dir)
    messages = {
        "loaded": f"Loaded the finished run from {path} (delete it to train again).",
        "resumed": f"Resumed the unfinished run in {path} and finished it ({history.step[-1] if history.step else 0} steps).",
        "trained": f"Trained from the start; saved to {path}.",
    }
    if distributed.rank() == 0:
        print(messages[status])
    return history, status

