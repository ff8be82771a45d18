"""Graded exercises of lesson 08 (DINOv2): ``dinov2.cosine_top_k`` and ``dinov2.foreground_mask``.

The references are ``coursekit.evaluate.retrieval.cosine_top_k`` and ``coursekit.evaluate.patches.foreground_mask``,
the code the lesson itself runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import SEEDS, call, expect_equal, expect_tensor, generator, randn
from ..core import CheckFailed, exercise

top_k_exercise = exercise("dinov2.cosine_top_k", "cosine_top_k", reference="coursekit.evaluate.retrieval:cosine_top_k")
mask_exercise = exercise("dinov2.foreground_mask", "foreground_mask", reference="coursekit.evaluate.patches:foreground_mask")

TOP_K_HINT = "rank the gallery by the angle to each query (cosine similarity) and keep the k best, best first"
MASK_HINT = ("project every patch token on the direction along which the tokens vary most (after centering), "
             "put the projections back on the image grid, orient them so that the border is background, scale "
             "them to [0, 1] over all images together, and threshold")


# ---------------------------------------------------------------------------------------------
# dinov2.cosine_top_k


def _top_k_mistakes(queries, gallery, k):
    def cosine():
        return F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T

    return {
        "gallery features not L2-normalized (raw dot products rank long gallery vectors first; use F.normalize)":
            lambda: (queries @ gallery.T).topk(k, dim=1).indices,
        "the k least similar taken instead of the k most similar (topk must take the largest similarities)":
            lambda: cosine().topk(k, dim=1, largest=False).indices,
        "the indices are sorted by index, not by similarity (the most similar must come first)":
            lambda: cosine().topk(k, dim=1).indices.sort(dim=1).values,
        "Euclidean distance on raw features used instead of cosine similarity":
            lambda: torch.cdist(queries, gallery).topk(k, dim=1, largest=False).indices,
        "the most similar gallery image skipped (drop the first hit only when the query is itself in the gallery)":
            lambda: cosine().topk(k + 1, dim=1).indices[:, 1:],
        "the similarity matrix is transposed: for each gallery row its closest queries":
            lambda: cosine().T.topk(k, dim=1).indices,
    }


def _top_k(cosine_top_k, queries, gallery, k):
    value = call(cosine_top_k, queries.clone(), gallery.clone(), k)
    return expect_tensor(value, "the indices", shape=(len(queries), k), dtype=torch.long)


def _expect_top_k(cosine_top_k, queries, gallery, k, what):
    expected = top_k_exercise.reference()(queries, gallery, k)
    value = _top_k(cosine_top_k, queries, gallery, k)
    expect_equal(value, expected, _top_k_mistakes(queries, gallery, k), what=what)


def _scaled_rows(seed: int, rows: int, dim: int):
    """Random directions with very different lengths, so that dot products and cosines rank differently."""
    lengths = torch.linspace(0.2, 5.0, rows)[torch.randperm(rows, generator=generator(seed))]
    return randn(seed, rows, dim) * lengths[:, None]


@top_k_exercise.checks("returns a [Q, k] long tensor of gallery indices", points=1,
                       hint="return the gallery indices (integers), one row of k per query")
def _returns_indices(cosine_top_k):
    _top_k(cosine_top_k, randn(0, 3, 8), randn(1, 10, 8), 4)


@top_k_exercise.checks("matches cosine top-k on random features (3 seeds, k = 1, 3 and 7)", points=2, hint=TOP_K_HINT)
def _random_features(cosine_top_k):
    for seed in SEEDS:
        queries, gallery = _scaled_rows(seed, 5, 16), _scaled_rows(seed + 10, 20, 16)
        for k in (1, 3, 7):
            _expect_top_k(cosine_top_k, queries, gallery, k, f"the indices (seed {seed}, k = {k})")


@top_k_exercise.checks("ranks by cosine similarity: the length of a feature vector does not matter", points=1,
                       hint="cosine similarity compares directions: the length of a feature vector must not matter")
def _cosine(cosine_top_k):
    # gallery row 0 points almost like the query but is short; row 1 is long but at 60 degrees
    queries = torch.tensor([[1.0, 0.0]])
    gallery = torch.tensor([[0.1, 0.01], [5.0, 8.66], [-3.0, 0.5]])
    _expect_top_k(cosine_top_k, queries, gallery, 2, "the indices on the two-dimensional example")


@top_k_exercise.checks("puts the most similar gallery image first", points=1,
                       hint="topk returns the largest values first; do not sort the indices afterwards")
def _order(cosine_top_k):
    angles = torch.tensor([2.0, 0.1, 1.0, 0.5, 3.0])  # gallery at these angles, the query at angle 0
    gallery = torch.stack([angles.cos(), angles.sin()], dim=1)
    value = _top_k(cosine_top_k, torch.tensor([[1.0, 0.0]]), gallery, 4)
    if value.tolist() != [[1, 3, 2, 0]]:
        raise CheckFailed(f"for a query at angle 0 and gallery images at angles {angles.tolist()} the ranking "
                          f"should be [1, 3, 2, 0] (smallest angle first); got {value.tolist()[0]}")


@top_k_exercise.checks("works for one query, and for k equal to the gallery size", points=1,
                       hint="nothing in the code should assume Q == G or k < G")
def _edge_cases(cosine_top_k):
    gallery = _scaled_rows(7, 6, 4)
    _expect_top_k(cosine_top_k, _scaled_rows(8, 1, 4), gallery, 6, "the indices with k = G")
    _expect_top_k(cosine_top_k, _scaled_rows(9, 9, 4), gallery, 2, "the indices with more queries than gallery images")


# ---------------------------------------------------------------------------------------------
# dinov2.foreground_mask


def _first_component(features, grid, center=True, fix_sign=True, per_image=False, column_major=False, index=0):
    """The scaled first-component map with a known mistake."""
    count, length, dim = features.shape
    height, width = grid
    tokens = features.reshape(count * length, dim)
    centered = tokens - tokens.mean(dim=0) if center else tokens
    direction = torch.linalg.svd(centered, full_matrices=False).Vh[index]
    projection = (centered @ direction).reshape(count, length)
    if column_major:
        first = projection.reshape(count, width, height).transpose(1, 2)
    else:
        first = projection.reshape(count, height, width)
    if fix_sign:
        border = torch.ones(height, width, dtype=torch.bool)
        border[1:-1, 1:-1] = False
        if first[:, border].mean() > first[:, ~border].mean():
            first = -first
    if per_image:
        lows, highs = first.amin(dim=(1, 2), keepdim=True), first.amax(dim=(1, 2), keepdim=True)
        return (first - lows) / (highs - lows)
    return (first - first.min()) / (first.max() - first.min())


def _mask_mistakes(features, grid, threshold):
    def mask(**mistake):
        return lambda: _first_component(features, grid, **mistake) > threshold

    return {
        "the tokens are not centered before the principal direction is computed (subtract the mean token)":
            mask(center=False),
        "the sign of the component is not fixed (flip it when the border patches have the larger mean)":
            mask(fix_sign=False),
        "each image min-max scaled on its own (scale over all patches of all images together)": mask(per_image=True),
        "the tokens are laid out column by column (token i belongs at row i // w, column i % w)":
            mask(column_major=True),
        "the last principal direction used instead of the first (Vh[0] is the direction of largest variance)":
            mask(index=-1),
        "the background is returned instead of the foreground (foreground is the component > threshold)":
            lambda: ~(_first_component(features, grid) > threshold),
    }


def _object_scene(seed: int, count: int = 3, grid=(5, 7), dim: int = 12):
    """Patch tokens of images with an 'object' blob near the middle on a noisy background."""
    height, width = grid
    draw = generator(seed)
    background, foreground = torch.randn(dim, generator=draw), torch.randn(dim, generator=draw) * 3
    features = background + 0.6 * torch.randn(count, height, width, dim, generator=draw)
    for i in range(count):
        top = 1 + int(torch.randint(0, height - 3, (1,), generator=draw))
        left = 1 + int(torch.randint(0, width - 3, (1,), generator=draw))
        features[i, top:top + 2, left:left + 2] += foreground
    return features.reshape(count, height * width, dim)


def _expect_mask(foreground_mask, features, grid, threshold, what):
    count, height, width = len(features), grid[0], grid[1]
    value = call(foreground_mask, features.clone(), grid, threshold)
    value = expect_tensor(value, "the mask", shape=(count, height, width), dtype=torch.bool)
    from coursekit.evaluate.patches import first_component_map  # the reference's own scaled component

    scaled = first_component_map(features.double(), grid)
    decided = (scaled - threshold).abs() > 1e-4  # patches too close to the threshold may go either way
    expected = scaled > threshold
    if torch.equal(value[decided], expected[decided]):
        return
    for name, mistaken in _mask_mistakes(features.double(), grid, threshold).items():
        if torch.equal(mistaken()[decided], value[decided]):
            raise CheckFailed(f"{what} is wrong: {name}")
    wrong = (value[decided] != expected[decided]).sum().item()
    raise CheckFailed(f"{what} is wrong: {wrong} of {int(decided.sum())} patches are classified differently")


@mask_exercise.checks("returns a bool mask [N, h, w]", points=1, hint="reshape to (N, h, w) and compare: x > threshold")
def _returns_mask(foreground_mask):
    value = call(foreground_mask, _object_scene(0), (5, 7), 0.5)
    expect_tensor(value, "the mask", shape=(3, 5, 7), dtype=torch.bool)


@mask_exercise.checks("finds the objects on images with an object on a noisy background (3 seeds)", points=2,
                      hint=MASK_HINT)
def _objects(foreground_mask):
    for seed in SEEDS:
        _expect_mask(foreground_mask, _object_scene(seed), (5, 7), 0.5, f"the mask (seed {seed})")


@mask_exercise.checks("matches the reference on random features, thresholds 0.3 and 0.6", points=2, hint=MASK_HINT)
def _random(foreground_mask):
    for seed in SEEDS:
        features = randn(seed, 2, 4 * 6, 10) + torch.linspace(-1, 1, 10)
        for threshold in (0.3, 0.6):
            _expect_mask(foreground_mask, features, (4, 6), threshold, f"the mask (seed {seed}, threshold {threshold})")


@mask_exercise.checks("does not depend on the sign the SVD returns (negating all features gives the same mask)",
                      points=1, hint="fix the sign with the border rule after projecting")
def _sign(foreground_mask):
    features = _object_scene(4)
    first = call(foreground_mask, features.clone(), (5, 7), 0.5)
    negated = call(foreground_mask, -features.clone(), (5, 7), 0.5)
    expect_tensor(first, "the mask", shape=(3, 5, 7), dtype=torch.bool)
    expect_tensor(negated, "the mask of the negated features", shape=(3, 5, 7), dtype=torch.bool)
    if not torch.equal(first, negated):
        raise CheckFailed("negating every feature flips the principal direction's sign and changes your mask: "
                          "choose the sign so that the border patches have the lower mean")


@mask_exercise.checks("leaves the input tensor unchanged", points=1,
                      hint="work on new tensors: in-place operations change the caller's features")
def _no_mutation(foreground_mask):
    features = _object_scene(5)
    before = features.clone()
    call(foreground_mask, features, (5, 7), 0.5)
    if not torch.equal(features, before):
        raise CheckFailed("your function changed the patch features it was given (an in-place operation)")
