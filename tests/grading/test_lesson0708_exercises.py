"""Graders of lessons 07 and 08: the reference and other correct versions get full marks, typical
mistakes get fewer points with feedback that names the mistake."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coursekit.evaluate import patches, retrieval
from coursekit.grading import grade
from .grader_asserts import _caught, _full_marks


# ------------------------------------------------------------------------------------------------
# dinov2.cosine_top_k


def loop_top_k(queries, gallery, k):
    """A plain-Python version: cosine similarity per pair, sorted by hand."""
    rows = []
    for query in queries:
        sims = [float(torch.dot(query, item) / (query.norm() * item.norm())) for item in gallery]
        rows.append(sorted(range(len(gallery)), key=lambda i: -sims[i])[:k])
    return torch.tensor(rows, dtype=torch.long)


def numpy_top_k(queries, gallery, k):
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    g = gallery.numpy() / np.linalg.norm(gallery.numpy(), axis=1, keepdims=True)
    return torch.from_numpy(np.argsort(-(q @ g.T), axis=1)[:, :k].copy())


COSINE_TOP_K_CORRECT = [retrieval.cosine_top_k, loop_top_k, numpy_top_k]


@pytest.mark.parametrize("fn", COSINE_TOP_K_CORRECT)
def test_cosine_top_k_correct_versions_get_full_marks(fn):
    _full_marks("dinov2.cosine_top_k", fn)


def _cosine(q, g):
    return F.normalize(q, dim=1) @ F.normalize(g, dim=1).T


COSINE_TOP_K_MISTAKES = [
    (lambda q, g, k: (q @ g.T).topk(k, dim=1).indices, "not L2-normalized"),
    (lambda q, g, k: _cosine(q, g).topk(k, dim=1, largest=False).indices, "least similar"),
    (lambda q, g, k: _cosine(q, g).topk(k, dim=1).indices.sort(dim=1).values, "sorted by index"),
    (lambda q, g, k: torch.cdist(q, g).topk(k, dim=1, largest=False).indices, "Euclidean"),
    (lambda q, g, k: (F.normalize(q, dim=1) @ g.T).topk(k, dim=1).indices, "not L2-normalized"),
    (lambda q, g, k: _cosine(q, g).topk(k + 1, dim=1).indices[:, 1:], "skipped"),
    (lambda q, g, k: _cosine(q, g).topk(k, dim=1).indices.float(), "expected torch.int64"),
    (lambda q, g, k: _cosine(q, g).topk(k, dim=1).values, "expected torch.int64"),
]


@pytest.mark.parametrize("fn, words", COSINE_TOP_K_MISTAKES)
def test_cosine_top_k_mistakes_are_named(fn, words):
    _caught("dinov2.cosine_top_k", fn, words)


def test_cosine_top_k_stub_and_crash():
    def stub(q, g, k):
        raise NotImplementedError

    assert "not implemented" in grade("dinov2.cosine_top_k", stub).feedback[0]
    _caught("dinov2.cosine_top_k", lambda q, g, k: q.undefined, "AttributeError")


# ------------------------------------------------------------------------------------------------
# dinov2.foreground_mask


def eigh_mask(features, grid, threshold):
    """Another correct version: the covariance matrix's top eigenvector in float64 NumPy."""
    height, width = grid
    x = features.reshape(-1, features.shape[-1]).numpy().astype(np.float64)
    x = x - x.mean(axis=0)
    direction = np.linalg.eigh(x.T @ x)[1][:, -1]
    first = (x @ direction).reshape(len(features), height, width)
    border = np.ones((height, width), dtype=bool)
    border[1:-1, 1:-1] = False
    if first[:, border].mean() > first[:, ~border].mean():
        first = -first
    first = (first - first.min()) / (first.max() - first.min())
    return torch.from_numpy(first > threshold)


def pca_lowrank_mask(features, grid, threshold):
    tokens = features.reshape(-1, features.shape[-1])
    _, _, v = torch.pca_lowrank(tokens, q=min(6, tokens.shape[1]), center=True, niter=10)
    first = ((tokens - tokens.mean(0)) @ v[:, 0]).reshape(len(features), *grid)
    inner = first[:, 1:-1, 1:-1]
    border_mean = (first.sum() - inner.sum()) / (first.numel() - inner.numel())
    if border_mean > inner.mean():
        first = -first
    return (first - first.min()) / (first.max() - first.min()) > threshold


