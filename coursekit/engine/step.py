"""One optimizer step, the same for every training loop in the package.

Self-supervised pretraining (``engine.fit``), the linear probe, fine-tuning, segmentation and
detection all train through ``OptimizerStep``; it is the only place in the package that calls
``backward()`` and the optimizer's ``step()``::

    step = OptimizerStep(optimizer, precision, device, grad_clip=1.0, schedule=..., hooks=method)
    for i in range(total_steps):
        with step.autocast():
            loss = model(batch)                       # bf16 / fp16 on CUDA, fp32 on the CPU
        lr = step(loss, i)

and ``step(loss, i)`` does, in this order:

1. every parameter group's learning rate = its ``base_lr`` * ``schedule(i)``;
2. ``zero_grad``, then ``backward`` through the gradient scaler (enabled for fp16 only);
3. unscale the gradients (a no-op without the scaler), clip their norm if ``grad_clip``;
4. ``hooks.on_before_optimizer_step(epoch)``: the method may edit the (unscaled) gradients, e.g.
   DINO drops its last layer's gradients during the first epoch;
5. the optimizer step (skipped by the scaler when fp16 gradients overflowed), the scaler update;
6. ``hooks.on_after_step(progress)``: EMA teachers, centers.

Nothing here copies a value to the host: no ``.item()``, no tensor built from Python numbers.
With a fused optimizer (AdamW and SGD on CUDA, see :func:`fused_if_cuda`) even fp16's overflow
check stays on the GPU, so a training step never waits for the device.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from coursekit.engine.device import autocast, make_grad_scaler


def fused_if_cuda(device: torch.device | str) -> dict:
    """Optimizer keyword arguments: ``fused=True`` on CUDA (one kernel for all parameters, and the
    fp16 overflow check without a host sync), the default (for-each) implementation elsewhere."""
    return {"fused": True} if torch.device(device).type == "cuda" else {}


class OptimizerStep:
    """Precision, gradient scaler, learning-rate schedule, clipping and the method's hooks around
    the optimizer step.

    Args:
        optimizer: its parameter groups may carry ``base_lr``; a group without one gets its
            current ``lr`` as ``base_lr``.
        precision: a resolved precision ("bf16", "fp16" or "fp32"; see ``device.resolve_precision``).
        device: where the model trains (autocast and the scaler are per device type).
        grad_clip: clip the norm of all gradients to this value (None: no clipping).
        schedule: step -> factor of every group's ``base_lr`` (None: constant learning rates).
        hooks: an object with ``on_before_optimizer_step(epoch)`` and ``on_after_step(progress)``
            (a coursekit method), or None (supervised loops have no hooks).
        total_steps: the number of steps of the run (progress = steps done / total_steps).
        steps_per_epoch: steps in an epoch (epoch = steps done before this one / steps_per_epoch).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, precision: str, device: torch.device | str,
                 grad_clip: float | None = None, schedule: Callable[[int], float] | None = None,
                 hooks=None, total_steps: int = 1, steps_per_epoch: int = 1):
        if precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"OptimizerStep needs a resolved precision (bf16, fp16, fp32); got {precision!r}")
        self.optimizer, self.precision, self.device = optimizer, precision, torch.device(device)
        self.grad_clip, self.schedule, self.hooks = grad_clip, schedule, hooks
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
        self.scaler = make_grad_scaler(precision, self.device)
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward pass's autocast context (disabled in fp32)."""
        return autocast(self.precision, self.device)

    def __call__(self, loss: Tensor, step: int) -> float:
        """One optimizer step on ``loss`` (a 0-d tensor), the ``step``-th of the run (0-based).
        Returns the learning-rate factor used (``schedule(step)``, 1.0 without a schedule)."""
        factor = 1.0 if self.schedule is None else self.schedule(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)  # true gradients for clipping and the hooks
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self._parameters(), self.grad_clip)
        if self.hooks is not None:
            self.hooks.on_before_optimizer_step(step / self.steps_per_epoch)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.hooks is not None:
            self.hooks.on_after_step((step + 1) / self.total_steps)
        return factor

    def _parameters(self) -> list[Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """The optimizer's and the scaler's state (for checkpoints)."""
        return {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
