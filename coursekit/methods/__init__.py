"""The five self-supervised methods, each in its own file holding only its idea.

Losses are plain functions (``nt_xent``, ``infonce``, ``regression_loss``, ``dino_loss``,
``update_center``, ``patchify``, ``unpatchify``, ``random_masking``, ``mae_loss``,
``momentum_update``): the lessons, the graders and the method modules use the very same code.
"""

from torch import nn

from coursekit.methods.base import CommandLineOption, Method, constructor_options, embedding_std
from coursekit.methods.byol import BYOL, regression_loss
from coursekit.methods.dino import DINO, dino_loss, update_center
from coursekit.methods.ema import cosine_momentum, momentum_update
from coursekit.methods.mae import MAE, mae_loss, patchify, random_masking, unpatchify
from coursekit.methods.moco import MoCo, infonce
from coursekit.methods.simclr import SimCLR, nt_xent

METHODS = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "dino": DINO, "mae": MAE}


def method_options(name: str) -> dict[str, object]:
    """The constructor options of method ``name`` and their defaults (backbone and views left
    out), e.g. ``{"image_size": 32, "temperature": 0.5, ...}`` for SimCLR: what a command line
    can expose, and what ``Method.hparams()`` records."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(METHODS)}")
    return constructor_options(METHODS[name])


def command_line_options() -> dict[str, dict[str, CommandLineOption]]:
    """Every flag the methods declare (``Method.command_line``) -> {method name: its option}, in the
    order of ``METHODS``: what ``coursekit pretrain`` offers, and which methods take each flag."""
    flags: dict[str, dict[str, CommandLineOption]] = {}
    for name, cls in METHODS.items():
        for option in cls.command_line:
            flags.setdefault(option.flag, {})[name] = option
    return flags


def build_method(name: str, backbone: nn.Module, **options) -> Method:
    """The method ``name`` (simclr, moco, byol, dino, mae) on ``backbone``; options go to its
    class (see ``method_options(name)``: image_size, temperature, momentum, queue_size,
    mask_ratio, ..., and ``views``). An option the method does not have is refused, naming the
    ones it has."""
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid) - {"views"})
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options: {', '.join(valid)}")
    return METHODS[name](backbone, **options)


__all__ = [
    "BYOL",
    "CommandLineOption",
    "DINO",
    "MAE",
    "METHODS",
    "Method",
    "MoCo",
    "SimCLR",
    "build_method",
    "command_line_options",
    "cosine_momentum",
    "dino_loss",
    "embedding_std",
    "infonce",
    "method_options",
    "mae_loss",
    "momentum_update",
    "nt_xent",
    "patchify",
    "random_masking",
    "regression_loss",
    "unpatchify",
    "update_center",
]
