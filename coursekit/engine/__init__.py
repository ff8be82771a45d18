"""The engine: one training loop for every self-supervised method, and what it stands on.

- ``loop``: ``TrainConfig``, ``History``, ``fit`` and ``load_or_train`` (the loop in plain sight).
- ``step``: ``OptimizerStep``, the one optimizer step of every training loop in the package.
- ``optim``: ``create_optimizer``, the one optimizer factory (parameter groups, weight-decay rules).
- ``supervised``: ``train_supervised``, the loop of the probe, fine-tuning, segmentation, detection.
- ``batches``: the batches of a step, from images in memory or a Dataset streamed by a DataLoader.
- ``checkpoint``: the checkpoint format, written and read: atomic saves and validated loads, a run's
  training state (``CHECKPOINT_NAME``; ``finished_run``), its backbone, the backbone file of ``coursekit export``.
- ``distributed``: rank and world size, gathers and reductions (no-ops without torchrun).
- ``device``: the device of a module, mixed precision (autocast, gradient scaler), memory format.
- ``progress``: the progress bar of every loop.
- ``schedules``: the cosine schedule of learning rates and EMA momentum.
- ``seeding``: seeds derived from a run's seed, so that resume is exact.
"""
from coursekit.engine.batches import epoch_indices
from coursekit.engine.checkpoint import CHECKPOINT_NAME, CheckpointError, finished_run
from coursekit.engine.device import (PRECISIONS, autocast, make_grad_scaler, module_device, resolve_precision,
                                     use_channels_last)
from coursekit.engine.loop import History, TrainConfig, build_optimizer, fit, load_or_train
from coursekit.engine.optim import create_optimizer
from coursekit.engine.progress import progress_bar
from coursekit.engine.schedules import cosine_schedule
from coursekit.engine.seeding import derived_seed, epoch_permutation, step_generator
from coursekit.engine.step import OptimizerStep, fused_if_cuda
from coursekit.engine.supervised import train_supervised

__all__ = [
    "TrainConfig", "History", "fit", "load_or_train", "finished_run", "build_optimizer", "create_optimizer", "epoch_indices",
    "CHECKPOINT_NAME", "CheckpointError", "PRECISIONS", "autocast", "make_grad_scaler", "module_device", "resolve_precision",
    "use_channels_last", "OptimizerStep", "fused_if_cuda", "progress_bar", "cosine_schedule", "derived_seed",
    "epoch_permutation", "step_generator", "train_supervised",
]
