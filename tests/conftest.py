"""Builders shared by the tests: seeded generators, random images, tiny backbones and methods.

Import them from here (``from tests.conftest import tiny_backbone``): ``tests/`` is a package
(``__init__.py`` in it and in every folder), so test modules of the same name in two folders do
not clash. The folders mirror the package: ``tests/engine/`` tests ``coursekit/engine/``, and so
on; the modules of the top level of ``coursekit/`` (augment, recipes, profile, foundation, viz,
notebooks and publishing) are tested at the top level.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from coursekit.methods import Method, build_method
from coursekit.models import build_backbone

TINY_RESNET = {"width": 8}
TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}


def generator(seed: int = 0) -> torch.Generator:
    """A CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def random_images(n: int, size: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """``n`` uint8 images [n, channels, size, size] of uniform noise, drawn from ``generator(seed)``."""
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator(seed))


def tiny_backbone(name: str, image_size: int = 32, **overrides) -> nn.Module:
    """A small ``resnet18`` (width 8) or ViT (``name``: vit_tiny; patch 8, depth 2, dim 32, 2 heads,
    for ``image_size`` images); ``overrides`` replace any of these (``width=2``, ``depth=1``...)."""
    if name == "resnet18":
        return build_backbone(name, **{**TINY_RESNET, **overrides})
    return build_backbone(name, img_size=image_size, **{**TINY_VIT, **overrides})


def backbone_for(method: str) -> str:
    """The tiny backbone a method is tested on: a ViT for DINO and MAE, a ResNet for the others."""
    return "vit_tiny" if method in ("dino", "mae") else "resnet18"


def tiny_method(name: str, image_size: int, seed: int = 0, backbone: nn.Module | None = None,
                backbone_options: dict | None = None, **options) -> Method:
    """Method ``name`` on a tiny backbone (``tiny_backbone(backbone_for(name), image_size,
    **backbone_options)`` unless ``backbone`` is given), its weights drawn after
    ``torch.manual_seed(seed)``; ``options`` go to the method (heads, queue, crops...)."""
    torch.manual_seed(seed)
    if backbone is None:
        backbone = tiny_backbone(backbone_for(name), image_size, **(backbone_options or {}))
    return build_method(name, backbone, image_size=image_size, **options)


def processes_with(token: str, source: str = "environ") -> list[int]:
    """Pids of the living processes whose ``/proc/<pid>/<source>`` (``environ`` or ``cmdline``) holds ``token``:
    how a test finds what a submission left running."""
    found = []
    for path in Path("/proc").glob(f"[0-9]*/{source}"):
        try:
            if token.encode() in path.read_bytes():
                found.append(int(path.parent.name))
        except OSError:
            continue
    return found
