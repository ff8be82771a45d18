"""Label fractions: lesson 07's table, every protocol with 1%, 10% and 100% of the labels.

One table, row -> protocol -> fraction -> test accuracy, for several backbones at once: the raw
pixels, each backbone frozen under kNN and the linear probe, the backbones asked for fine-tuned, and
the supervised baseline trained with the labels only. Lesson 07 computes it live when the runs of
lessons 02-06 are in the cache; ``benchmarks/label_fractions.py`` computes it with the same call and
stores it (``table_to_json``), so that the lesson can show it with an empty cache.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from coursekit.data.subsets import stratified_subset
from coursekit.evaluate.features import extract_features, num_classes_of, pixel_features
from coursekit.evaluate.finetune import fine_tune, train_from_scratch
from coursekit.evaluate.knn import knn_accuracy
from coursekit.evaluate.linear import linear_probe

FRACTIONS = (0.01, 0.1, 1.0)
PROTOCOLS = ("knn", "linear", "fine_tune", "supervised")
RAW_PIXELS = "raw pixels"
SUPERVISED = "supervised"

Table = dict[str, dict[str, dict[float, float]]]  # row -> protocol -> fraction -> accuracy


def label_fraction_experiment(backbones: dict[str, nn.Module], train_set, test_set,
                              fractions: Sequence[float] = FRACTIONS, *, fine_tune_rows: Sequence[str] = (),
                              fine_tune_steps: int = 0, scratch_factory: Callable[[], nn.Module] | None = None,
                              scratch_epochs: Callable[[int], int] | None = None, measured: Table | None = None,
                              probe_search: dict | None = None, seed: int = 0,
                              device: torch.device | str = "cpu", progress: bool = True) -> Table:
    """Test accuracy of every row and protocol with a stratified, seeded fraction of the training labels.

    Rows: ``"raw pixels"`` (the normalized pixels, no network) and every backbone of ``backbones``
    (name -> module), frozen, under ``"knn"`` (``knn_accuracy``) and ``"linear"`` (``linear_probe``
    with ``probe_search``'s learning rates and weight decays); the backbones named in
    ``fine_tune_rows`` also under ``"fine_tune"`` (``fine_tune``: LP-FT, its 10 epochs and at least
    ``fine_tune_steps`` steps); with ``scratch_factory``, a ``"supervised"`` row: a fresh backbone
    trained with the labels only for ``scratch_epochs(number of labels)`` epochs (``train_from_scratch``).
    ``measured`` holds accuracies already measured (same layout), used as they are instead of training
    again. The subset of a fraction is ``stratified_subset(train_set.labels, fraction, seed)``, the same
    for every row and protocol. ``train_set`` / ``test_set`` are ``coursekit.data.ImageSet``s.
    """
    unknown = [name for name in fine_tune_rows if name not in backbones]
    if unknown:
        raise ValueError(f"fine_tune_rows {unknown} are not among the backbones: {', '.join(backbones)}")
    if scratch_factory is not None and scratch_epochs is None:
        raise ValueError("a supervised row needs scratch_epochs, a function of the number of labels")
    num_classes = num_classes_of(train_set.labels, test_set.labels)
    subsets = {fraction: stratified_subset(train_set.labels, fraction, seed) for fraction in fractions}
    measured = measured or {}
    features = {RAW_PIXELS: (pixel_features(train_set.images), pixel_features(test_set.images))}
    for name, backbone in backbones.items():
        features[name] = (extract_features(backbone, train_set.images, device=device),
                          extract_features(backbone, test_set.images, device=device))
    table: Table = {}
    for name, (train_features, test_features) in features.items():
        table[name] = {"knn": {}, "linear": {}}
        for fraction, subset in subsets.items():
            index, labels = subset.to(train_features.device), train_set.labels[subset]
            table[name]["knn"][fraction] = knn_accuracy(train_features[index], labels, test_features,
                                                        test_set.labels, num_classes)
            table[name]["linear"][fraction] = linear_probe(train_features[index], labels, test_features,
                                                           test_set.labels, num_classes,
                                                           **(probe_search or {})).accuracy
    supervised = dict(num_classes=num_classes, device=device, progress=progress)
    for name in fine_tune_rows:
        table[name]["fine_tune"] = {}
        for fraction, subset in subsets.items():
            known = measured.get(name, {}).get("fine_tune", {})
            table[name]["fine_tune"][fraction] = known[fraction] if fraction in known else fine_tune(
                backbones[name], train_set.images[subset], train_set.labels[subset], test_set.images,
                test_set.labels, min_steps=fine_tune_steps, **supervised).accuracy
    if scratch_factory is not None:
        table[SUPERVISED] = {"supervised": {
            fraction: train_from_scratch(scratch_factory, train_set.images[subset], train_set.labels[subset],
                                         test_set.images, test_set.labels, epochs=scratch_epochs(len(subset)),
                                         **supervised).accuracy
            for fraction, subset in subsets.items()}}
    return table


def table_to_json(table: Table) -> dict:
    """The table with its fractions as text keys ("0.01"), as JSON needs them."""
    return {row: {protocol: {f"{fraction:g}": accuracy for fraction, accuracy in by_fraction.items()}
                  for protocol, by_fraction in protocols.items()}
            for row, protocols in table.items()}


def table_from_json(data: dict) -> Table:
    """``table_to_json``'s inverse: fractions back to floats."""
    return {row: {protocol: {float(fraction): accuracy for fraction, accuracy in by_fraction.items()}
                  for protocol, by_fraction in protocols.items()}
            for row, protocols in data.items()}
