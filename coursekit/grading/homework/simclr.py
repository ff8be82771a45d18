"""Graded exercises of lesson 02 (SimCLR): ``simclr.nt_xent``, and the augmentation analysis:
``simclr.augmentation_pair_similarity``, ``simclr.overlap_matrix``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_gradient, expect_scalar,
                     expect_tensor, expect_value_first, gradients, randn, type_name)
from ..core import CheckFailed, exercise

nt_xent_exercise = exercise("simclr.nt_xent", "nt_xent", reference="coursekit.methods.simclr:nt_xent")
HINT = ("each of the 2N views is an anchor whose positive is the other view of its image; every other "
        "view is a negative, the anchor itself is not a candidate at all; compare directions (cosine), "
        "sharpened by the temperature")


def _mistaken_nt_xent(z1, z2, temperature, normalize=True, self_logit=None, z1_anchors_only=False):
    """NT-Xent as written with a known mistake: ``self_logit`` None keeps self-similarity,
    a number replaces it; ``normalize=False`` uses raw dot products."""
    z = torch.cat([z1, z2])
    if normalize:
        z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature
    if self_logit is not None:
        logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool), self_logit)
    n = len(z1)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    if z1_anchors_only:
        return F.cross_entropy(logits[:n], targets[:n])
    return F.cross_entropy(logits, targets)


def _mistakes(z1, z2, temperature):
    reference = nt_xent_exercise.reference()
    return {
        "self-similarity not excluded (mask the diagonal of the similarity matrix with -inf)":
            lambda: _mistaken_nt_xent(z1, z2, temperature, self_logit=None),
        "self-similarity set to 0 instead of excluded (use -inf, so it drops out of the softmax)":
            lambda: _mistaken_nt_xent(z1, z2, temperature, self_logit=0.0),
        "inputs not L2-normalized (cosine similarity needs F.normalize on z1 and z2)":
            lambda: _mistaken_nt_xent(z1, z2, temperature, normalize=False, self_logit=float("-inf")),
        "only the z1 views used as anchors (average over all 2N anchors)":
            lambda: _mistaken_nt_xent(z1, z2, temperature, self_logit=float("-inf"), z1_anchors_only=True),
        "divided by the temperature twice": lambda: reference(z1, z2, temperature ** 2),
        "temperature not applied": lambda: reference(z1, z2, 1.0),
        "summed over the anchors instead of averaged": lambda: reference(z1, z2, temperature) * 2 * len(z1),
    }


def _expect_reference_value(nt_xent, z1, z2, temperature, what):
    expected = nt_xent_exercise.reference()(z1, z2, temperature)
    value = expect_scalar(call(nt_xent, z1.clone(), z2.clone(), temperature))
    expect_close(value, expected, _mistakes(z1, z2, temperature), what=what)


@nt_xent_exercise.checks("returns a single number (0-dim float tensor)", points=1,
                         hint="the loss is one number: the average over all anchors")
def _returns_scalar(nt_xent):
    expect_scalar(call(nt_xent, randn(0, 4, 8), randn(1, 4, 8), 0.5))


@nt_xent_exercise.checks("matches NT-Xent on a small fixed example (N = 2)", points=2, hint=HINT)
def _fixed_example(nt_xent):
    z1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    z2 = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    _expect_reference_value(nt_xent, z1, z2, 0.5, "the loss on the fixed example")


@nt_xent_exercise.checks("matches NT-Xent on random inputs (3 seeds, temperatures 0.1 and 0.5)", points=3, hint=HINT)
def _random_inputs(nt_xent):
    for seed in SEEDS:
        for temperature in (0.1, 0.5):
            z1, z2 = randn(seed, 8, 16), randn(seed + 100, 8, 16)
            _expect_reference_value(nt_xent, z1, z2, temperature,
                                    f"the loss (seed {seed}, temperature {temperature})")


@nt_xent_exercise.checks("does not assume normalized inputs (scaling z1 and z2 leaves the loss unchanged)", points=1,
                         hint="the similarity is a cosine: the length of the embeddings must not matter")
def _scale_invariant(nt_xent):
    z1, z2 = F.normalize(randn(3, 6, 8), dim=1), F.normalize(randn(4, 6, 8), dim=1)
    unit = expect_scalar(call(nt_xent, z1.clone(), z2.clone(), 0.2))
    scaled = expect_scalar(call(nt_xent, 3.0 * z1, 0.5 * z2, 0.2))
    if not torch.isclose(unit.detach(), scaled.detach(), atol=1e-5, rtol=1e-4):
        raise CheckFailed("the loss changes when z1 and z2 are scaled: inputs not L2-normalized")


@nt_xent_exercise.checks("is symmetric in the two views: nt_xent(z1, z2) == nt_xent(z2, z1)", points=1,
                         hint="every one of the 2N views is an anchor, the z2 views as well as the z1 views")
def _symmetric(nt_xent):
    z1, z2 = randn(5, 6, 8), randn(6, 6, 8)
    forward = expect_scalar(call(nt_xent, z1.clone(), z2.clone(), 0.3))
    swapped = expect_scalar(call(nt_xent, z2.clone(), z1.clone(), 0.3))
    if not torch.isclose(forward.detach(), swapped.detach(), atol=1e-5, rtol=1e-4):
        raise CheckFailed("swapping z1 and z2 changes the loss: only one view's anchors are used")


@nt_xent_exercise.checks("gradients flow into both z1 and z2 and match the reference", points=1,
                         hint="both views are outputs of the network being trained: the loss must stay connected "
                              "to each of them")
def _gradients(nt_xent):
    z1, z2 = randn(7, 5, 8), randn(8, 5, 8)
    reference = nt_xent_exercise.reference()
    value, (grad_z1, grad_z2) = call_backward(nt_xent, z1.requires_grad_(), z2.requires_grad_(), 0.2)
    expect_value_first(expect_scalar(value), reference(z1, z2, 0.2))
    expect_carries_gradient(value)
    expected = gradients(lambda a, b: reference(a, b, 0.2), z1, z2)
    expect_gradient(grad_z1, expected[0], "z1")
    expect_gradient(grad_z2, expected[1], "z2")


@nt_xent_exercise.checks("handles a batch of one image (N = 1: a positive and no negatives)", points=1,
                         hint="nothing in the code should assume more than one image in the batch")
def _batch_of_one(nt_xent):
    _expect_reference_value(nt_xent, randn(9, 1, 4), randn(10, 1, 4), 0.5, "the loss for N = 1")


# ---------------------------------------------------------------------------------------------
# simclr.augmentation_pair_similarity (analysis exercise: which augmentation pairs are hardest)
# ---------------------------------------------------------------------------------------------

pair_exercise = exercise("simclr.augmentation_pair_similarity", "augmentation_pair_similarity",
                         reference="coursekit.lessons.analysis:augmentation_pair_similarity")
PAIR_HINT = ("for every pair of different augmentations, compare each image's two views by the angle between "
             "their features, then average over the images")


def _pair_inputs(seed: int, names=("crop", "color", "gray"), n: int = 6, d: int = 5) -> dict:
    """Features of n images under each augmentation: a shared part plus noise, at different scales."""
    base = randn(seed, n, d)
    return {name: (base + 0.8 * randn(seed + 10 * (i + 1), n, d)) * (1.0 + i) for i, name in enumerate(names)}


def _pair_values(result, keys) -> torch.Tensor:
    return torch.tensor([float(result[key]) for key in keys], dtype=torch.float64)


def _pair_mistakes(features: dict, keys) -> dict:
    def per_pair(score):
        return lambda: torch.tensor([float(score(features[a].double(), features[b].double())) for a, b in keys])

    def unit(x, dim=1):
        return F.normalize(x, dim=dim)

    return {
        "inputs not L2-normalized (mean dot product instead of cosine similarity)":
            per_pair(lambda a, b: (a * b).sum(1).mean()),
        "normalized along the wrong dimension (normalize each row, dim=1)":
            per_pair(lambda a, b: (unit(a, 0) * unit(b, 0)).sum(1).mean()),
        "cosine similarity of the mean features instead of the mean of the per-image similarities":
            per_pair(lambda a, b: F.cosine_similarity(a.mean(0), b.mean(0), dim=0)),
        "averaged over all pairs of images (i, j); compare each image only with itself (the diagonal)":
            per_pair(lambda a, b: (unit(a) @ unit(b).T).mean()),
        "summed over the images instead of averaged": per_pair(lambda a, b: (unit(a) * unit(b)).sum()),
        "distance instead of similarity": per_pair(lambda a, b: (unit(a) - unit(b)).norm(dim=1).mean()),
    }


def _expect_pairs(fn, features: dict, what: str) -> None:
    expected = pair_exercise.reference()(features)
    result = call(fn, {name: value.clone() for name, value in features.items()})
    if not isinstance(result, dict):
        raise CheckFailed(f"returned {type_name(result)}: return a dict {{(a, b): similarity}}")
    missing = [key for key in expected if key not in result]
    if missing:
        raise CheckFailed(f"{what}: the pair {missing[0]} is missing")
    keys = list(expected)
    try:
        actual = _pair_values(result, keys)
    except (TypeError, ValueError) as error:
        raise CheckFailed(f"{what}: a value could not be read as a number ({error})") from None
    expect_close(actual, _pair_values(expected, keys), _pair_mistakes(features, keys), what=what)


@pair_exercise.checks("returns one entry per pair of different augmentations, keyed (a, b) in order", points=1,
                      hint="each unordered pair of different augmentations once, in the order of the dict")
def _pair_keys(fn):
    features = _pair_inputs(0, names=("crop", "color", "gray", "flip"))
    result = call(fn, features)
    if not isinstance(result, dict):
        raise CheckFailed(f"returned {type_name(result)}: return a dict {{(a, b): similarity}}")
    expected = list(pair_exercise.reference()(features))
    keys = list(result)
    if any(isinstance(key, tuple) and len(key) == 2 and key[0] == key[1] for key in keys):
        raise CheckFailed("the result pairs an augmentation with itself: only pairs of different names")
    if len(keys) == 2 * len(expected):
        raise CheckFailed("both (a, b) and (b, a) are in the result: keep each pair once, a before b")
    if sorted(map(str, keys)) != sorted(map(str, expected)):
        raise CheckFailed(f"the keys are {keys[:3]}..., expected tuples like {expected[:3]}...")


@pair_exercise.checks("mean cosine similarity of the two views of each image, on a fixed example", points=2,
                      hint=PAIR_HINT)
def _pair_fixed(fn):
    features = {"a": torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]),
                "b": torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])}
    _expect_pairs(fn, features, "the similarity on the fixed example")


@pair_exercise.checks("matches on random features (3 seeds, 3 and 4 augmentations)", points=2, hint=PAIR_HINT)
def _pair_random(fn):
    for seed in SEEDS:
        _expect_pairs(fn, _pair_inputs(seed), f"the similarities (seed {seed})")
    _expect_pairs(fn, _pair_inputs(7, names=("w", "x", "y", "z"), n=9, d=3), "the similarities (4 augmentations)")


@pair_exercise.checks("values are Python floats", points=1,
                      hint="each value is a plain Python float, not a tensor")
def _pair_floats(fn):
    result = call(fn, _pair_inputs(3))
    if not isinstance(result, dict) or not result:
        raise CheckFailed("the result is not a non-empty dict")
    value = next(iter(result.values()))
    if not isinstance(value, float):
        raise CheckFailed(f"a value is a {type_name(value)}, expected a Python float (use .item())")


@pair_exercise.checks("handles a single image (N = 1) and leaves the features unchanged", points=1,
                      hint="average over the images, and leave the input features unchanged")
def _pair_edge(fn):
    features = _pair_inputs(4, n=1)
    copies = {name: value.clone() for name, value in features.items()}
    _expect_pairs(fn, features, "the similarities for N = 1")
    call(fn, features)
    if any(not torch.equal(features[name], copies[name]) for name in features):
        raise CheckFailed("the input features were changed: normalize into new tensors (F.normalize), not in place")


# ---------------------------------------------------------------------------------------------
# simclr.overlap_matrix (analysis exercise: how many pixels two augmented views still share)
# ---------------------------------------------------------------------------------------------

overlap_exercise = exercise("simclr.overlap_matrix", "overlap_matrix",
                            reference="coursekit.grading.homework.simclr:overlap_matrix")
OVERLAP_HINT = ("for one image, flatten each of its two views into a long vector of pixel values and take their "
                "Pearson correlation (center each vector, then the cosine); entry (a, b) averages that over the images")


def overlap_matrix(first_views: torch.Tensor, second_views: torch.Tensor) -> torch.Tensor:
    """The reference: the mean pixel correlation of two augmented views, for every pair of augmentations.

    first_views, second_views: ``[A, N, C, H, W]``: the N images through each of A augmentations, two
    independent random draws. Returns float ``[A, A]``: entry ``(a, b)`` is the mean over the images i
    of the Pearson correlation between ``first_views[a, i]`` and ``second_views[b, i]``, each flattened
    (a view with no variation, e.g. a constant image, correlates 0 with everything).
    """
    first = first_views.flatten(2).double()  # [A, N, C*H*W]
    second = second_views.flatten(2).double()
    first = F.normalize(first - first.mean(dim=2, keepdim=True), dim=2)  # centered, unit length (0 stays 0)
    second = F.normalize(second - second.mean(dim=2, keepdim=True), dim=2)
    return torch.einsum("and,bnd->abn", first, second).mean(dim=2).float()


def _overlap_mistakes(first_views: torch.Tensor, second_views: torch.Tensor) -> dict:
    """The matrices the known mistakes give."""
    first, second = first_views.flatten(2).double(), second_views.flatten(2).double()

    def centered(x):
        return x - x.mean(dim=2, keepdim=True)

    def unit(x):
        return F.normalize(x, dim=-1)

    def per_image(a, b):  # [A, N, D] x [B, N, D] -> [A, B, N]
        return torch.einsum("and,bnd->abn", a, b)

    channels = first_views.shape[2]

    def per_channel():
        a = first_views.double().flatten(3)  # [A, N, C, H*W]
        b = second_views.double().flatten(3)
        a = F.normalize(a - a.mean(3, keepdim=True), dim=3)
        b = F.normalize(b - b.mean(3, keepdim=True), dim=3)
        return torch.einsum("ancd,bncd->abnc", a, b).mean(dim=(2, 3))

    whole = first.flatten(1), second.flatten(1)  # every image of an augmentation as one long vector
    return {
        "cosine of the raw pixels: subtract each view's mean first (Pearson correlation is centered)":
            lambda: per_image(unit(first), unit(second)).mean(2),
        "covariance instead of correlation: divide by both standard deviations":
            lambda: (per_image(centered(first), centered(second)) / first.shape[2]).mean(2),
        "the second draw ignored: entry (a, b) compares first_views[a] with second_views[b], not with first_views[b]":
            lambda: per_image(unit(centered(first)), unit(centered(first))).mean(2),
        "rows and columns swapped: row a holds first_views[a], column b holds second_views[b]":
            lambda: per_image(unit(centered(first)), unit(centered(second))).mean(2).T,
        "averaged over every pair of images (i, j): compare each image's two views only with each other":
            lambda: torch.einsum("and,bmd->ab", unit(centered(first)), unit(centered(second))) / first.shape[1] ** 2,
        "correlation of all images of an augmentation at once: correlate per image, then average":
            lambda: unit(whole[0] - whole[0].mean(1, keepdim=True)) @ unit(whole[1] - whole[1].mean(1, keepdim=True)).T,
        **({"correlated each color channel separately: flatten the whole image (all channels) into one vector":
            per_channel} if channels > 1 else {}),
    }


def _expect_overlap(fn, first_views, second_views, what):
    expected = overlap_matrix(first_views, second_views)
    count = len(first_views)
    value = expect_tensor(call(fn, first_views.clone(), second_views.clone()), what, shape=(count, count),
                          floating=True)
    expect_close(value, expected, _overlap_mistakes(first_views, second_views), what=what, atol=1e-4)


def _views(seed: int, augmentations: int = 3, n: int = 4, size: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Two draws of views: a shared image per i, plus noise that differs per augmentation and draw."""
    images = randn(seed, 1, n, 3, size, size)
    first = images + 0.7 * randn(seed + 10, augmentations, n, 3, size, size)
    second = images + 0.7 * randn(seed + 20, augmentations, n, 3, size, size)
    return first, second


