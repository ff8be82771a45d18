"""A few labels per class: how good are frozen features when labels are scarce?

The label bottleneck of lesson 01 is the reason self-supervised learning exists, so the course
scores features the way they are used when labels are scarce: ``per_class`` labeled images of
every class (10 or 100), drawn ``subsets`` times with different seeds, a protocol trained on them,
the accuracy on the whole test set, the mean and spread over the draws (one draw of 10 images per
class is noisy: which 10 matters as much as the features).
"""
from __future__ import annotations

import statistics

from torch import Tensor

from coursekit.data.subsets import per_class_subset
from coursekit.evaluate.features import check_features, check_labels, num_classes_of
from coursekit.evaluate.knn import knn_accuracy
from coursekit.evaluate.linear import linear_probe

FEW_LABEL_PROTOCOLS = ("knn", "linear")


def few_label_accuracies(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                         per_class: int, protocol: str = "linear", subsets: int = 5,
                         num_classes: int | None = None) -> list[float]:
    """Test accuracy of ``protocol`` trained on ``per_class`` labeled images per class, for each of
    ``subsets`` draws (seeds 0, 1, ...): "linear" is ``linear_probe`` (its lr and weight decay picked
    on a held-out fifth of the draw), "knn" is ``knn_accuracy`` (k = 200, at most ``per_class``)."""
    if protocol not in FEW_LABEL_PROTOCOLS:
        raise ValueError(f"protocol must be one of {FEW_LABEL_PROTOCOLS}; got {protocol!r}")
    check_features(train_features, "train_features")
    check_labels(train_labels, "train_labels", len(train_features))
    num_classes = num_classes or num_classes_of(train_labels, test_labels)
    scores = []
    for seed in range(subsets):
        index = per_class_subset(train_labels, per_class, seed).to(train_features.device)
        features, labels = train_features[index], train_labels.to(train_features.device)[index]
        if protocol == "linear":
            scores.append(linear_probe(features, labels, test_features, test_labels, num_classes, seed=seed).accuracy)
        else:
            scores.append(knn_accuracy(features, labels, test_features, test_labels, num_classes))
    return scores


def mean_and_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
