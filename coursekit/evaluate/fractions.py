"""Label fractions: every protocol with 1%, 10% and 100% of the labels, the experiment of lesson 07."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from coursekit.data.subsets import stratified_subset
from coursekit.engine.device import module_device
from coursekit.evaluate.features import extract_features, num_classes_of
from coursekit.evaluate.finetune import fine_tune, train_from_scratch
from coursekit.evaluate.knn import knn_accuracy
from coursekit.evaluate.linear import linear_probe


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
    device = torch.device(device) if device is not None else module_device(backbone)
    num_classes = num_classes_of(train_set.labels, test_set.labels)
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
