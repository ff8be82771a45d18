"""Graded exercises of lesson 05 (DINO): ``dino.dino_loss`` and ``dino.update_center``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_gradient,
                     expect_no_gradient, expect_scalar, expect_tensor, expect_value_first, gradients, randn, shape_text)
from ..core import CheckFailed, exercise

# ---------------------------------------------------------------------------------------------
# dino.dino_loss
# ---------------------------------------------------------------------------------------------

loss_exercise = exercise("dino.dino_loss", "dino_loss", reference="coursekit.methods.dino:dino_loss")
LOSS_HINT = ("the teacher gives centered, sharpened probabilities (fixed targets); the student is scored by "
             "cross-entropy against them, over every pair of a teacher view and a different student view")
STUDENT_TEMP, TEACHER_TEMP = 0.1, 0.04


def _views(seed: int, teachers: int, students: int, n: int = 4, k: int = 6):
    """Teacher outputs, student outputs (the first ones are the teacher's views) and a center."""
    teacher = [randn(seed + i, n, k) for i in range(teachers)]
    student = [randn(seed + 50 + j, n, k) for j in range(students)]
    return student, teacher, 0.3 * randn(seed + 99, 1, k)


def _pairs_loss(student, teacher, center, student_temp, teacher_temp, same_view=False, reduce=torch.mean):
    """The DINO loss written with a known mistake (same-view pairs, another reduction, other arguments)."""
    teacher_probs = [F.softmax((t - center) / teacher_temp, dim=-1) for t in teacher]
    student_log_probs = [F.log_softmax(s / student_temp, dim=-1) for s in student]
    losses = [-(t * s).sum(-1).mean() for i, t in enumerate(teacher_probs)
              for j, s in enumerate(student_log_probs) if same_view or i != j]
    return reduce(torch.stack(losses))


def _loss_mistakes(student, teacher, center):
    reference = loss_exercise.reference()
    no_center = torch.zeros_like(center)
    return {
        "same-view pairs included (skip the pairs where the teacher and student see the same crop, i == j)":
            lambda: _pairs_loss(student, teacher, center, STUDENT_TEMP, TEACHER_TEMP, same_view=True),
        "center not subtracted from the teacher outputs": lambda: reference(student, teacher, no_center, STUDENT_TEMP, TEACHER_TEMP),
        "center added instead of subtracted": lambda: reference(student, teacher, -center, STUDENT_TEMP, TEACHER_TEMP),
        "student and teacher temperatures swapped": lambda: reference(student, teacher, center, TEACHER_TEMP, STUDENT_TEMP),
        "teacher not sharpened (the teacher temperature must be teacher_temp)":
            lambda: reference(student, teacher, center, STUDENT_TEMP, STUDENT_TEMP),
        "summed over the pairs instead of averaged":
            lambda: _pairs_loss(student, teacher, center, STUDENT_TEMP, TEACHER_TEMP, reduce=torch.sum),
    }


def _expect_loss(dino_loss, student, teacher, center, what):
    expected = loss_exercise.reference()(student, teacher, center, STUDENT_TEMP, TEACHER_TEMP)
    value = call(dino_loss, [s.clone() for s in student], [t.clone() for t in teacher], center.clone(),
                 STUDENT_TEMP, TEACHER_TEMP)
    expect_close(expect_scalar(value), expected, _loss_mistakes(student, teacher, center), what=what)


@loss_exercise.checks("returns a single number (0-dim float tensor)", points=1,
                      hint="average the pair losses, each already a mean over the batch")
def _loss_scalar(dino_loss):
    student, teacher, center = _views(0, 2, 2)
    expect_scalar(call(dino_loss, student, teacher, center, STUDENT_TEMP, TEACHER_TEMP))


@loss_exercise.checks("matches the DINO loss with two global views (3 seeds)", points=2, hint=LOSS_HINT)
def _loss_global(dino_loss):
    for seed in SEEDS:
        _expect_loss(dino_loss, *_views(seed, 2, 2), f"the loss with 2 views (seed {seed})")


@loss_exercise.checks("matches the DINO loss with multi-crop: 2 global + 4 local student views (3 seeds)",
                      points=3, hint=LOSS_HINT)
def _loss_multicrop(dino_loss):
    for seed in SEEDS:
        _expect_loss(dino_loss, *_views(seed + 10, 2, 6), f"the loss with 2 + 4 views (seed {seed})")


@loss_exercise.checks("gradient flows into the student outputs and matches the reference", points=1,
                      hint="the student network is the one being trained: the loss must stay connected to "
                           "its outputs")
def _loss_student_gradient(dino_loss):
    student, teacher, center = _views(20, 2, 4)
    reference = loss_exercise.reference()
    value, grads = call_backward(dino_loss, [s.requires_grad_() for s in student], [t.clone() for t in teacher],
                                 center.clone(), STUDENT_TEMP, TEACHER_TEMP)
    expect_value_first(expect_scalar(value), reference(student, teacher, center, STUDENT_TEMP, TEACHER_TEMP))
    expect_carries_gradient(value)
    expected = gradients(lambda *s: reference(list(s), teacher, center, STUDENT_TEMP, TEACHER_TEMP), *student)
    for index, (grad, want) in enumerate(zip(grads, expected)):
        expect_gradient(grad, want, f"student view {index}")


def _loss_input_gradients(dino_loss):
    """The gradients reaching the teacher outputs (a list) and the center."""
    student, teacher, center = _views(30, 2, 4)
    value, grads = call_backward(dino_loss, [s.requires_grad_() for s in student],
                                 [t.requires_grad_() for t in teacher], center.requires_grad_(),
                                 STUDENT_TEMP, TEACHER_TEMP)
    expect_value_first(expect_scalar(value),
                       loss_exercise.reference()(student, teacher, center, STUDENT_TEMP, TEACHER_TEMP))
    return grads[len(student):-1], grads[-1]


@loss_exercise.checks("no gradient flows into the teacher outputs", points=1,
                      hint="the teacher is an EMA of the student, not trained by this loss: its outputs are targets")
def _loss_no_teacher_gradient(dino_loss):
    teacher, _ = _loss_input_gradients(dino_loss)
    for index, grad in enumerate(teacher):
        expect_no_gradient(grad, f"teacher outputs (view {index})")


@loss_exercise.checks("no gradient flows into the center", points=1, hint="the center is a running average, a constant for this loss")
def _loss_no_center_gradient(dino_loss):
    _, center = _loss_input_gradients(dino_loss)
    expect_no_gradient(center, "center")


# ---------------------------------------------------------------------------------------------
# dino.update_center
# ---------------------------------------------------------------------------------------------

center_exercise = exercise("dino.update_center", "update_center", reference="coursekit.methods.dino:update_center")
CENTER_HINT = ("the center is a moving average: keep `momentum` of the old center and take the rest from the "
               "batch's mean teacher output, keeping the shape [1, K]")


def _center_value(update_center, center, teacher_out, momentum):
    value = call(update_center, center.clone(), teacher_out.clone(), momentum)
    k = center.shape[1]
    if isinstance(value, torch.Tensor) and value.dim() == 1 and len(value) == k:
        raise CheckFailed(f"the result has shape {shape_text(value.shape)}: keep the leading dimension "
                          "(mean(dim=0, keepdim=True)) so that it is [1, K]")
    if isinstance(value, torch.Tensor) and tuple(value.shape) in ((len(teacher_out),), (len(teacher_out), 1),
                                                                  (1, len(teacher_out))):
        raise CheckFailed("averaged over the wrong dimension: the mean runs over the rows (dim 0)")
    return expect_tensor(value, "the new center", shape=(1, k), floating=True)


def _center_mistakes(center, teacher_out, momentum):
    reference = center_exercise.reference()
    batch_mean = teacher_out.mean(0, keepdim=True)
    return {
        "momentum and 1 - momentum swapped": lambda: reference(center, teacher_out, 1 - momentum),
        "summed over the rows instead of averaged": lambda: momentum * center + (1 - momentum) * teacher_out.sum(0, keepdim=True),
        "old center ignored (returned the batch mean)": lambda: batch_mean,
        "batch mean ignored (returned the old center)": lambda: center,
        "the (1 - momentum) factor is missing": lambda: momentum * center + batch_mean,
    }


@center_exercise.checks("returns the new center with shape [1, K]", points=1, hint=CENTER_HINT)
def _center_shape(update_center):
    _center_value(update_center, randn(0, 1, 5), randn(1, 7, 5), 0.9)


@center_exercise.checks("matches momentum * center + (1 - momentum) * mean on random inputs (3 seeds, 2 momenta)",
                        points=3, hint=CENTER_HINT)
def _center_values(update_center):
    for seed in SEEDS:
        for momentum in (0.9, 0.7):
            center, teacher_out = randn(seed, 1, 5), randn(seed + 10, 7, 5)
            value = _center_value(update_center, center, teacher_out, momentum)
            expect_close(value, center_exercise.reference()(center, teacher_out, momentum),
                         _center_mistakes(center, teacher_out, momentum),
                         what=f"the new center (seed {seed}, momentum {momentum})")


@center_exercise.checks("handles a single teacher row (M = 1)", points=1, hint=CENTER_HINT)
def _center_single_row(update_center):
    center, teacher_out = randn(3, 1, 4), randn(4, 1, 4)
    value = _center_value(update_center, center, teacher_out, 0.8)
    expect_close(value, center_exercise.reference()(center, teacher_out, 0.8), what="the new center for M = 1")


@center_exercise.checks("edge cases: momentum 0 gives the batch mean, momentum 1 keeps the center", points=1,
                        hint=CENTER_HINT)
def _center_edge_momenta(update_center):
    center, teacher_out = randn(5, 1, 4), randn(6, 3, 4)
    for momentum in (0.0, 1.0):
        value = _center_value(update_center, center, teacher_out, momentum)
        expect_close(value, center_exercise.reference()(center, teacher_out, momentum),
                     _center_mistakes(center, teacher_out, momentum), what=f"the new center (momentum {momentum})")
