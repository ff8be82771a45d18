"""Linear probes on frozen, cached features: logistic regression with a small held-out search,
and ridge regression in closed form (the homework of lesson 07)."""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.data.subsets import stratified_subset
from coursekit.engine.progress import progress_bar
from coursekit.engine.optim import create_optimizer
from coursekit.engine.supervised import train_supervised
from coursekit.evaluate.features import check_features, check_labels, num_classes_of
from coursekit.evaluate.knn import accuracy


@dataclass
class ProbeResult:
    """Test accuracy of the linear probe and the hyperparameters the held-out search chose.

    ``search`` maps (lr, weight_decay) to the held-out accuracy of that pair. ``classifier`` is the
    probe itself, an nn.Linear(D, C) on the standardized features ``(x - mean) / std``;
    ``as_head()`` folds the standardization into it.
    """

    accuracy: float
    lr: float
    weight_decay: float
    val_accuracy: float
    search: dict = field(default_factory=dict)
    # the trained probe, kept out of == and repr: results compare by their numbers
    classifier: nn.Linear | None = field(default=None, compare=False, repr=False)
    mean: Tensor | None = field(default=None, compare=False, repr=False)
    std: Tensor | None = field(default=None, compare=False, repr=False)

    def predict(self, features: Tensor) -> Tensor:
        """Class predictions long [N] for raw features [N, D]."""
        with torch.no_grad():
            return self.classifier((features.to(self.mean.device) - self.mean) / self.std).argmax(dim=1)

    def as_head(self) -> nn.Linear:
        """The probe as one nn.Linear(D, C) on the raw features: ``W (x - mean) / std + b`` is
        ``(W / std) x + (b - (W / std) mean)``, the head that fine-tuning starts from (LP-FT)."""
        # skip_init: nothing drawn from the global generator for weights that are overwritten anyway
        head = nn.utils.skip_init(nn.Linear, self.classifier.in_features, self.classifier.out_features,
                                  device=self.mean.device)
        with torch.no_grad():
            weight = self.classifier.weight / self.std  # [C, D]
            head.weight.copy_(weight)
            head.bias.copy_(self.classifier.bias - weight @ self.mean)
        return head


def train_linear(features: Tensor, labels: Tensor, num_classes: int, lr: float, weight_decay: float,
                 epochs: int, batch_size: int, seed: int, precision: str = "auto",
                 progress: bool = False) -> nn.Linear:
    """Logistic regression on features [M, D]: a zero-initialized nn.Linear(D, num_classes)
    trained with Adam (L2 ``weight_decay``) and a cosine-decaying LR over ``epochs`` by
    ``engine.supervised.train_supervised`` (mixed precision on CUDA with ``precision="auto"``)."""
    device = features.device
    # skip_init: no random initialization to overwrite, so the probe draws nothing from torch's global
    # generator (a method built after a random-init probe gets the same weights as one built without it)
    classifier = nn.utils.skip_init(nn.Linear, features.shape[1], num_classes, device=device)
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = create_optimizer([{"params": classifier.parameters()}], "adam", lr, weight_decay, device=device)

    def batch_loss(step: int, index: Tensor) -> Tensor:
        return F.cross_entropy(classifier(features[index]).float(), labels[index])

    train_supervised(classifier, len(features), batch_loss, optimizer, epochs, batch_size, seed, device, precision,
                     cosine=True, desc="linear probe",
                     progress=progress)
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


def fit_linear_probe(features: Tensor, labels: Tensor, num_classes: int, lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
                     weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2), epochs: int = 30, batch_size: int = 512,
                     val_fraction: float = 0.2, seed: int = 0, precision: str = "auto",
                     progress: bool = False) -> ProbeResult:
    """The linear probe trained on frozen features [M, D], not yet scored (``accuracy`` is nan).

    Features are standardized with their mean and std. Every (lr, weight_decay) pair is trained on
    the features less a stratified held-out ``val_fraction`` and scored on the held-out part; the
    best pair is retrained on all the features. Deterministic given ``seed``.
    """
    check_features(features, "features")
    check_labels(labels, "labels", len(features))
    mean, std = features.mean(dim=0), features.std(dim=0, correction=0).clamp_min(1e-6)
    x, y = (features - mean) / std, labels.to(features.device)
    fit_index, val_index = _holdout_split(labels, val_fraction, seed)
    fit_index, val_index = fit_index.to(x.device), val_index.to(x.device)

    search = {}
    pairs = list(itertools.product(lrs, weight_decays))
    bar = progress_bar(len(pairs), "probe search", progress)
    for lr, weight_decay in pairs:
        classifier = train_linear(x[fit_index], y[fit_index], num_classes, lr, weight_decay, epochs, batch_size, seed,
                                  precision)
        with torch.no_grad():
            predictions = classifier(x[val_index]).argmax(dim=1)
        search[(lr, weight_decay)] = accuracy(predictions, y[val_index]) if len(val_index) else 0.0
        bar.update()
    bar.close()
    (lr, weight_decay), val_accuracy = max(search.items(), key=lambda item: item[1])  # first best wins ties

    classifier = train_linear(x, y, num_classes, lr, weight_decay, epochs, batch_size, seed, precision)
    return ProbeResult(float("nan"), lr, weight_decay, val_accuracy, search, classifier, mean, std)


def linear_probe(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 num_classes: int | None = None, lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
                 weight_decays: Sequence[float] = (0.0, 1e-4, 1e-2), epochs: int = 30,
                 batch_size: int = 512, val_fraction: float = 0.2, seed: int = 0,
                 progress: bool = False) -> ProbeResult:
    """Linear probe: logistic regression on frozen features [M, D] -> ProbeResult.

    ``fit_linear_probe`` (standardized features, a held-out search of lr and weight decay, the best
    pair retrained on all training features), then scored on the test features. Deterministic given ``seed``.
    """
    check_features(test_features, "test_features")
    check_labels(test_labels, "test_labels", len(test_features))
    num_classes = num_classes or num_classes_of(train_labels, test_labels)
    result = fit_linear_probe(train_features, train_labels, num_classes, lrs, weight_decays, epochs, batch_size,
                              val_fraction, seed, progress=progress)
    result.accuracy = accuracy(result.predict(test_features), test_labels)
    return result


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
    check_features(features, "features")
    check_labels(labels, "labels", len(features))
    x = features.double()
    y = F.one_hot(labels.to(features.device), num_classes).double()
    x_mean, y_mean = x.mean(dim=0), y.mean(dim=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + l2 * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    weight = torch.linalg.solve(gram, xc.T @ yc)  # [D, C]
    bias = y_mean - x_mean @ weight  # [C]
    return weight.to(features.dtype), bias.to(features.dtype)
