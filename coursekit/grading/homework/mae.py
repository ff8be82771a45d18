"""Graded exercises of lesson 06 (MAE): ``mae.patchify``, ``mae.random_masking``, ``mae.loss``, and the masking
analysis: ``mae.block_mask``, ``mae.masking_difficulty``, ``mae.visible_spread``."""
from __future__ import annotations

import math

import torch

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_gradient,
                     expect_scalar, expect_tensor, expect_value_first, generator, gradients, randn, shape_text, type_name)
from ..core import CheckFailed, Unscored, exercise

# ---------------------------------------------------------------------------------------------
# mae.patchify
# ---------------------------------------------------------------------------------------------

patchify_exercise = exercise("mae.patchify", "patchify", reference="coursekit.methods.mae:patchify")
PATCHIFY_HINT = ("cut each image into a grid of p x p squares, read the squares row by row, and lay out each "
                 "square's pixels row by row with the channels of a pixel together")


def _patch_layout(imgs: torch.Tensor, p: int, order: str) -> torch.Tensor:
    """Patches laid out in another order: ``order`` names the axes of [N, h, w, p_row, p_col, C]."""
    n, c, height, width = imgs.shape
    blocks = imgs.reshape(n, c, height // p, p, width // p, p)
    return torch.einsum(f"nchpwq->{order}", blocks).reshape(n, (height // p) * (width // p), p * p * c)


def _patchify_mistakes(imgs, p):
    n, c, height, width = imgs.shape
    return {
        "each patch flattened as (C, p, p) instead of (p, p, C)": lambda: _patch_layout(imgs, p, "nhwcpq"),
        "patches in column-major order (the patches run row by row)": lambda: _patch_layout(imgs, p, "nwhpqc"),
        "rows and columns swapped inside each patch": lambda: _patch_layout(imgs, p, "nhwqpc"),
        "reshaped without permuting (the raw memory order is not patch by patch)":
            lambda: imgs.reshape(n, (height // p) * (width // p), p * p * c),
    }


def _expect_patches(patchify, imgs, p, what):
    expected = patchify_exercise.reference()(imgs, p)
    value = expect_tensor(call(patchify, imgs.clone(), p), what, shape=expected.shape)
    expect_close(value, expected, _patchify_mistakes(imgs, p), what=what)


@patchify_exercise.checks("returns [N, L, p*p*C]", points=1, hint=PATCHIFY_HINT)
def _patchify_shape(patchify):
    expect_tensor(call(patchify, randn(0, 2, 3, 8, 8), 4), "the patches", shape=(2, 4, 48))


@patchify_exercise.checks("patches in row-major order, each flattened as (p, p, C) (3 seeds)", points=3,
                          hint=PATCHIFY_HINT)
def _patchify_values(patchify):
    for seed in SEEDS:
        _expect_patches(patchify, randn(seed, 2, 3, 8, 8), 4, f"the patches (seed {seed})")


@patchify_exercise.checks("handles images that are not square (H != W)", points=1,
                          hint="the number of patches across and down can differ")
def _patchify_rectangular(patchify):
    _expect_patches(patchify, randn(3, 2, 3, 8, 12), 4, "the patches of 8 x 12 images")


@patchify_exercise.checks("handles one channel (C = 1)", points=1, hint="read C from imgs.shape")
def _patchify_one_channel(patchify):
    _expect_patches(patchify, randn(4, 2, 1, 6, 6), 2, "the patches of 1-channel images")


@patchify_exercise.checks("handles a batch of one image that is a single patch", points=1, hint=PATCHIFY_HINT)
def _patchify_single(patchify):
    _expect_patches(patchify, randn(5, 1, 3, 4, 4), 4, "the patches of one 4 x 4 image with p = 4")


# ---------------------------------------------------------------------------------------------
# mae.random_masking
# ---------------------------------------------------------------------------------------------

masking_exercise = exercise("mae.random_masking", "random_masking", reference="coursekit.methods.mae:random_masking")
MASKING_HINT = ("a random order of the tokens per sample decides which ones stay; remember that order so that it "
                "can be undone, and express the mask in the original token order")
N, L, D = 4, 14, 3
MASK_TOKEN = 1.0e4


def _tokens(seed: int = 0) -> torch.Tensor:
    return randn(seed, N, L, D)


def _masking(random_masking, x, mask_ratio=0.75, generator_seed: int | None = 0, global_seed: int | None = None):
    """The student's (x_visible, mask, ids_restore), checked for types and shapes."""
    seeded = None if generator_seed is None else generator(1000 + generator_seed)
    value = call(random_masking, x.clone(), mask_ratio, seeded, global_seed=global_seed)
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise CheckFailed("return a tuple of three tensors: (x_visible, mask, ids_restore)")
    x_visible, mask, ids_restore = value
    expect_tensor(x_visible, "x_visible", floating=True)
    if x_visible.dim() != 3 or x_visible.shape[0] != x.shape[0] or x_visible.shape[2] != x.shape[2]:
        raise CheckFailed(f"x_visible has shape {shape_text(x_visible.shape)}, expected [N, L_keep, D]")
    expect_tensor(mask, "mask", shape=x.shape[:2])
    expect_tensor(ids_restore, "ids_restore", shape=x.shape[:2], dtype=torch.long)
    return x_visible, mask.float(), ids_restore


def _restored(x_visible, ids_restore):
    """What the MAE decoder does: append mask tokens and unshuffle with ids_restore."""
    n, length = ids_restore.shape
    tokens = torch.full((n, length - x_visible.shape[1], x_visible.shape[2]), MASK_TOKEN)
    full = torch.cat([x_visible, tokens], dim=1)
    return torch.gather(full, 1, ids_restore.unsqueeze(-1).expand(-1, -1, full.shape[2]))


def _source_positions(x, x_visible):
    """For each visible token, the position in x it was copied from (-1 if it is no token of x)."""
    distances = torch.cdist(x_visible.detach().double(), x.double())  # [N, L_keep, L]
    best, position = distances.min(dim=2)
    return torch.where(best < 1e-5, position, torch.full_like(position, -1))


@masking_exercise.checks("returns (x_visible, mask, ids_restore) with shapes [N, L_keep, D], [N, L], [N, L] long",
                         points=1, hint=MASKING_HINT)
def _masking_types(random_masking):
    _masking(random_masking, _tokens())


@masking_exercise.checks("keeps L_keep = int(L * (1 - mask_ratio)) tokens", points=1,
                         hint="the number kept is rounded down, as the notebook says")
def _masking_keep_count(random_masking):
    for mask_ratio in (0.75, 0.5, 0.6):
        expected = int(L * (1 - mask_ratio))
        kept = _masking(random_masking, _tokens(), mask_ratio)[0].shape[1]
        if kept != expected:
            raise CheckFailed(f"with mask_ratio {mask_ratio}, {kept} tokens kept instead of {expected}"
                              + (": L_keep computed by rounding, not with int()" if kept == expected + 1 else ""))


@masking_exercise.checks("mask is 1 for removed tokens and 0 for kept ones", points=1,
                         hint="start from ones, set the first L_keep (in shuffled order) to 0, then unshuffle")
def _masking_mask_values(random_masking):
    x_visible, mask, _ = _masking(random_masking, _tokens())
    keep = x_visible.shape[1]
    if not ((mask == 0) | (mask == 1)).all():
        raise CheckFailed("the mask holds values other than 0 and 1")
    removed = mask.sum(dim=1)
    if (removed == keep).all() and keep != L - keep:
        raise CheckFailed("mask uses 1 = kept; it must be 1 = removed")
    if not (removed == L - keep).all():
        raise CheckFailed(f"each mask row should have {L - keep} ones (removed tokens), got {removed.tolist()}")


@masking_exercise.checks("x_visible holds exactly the tokens the mask keeps", points=1, hint=MASKING_HINT)
def _masking_visible_tokens(random_masking):
    x = _tokens(1)
    x_visible, mask, _ = _masking(random_masking, x)
    sources = _source_positions(x, x_visible)
    if (sources < 0).any():
        raise CheckFailed("x_visible holds values that are not tokens of x: gather whole tokens from x")
    for n in range(N):
        chosen = set(sources[n].tolist())
        if len(chosen) != len(sources[n]):
            raise CheckFailed("x_visible holds the same token twice")
        if chosen == set(torch.nonzero(mask[n] == 1).flatten().tolist()):
            raise CheckFailed("x_visible holds the tokens where mask == 1: mask uses 1 = kept")
        if chosen != set(torch.nonzero(mask[n] == 0).flatten().tolist()):
            raise CheckFailed("the mask is not in the original token order (mask == 0 must mark the tokens in "
                              "x_visible): unshuffle it with ids_restore")


@masking_exercise.checks("ids_restore puts every kept token back at its original position", points=2,
                         hint="ids_restore undoes the shuffle: it is the inverse permutation")
def _masking_restore(random_masking):
    x = _tokens(2)
    x_visible, _, ids_restore = _masking(random_masking, x)
    if not torch.equal(ids_restore.sort(dim=1).values, torch.arange(L).expand(N, L)):
        raise CheckFailed("each row of ids_restore must be a permutation of 0..L-1")
    kept = _kept_in(x, x_visible).unsqueeze(-1)  # as x_visible shows it: a wrong mask does not fail this check too
    if torch.allclose(_restored(x_visible, ids_restore)[kept.expand_as(x)], x[kept.expand_as(x)]):
        return
    if torch.allclose(_restored(x_visible, ids_restore.argsort(dim=1))[kept.expand_as(x)], x[kept.expand_as(x)]):
        raise CheckFailed("returned ids_shuffle instead of ids_restore = argsort(ids_shuffle)")
    raise CheckFailed("after appending mask tokens and gathering with ids_restore, kept tokens are not at their "
                      "original positions")


def _kept_in(x, x_visible) -> torch.Tensor:
    """[N, L] bool: which tokens of x each sample kept, read from x_visible (so that the checks that
    do not test the mask do not depend on it being right)."""
    sources = _source_positions(x, x_visible)
    kept = torch.zeros(x.shape[:2], dtype=torch.bool)
    for n in range(len(x)):
        kept[n, sources[n][sources[n] >= 0]] = True
    return kept


def _kept_positions(random_masking, x, **options) -> torch.Tensor:
    return _kept_in(x, _masking(random_masking, x, **options)[0])


@masking_exercise.checks("draws an independent random mask for every sample", points=1,
                         hint="each sample needs random numbers of its own, one per token")
def _masking_per_sample(random_masking):
    kept = _kept_positions(random_masking, randn(3, 8, 16, 2), mask_ratio=0.5)
    if all(torch.equal(kept[0], row) for row in kept[1:]):
        raise CheckFailed("every sample kept the same tokens: same noise for all samples")


@masking_exercise.checks("all randomness comes from the generator (same seed, same masks; other seed, other masks)",
                         points=1, hint="every random number must be drawn from the generator argument")
def _masking_generator(random_masking):
    x = _tokens(4)
    # the same generator seed under different global random states, then another generator seed
    first = _kept_positions(random_masking, x, generator_seed=5, global_seed=1)
    again = _kept_positions(random_masking, x, generator_seed=5, global_seed=2)
    other = _kept_positions(random_masking, x, generator_seed=6, global_seed=1)
    if not torch.equal(first, again):
        raise CheckFailed("the same generator seed kept different tokens: randomness not drawn from the generator")
    if torch.equal(first, other):
        raise CheckFailed("different generator seeds kept the same tokens: the generator is not used")


@masking_exercise.checks("works without a generator (generator=None)", points=1,
                         hint="when no generator is given, draw from the global random state")
def _masking_no_generator(random_masking):
    x_visible, mask, _ = _masking(random_masking, _tokens(), generator_seed=None)
    if x_visible.shape[1] != int(L * 0.25) or not (mask.sum(1) == L - x_visible.shape[1]).all():
        raise CheckFailed("without a generator, the number of kept tokens or the mask is wrong")


# ---------------------------------------------------------------------------------------------
# mae.loss
# ---------------------------------------------------------------------------------------------

loss_exercise = exercise("mae.loss", "mae_loss", reference="coursekit.methods.mae:mae_loss")
LOSS_HINT = ("the error of a patch is the mean squared error over its values; the loss averages it over the "
             "removed patches only, across the whole batch")


def _loss_inputs(seed: int, n: int = 3, length: int = 8, p: int = 12):
    """pred, target (some patches nearly constant, where the 1e-6 matters) and a mask with 1 = removed."""
    pred, target = randn(seed, n, length, p), randn(seed + 10, n, length, p)
    target[:, 0] = 0.5 + 1e-4 * target[:, 0]
    mask = (torch.rand(n, length, generator=generator(seed + 20)) < 0.6).float()
    mask[:, 0] = 1.0
    mask[:, 1] = 0.0
    return pred, target, mask


def _normalized(target, var=None, eps_inside=True):
    mean = target.mean(-1, keepdim=True)
    var = target.var(-1, keepdim=True) if var is None else var
    return (target - mean) / ((var + 1e-6) ** 0.5 if eps_inside else var ** 0.5 + 1e-6)


def _loss_mistakes(pred, target, mask, norm_pix):
    reference = loss_exercise.reference()
    goal = _normalized(target) if norm_pix else target
    per_patch = ((pred - goal) ** 2).mean(-1)
    mistakes = {
        "loss over all patches, not only removed ones (mask == 1)": lambda: per_patch.mean(),
        "averaged over the kept patches: the mask is 1 = removed": lambda: reference(pred, target, 1 - mask, norm_pix),
        "summed over the P values of a patch instead of averaged":
            lambda: reference(pred, target, mask, norm_pix) * pred.shape[-1],
        "divided by the number of all patches instead of the number of removed patches":
            lambda: (per_patch * mask).sum() / mask.numel(),
    }
    if norm_pix:
        mistakes.update({
            "norm_pix ignored (the target patches must be normalized)": lambda: reference(pred, target, mask, False),
            "biased variance (unbiased=False): use torch.var's default":
                lambda: reference(pred, _normalized(target, var=target.var(-1, unbiased=False, keepdim=True)), mask, False),
            "1e-6 added to the standard deviation instead of inside the square root":
                lambda: reference(pred, _normalized(target, eps_inside=False), mask, False),
            "target normalized over the whole tensor instead of per patch":
                lambda: reference(pred, (target - target.mean()) / (target.var() + 1e-6) ** 0.5, mask, False),
        })
    return mistakes


def _expect_loss(mae_loss, pred, target, mask, norm_pix, what):
    expected = loss_exercise.reference()(pred, target, mask, norm_pix)
    value = expect_scalar(call(mae_loss, pred.clone(), target.clone(), mask.clone(), norm_pix))
    expect_close(value, expected, _loss_mistakes(pred, target, mask, norm_pix), what=what)


@loss_exercise.checks("returns a single number (0-dim float tensor)", points=1, hint=LOSS_HINT)
def _loss_scalar(mae_loss):
    expect_scalar(call(mae_loss, *_loss_inputs(0), False))


@loss_exercise.checks("matches the MAE loss without norm_pix (3 seeds)", points=2, hint=LOSS_HINT)
def _loss_plain(mae_loss):
    for seed in SEEDS:
        _expect_loss(mae_loss, *_loss_inputs(seed), False, f"the loss (norm_pix=False, seed {seed})")


@loss_exercise.checks("matches the MAE loss with norm_pix (3 seeds)", points=2,
                      hint="with norm_pix, each target patch is standardized by its own mean and variance (with the small epsilon inside the square root)")
def _loss_norm_pix(mae_loss):
    for seed in SEEDS:
        _expect_loss(mae_loss, *_loss_inputs(seed), True, f"the loss (norm_pix=True, seed {seed})")


@loss_exercise.checks("gradient flows into pred and matches the reference", points=1,
                      hint="pred is the decoder's output, the part being trained: the loss must stay connected to it")
def _loss_gradient(mae_loss):
    pred, target, mask = _loss_inputs(3)
    reference = loss_exercise.reference()
    value, (grad_pred,) = call_backward(mae_loss, pred.requires_grad_(), target.clone(), mask.clone(), True)
    expect_value_first(expect_scalar(value), reference(pred, target, mask, True))
    expect_carries_gradient(value)
    expect_gradient(grad_pred, gradients(lambda a: reference(a, target, mask, True), pred)[0], "pred")


@loss_exercise.checks("a sample without removed patches is handled (one average over all removed patches)", points=1,
                      hint="average over all removed patches of the batch together, not per sample")
def _loss_empty_row(mae_loss):
    pred, target, mask = _loss_inputs(4)
    mask[0] = 0.0
    expected = loss_exercise.reference()(pred, target, mask, False)
    value = call(mae_loss, pred.clone(), target.clone(), mask.clone(), False)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.isnan().all():
        raise CheckFailed("the loss is NaN when a sample has no removed patch: averaged per sample first "
                          "(0 / 0 for that sample); divide the sum over all removed patches by their count")
    value = expect_scalar(value)
    per_sample = ((pred - target) ** 2).mean(-1)
    mistakes = {"averaged per sample first, then over the batch (a sample without removed patches counts as 0)":
                lambda: ((per_sample * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()}
    expect_close(value, expected, mistakes, what="the loss when sample 0 has no removed patch")


# ---------------------------------------------------------------------------------------------
# Analysis exercise "MAE masking-strategy comparator": mae.block_mask and mae.masking_difficulty
# (reference implementations in coursekit.lessons.masking)
# ---------------------------------------------------------------------------------------------

block_exercise = exercise("mae.block_mask", "block_mask", reference="coursekit.lessons.masking:block_mask")
BLOCK_HINT = ("count the patches to remove as random_masking does, shape them into the most square block that "
              "fits the grid, place it at a random corner drawn from the generator, and fill it row by row")


def _removed_count(length: int, ratio: float) -> int:
    return length - int(length * (1 - ratio))


def _block(block_mask, grid_h, grid_w, ratio, seed=0, global_seed=None, floating=False):
    """The student's mask as a float [L] tensor of 0/1, checked for type and shape (and for a
    floating dtype, the notebook's contract, only where ``floating``: one check scores it)."""
    value = call(block_mask, grid_h, grid_w, ratio, generator(1000 + seed), global_seed=global_seed)
    mask = expect_tensor(value, "the mask", shape=(grid_h * grid_w,), floating=floating)
    if not ((mask == 0) | (mask == 1)).all():
        raise CheckFailed("the mask holds values other than 0 and 1")
    return mask.float()


@block_exercise.checks("returns a float tensor [L] of 0 and 1", points=1,
                       hint="a mask here is a float tensor (the lesson computes 1 - mask and products with it), "
                            "flattened row by row")
def _block_type(block_mask):
    _block(block_mask, 6, 6, 0.5, floating=True)


@block_exercise.checks("removes exactly L - int(L * (1 - ratio)) patches (1 = removed)", points=1,
                       hint="the same count as random_masking: the number of visible patches is rounded down")
def _block_count(block_mask):
    for grid_h, grid_w, ratio in ((8, 8, 0.75), (8, 8, 0.9), (5, 7, 0.6), (6, 6, 0.5)):
        length = grid_h * grid_w
        expected = _removed_count(length, ratio)
        removed = int(_block(block_mask, grid_h, grid_w, ratio).sum())
        if removed == expected:
            continue
        if removed == length - expected:
            raise CheckFailed("the mask marks the kept patches with 1: it must be 1 = removed")
        if removed == int(length * ratio):
            raise CheckFailed(f"{removed} patches removed on a {grid_h} x {grid_w} grid at ratio {ratio}, expected "
                              f"{expected}: count the kept patches with int(L * (1 - ratio)), not the removed ones")
        raise CheckFailed(f"{removed} patches removed on a {grid_h} x {grid_w} grid at ratio {ratio}, expected {expected}")


@block_exercise.checks("the removed patches form one bh x bw block filled row by row", points=2, hint=BLOCK_HINT)
def _block_shape(block_mask):
    for grid_h, grid_w, ratio, seed in ((8, 8, 0.75, 0), (8, 8, 0.9, 1), (5, 7, 0.6, 2), (3, 10, 0.5, 3)):
        mask = _block(block_mask, grid_h, grid_w, ratio, seed).reshape(grid_h, grid_w)
        n = _removed_count(grid_h * grid_w, ratio)
        if int(mask.sum()) != n:
            raise Unscored("the number of removed patches is wrong")  # the count check says so
        bw = min(grid_w, max(math.ceil(math.sqrt(n)), math.ceil(n / grid_h)))
        bh = math.ceil(n / bw)
        rows, cols = torch.nonzero(mask, as_tuple=True)
        top, left = int(rows.min()), int(cols.min())
        height, width = int(rows.max()) - top + 1, int(cols.max()) - left + 1
        if (height, width) != (bh, bw):
            raise CheckFailed(f"on a {grid_h} x {grid_w} grid the {n} removed patches spread over a {height} x {width} "
                              f"area instead of one {bh} x {bw} block (bw = min(grid_w, max(ceil(sqrt(n)), "
                              "ceil(n / grid_h))), bh = ceil(n / bw)): block masking removes one contiguous block")
        expected = torch.zeros(bh * bw)
        expected[:n] = 1
        if not torch.equal(mask[top:top + bh, left:left + bw].flatten(), expected):
            raise CheckFailed("the block is not filled row by row: its first n cells in row-major order must be removed")


@block_exercise.checks("the block's place is random, drawn from the generator", points=1,
                       hint="the corner is random, and every random number comes from the generator argument")
def _block_random_place(block_mask):
    # 16 patches on 8 x 8: a 4 x 4 block with 25 places. The same generator seed under different
    # global random states must give the same place; different generator seeds, different places.
    first = _block(block_mask, 8, 8, 0.25, seed=3, global_seed=1)
    for global_seed in (2, 3, 4):
        if not torch.equal(first, _block(block_mask, 8, 8, 0.25, seed=3, global_seed=global_seed)):
            raise CheckFailed("the same generator seed gave different masks: draw the position from the generator")
    masks = {tuple(_block(block_mask, 8, 8, 0.25, seed=seed, global_seed=1).tolist()) for seed in range(8)}
    if len(masks) == 1:
        raise CheckFailed("the block is always at the same place: draw its corner at random with the generator")


@block_exercise.checks("ratio 0 removes nothing", points=1, hint="with nothing to remove, the mask removes nothing")
def _block_zero(block_mask):
    if _block(block_mask, 4, 4, 0.0).sum() != 0:
        raise CheckFailed("with ratio 0 some patches are removed")


difficulty_exercise = exercise("mae.masking_difficulty", "nearest_visible_distance",
                               reference="coursekit.lessons.masking:nearest_visible_distance")
DIFFICULTY_HINT = ("give every patch its (row, column) position on the grid; a removed patch is as hard as its "
                   "distance to the closest visible patch; average over the removed patches")


def _positions(grid_h, grid_w):
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], 1).float()


def _difficulty_variant(mask, grid_h, grid_w, p=2.0, reduce="mean", positions=None, over="removed"):
    mask = mask.bool()
    positions = _positions(grid_h, grid_w) if positions is None else positions
    if over == "visible":  # distances from visible patches to the nearest removed one
        mask = ~mask
    nearest = torch.cdist(positions[mask], positions[~mask], p=p).min(dim=1).values
    if reduce == "all":  # zeros for the visible patches averaged in
        return float(nearest.sum() / len(positions))
    return float(getattr(nearest, reduce)())


def _difficulty_mistakes(mask, grid_h, grid_w):
    swapped = _positions(grid_w, grid_h)[:, [1, 0]] if grid_h != grid_w else None
    mistakes = {
        "Manhattan (city-block) distance instead of the Euclidean distance":
            lambda: _difficulty_variant(mask, grid_h, grid_w, p=1.0),
        "Chebyshev (max) distance instead of the Euclidean distance":
            lambda: _difficulty_variant(mask, grid_h, grid_w, p=float("inf")),
        "averaged over all patches (visible ones count as 0) instead of over removed patches":
            lambda: _difficulty_variant(mask, grid_h, grid_w, reduce="all"),
        "summed instead of averaged over removed patches": lambda: _difficulty_variant(mask, grid_h, grid_w, reduce="sum"),
        "the largest distance instead of the mean": lambda: _difficulty_variant(mask, grid_h, grid_w, reduce="max"),
        "distances from visible patches to removed ones: the mask is 1 = removed":
            lambda: _difficulty_variant(mask, grid_h, grid_w, over="visible"),
    }
    if swapped is not None:
        mistakes["rows and columns mixed up: the row of patch i is i // grid_w, its column i % grid_w"] = \
            lambda: _difficulty_variant(mask, grid_h, grid_w, positions=swapped)
    return mistakes


def _expect_difficulty(fn, mask, grid_h, grid_w, what):
    value = call(fn, mask.clone(), grid_h, grid_w)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, (int, float)):
        raise CheckFailed(f"return a number (a Python float), got {type_name(value)}")
    expected = difficulty_exercise.reference()(mask, grid_h, grid_w)
    expect_close(float(value), expected, _difficulty_mistakes(mask, grid_h, grid_w), what=what)


@difficulty_exercise.checks("3 x 3 grid, only the centre visible: (4 * 1 + 4 * sqrt(2)) / 8", points=1,
                            hint=DIFFICULTY_HINT)
def _difficulty_fixed(fn):
    mask = torch.ones(9)
    mask[4] = 0
    _expect_difficulty(fn, mask, 3, 3, "the difficulty of the 3 x 3 example")


@difficulty_exercise.checks("matches the reference on random masks (3 seeds)", points=2, hint=DIFFICULTY_HINT)
def _difficulty_random(fn):
    for seed in SEEDS:
        mask = (torch.rand(36, generator=generator(seed)) < 0.7).float()
        mask[0] = 0.0
        _expect_difficulty(fn, mask, 6, 6, f"the difficulty (seed {seed})")


@difficulty_exercise.checks("handles grids that are not square (row = i // grid_w, column = i % grid_w)", points=1,
                            hint="the patches are numbered row by row: a row holds grid_w patches")
def _difficulty_rectangular(fn):
    mask = torch.ones(4 * 7)
    mask[[0, 13, 27]] = 0
    _expect_difficulty(fn, mask, 4, 7, "the difficulty on a 4 x 7 grid")


@difficulty_exercise.checks("a mask that removes nothing has difficulty 0", points=1,
                            hint="return 0.0 when no patch is removed (a mean over nothing)")
def _difficulty_empty(fn):
    _expect_difficulty(fn, torch.zeros(16), 4, 4, "the difficulty when nothing is removed")


# ---------------------------------------------------------------------------------------------
# mae.visible_spread (analysis exercise: how the visible patches are laid out)
# ---------------------------------------------------------------------------------------------

spread_exercise = exercise("mae.visible_spread", "visible_spread", reference="coursekit.grading.homework.mae:visible_spread")
SPREAD_HINT = ("give every patch its (row, column) on the grid; average the distance over every pair of two different "
               "visible patches; count the visible patches in each quarter of the grid and take the spread of the "
               "four counts")


def visible_spread(mask: torch.Tensor, grid_h: int, grid_w: int) -> tuple[float, float]:
    """The reference: (mean distance between visible patches, standard deviation of the quadrant counts).

    mask: ``[L]`` (row-major, 1 = removed). The first number is the mean Euclidean grid distance over
    all unordered pairs of two different visible patches (0.0 when fewer than two are visible); the
    second is the population standard deviation (numpy's default) of the numbers of visible patches
    in the four quadrants, split at row ``grid_h // 2`` and column ``grid_w // 2``.
    """
    visible = ~mask.flatten().bool()
    positions = _positions(grid_h, grid_w)[visible]  # [V, 2]
    count = len(positions)
    if count < 2:
        distance = 0.0
    else:  # every unordered pair once: the upper triangle of the distance matrix
        distance = torch.pdist(positions.double()).mean().item()
    return distance, _quadrant_counts(positions, grid_h, grid_w).std(unbiased=False).item()


def _quadrant_counts(positions: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """How many of the (row, column) ``positions`` [V, 2] lie in each quadrant -> float64 [4]
    (top-left, top-right, bottom-left, bottom-right; split at row grid_h // 2, column grid_w // 2)."""
    top, left = positions[:, 0] < grid_h // 2, positions[:, 1] < grid_w // 2
    return torch.stack([(top & left).sum(), (top & ~left).sum(), (~top & left).sum(), (~top & ~left).sum()]).double()


def _spread_mistakes(mask, grid_h, grid_w):
    """The values of the known mistakes: (distance, quadrant std) as each gets them."""
    distance, spread = visible_spread(mask, grid_h, grid_w)
    visible = ~mask.flatten().bool()
    positions = _positions(grid_h, grid_w)[visible].double()
    pairwise = torch.cdist(positions, positions)
    counts = _quadrant_counts(positions, grid_h, grid_w)
    quadrant_sizes = _quadrant_counts(_positions(grid_h, grid_w), grid_h, grid_w)
    mistakes = {
        "the distance of each patch to itself averaged in (use pairs of two different visible patches)":
            lambda: (pairwise.mean().item(), spread),
        "Manhattan (city-block) distance instead of the Euclidean distance":
            lambda: (torch.pdist(positions, p=1).mean().item(), spread),
        "distances between removed patches: the mask is 1 = removed, 0 = visible":
            lambda: (visible_spread(1 - mask, grid_h, grid_w)[0], spread),
        "sample standard deviation (divides by 3); use the population one (divides by the 4 quadrants)":
            lambda: (distance, counts.std(unbiased=True).item()),
        "variance of the quadrant counts instead of the standard deviation":
            lambda: (distance, counts.var(unbiased=False).item()),
        "counted the removed patches in each quadrant instead of the visible ones":
            lambda: (distance, visible_spread(1 - mask, grid_h, grid_w)[1]),
        "fractions of the quadrant instead of counts of visible patches":
            lambda: (distance, (counts / quadrant_sizes).std(unbiased=False).item()),
    }
    if len(positions) >= 2:
        mistakes["summed over the pairs instead of averaged"] = lambda: (torch.pdist(positions).sum().item(), spread)
    if grid_h != grid_w:
        swapped = _positions(grid_w, grid_h)[:, [1, 0]][visible].double()
        mistakes["rows and columns mixed up: the row of patch i is i // grid_w, its column i % grid_w"] = \
            lambda: (torch.pdist(swapped).mean().item(),
                     _quadrant_counts(swapped, grid_h, grid_w).std(unbiased=False).item())
    return mistakes


def _spread_answer(fn, mask, grid_h, grid_w) -> tuple[float, float]:
    """The student's (distance, quadrant std) as two Python numbers, or a plain-words failure."""
    value = call(fn, mask.clone(), grid_h, grid_w)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"return a tuple of two numbers (distance, quadrant std), got {type_name(value)}")
    numbers = []
    for part in value:
        if isinstance(part, torch.Tensor) and part.numel() == 1:
            part = part.item()
        if not isinstance(part, (int, float)) or isinstance(part, bool) or not math.isfinite(part):
            raise CheckFailed(f"each of the two results should be a finite Python float, got {type_name(part)} "
                              f"{part if isinstance(part, (int, float)) else ''}".rstrip())
        numbers.append(float(part))
    return numbers[0], numbers[1]


def _expect_spread(fn, mask, grid_h, grid_w, what, part):
    """Compare one part (0: the distance, 1: the quadrant std) with the reference."""
    actual = _spread_answer(fn, mask, grid_h, grid_w)[part]
    expected = visible_spread(mask, grid_h, grid_w)[part]
    mistakes = {name: (lambda value=value: value()[part])
                for name, value in _spread_mistakes(mask, grid_h, grid_w).items()}
    expect_close(actual, expected, mistakes, what=what)


def _spread_masks():
    """Random 8 x 8 masks at 50 % and 75 %, and a 6 x 10 one (not square), from the salted generator."""
    masks = []
    for seed in SEEDS:
        for ratio in (0.5, 0.75):
            mask = torch.zeros(64)
            mask[torch.randperm(64, generator=generator(seed))[:int(64 * ratio)]] = 1.0
            masks.append((mask, 8, 8, f"seed {seed}, {ratio:.0%} removed"))
    mask = torch.zeros(60)
    mask[torch.randperm(60, generator=generator(10))[:40]] = 1.0
    masks.append((mask, 6, 10, "a 6 x 10 grid"))
    return masks


@spread_exercise.checks("returns two Python floats (distance, quadrant std)", points=1,
                        hint="return a tuple of two plain numbers, not tensors")
def _spread_types(fn):
    mask = torch.zeros(16)
    mask[[0, 5, 10]] = 1.0
    value = call(fn, mask, 4, 4)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CheckFailed(f"return a tuple of two numbers (distance, quadrant std), got {type_name(value)}")
    if not all(isinstance(part, float) for part in value):
        raise CheckFailed(f"the results are {type_name(value[0])} and {type_name(value[1])}: return Python floats "
                          "(use .item())")


@spread_exercise.checks("distance between visible patches on a fixed example (2 x 2 grid, three visible)", points=1,
                        hint=SPREAD_HINT)
def _spread_fixed_distance(fn):
    _expect_spread(fn, torch.tensor([0.0, 0.0, 0.0, 1.0]), 2, 2, "the distance with patches 0, 1, 2 visible "
                   "(pairs at 1, 1 and sqrt(2))", 0)


@spread_exercise.checks("distance between visible patches on random masks (square and rectangular grids)", points=2,
                        hint=SPREAD_HINT)
def _spread_random_distance(fn):
    for mask, grid_h, grid_w, what in _spread_masks():
        _expect_spread(fn, mask, grid_h, grid_w, f"the distance ({what})", 0)


@spread_exercise.checks("coverage uniformity on a fixed example (4 x 4 grid, visible counts 4, 2, 1, 0)", points=1,
                        hint=SPREAD_HINT)
def _spread_fixed_quadrants(fn):
    visible = [0, 1, 4, 5, 2, 3, 8]  # quadrant counts: top-left 4, top-right 2, bottom-left 1, bottom-right 0
    mask = torch.ones(16)
    mask[visible] = 0.0
    _expect_spread(fn, mask, 4, 4, "the quadrant standard deviation (counts 4, 2, 1, 0)", 1)


@spread_exercise.checks("coverage uniformity on random masks (square and rectangular grids)", points=2,
                        hint=SPREAD_HINT)
def _spread_random_quadrants(fn):
    for mask, grid_h, grid_w, what in _spread_masks():
        _expect_spread(fn, mask, grid_h, grid_w, f"the quadrant standard deviation ({what})", 1)


@spread_exercise.checks("edge cases: a single visible patch (distance 0), an odd grid; the mask unchanged", points=1,
                        hint="with fewer than two visible patches there is no pair: the mean distance is 0; the "
                             "lower quadrants take the middle row of an odd grid")
def _spread_edges(fn):
    one_visible = torch.ones(25)
    one_visible[12] = 0.0
    _expect_spread(fn, one_visible, 5, 5, "the distance with one visible patch", 0)
    odd = torch.zeros(25)
    odd[[0, 1, 2, 3, 4, 5, 6]] = 1.0
    copy = odd.clone()
    _expect_spread(fn, odd, 5, 5, "the quadrant standard deviation on a 5 x 5 grid", 1)
    call(fn, odd, 5, 5)
    if not torch.equal(odd, copy):
        raise CheckFailed("the mask was modified: compute on a copy")
