"""The loop of every supervised training in the package: the linear probe, fine-tuning and the
training from scratch (``evaluate``), segmentation and detection (``transfer``).

The same pieces as ``fit``: batches in an order seeded by ``(seed, epoch)``
(``batches.shuffled_batches``: every item once per epoch, the last batch may be smaller), the
forward under ``OptimizerStep``'s autocast, the one optimizer step, the progress bar. What
differs between the tasks is the loss of a batch, which the caller gives as a function.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from coursekit import dry_run
from coursekit.engine.batches import shuffled_batches
from coursekit.engine.device import resolve_precision
from coursekit.engine.progress import progress_bar
from coursekit.engine.schedules import cosine_schedule
from coursekit.engine.step import OptimizerStep


def train_supervised(model: nn.Module, num_items: int, batch_loss: Callable[[int, Tensor], Tensor],
                     optimizer: torch.optim.Optimizer, epochs: int, batch_size: int, seed: int,
                     device: torch.device | str, precision: str = "auto",
                     cosine: bool = False, desc: str = "train",
                     progress: bool = True) -> list[float]:
    """Train ``model`` (put in train mode) for ``epochs`` passes over ``num_items`` items.

    Args:
        batch_loss: (step, indices long [B] on ``device``) -> the scalar loss of those items.
        optimizer: over the parameters that train (fused on CUDA: ``step.fused_if_cuda``).
        precision: "auto" (bf16 / fp16 on CUDA, fp32 on the CPU), "bf16", "fp16" or "fp32".
        cosine: decay every group's learning rate to 0 with a half cosine over the run (else constant).

    Returns:
        The loss of every step, copied to the host once, at the end. In a dry run
        (``coursekit.dry_run``) the loop stops after ``dry_run.MAX_STEPS`` steps.
    """
    total_steps = dry_run.cap_steps(epochs * -(-num_items // batch_size))  # a dry run stops after a few steps
    schedule = (lambda step: cosine_schedule(step, total_steps, 0, 1.0, 0.0)) if cosine else None
    optimizer_step = OptimizerStep(optimizer, resolve_precision(precision, device), device, schedule=schedule)
    losses = []  # device tensors
    model.train()
    bar = progress_bar(total_steps, desc, progress)
    for step, _, indices in itertools.islice(shuffled_batches(num_items, batch_size, epochs, seed, device), total_steps):
        with optimizer_step.autocast():
            loss = batch_loss(step, indices)
        optimizer_step(loss, step)
        losses.append(loss.detach().float())
        bar.update()
    bar.close()
    return torch.stack(losses).tolist()


def epoch_means(step_losses: list[float], epochs: int) -> list[float]:
    """The mean of every epoch's step losses (``epochs`` equal runs of steps). A dry run's loop,
    cut short (``coursekit.dry_run``), may hold fewer steps than epochs: then each step is an
    epoch, and the list is as long as the steps."""
    steps = max(1, len(step_losses) // epochs)
    return [sum(step_losses[i * steps:(i + 1) * steps]) / steps for i in range(min(epochs, len(step_losses) // steps))]
