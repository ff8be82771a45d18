"""How good are the features? The evaluation protocols of self-supervised learning.

Every protocol reads the *backbone's* global feature (never the projection head's output):

- ``knn_predict`` / ``knn_accuracy``: weighted k-nearest neighbours on L2-normalized features
  (k=200, temperature 0.1, as in InstDisc and lightly's benchmarks). No training at all.
- ``linear_probe``: a linear classifier on frozen, cached features, with a small search of the
  learning rate and weight decay on a held-out part of the training set.
- ``fine_tune``: a fresh linear head on the backbone, everything trained, the backbone with a
  smaller learning rate; ``train_from_scratch`` is the same loop on a freshly built backbone.
- ``label_fraction_experiment``: all of the above with 1%, 10%, 100% of the labels.

Images are uint8 ``[N, 3, H, W]``; they become float in [0, 1], then ImageNet-normalized
(``coursekit.augment.normalize``), exactly as the views of pretraining.
"""
from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from coursekit import augment
from coursekit.data.subsets import stratified_subset
from coursekit.train import autocast, cosine_schedule, derived_seed, make_grad_scaler, resolve_precision


def default_normalize(images: Tensor) -> Tensor:
    """uint8 (or float in [0, 1]) [N, 3, H, W] -> float32 ImageNet-normalized [N, 3, H, W]."""
    return augment.normalize(augment.to_float(images))


def _module_device(module: nn.Module) -> torch.device:
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_labels(labels: Tensor, name: str, length: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.long or labels.shape != (length,):
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be a long tensor [{length}]; got {got}")


def _check_features(features: Tensor, name: str) -> None:
    if not isinstance(features, Tensor) or features.dim() != 2 or not features.is_floating_point():
        got = f"{features.dtype} {list(features.shape)}" if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"{name} must be a float tensor [N, D]; got {got}")


# ----------------------------------------------------------------------------------------------
# Features


@torch.no_grad()
def extract_features(backbone: nn.Module, images: Tensor, batch_size: int = 256,
                     device: torch.device | str | None = None,
                     normalize_fn: Callable[[Tensor], Tensor] | None = None,
                     progress: bool = False) -> Tensor:
    """The backbone's output for every image: uint8 [N, 3, H, W] -> float32 [N, D] on ``device``.

    Eval mode (BatchNorm uses its running statistics), no gradient, in batches of ``batch_size``,
    mixed precision on CUDA. ``normalize_fn`` turns a uint8 batch into the backbone's input
    (default: ``default_normalize``). The backbone's train/eval mode is restored afterwards.
    Any module works: a classifier gives its logits.
    """
    augment.check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size}")
    device = torch.device(device) if device is not None else _module_device(backbone)
    normalize_fn = normalize_fn or default_normalize
    precision = resolve_precision("auto", device)
    was_training = backbone.training
    backbone.eval()
    outputs = []
    for start in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress, leave=False):
        batch = normalize_fn(images[start:start + batch_size].to(device, non_blocking=True))
        with autocast(precision, device):
            outputs.append(backbone(batch).float())
    backbone.train(was_training)
    return torch.cat(outputs)


# ----------------------------------------------------------------------------------------------
# Weighted kNN


@torch.no_grad()
def knn_predict(train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int,
                k: int = 200, temperature: float = 0.1, chunk_size: int = 1024) -> Tensor:
    """Weighted kNN classification (InstDisc / lightly protocol).

    Cosine similarity between L2-normalized test and train features; each test sample takes its
    ``k`` most similar train samples (all M of them when k > M), each voting for its label with
    weight exp(similarity / temperature); the class with the largest total vote wins.

    Args:
        train_features: float [M, D]. train_labels: long [M] in [0, num_classes).
        test_features: float [N, D]. num_classes: number of classes.
        k: neighbours; temperature: > 0, smaller makes the nearest neighbours count more.
        chunk_size: test samples per similarity matrix [chunk, M] (memory only, same result).

    Returns:
        long [N], the predicted class of each test sample, on the features' device.
    """
    _check_features(train_features, "train_features")
    _check_features(test_features, "test_features")
    _check_labels(train_labels, "train_labels", len(train_features))
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(f"train_features and test_features must have the same width D; got "
                         f"{train_features.shape[1]} and {test_features.shape[1]}")
    if len(train_features) == 0:
        raise ValueError("train_features is empty: kNN needs at least one training sample")
    if k < 1 or temperature <= 0 or num_classes < 1:
        raise ValueError(f"k and num_classes must be >= 1 and temperature > 0; got k={k}, "
                         f"num_classes={num_classes}, temperature={temperature}")
    device = train_features.device
    train = F.normalize(train_features.float(), dim=1)  # [M, D]
    train_labels = train_labels.to(device)
    predictions = []
    for start in range(0, len(test_features), chunk_size):
        test = F.normalize(test_features[start:start + chunk_size].to(device).float(), dim=1)  # [n, D]
        similarity = test @ train.T  # [n, M]
        top_similarity, top_index = similarity.topk(min(k, len(train)), dim=1)  # [n, k]
        # exp(s / t) up to a per-row factor exp(-max / t), which leaves the argmax unchanged and
        # cannot overflow at small temperatures
        weights = ((top_similarity - top_similarity[:, :1]) / temperature).exp()  # [n, k]
        votes = torch.zeros(len(test), num_classes, device=device)
        votes.scatter_add_(1, train_labels[top_index], weights)  # [n, num_classes]
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.empty(0, dtype=torch.long, device=device)