@overlap_exercise.checks("returns a float tensor [A, A]", points=1,
                         hint="one number per pair of augmentations: A rows (first draw) and A columns (second draw)")
def _overlap_shape(fn):
    first, second = _views(0, augmentations=4)
    expect_tensor(call(fn, first, second), "the overlap matrix", shape=(4, 4), floating=True)


@overlap_exercise.checks("the Pearson correlation on a fixed example (A = 2, one image of 2 x 2 pixels)", points=2,
                         hint=OVERLAP_HINT)
def _overlap_fixed(fn):
    first = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 0.0, 1.0]]).reshape(2, 1, 1, 2, 2)
    second = torch.tensor([[4.0, 3.0, 2.0, 2.0], [1.0, 5.0, 2.0, 4.0]]).reshape(2, 1, 1, 2, 2)
    _expect_overlap(fn, first, second, "the overlap on the fixed example")


@overlap_exercise.checks("matches on random color views (3 seeds)", points=3, hint=OVERLAP_HINT)
def _overlap_random(fn):
    for seed in SEEDS:
        _expect_overlap(fn, *_views(seed), f"the overlap matrix (seed {seed})")


@overlap_exercise.checks("unchanged by brightness and contrast: scaling or shifting a view keeps its correlation",
                         points=1, hint="a correlation compares the pattern of the pixels, not their level or range")
def _overlap_invariant(fn):
    first, second = _views(3)
    plain = expect_tensor(call(fn, first.clone(), second.clone()), "the overlap matrix", shape=(3, 3), floating=True)
    changed = expect_tensor(call(fn, 2.5 * first + 0.3, 0.5 * second - 1.0), "the overlap matrix", shape=(3, 3),
                            floating=True)
    if not torch.allclose(plain.double(), changed.double(), atol=1e-4):
        raise CheckFailed("scaling or shifting the pixel values changes your overlap: center each flattened view "
                          "and divide by both lengths (Pearson correlation)")


@overlap_exercise.checks("a constant view correlates 0 (not NaN); the inputs are left unchanged", points=1,
                         hint="a view with no variation shares no pattern with anything: count it as 0")
def _overlap_constant(fn):
    first, second = _views(4, augmentations=2, n=3)
    second[1, 0] = 0.5  # the second draw of augmentation 1 blanked out image 0
    copies = first.clone(), second.clone()
    _expect_overlap(fn, first, second, "the overlap with a constant view")
    call(fn, first, second)
    if not (torch.equal(first, copies[0]) and torch.equal(second, copies[1])):
        raise CheckFailed("the views were modified: center and normalize into new tensors")
