"""The training loop: one loop for every self-supervised method.

A method (``coursekit.methods.Method``) knows its idea: ``training_step(images, generator) -> loss``
makes its views and computes its loss, ``on_before_optimizer_step(epoch)`` may edit gradients,
``on_after_step(progress)`` updates its teacher. This module does everything else, the same way
for every method::

    for step in range(total_steps):
        images = this step's batch (this epoch's permutation)          (uint8, on the device)
        with autocast: loss = method.training_step(images, generator)  (bf16 / fp16 on CUDA)
        OptimizerStep: lr schedule, backward, clip, hooks, optimizer step  (engine.step)
        every log_every steps: losses and collapse metrics to the host, one copy
        every checkpoint_every steps: save everything, atomically

In a dry run (``COURSEKIT_DRY_RUN=1``, ``coursekit.dry_run``) a run stops after
``dry_run.MAX_STEPS`` steps (the schedules see that shortened run) and its checkpoint records the
dry run in its settings, so that a real run refuses it instead of loading it as finished.

Resume is exact: the order of the images in an epoch comes from a generator seeded by
``(seed, epoch)``, the augmentations of a step from one seeded by ``(seed, step, rank)``, and a
checkpoint holds the method (teachers, queues, centers included), the optimizer, the gradient
scaler, the step, the history and the RNG states. A run killed at any step and resumed ends with
the very same weights as an uninterrupted one, whether the images are a tensor in memory or a
Dataset streamed by a DataLoader (``engine.batches``).

Under ``torchrun`` (a process group initialized, see ``coursekit.engine.distributed``) each process
takes its share of every epoch's permutation (``DistributedSampler`` semantics: rank r takes
positions r, r + W, r + 2W, ...), the method is wrapped in ``DistributedDataParallel``, and only
rank 0 writes checkpoints and shows progress. ``config.batch_size`` is the batch of one process,
so the global batch is ``batch_size * W``; ``config.lr`` is used as given, whatever W (scale it
yourself when you change W: linearly with the global batch for SGD, about with its square root
for AdamW). DDP settings, chosen deliberately:

- BatchNorm becomes SyncBatchNorm on CUDA only in the submodules that receive gradients (the
  online networks); the teachers and key encoders (no gradient) keep plain BatchNorm, which
  saves a collective per BatchNorm layer in their forward passes.
- ``broadcast_buffers=False``: the buffers that must agree across processes agree by
  construction (MoCo enqueues the keys of all processes, DINO all-reduces its center, the
  teachers follow identical students); re-broadcasting every buffer before every forward would
  only cost time. BatchNorm running statistics (used in eval only) may differ per process;
  checkpoints and evaluation use rank 0's.
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

from coursekit import dry_run
from coursekit.engine import distributed
from coursekit.engine.batches import Data, StepIndexBatches, check_data, data_fingerprint, step_batches
from coursekit.engine.checkpoint import checkpoint_path, restore_training_state, save_checkpoint, training_state
from coursekit.engine.collapse import collapse_signs, collapse_warning
from coursekit.engine.device import PRECISIONS, module_device, resolve_precision, use_channels_last
from coursekit.engine.optim import create_optimizer
from coursekit.engine.progress import progress_bar
from coursekit.engine.schedules import cosine_schedule
from coursekit.engine.seeding import step_generator
from coursekit.engine.step import OptimizerStep

CONFIG_OPTIMIZERS = ("adamw", "sgd")  # a pretraining's choice (create_optimizer also builds the probe's Adam)
NOT_IN_SETTINGS = ("compile", "checkpoint_every", "log_every", "num_workers")  # fields that do not change the result


@dataclass
class TrainConfig:
    """How to train (not what): every field but the last four changes the result.

    Attributes:
        epochs: passes over the images.
        batch_size: images per step and per process (the global batch is batch_size * processes).
        lr: peak learning rate, reached after the warmup (not scaled with the number of processes).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD); never on biases and norm weights.
        optimizer: "adamw" or "sgd" (with ``momentum``); fused implementations on CUDA.
        momentum: SGD momentum.
        warmup_epochs: linear warmup of the learning rate from 0 (may be fractional).
        min_lr: learning rate at the end of the cosine decay.
        grad_clip: clip the gradient norm to this value (None: no clipping).
        precision: "auto" (bf16 on CUDA GPUs with native bf16, else fp16 with a gradient scaler;
            fp32 on the CPU), "bf16", "fp16" or "fp32".
        channels_last: NHWC memory format; None: automatic (convolutional networks on CUDA).
        seed: seed of the data order and of the augmentations.
        compile: ``torch.compile`` the training step (does not change the result).
        checkpoint_every: save a checkpoint every this many steps (0: only at the end).
        log_every: copy losses and metrics to the host and update the progress bar this often (steps).
        num_workers: DataLoader worker processes when the data is a Dataset (0: read in this process).
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
    channels_last: bool | None = None
    seed: int = 0
    compile: bool = False
    checkpoint_every: int = 0
    log_every: int = 10
    num_workers: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int; got {getattr(self, name)!r}")
        if self.checkpoint_every < 0:
            raise ValueError(f"TrainConfig.checkpoint_every must be >= 0 (0: only at the end); got {self.checkpoint_every}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be an int >= 0; got {self.num_workers!r}")
        if self.lr <= 0 or self.min_lr < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError(f"TrainConfig needs lr > 0 and min_lr, weight_decay, warmup_epochs >= 0; got lr={self.lr}, "
                             f"min_lr={self.min_lr}, weight_decay={self.weight_decay}, warmup_epochs={self.warmup_epochs}")
        if self.optimizer not in CONFIG_OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {CONFIG_OPTIMIZERS}; got {self.optimizer!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}; got {self.precision!r}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"TrainConfig.grad_clip must be positive or None; got {self.grad_clip}")

    def settings(self) -> dict:
        """The fields that change the result (all but compile, checkpoint_every, log_every, num_workers)."""
        values = dataclasses.asdict(self)
        for name in NOT_IN_SETTINGS:
            values.pop(name)
        return values