def _num_classes(*labels: Tensor) -> int:
    return int(max(int(y.max()) for y in labels if len(y)) + 1)


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Share of predictions equal to the labels, in [0, 1]."""
    return (predictions.cpu() == labels.cpu()).float().mean().item()


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 num_classes: int | None = None, k: int = 200, temperature: float = 0.1) -> float:
    """Accuracy in [0, 1] of ``knn_predict`` on labeled test features (num_classes from the labels if None)."""
    _check_labels(test_labels, "test_labels", len(test_features))
    num_classes = num_classes or _num_classes(train_labels, test_labels)
    predictions = knn_predict(train_features, train_labels, test_features, num_classes, k, temperature)
    return accuracy(predictions, test_labels)


# ----------------------------------------------------------------------------------------------
# Linear probe on cached features


@dataclass
class ProbeResult:
    """Test accuracy of the linear probe and the hyperparameters the held-out search chose.

    ``search`` maps (lr, weight_decay) to the held-out accuracy of that pair.
    """

    accuracy: float
    lr: float
    weight_decay: float
    val_accuracy: float
    search: dict = field(default_factory=dict)


def train_linear(features: Tensor, labels: Tensor, num_classes: int, lr: float, weight_decay: float,
                 epochs: int, batch_size: int, seed: int) -> nn.Linear:
    """Logistic regression on features [M, D]: a zero-initialized nn.Linear(D, num_classes)
    trained with Adam (L2 ``weight_decay``) and a cosine-decaying LR over ``epochs``."""
    classifier = nn.Linear(features.shape[1], num_classes).to(features.device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(features) // batch_size)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        order = torch.randperm(len(features), generator=generator).to(features.device)
        for i in range(steps_per_epoch):
            index = order[i * batch_size:(i + 1) * batch_size]
            for group in optimizer.param_groups:
                group["lr"] = cosine_schedule(epoch * steps_per_epoch + i, epochs * steps_per_epoch, 0, lr, 0.0)
            loss = F.cross_entropy(classifier(features[index]), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return classifier


def _holdout_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, held-out) indices: a stratified ``fraction`` of each class is held out, except
    for classes with a single example, which stay in training."""
    held_out = stratified_subset(labels.cpu(), fraction, seed)
    counts = torch.bincount(labels.cpu())
    held_out = held_out[counts[labels.cpu()[held_out]] > 1]
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[held_out] = False
    return torch.nonzero(keep).flatten(), held_out


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 num_classes: int | None = None, lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
                 weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2), epochs: int = 30,
                 batch_size: int = 512, val_fraction: float = 0.2, seed: int = 0,
                 progress: bool = False) -> ProbeResult:
    """Linear probe: logistic regression on frozen features [M, D] -> ProbeResult.

    Features are standardized with the training mean and std. Every (lr, weight_decay) pair is
    trained on the training features less a stratified held-out ``val_fraction`` and scored on
    the held-out part; the best pair is retrained on all training features and scored on the test
    features. Deterministic given ``seed``.
    """
    _check_features(train_features, "train_features")
    _check_features(test_features, "test_features")
    _check_labels(train_labels, "train_labels", len(train_features))
    _check_labels(test_labels, "test_labels", len(test_features))
    num_classes = num_classes or _num_classes(train_labels, test_labels)
    mean, std = train_features.mean(dim=0), train_features.std(dim=0, correction=0).clamp_min(1e-6)
    train_x, test_x = (train_features - mean) / std, (test_features.to(mean.device) - mean) / std
    train_y = train_labels.to(train_x.device)
    fit_index, val_index = _holdout_split(train_labels, val_fraction, seed)
    fit_index, val_index = fit_index.to(train_x.device), val_index.to(train_x.device)

    search = {}
    for lr, weight_decay in tqdm(list(itertools.product(lrs, weight_decays)), desc="probe search",
                                 disable=not progress, leave=False):
        classifier = train_linear(train_x[fit_index], train_y[fit_index], num_classes, lr, weight_decay,
                                  epochs, batch_size, seed)
        with torch.no_grad():
            predictions = classifier(train_x[val_index]).argmax(dim=1)
        search[(lr, weight_decay)] = accuracy(predictions, train_y[val_index]) if len(val_index) else 0.0
    (lr, weight_decay), val_accuracy = max(search.items(), key=lambda item: item[1])  # first best wins ties

    classifier = train_linear(train_x, train_y, num_classes, lr, weight_decay, epochs, batch_size, seed)
    with torch.no_grad():
        test_accuracy = accuracy(classifier(test_x).argmax(dim=1), test_labels)
    return ProbeResult(test_accuracy, lr, weight_decay, val_accuracy, search)


