"""The MAE masking-strategy comparator (coursekit.lessons.masking) and its graders: references and other
correct versions get full marks, typical mistakes lose points with feedback naming the mistake."""
import math

import pytest
import torch

from coursekit.lessons import masking
from .grader_asserts import _caught, _full_marks


# ------------------------------------------------------------------------------------------------
# the library


@pytest.mark.parametrize("strategy", sorted(masking.MASKS))
@pytest.mark.parametrize("grid_h, grid_w, ratio", [(8, 8, 0.75), (8, 8, 0.9), (4, 6, 0.5), (5, 5, 0.0)])
def test_every_strategy_removes_the_random_masking_count(strategy, grid_h, grid_w, ratio):
    mask = masking.MASKS[strategy](grid_h, grid_w, ratio, torch.Generator().manual_seed(0))
    length = grid_h * grid_w
    assert mask.shape == (length,) and int(mask.sum()) == length - int(length * (1 - ratio))


def test_grid_mask_keeps_one_of_every_two_by_two_at_75_percent():
    mask = masking.grid_mask(8, 8, 0.75, torch.Generator().manual_seed(1)).reshape(4, 2, 4, 2)
    assert (mask.sum(dim=(1, 3)) == 3).all()


def test_difficulty_orders_block_above_random_above_grid():
    results = masking.compare_masking(torch.randn(16, 64, 12), 8, 8, [0.75])
    distance = {s: results[(s, 0.75)]["distance"] for s in ("random", "block", "grid")}
    assert distance["block"] > distance["random"] > distance["grid"]
    assert distance["grid"] == pytest.approx((2 + math.sqrt(2)) / 3, abs=1e-6)


def test_nearest_visible_fill_copies_visible_neighbours():
    patches = torch.arange(9.0).reshape(1, 9, 1)
    mask = torch.tensor([1.0, 1, 1, 1, 0, 1, 1, 1, 1])
    filled = masking.nearest_visible_fill(patches, mask, 3, 3)
    assert torch.equal(filled, torch.full((1, 9, 1), 4.0))
    assert masking.interpolation_error(patches, mask, 3, 3) == pytest.approx(sum((i - 4.0) ** 2 for i in range(9)) / 8)


# ------------------------------------------------------------------------------------------------
# mae.block_mask


