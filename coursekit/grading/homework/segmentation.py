"""Graded exercises of lesson 10 (segmentation): ``segmentation.mean_iou`` and
``segmentation.tokens_to_feature_map``."""
from __future__ import annotations

import numbers

import torch

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_gradient,
                     expect_value_first, generator, type_name)
from ..core import CheckFailed, Unscored, exercise

iou_exercise = exercise("segmentation.mean_iou", "mean_iou", reference="coursekit.transfer.segmentation:mean_iou")
HINT = ("ignored pixels do not count; per class, add up intersections and unions over the whole set of "
        "images, then average the IoU over the classes that occur")


def _intersection_union(pred, target, num_classes, ignore_index):
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    pred, target = pred[keep], target[keep]
    classes = torch.arange(num_classes).view(-1, 1)
    inter = ((pred == classes) & (target == classes)).sum(1).double()
    union = ((pred == classes) | (target == classes)).sum(1).double()
    return inter, union


def _present_mean(inter, union) -> float:
    present = union > 0
    return (inter[present] / union[present]).mean().item()


def _mistakes(pred, target, num_classes, ignore_index):
    reference = iou_exercise.reference()
    inter, union = _intersection_union(pred, target, num_classes, ignore_index)
    present = union > 0
    keep = target != ignore_index
    return {
        "IoU averaged per image instead of over the set (sum intersections and unions over all images first)":
            lambda: sum(reference(p[None], t[None], num_classes, ignore_index) for p, t in zip(pred, target)) / len(pred),
        "ignore_index pixels counted (drop the pixels where target == ignore_index)":
            lambda: reference(pred, torch.where(keep, target, pred), num_classes, ignore_index),
        "ignore_index pixels counted in the unions (drop the pixels where target == ignore_index)":
            lambda: _present_mean(*_intersection_union(pred, target, num_classes, ignore_index=None)),
        "mean over all num_classes (classes absent from both target and prediction must be left out)":
            lambda: (inter / union.clamp(min=1)).mean().item(),
        "absent classes counted as IoU 1 (leave them out)":
            lambda: torch.where(present, inter / union.clamp(min=1), torch.ones_like(inter)).mean().item(),
        "pixel accuracy instead of IoU": lambda: (pred[keep] == target[keep]).double().mean().item(),
    }


def _value(mean_iou, pred, target, num_classes, ignore_index):
    value = call(mean_iou, pred.clone(), target.clone(), num_classes, ignore_index)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if not isinstance(value, numbers.Real):
        raise CheckFailed(f"the result should be a float, got {type_name(value)}")
    return float(value)


def _expect_iou(mean_iou, pred, target, num_classes, ignore_index, what):
    expected = iou_exercise.reference()(pred, target, num_classes, ignore_index)
    value = _value(mean_iou, pred, target, num_classes, ignore_index)
    expect_close(value, expected, _mistakes(pred, target, num_classes, ignore_index), what=what, atol=1e-6)


def _random_masks(seed: int, n: int = 3, size: int = 6, num_classes: int = 5):
    """A prediction that agrees with the target on most pixels, images of different class mixes,
    a few ignored pixels, and class 4 absent from both."""
    draw = generator(seed)
    target = torch.randint(0, num_classes - 1, (n, size, size), generator=draw)
    target[0] = target[0].clamp(max=1)  # image 0 holds only classes 0 and 1
    noise = torch.randint(0, num_classes - 1, target.shape, generator=draw)
    pred = torch.where(torch.rand(target.shape, generator=draw) < 0.6, target, noise)
    target[torch.rand(target.shape, generator=draw) < 0.1] = 255
    return pred, target


@iou_exercise.checks("returns a Python float", points=1, hint="return a plain Python number, not a tensor")
def _returns_float(mean_iou):
    pred, target = _random_masks(0)
    value = call(mean_iou, pred, target, 5, 255)
    if not isinstance(value, numbers.Real):
        raise CheckFailed(f"returned {type_name(value)}: return a Python float (use .item())")


@iou_exercise.checks("matches mIoU on a small fixed example", points=2, hint=HINT)
def _fixed(mean_iou):
    target = torch.tensor([[[0, 0, 1], [1, 1, 255]], [[2, 2, 2], [0, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 2]], [[2, 2, 0], [0, 1, 0]]])
    _expect_iou(mean_iou, pred, target, 4, 255, "the mIoU of the fixed example")


@iou_exercise.checks("matches mIoU over a set of images (3 seeds)", points=2, hint=HINT)
def _random(mean_iou):
    for seed in SEEDS:
        _expect_iou(mean_iou, *_random_masks(seed), 5, 255, f"the mIoU (seed {seed})")


@iou_exercise.checks("uses the ignore_index argument, not a fixed 255", points=1,
                     hint="compare with the ignore_index argument")
def _custom_ignore_index(mean_iou):
    pred, target = _random_masks(3)
    target[target == 255] = 4
    _expect_iou(mean_iou, pred, target, 4, 4, "the mIoU with ignore_index = 4")


@iou_exercise.checks("ignore_index defaults to 255", points=1, hint="the notebook gives ignore_index a default value of 255")
def _default_ignore_index(mean_iou):
    pred, target = _random_masks(4)
    expected = iou_exercise.reference()(pred, target, 5)
    value = call(mean_iou, pred.clone(), target.clone(), 5)
    expect_close(float(value), expected, what="the mIoU without passing ignore_index", atol=1e-6)


@iou_exercise.checks("a perfect prediction scores 1.0", points=1,
                     hint="classes that appear in neither target nor prediction are left out of the mean")