# ----------------------------------------------------------------------------------------------
# Fine-tuning and training from scratch


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
              num_classes: int | None = None, epochs: int = 10, lr: float = 1e-3, backbone_lr_scale: float = 0.1,
              weight_decay: float = 1e-4, batch_size: int = 64, seed: int = 0,
              device: torch.device | str | None = None, copy_backbone: bool = True,
              progress: bool = True) -> FineTuneResult:
    """Train a fresh linear head and the whole backbone on labeled images, then score the test set.

    AdamW with two parameter groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``
    (pretrained features should move less than a random head); cosine LR decay over the steps;
    ``simple_augment`` views; mixed precision on CUDA. The backbone is deep-copied first unless
    ``copy_backbone`` is False, so the pretrained one stays as it was.

    images: uint8 [M, 3, H, W], labels: long [M]; test_images: uint8 [N, 3, H, W], test_labels: long [N].
    """
    augment.check_images(images, "images")
    augment.check_images(test_images, "test_images")
    _check_labels(labels, "labels", len(images))
    _check_labels(test_labels, "test_labels", len(test_images))
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1; got epochs={epochs}, batch_size={batch_size}")
    device = torch.device(device) if device is not None else _module_device(backbone)
    num_classes = num_classes or _num_classes(labels, test_labels)
    backbone = copy.deepcopy(backbone) if copy_backbone else backbone
    head = nn.Linear(backbone.feature_dim, num_classes)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model = nn.Sequential(backbone, head).to(device)
    optimizer = torch.optim.AdamW([
        {"params": backbone.parameters(), "lr": lr * backbone_lr_scale, "base_lr": lr * backbone_lr_scale},
        {"params": head.parameters(), "lr": lr, "base_lr": lr},
    ], weight_decay=weight_decay)
    precision = resolve_precision("auto", device)
    scaler = make_grad_scaler(precision, device)

    images, labels = images.to(device), labels.to(device)
    steps_per_epoch = -(-len(images) // batch_size)
    total_steps = epochs * steps_per_epoch
    losses = []
    model.train()
    bar = tqdm(total=total_steps, desc="fine-tune", disable=not progress, leave=False)
    for step in range(total_steps):
        epoch, i = divmod(step, steps_per_epoch)
        if i == 0:
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(
                derived_seed(seed, "epoch", epoch))).to(device)
        index = order[i * batch_size:(i + 1) * batch_size]
        views = simple_augment(images[index], torch.Generator().manual_seed(derived_seed(seed, "step", step)))
        for group in optimizer.param_groups:
            group["lr"] = cosine_schedule(step, total_steps, 0, group["base_lr"], 0.0)
        with autocast(precision, device):
            loss = F.cross_entropy(model(views).float(), labels[index])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.update()
    bar.close()
    logits = extract_features(model, test_images, batch_size=256, device=device)
    return FineTuneResult(accuracy(logits.argmax(dim=1), test_labels), model, losses)


def train_from_scratch(backbone_factory: Callable[[], nn.Module], images: Tensor, labels: Tensor,
                       test_images: Tensor, test_labels: Tensor, **fine_tune_kwargs) -> FineTuneResult:
    """The supervised baseline: a freshly built backbone (``backbone_factory()``, same architecture
    as the pretrained one) trained with labels only, by ``fine_tune`` with one learning rate for all."""
    fine_tune_kwargs.update(backbone_lr_scale=1.0, copy_backbone=False)
    return fine_tune(backbone_factory(), images, labels, test_images, test_labels, **fine_tune_kwargs)


# ----------------------------------------------------------------------------------------------
# Label fractions


PROTOCOLS = ("knn", "linear", "fine_tune", "scratch")