def block_mask_loops(grid_h, grid_w, ratio, generator=None):
    """A differently written block mask: nested loops over a 2-D list."""
    length = grid_h * grid_w
    n = length - int(length * (1 - ratio))
    rows = [[0.0] * grid_w for _ in range(grid_h)]
    if n:
        bw = min(grid_w, max(math.ceil(n ** 0.5), -(-n // grid_h)))
        bh = -(-n // bw)
        top = torch.randint(0, grid_h - bh + 1, (1,), generator=generator).item()
        left = torch.randint(0, grid_w - bw + 1, (1,), generator=generator).item()
        for k in range(n):
            rows[top + k // bw][left + k % bw] = 1.0
    return torch.tensor(rows).flatten()


def test_block_mask_reference_and_alternative_get_full_marks():
    _full_marks("mae.block_mask", masking.block_mask)
    _full_marks("mae.block_mask", block_mask_loops)


BLOCK_MASK_MISTAKES = [
    (lambda h, w, r, g=None: 1 - masking.block_mask(h, w, r, g), "1 = removed"),
    (lambda h, w, r, g=None: masking.random_mask(h, w, r, g), "instead of one"),
    (lambda h, w, r, g=None: block_mask_loops(h, w, r, torch.Generator().manual_seed(0)), "always at the same place"),
    (lambda h, w, r, g=None: block_mask_loops(h, w, r, None), "same generator seed gave different masks"),
    (lambda h, w, r, g=None: block_mask_loops(h, w, r, g).bool(), "expected a floating point tensor"),
    (lambda h, w, r, g=None: _int_ratio_block(h, w, r, g), "not the removed ones"),
    (lambda h, w, r, g=None: _full_rows_block(h, w, r, g), "instead of one"),
    (lambda h, w, r, g=None: masking.block_mask(h, w, r, g).tolist(), "should be a torch.Tensor"),
]


@pytest.mark.parametrize("fn, words", BLOCK_MASK_MISTAKES)
def test_block_mask_mistakes_are_named(fn, words):
    _caught("mae.block_mask", fn, words)


def test_block_mask_contract_gaps_cost_exactly_their_point():
    """A bool mask is right except for its dtype; a mask from the global generator is right except
    for where its randomness comes from: each loses the one point of that part of the contract."""
    from coursekit.grading import grade

    as_bool = grade("mae.block_mask", lambda h, w, r, g=None: block_mask_loops(h, w, r, g).bool())
    global_rng = grade("mae.block_mask", lambda h, w, r, g=None: block_mask_loops(h, w, r, None))
    assert as_bool.score == global_rng.score == as_bool.max_score - 1, (as_bool.feedback, global_rng.feedback)


def _int_ratio_block(grid_h, grid_w, ratio, generator):
    """Removes int(L * ratio) patches (one too few when L * ratio is not an integer)."""
    mask = block_mask_loops(grid_h, grid_w, ratio, generator)
    extra = int(mask.sum()) - int(grid_h * grid_w * ratio)
    if extra > 0:
        mask[torch.nonzero(mask).flatten()[-extra:]] = 0.0
    return mask


def _full_rows_block(grid_h, grid_w, ratio, generator):
    """A block of whole rows (as wide as the grid): contiguous, but not the specified shape."""
    length = grid_h * grid_w
    n = length - int(length * (1 - ratio))
    mask = torch.zeros(length)
    start = int(torch.randint(0, length - n + 1, (1,), generator=generator))
    mask[start:start + n] = 1.0
    return mask


# ------------------------------------------------------------------------------------------------
# mae.masking_difficulty


def difficulty_loops(mask, grid_h, grid_w):
    """A differently written difficulty: plain Python loops and math.dist."""
    cells = [(i // grid_w, i % grid_w) for i in range(grid_h * grid_w)]
    removed = [c for c, m in zip(cells, mask.tolist()) if m == 1]
    visible = [c for c, m in zip(cells, mask.tolist()) if m == 0]
    if not removed:
        return 0.0
    return sum(min(math.dist(r, v) for v in visible) for r in removed) / len(removed)


def test_difficulty_reference_and_alternative_get_full_marks():
    _full_marks("mae.masking_difficulty", masking.nearest_visible_distance)
    _full_marks("mae.masking_difficulty", difficulty_loops)


def _manhattan(mask, grid_h, grid_w):
    positions = masking.grid_positions(grid_h, grid_w)
    m = mask.bool()
    if not m.any():
        return 0.0
    return torch.cdist(positions[m], positions[~m], p=1).min(1).values.mean().item()


def _over_all(mask, grid_h, grid_w):
    return masking.nearest_visible_distance(mask, grid_h, grid_w) * float(mask.sum()) / mask.numel()


def _max(mask, grid_h, grid_w):
    positions = masking.grid_positions(grid_h, grid_w)
    m = mask.bool()
    return torch.cdist(positions[m], positions[~m]).min(1).values.max().item() if m.any() else 0.0


def _swapped(mask, grid_h, grid_w):
    cells = [(i % grid_h, i // grid_h) for i in range(grid_h * grid_w)]
    removed = [c for c, m in zip(cells, mask.tolist()) if m == 1]
    visible = [c for c, m in zip(cells, mask.tolist()) if m == 0]
    return sum(min(math.dist(r, v) for v in visible) for r in removed) / len(removed) if removed else 0.0


DIFFICULTY_MISTAKES = [
    (_manhattan, "Manhattan"),
    (_over_all, "averaged over all patches"),
    (_max, "largest distance"),
    (_swapped, "rows and columns mixed up"),
    (lambda m, h, w: masking.nearest_visible_distance(1 - m, h, w) if (1 - m).any() and m.any() else 0.0, "the mask is 1 = removed"),
    (lambda m, h, w: difficulty_loops(m, h, w) * float(m.sum()), "summed instead of averaged"),
    (lambda m, h, w: "1.2", "return a number"),
]


@pytest.mark.parametrize("fn, words", DIFFICULTY_MISTAKES)
def test_difficulty_mistakes_are_named(fn, words):
    _caught("mae.masking_difficulty", fn, words)


# What tests/grading/test_graders.py checks every registered exercise has: other correct versions, named mistakes.
ALTERNATIVES = {"mae.block_mask": [block_mask_loops], "mae.masking_difficulty": [difficulty_loops]}
MISTAKES = [(exercise_id, fn, words) for exercise_id, cases in (
    ("mae.block_mask", BLOCK_MASK_MISTAKES), ("mae.masking_difficulty", DIFFICULTY_MISTAKES)) for fn, words in cases]
