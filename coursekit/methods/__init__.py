"""The five self-supervised methods, each in its own file holding only its idea.

Losses are plain functions (``nt_xent``, ``infonce``, ``regression_loss``, ``dino_loss``,
``update_center``, ``patchify``, ``unpatchify``, ``random_masking``, ``mae_loss``,
``momentum_update``): the lessons, the graders and the method modules use the very same code.
"""

from torch import nn

from coursekit.methods.byol import BYOL, regression_loss
from coursekit.methods.dino import DINO, dino_loss, update_center
from coursekit.methods.ema import cosine_momentum, momentum_update
from coursekit.methods.mae import MAE, mae_loss, patchify, random_masking, unpatchify
from coursekit.methods.moco import MoCo, infonce
from coursekit.methods.simclr import SimCLR, nt_xent

METHODS = {"simclr": SimCLR, "moco": MoCo, "byol": BYOL, "dino": DINO, "mae": MAE}


def build_method(name: str, backbone: nn.Module, **kwargs) -> nn.Module:
    """The method ``name`` (simclr, moco, byol, dino, mae) on ``backbone``; kwargs go to its class
    (e.g. image_size, temperature, queue_size, mask_ratio)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid names: {', '.join(METHODS)}")
    return METHODS[name](backbone, **kwargs)


__all__ = [
    "BYOL",
    "DINO",
    "MAE",
    "METHODS",
    "MoCo",
    "SimCLR",
    "build_method",
    "cosine_momentum",
    "dino_loss",
    "infonce",
    "mae_loss",
    "momentum_update",
    "nt_xent",
    "patchify",
    "random_masking",
    "regression_loss",
    "unpatchify",
    "update_center",
]