@dataclass
class LabelFractionResult:
    """Rows of (protocol, fraction, num_labels, accuracy); ``table()`` -> {protocol: {fraction: accuracy}}."""

    rows: list[dict]

    def table(self) -> dict[str, dict[float, float]]:
        result: dict[str, dict[float, float]] = {}
        for row in self.rows:
            result.setdefault(row["protocol"], {})[row["fraction"]] = row["accuracy"]
        return result

    def __str__(self) -> str:
        table = self.table()
        fractions = sorted({row["fraction"] for row in self.rows})
        lines = ["| protocol | " + " | ".join(f"{f:.0%} labels" for f in fractions) + " |",
                 "|---|" + "---|" * len(fractions)]
        for protocol, by_fraction in table.items():
            cells = [f"{by_fraction[f]:.1%}" if f in by_fraction else "" for f in fractions]
            lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def label_fraction_experiment(backbone: nn.Module, train_set, test_set,
                              scratch_factory: Callable[[], nn.Module] | None = None,
                              fractions: Sequence[float] = (0.01, 0.1, 1.0),
                              protocols: Sequence[str] = PROTOCOLS, seed: int = 0, k: int = 200,
                              temperature: float = 0.1, probe_epochs: int = 30, epochs: int = 10,
                              lr: float = 1e-3, batch_size: int = 64, device: torch.device | str | None = None,
                              progress: bool = True) -> LabelFractionResult:
    """Accuracy of each protocol with a stratified, seeded fraction of the training labels.

    ``train_set`` / ``test_set`` are ``coursekit.data.ImageSet``s. kNN and the linear probe read
    features extracted once; ``fine_tune`` trains a copy of ``backbone``; ``scratch`` trains
    ``scratch_factory()`` (a new backbone of the same architecture) with labels only. The subset
    for a fraction is ``stratified_subset(train_set.labels, fraction, seed)``, the same for every
    protocol. ``probe_epochs`` trains the linear probe; ``epochs``, ``lr`` and ``batch_size`` the
    fine-tuning and the from-scratch baseline.
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; valid: {', '.join(PROTOCOLS)}")
    if "scratch" in protocols and scratch_factory is None:
        raise ValueError("protocol 'scratch' needs scratch_factory, a function that builds a fresh backbone")
    device = torch.device(device) if device is not None else _module_device(backbone)
    num_classes = _num_classes(train_set.labels, test_set.labels)
    train_features = test_features = None
    if {"knn", "linear"} & set(protocols):
        train_features = extract_features(backbone, train_set.images, device=device, progress=progress)
        test_features = extract_features(backbone, test_set.images, device=device, progress=progress)
    supervised = dict(num_classes=num_classes, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                      device=device, progress=progress)
    rows = []
    for fraction in fractions:
        subset = stratified_subset(train_set.labels, fraction, seed)
        images, labels = train_set.images[subset], train_set.labels[subset]
        for protocol in protocols:
            if protocol == "knn":
                acc = knn_accuracy(train_features[subset.to(device)], labels, test_features, test_set.labels,
                                   num_classes, k, temperature)
            elif protocol == "linear":
                acc = linear_probe(train_features[subset.to(device)], labels, test_features, test_set.labels,
                                   num_classes, epochs=probe_epochs, seed=seed).accuracy
            elif protocol == "fine_tune":
                acc = fine_tune(backbone, images, labels, test_set.images, test_set.labels, **supervised).accuracy
            else:
                acc = train_from_scratch(scratch_factory, images, labels, test_set.images, test_set.labels,
                                         **supervised).accuracy
            rows.append(dict(protocol=protocol, fraction=fraction, num_labels=len(subset), accuracy=acc))
    return LabelFractionResult(rows)


# ----------------------------------------------------------------------------------------------
# Closed-form linear probe (homework of lesson 07: ``probe.ridge_classifier``)


def ridge_classifier(features: Tensor, labels: Tensor, num_classes: int, l2: float) -> tuple[Tensor, Tensor]:
    """A linear classifier in closed form: ridge regression of one-hot labels on the features.

    With ``X`` the features [M, D], ``Y`` the one-hot labels [M, C], and both centered by their
    column means (so that the bias is fitted but not penalized)::

        W = (Xc^T Xc + l2 * I)^-1 Xc^T Yc        b = mean(Y) - mean(X) @ W

    Predict with ``(features @ W + b).argmax(dim=1)``. No learning rate, no epochs, no randomness:
    a deterministic probe that is often as good as logistic regression on standardized features.

    Returns:
        ``(weight [D, C], bias [C])`` in the features' floating dtype (computed in float64).
    """
    _check_features(features, "features")
    _check_labels(labels, "labels", len(features))
    x = features.double()
    y = F.one_hot(labels.to(features.device), num_classes).double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + l2 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    weight = torch.linalg.solve(gram, xc.T @ yc)  # [D, C]
    bias = y_mean - x_mean @ weight  # [C]
    return weight.to(features.dtype), bias.to(features.dtype)