@dataclass
class History:
    """What happened during training, for the plots.

    Per optimizer step: ``step`` (1-based count of steps done), ``loss`` (mean over processes),
    ``lr``. Per log window: ``throughput_step`` and ``images_per_sec`` (all processes together),
    and ``metrics``: name -> window means (over steps and processes) of the method's step
    statistics (``embedding_std`` for every method: the spread of the normalized embedding,
    about 1/sqrt(D) when healthy and 0 when collapsed; DINO adds ``teacher_entropy`` and
    ``teacher_student_kl``), logged at the steps in ``metrics_step``.
    Per epoch: ``epoch_loss`` (mean of the epoch's step losses).
    At the end: ``collapse``, the signs of collapse in the last logged window
    (``coursekit.engine.collapse``; empty for a healthy run).
    """

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    throughput_step: list[int] = field(default_factory=list)
    images_per_sec: list[float] = field(default_factory=list)
    epoch_loss: list[float] = field(default_factory=list)
    metrics_step: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    collapse: list[str] = field(default_factory=list)

    @property
    def collapsed(self) -> bool:
        """Whether the run ended collapsed (see ``collapse``)."""
        return bool(self.collapse)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "History":
        return cls(**{name: ({key: list(v) for key, v in value.items()} if isinstance(value, dict) else list(value))
                      for name, value in values.items()})


# ----------------------------------------------------------------------------------------------
# The optimizer


