"""The one optimizer factory: every optimizer of the package is built here.

Pretraining (``loop.build_optimizer``), fine-tuning (``evaluate.finetune``), the linear probe
(``evaluate.linear``) and transfer (``transfer.optim.make_optimizer``) each say *which* parameters
learn at *which* rate, as parameter groups; this module turns the groups into an optimizer with the
rules they share (after timm's ``create_optimizer_v2`` and ``param_groups_weight_decay``):

- a group's ``"lr"`` is its learning rate (default: the ``lr`` given); other keys (e.g. ``"name"``)
  pass through to ``optimizer.param_groups``;
- ``weight_decay`` applies to every group, except to 1-D parameters (biases, norm weights) when
  ``decay_1d=False``: each group is then split into its matrices and kernels (decayed) and its 1-D
  parameters (not decayed), in that order;
- fused kernels on CUDA.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from coursekit.engine.step import fused_if_cuda

OPTIMIZERS = ("adamw", "adam", "sgd")  # adamw: decoupled weight decay; adam, sgd: L2 in the gradient


def create_optimizer(groups: Iterable[dict], name: str = "adamw", lr: float = 1e-3, weight_decay: float = 0.0,
                     momentum: float = 0.9, decay_1d: bool = True,
                     device: torch.device | str = "cpu") -> torch.optim.Optimizer:
    """``name`` over ``groups`` (dicts with ``"params"``, optionally ``"lr"`` and any other key).

    Args:
        lr: the learning rate of a group without its own ``"lr"``.
        weight_decay: of every group (decoupled for AdamW, L2 for Adam and SGD).
        momentum: SGD's.
        decay_1d: False: 1-D parameters get no weight decay (each group split in two, see above).
        device: where the parameters are (fused kernels on CUDA).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    built = []
    for group in groups:
        params = list(group["params"])
        group = {**group, "lr": group.get("lr", lr)}
        if decay_1d:
            built.append({**group, "params": params, "weight_decay": weight_decay})
        else:
            built.append({**group, "params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay})
            built.append({**group, "params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0})
    if name == "sgd":
        return torch.optim.SGD(built, lr=lr, momentum=momentum, **fused_if_cuda(device))
    optimizer = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    return optimizer(built, lr=lr, **fused_if_cuda(device))
