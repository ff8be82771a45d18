"""The engine: one training loop for every self-supervised method, and what it stands on.

- ``loop``: ``TrainConfig``, ``History``, ``fit`` and ``load_or_train`` (the loop in plain sight).
- ``checkpoint``: atomic saves and validated loads.
- ``distributed``: rank and world size, gathers and reductions (no-ops without torchrun).
- ``device``: the device of a module, mixed precision (autocast, gradient scaler).
- ``schedules``: the cosine schedule of learning rates and EMA momentum.
- ``seeding``: seeds derived from a run's seed, so that resume is exact.
"""
from coursekit.engine.checkpoint import CheckpointError
from coursekit.engine.device import PRECISIONS, autocast, make_grad_scaler, module_device, resolve_precision
from coursekit.engine.loop import CHECKPOINT_NAME, History, TrainConfig, build_optimizer, epoch_indices, fit, load_or_train
from coursekit.engine.schedules import cosine_schedule
from coursekit.engine.seeding import derived_seed

__all__ = [
    "TrainConfig", "History", "fit", "load_or_train", "build_optimizer", "epoch_indices", "CHECKPOINT_NAME",
    "CheckpointError", "PRECISIONS", "autocast", "make_grad_scaler", "module_device", "resolve_precision",
    "cosine_schedule", "derived_seed",
]
