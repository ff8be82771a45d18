"""Features: what every evaluation protocol reads, the backbone's global feature of each image.

Images are uint8 ``[N, 3, H, W]``; they become float in [0, 1], then ImageNet-normalized
(``coursekit.augment.normalize``), exactly as the views of pretraining.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from coursekit import augment, dry_run
from coursekit.data.images import check_images
from coursekit.engine.device import autocast, module_device, resolve_precision


def default_normalize(images: Tensor) -> Tensor:
    """uint8 (or float in [0, 1]) [N, 3, H, W] -> float32 ImageNet-normalized [N, 3, H, W]."""
    return augment.normalize(augment.to_float(images))


def pixel_features(images: Tensor) -> Tensor:
    """The raw-pixel baseline: uint8 [N, 3, H, W] -> the normalized pixels as features [N, 3 * H * W].
    What any backbone must beat: no network, no training."""
    return default_normalize(images).flatten(1)


def check_labels(labels: Tensor, name: str, length: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.shape != (length,):
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a long tensor [{length}]; got {got}")


def check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.dim() != 2 or not features.is_floating_point():
        got = f"{features.dtype} {list(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a float tensor [N, D]; got {got}")


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, batch_size: int = 256,
                     device: torch.device | str | None = None,
                     normalize_fn: Callable[[Tensor], Tensor] | None = None,
                     progress: bool = False) -> Tensor:
    """The backbone's output for every image: uint8 [N, 3, H, W] -> float32 [N, D] on ``device``.

    Eval mode (BatchNorm uses its running statistics), no gradient, in batches of ``batch_size``,
    mixed precision on CUDA. ``normalize_fn`` turns a uint8 batch into the backbone's input
    (default: ``default_normalize``). The backbone's train/eval mode is restored afterwards.
    Any module works: a classifier gives its logits. In a dry run (``coursekit.dry_run``) the backbone
    sees only the first ``dry_run.MAX_EVAL_IMAGES`` images and the other rows repeat their features.
    """
    check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size}")
    device = torch.device(device) if device is not None else module_device(backbone)
    normalize_fn = normalize_fn or default_normalize
    precision = resolve_precision("auto", device)
    was_training = backbone.training
    backbone.eval()
    outputs = []
    count = dry_run.cap_eval(len(images))  # all of them, except in a dry run
    for start in tqdm(range(0, count, batch_size), desc="features", disable=not progress, leave=False):
        batch = normalize_fn(images[start:min(start + batch_size, count)].to(device, non_blocking=True))
        with autocast(precision, device):
            outputs.append(backbone(batch).float())
    backbone.train(was_training)
    return dry_run.repeat_rows(torch.cat(outputs), len(images))  # a dry run computed fewer


def num_classes_of(*labels: Tensor) -> int:
    """The number of classes the labels imply: 1 + the largest label in any of them."""
    return int(max(int(y.max()) for y in labels if len(y)) + 1)