def build_optimizer(method: nn.Module, config: TrainConfig, device: torch.device | str | None = None) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters (fused on CUDA); matrices and kernels decay,
    biases and norm weights (1-D parameters) do not. A method's ``lr_scales()`` (see
    ``coursekit.methods.Method``) gives some submodules a multiple of ``config.lr``.
    ``device``: where the parameters are (default: where the method's first parameter is)."""
    device = module_device(method) if device is None else device
    scales = method.lr_scales() if hasattr(method, "lr_scales") else {}
    scale_of = {}  # id(parameter) -> its learning-rate multiplier
    for name, scale in scales.items():
        if not isinstance(getattr(method, name, None), nn.Module) or not scale > 0:
            raise ValueError(f"lr_scales() of {type(method).__name__}: {name!r} -> {scale!r} must name a submodule "
                             "and a multiplier > 0")
        scale_of.update({id(p): scale for p in getattr(method, name).parameters()})
    trainable = [p for p in method.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if scale_of.get(id(p), 1.0) == scale], "lr": config.lr * scale}
              for scale in sorted({1.0, *scale_of.values()})]
    return create_optimizer(groups, config.optimizer, config.lr, config.weight_decay, momentum=config.momentum,
                            decay_1d=False, device=device)


def lr_factor(config: TrainConfig, total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """step -> factor of config.lr: linear warmup, then a half cosine down to min_lr."""
    return lambda step: cosine_schedule(step, total_steps, warmup_steps, 1.0, config.min_lr / config.lr)


# ----------------------------------------------------------------------------------------------
# Settings a checkpoint must match


def architecture_fingerprint(method: nn.Module) -> str:
    """A hash of the names and shapes of everything in the method's state_dict."""
    layout = ";".join(f"{name}:{list(value.shape)}" for name, value in method.state_dict().items())
    return hashlib.sha256(layout.encode()).hexdigest()[:16]


def run_settings(method: nn.Module, data: Data, config: TrainConfig, precision: str, channels_last: bool,
                 settings: dict | None) -> dict:
    """Everything a checkpoint must agree on to be reused: method and every one of its options
    (``hparams()``: temperature, momentum, views...), architecture, training settings (precision
    and memory format resolved), data, number of processes, and the caller's own ``settings``
    (e.g. dataset, backbone name and width); in a dry run, ``dry_run.checkpoint_marker()``."""
    backbone = getattr(method, "backbone", None)
    return {
        "method": type(method).__name__,
        "hparams": method.hparams(),
        "backbone": type(backbone).__name__ if backbone is not None else None,
        "architecture": architecture_fingerprint(method),
        "config": {**config.settings(), "precision": precision, "channels_last": channels_last},
        "data": data_fingerprint(data),
        "world_size": distributed.world_size(),
        "extra": dict(settings or {}),
        **dry_run.checkpoint_marker(),  # a dry run's capped checkpoint: refused by a real run
    }


# ----------------------------------------------------------------------------------------------
# The model as DDP and torch.compile see it


class TrainingStep(nn.Module):
    """Makes ``method.training_step`` the ``forward`` that DDP and ``torch.compile`` hook into."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, images: Tensor, generator: torch.Generator) -> Tensor:
        return self.method.training_step(images, generator)


def prepare_method(method: nn.Module, channels_last: bool, device: torch.device) -> nn.Module:
    """Move the method to the device (channels-last if asked); under DDP on CUDA, BatchNorm becomes
    SyncBatchNorm in the submodules that receive gradients (in place: the same parameters, the
    same state_dict keys; teachers and key encoders keep plain BatchNorm)."""
    method.to(device)
    if channels_last:
        method.to(memory_format=torch.channels_last)
    if distributed.world_size() > 1 and device.type == "cuda":
        sync_trained_batchnorm(method)
    return method


def sync_trained_batchnorm(method: nn.Module) -> None:
    """In place: BatchNorm -> SyncBatchNorm in the children of ``method`` that have trainable
    parameters; frozen children (EMA teachers, key encoders) keep their BatchNorm."""
    for name, child in list(method.named_children()):
        if any(p.requires_grad for p in child.parameters()):
            setattr(method, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def wrap_for_training(method: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """TrainingStep(method), in DistributedDataParallel when a process group runs, compiled if asked."""
    model: nn.Module = TrainingStep(method)
    if distributed.world_size() > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    broadcast_buffers=False)
    if config.compile:
        model = torch.compile(model)
    return model


# ----------------------------------------------------------------------------------------------
# The loop


def fit(method: nn.Module, data: Data, config: TrainConfig, checkpoint_dir: str | Path | None = None,
        resume: bool = True, progress: bool = True, device: torch.device | str | None = None,
        settings: dict | None = None, on_step: Callable[[int], None] | None = None) -> History:
    """Train ``method`` on ``data`` and return the History; the method is trained in place.

    Args:
        method: a coursekit method (``coursekit.methods.Method``; see CONTRIBUTING.md).
        data: uint8 images [N, C, H, W] on any device (moved once to ``device``), or a
            ``torch.utils.data.Dataset`` of uint8 [C, H, W] items of one size, read by a DataLoader
            with ``config.num_workers`` workers (optionally with ``fingerprint() -> dict``, which
            checkpoints record instead of a hash of sample images). Both train identically.
        config: the TrainConfig.
        checkpoint_dir: where ``checkpoint.pt`` is saved every ``config.checkpoint_every`` steps and
            at the end (rank 0 only). None: no checkpoints.
        resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (a finished one is
            loaded without training). False: start over (the old checkpoint is replaced only when
            the first new one is safely written).
        progress: show a tqdm bar with the loss and images/s (rank 0 only).
        device: where to train; default: where the method's parameters are.
        settings: extra settings a checkpoint must match (dataset, backbone name and width...).
        on_step: called with the number of steps done after every step (and after its checkpoint).

    Raises:
        ValueError: data of the wrong type, dtype or shape, or fewer images than one batch per process.
        CheckpointError: the checkpoint to resume is damaged or was made with other settings
            (the message names every differing setting, e.g. ``hparams.temperature``).
    """
    return _fit(method, data, config, checkpoint_dir, resume, progress, device, settings, on_step)[0]


PROTOCOL = ("training_step", "on_before_optimizer_step", "on_after_step", "hparams")


def _fit(method, data, config, checkpoint_dir, resume, progress, device, settings, on_step) -> tuple[History, str]:
    missing = [name for name in PROTOCOL if not callable(getattr(method, name, None))]
    if missing:
        raise TypeError(f"{type(method).__name__} lacks {', '.join(missing)}: subclass coursekit.methods.Method")
    num_images, _ = check_data(data)
    device = torch.device(device) if device is not None else module_device(method)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rank, world = distributed.rank(), distributed.world_size()
    steps_per_epoch = num_images // world // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the {num_images // world} images "
                         f"per process ({num_images} images, {world} processes): lower batch_size")
    total_steps = dry_run.cap_steps(config.epochs * steps_per_epoch)  # a dry run stops after a few steps
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    precision = resolve_precision(config.precision, device)
    channels_last = use_channels_last(method, device) if config.channels_last is None else config.channels_last
    run = run_settings(method, data, config, precision, channels_last, settings)

    method = prepare_method(method, channels_last, device)
    optimizer_step = OptimizerStep(build_optimizer(method, config, device), precision, device, config.grad_clip,
                                   lr_factor(config, total_steps, warmup_steps), hooks=method,
                                   total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    step, history, status = 0, History(), "trained"
    path = checkpoint_path(checkpoint_dir)
    if path is not None and resume and path.exists():
        step, saved_history = restore_training_state(path, method, optimizer_step, run, device)
        history = History.from_dict(saved_history)
        status = "loaded" if step == total_steps else "resumed"
    model = wrap_for_training(method, config, device)
    sampler = StepIndexBatches(num_images, config.seed, config.batch_size, rank, world, steps_per_epoch,
                               step, total_steps)
    batches = step_batches(data, sampler, device, config.num_workers)

    bar = progress_bar(total_steps, type(method).__name__, progress, initial=step)
    window = LogWindow(step)  # losses and metrics stay on the device until the window ends
    method.train()
    for batch in batches:
        generator = step_generator(config.seed, step, device, rank)
        with optimizer_step.autocast():
            loss = model(batch, generator)
        factor = optimizer_step(loss, step)
        step += 1
        window.add(loss, getattr(method, "step_metrics", {}))
        history.step.append(step)
        history.lr.append(config.lr * factor)
        end_of_epoch = step % steps_per_epoch == 0
        checkpoint_due = step == total_steps or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if step % config.log_every == 0 or end_of_epoch or checkpoint_due:
            window.close(history, step, config.batch_size * world)
            window = LogWindow(step)
            bar.set_postfix(loss=f"{history.loss[-1]:.4f}", lr=f"{history.lr[-1]:.2e}",
                            img_s=f"{history.images_per_sec[-1]:.0f}")
        if end_of_epoch:
            history.epoch_loss.append(sum(history.loss[-steps_per_epoch:]) / steps_per_epoch)
        if step == total_steps:  # the verdict on how the run ends, saved with its last checkpoint
            history.collapse = final_collapse_signs(history, method)
        if checkpoint_due and path is not None and rank == 0:
            save_checkpoint(path, training_state(method, optimizer_step, history, step, total_steps, run, device))
        bar.update()
        if on_step is not None:
            on_step(step)
    bar.close()
    if history.collapse and rank == 0:
        print(collapse_warning(history.collapse))
    if distributed.is_distributed():
        dist.barrier()  # rank 0's checkpoint is on disk before any process returns
    return history, status


def final_collapse_signs(history: History, method: nn.Module) -> list[str]:
    """The signs of collapse in the run's last logged window (``coursekit.engine.collapse``)."""
    last = {name: values[-1] for name, values in history.metrics.items() if values}
    return collapse_signs(last, getattr(method, "embedding_dim", None), getattr(method, "teacher_outputs", None))


class LogWindow:
    """The steps since the last log: their losses and the method's metrics as device tensors,
    copied to the host in one transfer (one sync per window, none per step)."""

    def __init__(self, step: int):
        self.start_step, self.start_time = step, time.perf_counter()
        self.losses: list[Tensor] = []
        self.metrics: dict[str, list[Tensor]] = {}

    def add(self, loss: Tensor, metrics: dict[str, Tensor]) -> None:
        self.losses.append(loss.detach().float())
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append(value)

    def close(self, history: History, step: int, global_batch: int) -> None:
        """Append the window's losses (one per step), metric means and throughput to the history."""
        names = sorted(self.metrics)
        means = [torch.stack(self.metrics[name]).mean() for name in names]
        values = distributed.all_reduce_mean(torch.stack(self.losses + means)).tolist()  # the one sync
        history.loss.extend(values[:len(self.losses)])
        if names:
            history.metrics_step.append(step)
            for name, value in zip(names, values[len(self.losses):]):
                history.metrics.setdefault(name, []).append(value)
        seconds = time.perf_counter() - self.start_time
        history.throughput_step.append(step)
        history.images_per_sec.append((step - self.start_step) * global_batch / max(seconds, 1e-9))


def load_or_train(method: nn.Module, data: Data, config: TrainConfig, checkpoint_dir: str | Path,
                  progress: bool = True, device: torch.device | str | None = None,
                  settings: dict | None = None) -> tuple[History, str]:
    """For notebooks: reuse a finished checkpoint with matching settings ("loaded"), continue an
    unfinished one ("resumed"), or train from the start ("trained"); prints which and returns
    (History, status). ``data`` as in ``fit``. Raises CheckpointError for a damaged checkpoint or
    one with other settings (naming them)."""
    if checkpoint_dir is None:
        raise ValueError("load_or_train needs a checkpoint_dir (a folder; on Colab it can be on Google Drive)")
    start = time.perf_counter()
    history, status = _fit(method, data, config, checkpoint_dir, True, progress, device, settings, None)
    seconds = time.perf_counter() - start  # wall clock: what the learner waited
    path = checkpoint_path(checkpoint_dir)
    messages = {
        "loaded": f"Loaded the finished run from {path} (delete it to train again).",
        "resumed": f"Resumed the unfinished run in {path} and finished it ({history.step[-1] if history.step else 0} "
                   f"steps) in {seconds:.0f} s.",
        "trained": f"Trained from the start in {seconds:.0f} s; saved to {path}.",
    }
    if distributed.rank() == 0:
        print(messages[status])
    return history, status
