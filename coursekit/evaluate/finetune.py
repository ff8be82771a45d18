"""Fine-tuning: a linear head on the backbone, everything trained with labels; and the supervised
baseline, the same loop on a freshly built backbone.

Fine-tuning starts from the linear probe (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution"): the head is first fitted on the frozen
features, then everything trains. A head that starts at zero sends large, meaningless gradients into
the pretrained backbone in its first steps and moves the features away from what pretraining found.
Measured on lesson 07's SimCLR run (``demo``, 2-core CPU, seed 0, 2,000 test images), 320 steps each,
head from zero / from the probe: 54.5% / 58.2% with 40 labels, 76.3% / 77.6% with 409, 77.8% / 82.5%
with 4,096 (the probe alone: 80.5% with 4,096). With few labels the number of steps matters as much:
five epochs of 409 images are 35 steps, and gave 62.1% / 72.7%; hence ``min_steps``.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit import augment
from coursekit.data.images import check_images
from coursekit.engine.device import module_device, use_channels_last
from coursekit.engine.seeding import step_generator
from coursekit.engine.optim import create_optimizer
from coursekit.engine.supervised import train_supervised
from coursekit.evaluate.features import check_labels, extract_features, num_classes_of
from coursekit.evaluate.knn import accuracy
from coursekit.evaluate.linear import fit_linear_probe

HEAD_INITS = ("probe", "zeros")


@dataclass
class FineTuneResult:
    """Test accuracy of a trained classifier (``model`` = backbone then linear head) and its losses per step."""

    accuracy: float
    model: nn.Module
    losses: list[float]


def simple_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Supervised augmentation: random resized crop (scale 0.6-1) and horizontal flip.
    uint8 [N, 3, H, W] -> normalized float32 [N, 3, H, W]."""
    n, _, height, width = images.shape
    boxes = augment.sample_crop_boxes(n, height, width, (0.6, 1.0), (3 / 4, 4 / 3), generator)
    flips = augment.sample_flips(n, 0.5, generator)
    return augment.normalize(augment.resized_crop(augment.to_float(images), boxes, (height, width), flips))


def fine_tune(backbone: nn.Module, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor,
              num_classes: int | None = None, epochs: int = 10, min_steps: int = 0, lr: float = 1e-3,
              backbone_lr_scale: float = 0.1, weight_decay: float = 1e-4, batch_size: int = 64, seed: int = 0,
              head_init: str = "probe", device: torch.device | str | None = None, copy_backbone: bool = True,
              precision: str = "auto", progress: bool = True) -> FineTuneResult:
    """Train a linear head and the whole backbone on labeled images, then score the test set.

    ``head_init="probe"`` starts the head from ``fit_linear_probe`` on the frozen backbone's features
    of the (unaugmented) training images; ``"zeros"`` from zero (the from-scratch baseline). AdamW
    with two parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``
    (pretrained features should move less than a new head); cosine LR decay over the steps;
    ``simple_augment`` views; ``engine.supervised.train_supervised`` (mixed precision on CUDA with
    ``precision="auto"``, channels-last for convolutional backbones there). It trains ``epochs``
    passes, or more when that is fewer than ``min_steps`` steps: with few labels, an epoch is a
    handful of steps. The backbone is deep-copied first unless ``copy_backbone`` is False, so the
    pretrained one stays as it was.

    images: uint8 [M, 3, H, W], labels: long [M]; test_images: uint8 [N, 3, H, W], test_labels: long [N].
    """
    check_images(images, "images")
    check_images(test_images, "test_images")
    check_labels(labels, "labels", len(images))
    check_labels(test_labels, "test_labels", len(test_images))
    if epochs < 1 or batch_size < 1 or min_steps < 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and min_steps >= 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, min_steps={min_steps}")
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init must be one of {HEAD_INITS}; got {head_init!r}")
    device = torch.device(device) if device is not None else module_device(backbone)
    num_classes = num_classes or num_classes_of(labels, test_labels)
    backbone = copy.deepcopy(backbone) if copy_backbone else backbone
    if head_init == "probe":
        features = extract_features(backbone, images, device=device)
        head = fit_linear_probe(features, labels.to(device), num_classes, seed=seed, precision=precision).as_head()
    else:
        head = nn.Linear(backbone.feature_dim, num_classes)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    steps_per_epoch = -(-len(images) // batch_size)
    epochs = max(epochs, -(-min_steps // steps_per_epoch))
    model = nn.Sequential(backbone, head).to(device)
    if use_channels_last(backbone, device):
        model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer([
        {"params": backbone.parameters(), "lr": lr * backbone_lr_scale},
        {"params": head.parameters(), "lr": lr},
    ], "adamw", lr, weight_decay, device=device)
    images, labels = images.to(device), labels.to(device)

    def batch_loss(step: int, index: Tensor) -> Tensor:
        views = simple_augment(images[index], step_generator(seed, step, device))
        return F.cross_entropy(model(views).float(), labels[index])

    losses = train_supervised(model, len(images), batch_loss, optimizer, epochs, batch_size, seed, device, precision,
                              cosine=True, desc="fine-tune", progress=progress)
    logits = extract_features(model, test_images, batch_size=256, device=device)
    return FineTuneResult(accuracy(logits.argmax(dim=1), test_labels), model, losses)


def train_from_scratch(backbone_factory: Callable[[], nn.Module], images: Tensor, labels: Tensor,
                       test_images: Tensor, test_labels: Tensor, **fine_tune_kwargs) -> FineTuneResult:
    """The supervised baseline: a freshly built backbone (``backbone_factory()``, same architecture
    as the pretrained one, its weights drawn under ``torch.manual_seed(seed)`` with fine_tune's ``seed``,
    0 by default, so that a rerun prints the same numbers) trained with labels only, by ``fine_tune``
    with one learning rate for all and a head that starts at zero (a probe on random features has
    nothing to keep)."""
    fine_tune_kwargs.update(backbone_lr_scale=1.0, copy_backbone=False, head_init="zeros")
    torch.manual_seed(fine_tune_kwargs.get("seed", 0))
    return fine_tune(backbone_factory(), images, labels, test_images, test_labels, **fine_tune_kwargs)