FOREGROUND_MASK_CORRECT = [patches.foreground_mask, eigh_mask, pca_lowrank_mask]


@pytest.mark.parametrize("fn", FOREGROUND_MASK_CORRECT)
def test_foreground_mask_correct_versions_get_full_marks(fn):
    _full_marks("dinov2.foreground_mask", fn)


def mask_written_with(center=True, fix_sign=True, per_image=False, column_major=False, smallest=False):
    """A foreground mask written the way a student might, with one mistake switched on; NumPy
    eigenvectors of the covariance, independent of the grader's own code."""
    def mask(features, grid, threshold):
        height, width = grid
        x = features.reshape(-1, features.shape[-1]).numpy().astype(np.float64)
        if center:
            x = x - x.mean(axis=0)
        direction = np.linalg.eigh(x.T @ x)[1][:, 0 if smallest else -1]
        projection = (x @ direction).reshape(len(features), -1)
        if column_major:
            first = projection.reshape(len(features), width, height).transpose(0, 2, 1)
        else:
            first = projection.reshape(len(features), height, width)
        border = np.ones((height, width), dtype=bool)
        border[1:-1, 1:-1] = False
        if fix_sign and first[:, border].mean() > first[:, ~border].mean():
            first = -first
        if per_image:
            low, high = first.min(axis=(1, 2), keepdims=True), first.max(axis=(1, 2), keepdims=True)
        else:
            low, high = first.min(), first.max()
        return torch.from_numpy((first - low) / (high - low) > threshold)

    return mask


def _in_place(features, grid, threshold):
    features -= features.mean(dim=(0, 1))
    return patches.foreground_mask(features, grid, threshold)


FOREGROUND_MASK_MISTAKES = [
    (mask_written_with(center=False), "not centered"),
    (mask_written_with(fix_sign=False), "sign"),
    (mask_written_with(per_image=True), "each image min-max scaled"),
    (mask_written_with(column_major=True), "column by column"),
    (mask_written_with(smallest=True), "last principal direction"),
    (lambda f, grid, t: patches.first_component_map(f, grid), "expected torch.bool"),
    (_in_place, "changed the patch features"),
]


@pytest.mark.parametrize("fn, words", FOREGROUND_MASK_MISTAKES)
def test_foreground_mask_mistakes_are_named(fn, words):
    _caught("dinov2.foreground_mask", fn, words)


def test_foreground_mask_finds_a_planted_object():
    features = torch.randn(2, 36, 8, generator=torch.Generator().manual_seed(0)) * 0.3
    grid = features.view(2, 6, 6, 8)
    grid[:, 2:4, 2:4] += 4.0  # the object in the middle
    mask = patches.foreground_mask(features, (6, 6))
    expected = torch.zeros(2, 6, 6, dtype=torch.bool)
    expected[:, 2:4, 2:4] = True
    assert torch.equal(mask, expected)


def test_tokens_to_grid_is_row_major():
    tokens = torch.arange(2 * 6 * 3).float().reshape(2, 6, 3)  # token i of image n: values n*18 + 3i ...
    grid = patches.tokens_to_feature_map(tokens, (2, 3))
    assert grid.shape == (2, 3, 2, 3)
    assert torch.equal(grid[1, :, 1, 2], tokens[1, 5]) and torch.equal(grid[0, :, 0, 1], tokens[0, 1])


def test_precision_at_k():
    indices = torch.tensor([[0, 1], [2, 0]])
    assert retrieval.precision_at_k(indices, torch.tensor([0, 1]), torch.tensor([0, 1, 1])) == 0.5


# ------------------------------------------------------------------------------------------------
# probe.ridge_classifier

from coursekit.evaluate import ridge_classifier  # noqa: E402


