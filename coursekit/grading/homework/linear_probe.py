"""Graded exercises of homework 07_linear_probe (evaluation protocols): ``probe.knn_predict`` and
``probe.ridge_classifier`` (the ids keep their published ``probe.`` prefix)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import SEEDS, call, expect_equal, expect_tensor, generator, randn, type_name
from ..core import CheckFailed, exercise

knn_exercise = exercise("probe.knn_predict", "knn_predict", reference="coursekit.evaluate:knn_predict")
HINT = ("compare directions (cosine), find the k most similar training samples, and let each vote for "
        "its label with a weight that grows quickly with similarity (exponential, sharpened by the "
        "temperature)")


def _votes(train_f, train_l, test_f, num_classes, k, temperature, normalize=True, weight="exp", nearest=True):
    """kNN predictions with a known mistake (raw features, other weights, the farthest neighbours)."""
    if normalize:
        train_f, test_f = F.normalize(train_f, dim=1), F.normalize(test_f, dim=1)
    similarity = test_f @ train_f.T
    top, index = similarity.topk(k, dim=1, largest=nearest)
    weights = {"exp": (top / temperature).exp(), "none": torch.ones_like(top), "similarity": top}[weight]
    votes = torch.zeros(len(test_f), num_classes).scatter_add_(1, train_l[index], weights)
    return votes.argmax(dim=1)


def _mistakes(train_f, train_l, test_f, num_classes, k, temperature):
    args = (train_f, train_l, test_f, num_classes, k, temperature)
    return {
        "unweighted votes (each neighbour's vote must be weighted by exp(sim / temperature))":
            lambda: _votes(*args, weight="none"),
        "votes weighted by the similarity itself instead of exp(sim / temperature)":
            lambda: _votes(*args, weight="similarity"),
        "features not L2-normalized (cosine similarity needs F.normalize)": lambda: _votes(*args, normalize=False),
        "the k farthest neighbours taken instead of the k nearest (topk must take the largest similarities)":
            lambda: _votes(*args, nearest=False),
        "votes use the labels of the first k training samples, not of the k nearest":
            lambda: _votes(train_f[:k], train_l[:k], test_f, num_classes, k, temperature),
    }


def _predict(knn_predict, train_f, train_l, test_f, num_classes, k, temperature):
    value = call(knn_predict, train_f.clone(), train_l.clone(), test_f.clone(), num_classes, k, temperature)
    return expect_tensor(value, "the predictions", shape=(len(test_f),), dtype=torch.long)


def _expect_predictions(knn_predict, train_f, train_l, test_f, num_classes, k, temperature, what):
    expected = knn_exercise.reference()(train_f, train_l, test_f, num_classes, k, temperature)
    value = _predict(knn_predict, train_f, train_l, test_f, num_classes, k, temperature)
    expect_equal(value, expected, _mistakes(train_f, train_l, test_f, num_classes, k, temperature), what=what)


def _clustered(seed: int, num_classes: int = 4, per_class: int = 10, tests: int = 12, dim: int = 8):
    """Overlapping class clusters: train features, labels and test features."""
    centers = randn(seed, num_classes, dim)
    train_l = torch.arange(num_classes).repeat_interleave(per_class)
    train_f = centers[train_l] + 0.9 * randn(seed + 1, len(train_l), dim)
    test_f = centers[torch.arange(tests) % num_classes] + 0.9 * randn(seed + 2, tests, dim)
    return train_f, train_l, test_f


def _unit_vectors(*angles: float) -> torch.Tensor:
    angles = torch.tensor(angles)
    return torch.stack([angles.cos(), angles.sin()], dim=1)


@knn_exercise.checks("returns a [N] long tensor of class indices", points=1, hint="return one predicted class index (an integer) per test sample")
def _returns_classes(knn_predict):
    train_f, train_l, test_f = _clustered(0)
    _predict(knn_predict, train_f, train_l, test_f, 4, 5, 0.1)


@knn_exercise.checks("matches weighted kNN on random clustered features (3 seeds, k = 5 and 20)", points=2, hint=HINT)
def _random_features(knn_predict):
    for seed in SEEDS:
        for k in (5, 20):
            _expect_predictions(knn_predict, *_clustered(seed), 4, k, 0.1, f"the predictions (seed {seed}, k = {k})")


@knn_exercise.checks("weights the votes by exp(similarity / temperature)", points=1,
                     hint="one very close neighbour must outvote two farther ones at a low temperature")
def _weighted_votes(knn_predict):
    # The test point is at angle 0: one neighbour of class 0 almost on it, two of class 1 farther, one far away.
    train_f = _unit_vectors(0.05, 0.9, -0.9, 3.0)
    train_l = torch.tensor([0, 1, 1, 2])
    test_f = _unit_vectors(0.0)
    _expect_predictions(knn_predict, train_f, train_l, test_f, 3, 3, 0.07, "the prediction with k = 3")


@knn_exercise.checks("uses cosine similarity (the length of a feature vector does not matter)", points=1,
                     hint="cosine similarity compares directions: the length of a feature vector must not matter")
def _cosine(knn_predict):
    train_f = _unit_vectors(0.05, 0.5) * torch.tensor([[1.0], [10.0]])
    train_l = torch.tensor([0, 1])
    _expect_predictions(knn_predict, train_f, train_l, _unit_vectors(0.0), 2, 1, 0.1, "the prediction with k = 1")


@knn_exercise.checks("does not depend on the order of the training set", points=1,
                     hint="select the neighbours with topk over all training samples, and use their own labels")
def _order_invariant(knn_predict):
    train_f, train_l, test_f = _clustered(5)
    order = torch.randperm(len(train_l), generator=generator(0))
    first = _predict(knn_predict, train_f, train_l, test_f, 4, 5, 0.1)
    shuffled = _predict(knn_predict, train_f[order], train_l[order], test_f, 4, 5, 0.1)
    if not torch.equal(first, shuffled):
        raise CheckFailed("shuffling the training set changes the predictions: the neighbours' labels must come "
                          "from the same rows as their similarities")


@knn_exercise.checks("k = 1 predicts the label of the nearest neighbour, also with more classes than labels present",
                     points=1, hint="num_classes sets the size of the vote table, whatever labels occur")
def _nearest_neighbour(knn_predict):
    train_f, train_l, test_f = _clustered(6)
    _expect_predictions(knn_predict, train_f, train_l, test_f, 7, 1, 0.1, "the predictions with k = 1")


# ---------------------------------------------------------------------------------------------
# probe.ridge_classifier: a linear probe in closed form (lesson 07 homework)

from .checks import expect_close  # noqa: E402 - this section was added after the kNN exercise

ridge_exercise = exercise("probe.ridge_classifier", "ridge_classifier", reference="coursekit.evaluate.linear:ridge_classifier")
RIDGE_HINT = ("fit one-hot labels by least squares with an l2 penalty on the weights only; centering features "
              "and labels lets the bias be fitted separately, without penalty")


def _ridge_variant(x, labels, num_classes, l2, intercept="centered", l2_scale=1.0, bias_shift=True):
    """Ridge regression of one-hot labels with a known mistake."""
    x, y = x.double(), F.one_hot(labels, num_classes).double()
    if intercept == "penalized":  # a column of ones, regularized like every other weight
        ones = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        full = torch.linalg.solve(ones.T @ ones + l2 * l2_scale * torch.eye(ones.shape[1], dtype=x.dtype), ones.T @ y)
        return full[:-1], full[-1]
    if intercept == "none":
        weight = torch.linalg.solve(x.T @ x + l2 * l2_scale * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
        return weight, torch.zeros(num_classes, dtype=x.dtype)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    weight = torch.linalg.solve(xc.T @ xc + l2 * l2_scale * torch.eye(x.shape[1], dtype=x.dtype), xc.T @ yc)
    return weight, (y_mean - x_mean @ weight) if bias_shift else y_mean


def _ridge_mistakes(x, labels, num_classes, l2):
    args = (x, labels, num_classes, l2)
    return {
        "the bias is penalized by l2 (a column of ones in X is regularized too; center X and Y instead)":
            lambda: _ridge_variant(*args, intercept="penalized"),
        "no bias at all (center X and Y, then b = mean(Y) - mean(X) @ W)": lambda: _ridge_variant(*args, intercept="none"),
        "l2 not added to Xc^T Xc": lambda: _ridge_variant(x, labels, num_classes, 0.0),
        "l2 multiplied by the number of samples (use l2 * I as it is)":
            lambda: _ridge_variant(*args, l2_scale=float(len(x))),
        "the bias is mean(Y) only (subtract mean(X) @ W from it)": lambda: _ridge_variant(*args, bias_shift=False),
    }


def _ridge_call(ridge_classifier, x, labels, num_classes, l2):
    value = call(ridge_classifier, x.clone(), labels.clone(), num_classes, l2)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"expected a pair (weight, bias), got {type_name(value)}")
    weight = expect_tensor(value[0], "the weight", floating=True)
    bias = expect_tensor(value[1], "the bias", floating=True)
    dim = x.shape[1]
    if tuple(weight.shape) == (num_classes, dim) and num_classes != dim:
        raise CheckFailed(f"the weight has shape [{num_classes}, {dim}] = [C, D]: return it as [D, C], so that "
                          "features @ weight gives the class scores")
    expect_tensor(weight, "the weight", shape=(dim, num_classes))
    expect_tensor(bias, "the bias", shape=(num_classes,))
    return weight, bias


def _expect_ridge(ridge_classifier, x, labels, num_classes, l2, what):
    weight, bias = _ridge_call(ridge_classifier, x, labels, num_classes, l2)
    expected_weight, expected_bias = ridge_exercise.reference()(x.double(), labels, num_classes, l2)
    mistakes = _ridge_mistakes(x, labels, num_classes, l2)
    expect_close(weight, expected_weight, {name: (lambda f=f: f()[0]) for name, f in mistakes.items()},
                 what=f"the weight ({what})", atol=1e-4, rtol=1e-3)
    expect_close(bias, expected_bias, {name: (lambda f=f: f()[1]) for name, f in mistakes.items()},
                 what=f"the bias ({what})", atol=1e-4, rtol=1e-3)


def _shifted_clusters(seed: int, num_classes: int = 3, per_class: int = 12, dim: int = 5):
    """Class clusters away from the origin (so that a missing bias matters)."""
    train_f, train_l, _ = _clustered(seed, num_classes, per_class, 1, dim)
    return train_f + 2.0, train_l


@ridge_exercise.checks("returns (weight [D, C], bias [C]) as float tensors", points=1,
                       hint="return weight, bias with weight of shape [D, num_classes]")
def _ridge_shapes(ridge_classifier):
    x, labels = _shifted_clusters(0)
    _ridge_call(ridge_classifier, x, labels, 3, 1.0)


@ridge_exercise.checks("matches closed-form ridge on a small fixed example", points=2, hint=RIDGE_HINT)
def _ridge_fixed(ridge_classifier):
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 4.0], [5.0, 5.0], [0.0, 1.0], [4.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    _expect_ridge(ridge_classifier, x, labels, 3, 2.0, "fixed example, l2 = 2")


@ridge_exercise.checks("matches closed-form ridge on random clusters (3 seeds, l2 = 0.1 and 10)", points=2,
                       hint=RIDGE_HINT)
def _ridge_random(ridge_classifier):
    for seed in SEEDS:
        x, labels = _shifted_clusters(seed)
        for l2 in (0.1, 10.0):
            _expect_ridge(ridge_classifier, x, labels, 3, l2, f"seed {seed}, l2 = {l2:g}")


@ridge_exercise.checks("the bias is not penalized: shifting all features changes only the bias", points=1,
                       hint="center X and Y so that the bias drops out of the penalized problem")
def _ridge_shift(ridge_classifier):
    x, labels = _shifted_clusters(4)
    weight, bias = _ridge_call(ridge_classifier, x, labels, 3, 5.0)
    shifted_weight, shifted_bias = _ridge_call(ridge_classifier, x + 7.0, labels, 3, 5.0)
    if not torch.allclose(weight.double(), shifted_weight.double(), atol=1e-4, rtol=1e-3):
        raise CheckFailed("adding 7 to every feature changed the weight: the bias must not be regularized "
                          "(fit it by centering X and Y)")
    scores, shifted_scores = x.double() @ weight.double() + bias.double(), (x + 7.0).double() @ shifted_weight.double() + shifted_bias.double()
    if not torch.allclose(scores, shifted_scores, atol=1e-3, rtol=1e-3):
        raise CheckFailed("after shifting every feature by 7 the class scores changed: the bias should absorb the shift")


@ridge_exercise.checks("uses num_classes, also when a class has no sample", points=1,
                       hint="there are num_classes classes, even when some have no sample")
def _ridge_missing_class(ridge_classifier):
    x, labels = _shifted_clusters(5)
    _expect_ridge(ridge_classifier, x, labels, 5, 1.0, "5 classes, two of them absent")