def _perfect(mean_iou):
    _, target = _random_masks(5)
    pred = torch.where(target == 255, torch.zeros_like(target), target)
    _expect_iou(mean_iou, pred, target, 8, 255, "the mIoU of a perfect prediction")


# ---------------------------------------------------------------------------------------------
# segmentation.tokens_to_feature_map (lesson 10)
# ---------------------------------------------------------------------------------------------

from .checks import shape_text  # noqa: E402 - used by the exercise below only

tokens_exercise = exercise("segmentation.tokens_to_feature_map", "tokens_to_feature_map",
                           reference="coursekit.evaluate.patches:tokens_to_feature_map")
TOKENS_HINT = ("the tokens were read row by row from the grid of patches: put them back in that order, with the "
               "channels as the map's first axis")


def _token_mistakes(tokens, grid):
    n, length, dim = tokens.shape
    h, w = grid
    return {
        "the tokens were reshaped straight to [N, D, h, w]; move the channel axis first (transpose(1, 2)), "
        "otherwise channels and positions get mixed": lambda: tokens.reshape(n, dim, h, w),
        "the tokens were laid out column by column; row-major order puts token i at row i // w, column i % w":
            lambda: tokens.transpose(1, 2).reshape(n, dim, w, h).transpose(2, 3),
    }


def _tokens(seed: int, n: int, length: int, dim: int, requires_grad: bool = False):
    return torch.randn(n, length, dim, generator=generator(seed)).requires_grad_(requires_grad)


def _expect_map(tokens_to_feature_map, tokens, grid, what):
    n, length, dim = tokens.shape
    h, w = grid
    value = call(tokens_to_feature_map, tokens.detach().clone(), grid)
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type_name(value)}")
    shapes = {(n, dim, w, h): "height and width are swapped: the grid is (h, w)",
              (n, h, w, dim): "the channels are last: the map is [N, D, h, w], channels first",
              (n, dim, length): "the map is still flat: reshape [N, D, L] to [N, D, h, w]"}
    if tuple(value.shape) != (n, dim, h, w):
        reason = shapes.get(tuple(value.shape))
        raise CheckFailed(f"{what} has shape {shape_text(value.shape)}, expected {shape_text((n, dim, h, w))}"
                          + (f": {reason}" if reason else ""))
    expected = tokens_exercise.reference()(tokens.detach(), grid)
    expect_close(value, expected, _token_mistakes(tokens.detach(), grid), what=what, atol=0, rtol=0)


@tokens_exercise.checks("returns [N, D, h, w] for a non-square grid", points=1,
                        hint="the result is channels first: [N, D, h, w]")
def _tokens_shape(tokens_to_feature_map):
    _expect_map_shape_only(tokens_to_feature_map, _tokens(0, 2, 6, 5), (2, 3))


def _expect_map_shape_only(tokens_to_feature_map, tokens, grid):
    n, length, dim = tokens.shape
    h, w = grid
    value = call(tokens_to_feature_map, tokens.clone(), grid)
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"the feature map should be a torch.Tensor, got {type_name(value)}")
    shapes = {(n, dim, w, h): "height and width are swapped: the grid is (h, w)",
              (n, h, w, dim): "the channels are last: the map is [N, D, h, w], channels first",
              (n, dim, length): "the map is still flat: reshape [N, D, L] to [N, D, h, w]"}
    if tuple(value.shape) != (n, dim, h, w):
        reason = shapes.get(tuple(value.shape))
        raise CheckFailed(f"the feature map has shape {shape_text(value.shape)}, expected "
                          f"{shape_text((n, dim, h, w))}" + (f": {reason}" if reason else ""))


@tokens_exercise.checks("puts token i at row i // w, column i % w (fixed tokens, 2 x 3 grid)", points=2,
                        hint=TOKENS_HINT)
def _tokens_fixed(tokens_to_feature_map):
    # token i, channel d holds 10 * i + d: easy to read in a feature map.
    tokens = (10 * torch.arange(6).view(1, 6, 1) + torch.arange(3).view(1, 1, 3)).float()
    _expect_map(tokens_to_feature_map, tokens, (2, 3), "the map of the fixed tokens")


@tokens_exercise.checks("matches on random tokens and grids (3 seeds)", points=2, hint=TOKENS_HINT)
def _tokens_random(tokens_to_feature_map):
    for seed, grid in zip(SEEDS, [(4, 4), (3, 5), (5, 2)]):
        tokens = _tokens(seed, 2, grid[0] * grid[1], 7)
        _expect_map(tokens_to_feature_map, tokens, grid, f"the feature map (seed {seed}, grid {grid})")


@tokens_exercise.checks("lets gradients flow back into the tokens", points=1,
                        hint="the decoder trains the backbone through this map: build it from the tokens with "
                             "tensor operations that autograd can follow")
def _tokens_gradient(tokens_to_feature_map):
    tokens = _tokens(3, 2, 6, 4)
    # The gradient of token (n, i, d) is the weight at map position (n, d, i // w, i % w).
    weights = torch.arange(2 * 4 * 6, dtype=torch.float32).view(2, 4, 2, 3)
    value, (grad,) = call_backward(tokens_to_feature_map, tokens.clone().requires_grad_(), (2, 3), upstream=weights)
    if not isinstance(value, torch.Tensor) or value.shape != weights.shape:
        raise Unscored("the map is wrong")
    expect_value_first(value, tokens_exercise.reference()(tokens, (2, 3)), "the feature map")
    expect_carries_gradient(value, "the feature map")
    expect_gradient(grad, weights.flatten(2).transpose(1, 2), "the tokens")
