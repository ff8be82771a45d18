"""Graded exercises of lesson 04 (BYOL): ``byol.regression_loss``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_gradient,
                     expect_no_gradient, expect_scalar, expect_value_first, gradients, randn)
from ..core import CheckFailed, exercise

regression_exercise = exercise("byol.regression_loss", "regression_loss", reference="coursekit.methods.byol:regression_loss")
HINT = ("the loss is the squared distance between the directions of p and z (a cosine turned into a "
        "distance), averaged over the batch, with z acting as a fixed target")


def _mistakes(p, z):
    reference = regression_exercise.reference()
    pn, zn = F.normalize(p, dim=1), F.normalize(z, dim=1)
    return {
        "inputs not L2-normalized (the loss is 2 - 2 cos, cosine needs F.normalize)":
            lambda: ((p - z) ** 2).sum(1).mean(),
        "inputs not L2-normalized (2 - 2 p.z is 2 - 2 cos only for unit vectors: use F.normalize)":
            lambda: (2 - 2 * (p * z).sum(1)).mean(),
        "sign of the cosine flipped (2 + 2 cos instead of 2 - 2 cos)": lambda: (2 + 2 * (pn * zn).sum(1)).mean(),
        "mean over the D dimensions (F.mse_loss) instead of the sum: 2 - 2 cos is a squared distance "
        "summed over dimensions": lambda: F.mse_loss(pn, zn),
        "cosine not doubled (1 - cos instead of 2 - 2 cos)": lambda: reference(p, z) / 2,
        "summed over the batch instead of averaged": lambda: reference(p, z) * len(p),
    }


def _expect_value(regression_loss, p, z, what):
    value = expect_scalar(call(regression_loss, p.clone(), z.clone()))
    expect_close(value, regression_exercise.reference()(p, z), _mistakes(p, z), what=what)


@regression_exercise.checks("returns a single number (0-dim float tensor)", points=1,
                            hint="the loss is one number: the average of the per-sample losses")
def _scalar(regression_loss):
    expect_scalar(call(regression_loss, randn(0, 4, 8), randn(1, 4, 8)))


@regression_exercise.checks("matches 2 - 2 cos(p, z) on a small fixed example", points=1, hint=HINT)
def _fixed(regression_loss):
    p = torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    z = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    _expect_value(regression_loss, p, z, "the loss on the fixed example")


@regression_exercise.checks("matches 2 - 2 cos(p, z) on random inputs (3 seeds)", points=2, hint=HINT)
def _random(regression_loss):
    for seed in SEEDS:
        _expect_value(regression_loss, randn(seed, 8, 16), randn(seed + 10, 8, 16), f"the loss (seed {seed})")


@regression_exercise.checks("does not assume normalized inputs (scaling p or z leaves the loss unchanged)", points=1,
                            hint="the loss compares directions, so the length of p or z must not matter")
def _scale_invariant(regression_loss):
    p, z = F.normalize(randn(3, 6, 8), dim=1), F.normalize(randn(4, 6, 8), dim=1)
    unit = expect_scalar(call(regression_loss, p.clone(), z.clone()))
    scaled = expect_scalar(call(regression_loss, 3.0 * p, 0.5 * z))
    if not torch.isclose(unit.detach(), scaled.detach(), atol=1e-5, rtol=1e-4):
        raise CheckFailed("the loss changes when p and z are scaled: inputs not L2-normalized")


@regression_exercise.checks("gradient flows into p and matches the reference", points=1,
                            hint="p is the online prediction, the branch being trained: the loss must stay "
                                 "connected to it")
def _gradient_p(regression_loss):
    p, z = randn(5, 6, 8), randn(6, 6, 8)
    reference = regression_exercise.reference()
    value, (grad_p,) = call_backward(regression_loss, p.requires_grad_(), z.clone())
    expect_value_first(expect_scalar(value), reference(p, z))
    expect_carries_gradient(value)
    expect_gradient(grad_p, gradients(lambda a: reference(a, z), p)[0], "p")


@regression_exercise.checks("no gradient flows into the target z", points=2,
                            hint="z comes from the momentum (target) network, which is not trained by this loss")
def _no_gradient_z(regression_loss):
    p, z = randn(7, 6, 8), randn(8, 6, 8)
    value, (_, grad_z) = call_backward(regression_loss, p.requires_grad_(), z.requires_grad_())
    expect_value_first(expect_scalar(value), regression_exercise.reference()(p, z))
    expect_no_gradient(grad_z, "target z")


@regression_exercise.checks("handles a batch of one", points=1, hint="average over the batch, whatever its size")
def _batch_of_one(regression_loss):
    _expect_value(regression_loss, randn(9, 1, 4), randn(10, 1, 4), "the loss for N = 1")
