"""Weighted k-nearest neighbours on frozen features: the evaluation that needs no training at all."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from coursekit.evaluate.features import check_features, check_labels, num_classes_of


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
    check_features(train_features, "train_features")
    check_features(test_features, "test_features")
    check_labels(train_labels, "train_labels", len(train_features))
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


def accuracy(predictions: Tensor, labels: Tensor) -> float:
    """Share of predictions equal to the labels, in [0, 1]."""
    return (predictions.cpu() == labels.cpu()).float().mean().item()


def knn_neighbours(train_labels: Tensor, k: int = 200) -> int:
    """The neighbours the kNN protocol uses: ``k``, but never more than the labeled images of the
    smallest class in the memory bank.

    Why: with k = 200 and 10 labeled images per class, every test image is outvoted by the 190
    images of other classes among its neighbours: the accuracy then measures the number of
    labels, not the features (lesson 07: random init fell from 42.3% with 1% of the labels to
    34.5% with 10%). Capped at the smallest class, the k nearest can all be of the right class.
    """
    counts = torch.bincount(train_labels.cpu())
    return max(1, min(k, int(counts[counts > 0].min()))) if len(train_labels) else k


def knn_accuracy(train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor,
                 num_classes: int | None = None, k: int = 200, temperature: float = 0.1) -> float:
    """Accuracy in [0, 1] of ``knn_predict`` on labeled test features (num_classes from the labels if None),
    with ``knn_neighbours(train_labels, k)`` neighbours: ``k``, at most the smallest class's images."""
    check_labels(test_labels, "test_labels", len(test_features))
    check_labels(train_labels, "train_labels", len(train_features))
    num_classes = num_classes or num_classes_of(train_labels, test_labels)
    predictions = knn_predict(train_features, train_labels, test_features, num_classes,
                              knn_neighbours(train_labels, k), temperature)
    return accuracy(predictions, test_labels)