def numpy_ridge(x, labels, num_classes, l2):
    """Another correct version: a column of ones whose weight (the bias) is not penalized."""
    features = np.hstack([x.numpy().astype(np.float64), np.ones((len(x), 1))])
    penalty = l2 * np.eye(features.shape[1])
    penalty[-1, -1] = 0.0
    solution = np.linalg.solve(features.T @ features + penalty, features.T @ np.eye(num_classes)[labels.numpy()])
    return torch.from_numpy(solution[:-1]).float(), torch.from_numpy(solution[-1]).float()


def inverse_ridge(x, labels, num_classes, l2):
    y = F.one_hot(labels, num_classes).float()
    x_mean = x.mean(0)
    xc = x - x_mean
    weight = torch.linalg.inv(xc.T @ xc + l2 * torch.eye(x.shape[1])) @ xc.T @ (y - y.mean(0))
    return weight, y.mean(0) - x_mean @ weight


RIDGE_CORRECT = [ridge_classifier, numpy_ridge, inverse_ridge]


@pytest.mark.parametrize("fn", RIDGE_CORRECT)
def test_ridge_correct_versions_get_full_marks(fn):
    _full_marks("probe.ridge_classifier", fn)


def ridge_written_with(bias="unpenalized", l2_scale=1.0, l2_added=True):
    """A ridge probe written the way a student might (NumPy least squares with a column of ones),
    with one mistake switched on; independent of the grader's own code."""
    def ridge(x, labels, num_classes, l2):
        features = x.numpy().astype(np.float64)
        targets = np.eye(num_classes)[labels.numpy()]
        if bias != "none":
            features = np.hstack([features, np.ones((len(x), 1))])
        penalty = (l2 * l2_scale if l2_added else 0.0) * np.eye(features.shape[1])
        if bias in ("unpenalized", "mean of the labels only"):
            penalty[-1, -1] = 0.0
        solution = np.linalg.solve(features.T @ features + penalty, features.T @ targets)
        weight = solution[:x.shape[1]]
        if bias == "none":
            offset = np.zeros(num_classes)
        elif bias == "mean of the labels only":
            offset = targets.mean(axis=0)
        else:
            offset = solution[-1]
        return torch.from_numpy(weight).float(), torch.from_numpy(offset).float()

    return ridge


RIDGE_MISTAKES = [
    (ridge_written_with(bias="penalized"), "bias is penalized"),
    (ridge_written_with(bias="none"), "no bias at all"),
    (ridge_written_with(l2_added=False), "l2 not added"),
    (lambda x, y, c, l2: ridge_written_with(l2_scale=float(len(x)))(x, y, c, l2), "multiplied by the number of samples"),
    (ridge_written_with(bias="mean of the labels only"), "mean(Y) only"),
    (lambda *a: (ridge_classifier(*a)[0].T, ridge_classifier(*a)[1]), "[C, D]"),
    (lambda x, y, c, l2: ridge_classifier(x, y, int(y.max()) + 1, l2), "expected [5, 5]"),
]


@pytest.mark.parametrize("fn, words", RIDGE_MISTAKES)
def test_ridge_mistakes_are_named(fn, words):
    _caught("probe.ridge_classifier", fn, words)


def test_ridge_classifier_separates_clusters():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    x = torch.eye(3)[labels] * 4 + torch.randn(60, 3, generator=generator) * 0.3 + 5.0
    weight, bias = ridge_classifier(x, labels, 3, 1.0)
    assert torch.equal((x @ weight + bias).argmax(dim=1), labels)


# What tests/grading/test_graders.py checks every registered exercise has: other correct versions, named mistakes.
ALTERNATIVES = {"dinov2.cosine_top_k": COSINE_TOP_K_CORRECT, "dinov2.foreground_mask": FOREGROUND_MASK_CORRECT,
                "probe.ridge_classifier": RIDGE_CORRECT}
MISTAKES = [(exercise_id, fn, words) for exercise_id, cases in (
    ("dinov2.cosine_top_k", COSINE_TOP_K_MISTAKES), ("dinov2.foreground_mask", FOREGROUND_MASK_MISTAKES),
    ("probe.ridge_classifier", RIDGE_MISTAKES)) for fn, words in cases]
