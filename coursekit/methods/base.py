"""The protocol between a method and ``engine.fit``, and the collapse statistic every method logs.

A method holds its idea (views, networks, loss, teacher updates); the engine holds the loop. Per
optimizer step the engine calls, in this order::

    loss = method.training_step(images, generator)     # under autocast; views made here
    backward, unscale, clip
    method.on_before_optimizer_step(epoch)             # gradients may be edited here
    optimizer step
    method.on_after_step(progress)                     # EMA targets (momentum_pairs), schedules

and after the step reads ``method.step_metrics`` (detached 0-d tensors, see ``record``).
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.methods.ema import cosine_momentum, momentum_update


def embedding_std(z: Tensor) -> Tensor:
    """Collapse statistic: the standard deviation over the batch of the L2-normalized embedding,
    averaged over its D dimensions (BYOL and SimSiam's analysis). z: [N, D] -> detached 0-d float.

    About 1/sqrt(D) when the embeddings spread over the sphere; 0 when every image maps to the
    same point (complete collapse).
    """
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def constructor_options(cls: type) -> dict[str, object]:
    """A method class's constructor options and their defaults, backbone and views left out."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in parameters.items() if name not in ("self", "backbone", "views")}


@dataclass(frozen=True)
class CommandLineOption:
    """A method option that ``coursekit pretrain --<flag>`` sets: the constructor argument it fills
    (DINO's ``--temperature`` is its ``student_temp``), its type, what it means, the values it accepts
    and, for the error message, what those are. Methods list theirs in ``command_line``; the command
    line is made from them."""

    flag: str
    argument: str
    type: type
    help: str
    accepts: Callable[[object], bool]
    rule: str


TEMPERATURE = CommandLineOption("temperature", "temperature", float, "softmax temperature",
                                lambda v: math.isfinite(v) and v > 0, "a positive number")
MOMENTUM = CommandLineOption("momentum", "momentum", float, "base EMA momentum of the teacher",
                             lambda v: 0 <= v <= 1, "between 0 and 1")


class Method(nn.Module):
    """Base class of the self-supervised methods (see the module docstring for the call order).

    Subclasses store every constructor option under the option's own name (``self.temperature =
    temperature``): ``hparams()`` reads them back, so a checkpoint records them all. ``views`` is
    a public attribute: any callable ``(images uint8 [N, C, H, W], generator) -> list of views``
    (a recipe of ``coursekit.augment``); pass ``views=`` to the constructor or assign it.
    """

    backbone: nn.Module
    views: object
    command_line: tuple[CommandLineOption, ...] = ()  # the options ``coursekit pretrain`` exposes

    def __init__(self) -> None:
        super().__init__()
        self.step_metrics: dict[str, Tensor] = {}

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] on the device; makes its views with ``generator``; returns
        the scalar loss."""
        raise NotImplementedError

    def on_before_optimizer_step(self, epoch: float) -> None:
        """Between backward and the optimizer step, with unscaled gradients; ``epoch``: epochs done
        before this step (fractional, step / steps_per_epoch). Nothing by default."""

    def on_after_step(self, progress: float) -> None:
        """After each optimizer step; progress = steps done / total steps, in (0, 1]. Moves every target
        of ``momentum_pairs`` towards its online module with momentum ``target_momentum(progress)``."""
        pairs = self.momentum_pairs()
        if pairs:
            m = self.target_momentum(progress)
            for online, target in pairs:
                momentum_update(online, target, m)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The (online, target) module pairs whose targets trail the online modules as exponential moving
        averages (MoCo's key encoder, BYOL's target, DINO's teacher). None by default."""
        return []

    def target_momentum(self, progress: float) -> float:
        """The momentum of the targets' moving average after the step at ``progress``: by default the
        method's ``momentum`` rising along a half cosine to 1 (BYOL, DINO, MoCo v3)."""
        return cosine_momentum(progress, self.momentum)

    # D of the embedding whose spread ``embedding_std`` measures (set by ``record``) and, for a
    # method with a softmax teacher (DINO), K, the number of its outputs: what ``fit`` needs to tell
    # a collapsed run (``coursekit.engine.collapse``).
    embedding_dim: int | None = None
    teacher_outputs: int | None = None

    def record(self, embedding: Tensor, **values: Tensor) -> None:
        """Keep statistics of this training step for the loop to log (``step_metrics``), as
        detached 0-d tensors: they stay on the device, the loop copies them once per log window.

        embedding: [N, D], the embedding the loss acts on; its spread is logged as ``embedding_std``
            (every method's collapse statistic). values: the method's other statistics.
        """
        self.embedding_dim = embedding.shape[1]
        self.step_metrics = {"embedding_std": embedding_std(embedding),
                             **{name: value.detach().float() for name, value in values.items()}}

    # The attribute holding the backbone to evaluate and transfer after pretraining (its tensors are
    # "<name>.*" in the method's state_dict): the trained ``backbone``, unless the method's teacher is
    # the better encoder (DINO).
    pretrained_backbone_name = "backbone"

    @property
    def pretrained_backbone(self) -> nn.Module:
        """The backbone to evaluate and transfer after pretraining (``pretrained_backbone_name``)."""
        return getattr(self, self.pretrained_backbone_name)

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate multipliers by submodule attribute name (BYOL's ``{"prediction_head": 10.0}``):
        ``engine.build_optimizer`` trains those parameters at that multiple of the configured rate,
        the schedule applying to all alike. None by default: every parameter at the configured rate."""
        return {}

    def hparams(self) -> dict:
        """The constructor options (not the backbone), as a checkpoint must match them; the views
        as their ``repr`` (a recipe's repr lists every parameter)."""
        options = {name: getattr(self, name) for name in constructor_options(type(self))}
        return {**options, "views": repr(self.views)}
