"""The three analysis exercises built as the source text specifies them (``simclr.overlap_matrix``,
``moco.ema_lag_statistics``, ``mae.visible_spread``): the reference and a differently written correct
version get full marks; typical mistakes, written here with numpy and plain loops (not with the
graders' helpers), lose points and the feedback names them."""
import math

import numpy as np
import pytest
import torch

from coursekit.grading import EXERCISES
from .grader_asserts import _caught, _full_marks

# ------------------------------------------------------------------------------ simclr.overlap_matrix


def overlap_numpy(first_views, second_views, center=True, scale=True, self_draw=False, transpose=False,
                  per_channel=False, pooled=False, nan_for_constant=False):
    """Mean Pearson correlation with numpy, one image at a time; the flags write in the known mistakes."""
    first = first_views.double().numpy()
    second = (first_views if self_draw else second_views).double().numpy()
    count, n = first.shape[:2]
    out = np.zeros((count, count))

    def corr(x, y):
        x, y = x.ravel(), y.ravel()
        if center:
            x, y = x - x.mean(), y - y.mean()
        if not scale:
            return float(x @ y) / len(x)
        denom = math.sqrt(float(x @ x) * float(y @ y))
        if denom == 0:
            return float("nan") if nan_for_constant else 0.0
        return float(x @ y) / denom

    for a in range(count):
        for b in range(count):
            if pooled:
                out[a, b] = corr(first[a], second[b])
            elif per_channel:
                out[a, b] = np.mean([corr(first[a, i, c], second[b, i, c])
                                     for i in range(n) for c in range(first.shape[2])])
            else:
                out[a, b] = np.mean([corr(first[a, i], second[b, i]) for i in range(n)])
    result = torch.from_numpy(out.T if transpose else out).float()
    return result


def overlap_corrcoef(first_views, second_views):
    """Another correct version: numpy's corrcoef on each pair of flattened views."""
    count, n = first_views.shape[:2]
    out = torch.zeros(count, count)
    for a in range(count):
        for b in range(count):
            values = []
            for i in range(n):
                x, y = first_views[a, i].flatten().numpy(), second_views[b, i].flatten().numpy()
                values.append(0.0 if x.std() == 0 or y.std() == 0 else np.corrcoef(x, y)[0, 1])
            out[a, b] = float(np.mean(values))
    return out


OVERLAP_MISTAKES = [
    (lambda f, s: overlap_numpy(f, s, center=False), "subtract each view's mean first"),
    (lambda f, s: overlap_numpy(f, s, scale=False), "covariance instead of correlation"),
    (lambda f, s: overlap_numpy(f, s, self_draw=True), "the second draw ignored"),
    (lambda f, s: overlap_numpy(f, s, transpose=True), "rows and columns swapped"),
    (lambda f, s: overlap_numpy(f, s, per_channel=True), "each color channel separately"),
    (lambda f, s: overlap_numpy(f, s, pooled=True), "all images of an augmentation at once"),
    (lambda f, s: overlap_numpy(f, s, nan_for_constant=True), "contains NaN"),
    (lambda f, s: overlap_numpy(f, s).tolist(), "should be a torch.Tensor"),
]


def test_overlap_reference_and_alternative_get_full_marks():
    _full_marks("simclr.overlap_matrix", EXERCISES["simclr.overlap_matrix"].reference())
    _full_marks("simclr.overlap_matrix", overlap_corrcoef)
    _full_marks("simclr.overlap_matrix", overlap_numpy)


@pytest.mark.parametrize("fn, words", OVERLAP_MISTAKES)
def test_overlap_mistakes_are_named(fn, words):
    _caught("simclr.overlap_matrix", fn, words)


def test_overlap_of_a_view_with_a_brightened_copy_is_one():
    views = torch.rand(2, 3, 3, 4, 4)
    matrix = EXERCISES["simclr.overlap_matrix"].reference()(views, 1.2 * views + 0.1)
    assert torch.allclose(matrix.diagonal(), torch.ones(2), atol=1e-6)


# ------------------------------------------------------------------------------ moco.ema_lag_statistics


def lag_loops(online, target, root=True, rms=False, step_index=False, future=False, swapped=False, ddof=0,
              across_params=False):
    """Distance, staleness and variance with plain loops and numpy; the flags write in the known mistakes."""
    on, tg = online.double().numpy(), target.double().numpy()
    steps = len(on)
    distance, staleness = [], []
    for t in range(steps):
        squared = float(((on[t] - tg[t]) ** 2).sum())
        distance.append(math.sqrt(squared / (len(on[t]) if rms else 1)) if root else squared)
        candidates = range(steps) if future else range(t + 1)
        if swapped:  # nearest earlier *target* to the current online parameters
            nearest = min(candidates, key=lambda s: float(np.linalg.norm(tg[s] - on[t])))
        else:
            nearest = min(candidates, key=lambda s: float(np.linalg.norm(on[s] - tg[t])))
        staleness.append(nearest if step_index else t - nearest)
    if across_params:
        variance = float(np.mean([np.var(tg[t], ddof=ddof) for t in range(steps)]))
    else:
        variance = float(np.mean(np.var(tg, axis=0, ddof=ddof)))
    return torch.tensor(distance), torch.tensor(staleness, dtype=torch.int64), variance


LAG_MISTAKES = [
    (lambda o, t: lag_loops(o, t, root=False), "squared distance"),
    (lambda o, t: lag_loops(o, t, rms=True), "root-mean-square"),
    (lambda o, t: lag_loops(o, t, step_index=True), "not how many steps behind"),
    (lambda o, t: lag_loops(o, t, future=True), "future online states"),
    (lambda o, t: lag_loops(o, t, swapped=True), "roles are swapped"),
    (lambda o, t: lag_loops(o, t, ddof=1), "sample variance"),
    (lambda o, t: lag_loops(o, t, across_params=True), "variance across the parameters"),
    (lambda o, t: lag_loops(t, o)[:2] + (lag_loops(o, o)[2],), "variance of the online parameters"),
    (lambda o, t: (lag_loops(o, t)[0], lag_loops(o, t)[1].float(), lag_loops(o, t)[2]), "expected torch.int64"),
    (lambda o, t: lag_loops(o, t)[:2] + (float(np.mean(np.std(t.double().numpy(), axis=0))),), "standard deviation"),
]


def test_lag_reference_and_alternative_get_full_marks():
    _full_marks("moco.ema_lag_statistics", EXERCISES["moco.ema_lag_statistics"].reference())
    _full_marks("moco.ema_lag_statistics", lag_loops)


@pytest.mark.parametrize("fn, words", LAG_MISTAKES)
def test_lag_mistakes_are_named(fn, words):
    _caught("moco.ema_lag_statistics", fn, words)


def test_a_target_that_copies_the_online_walk_late_is_exactly_that_stale():
    online = torch.randn(12, 5).cumsum(0)
    target = torch.cat([online[:3], online[:-3]])  # the online parameters of 3 steps ago
    distance, staleness, _ = EXERCISES["moco.ema_lag_statistics"].reference()(online, target)
    assert staleness[3:].tolist() == [3] * 9 and distance[0] == 0


# ------------------------------------------------------------------------------ mae.visible_spread


def spread_loops(mask, grid_h, grid_w, metric="euclid", self_pairs=False, inverted=False, ddof=0, power=0.5,
                 count_removed=False, fractions=False, swap=False):
    """Distance between visible patches and quadrant spread with loops; the flags write in the known mistakes."""
    values = mask.tolist()
    cells = [(i % grid_h, i // grid_h) if swap else (i // grid_w, i % grid_w) for i in range(grid_h * grid_w)]
    keep = 1 if inverted else 0
    visible = [c for c, m in zip(cells, values) if m == keep]
    pairs = [(p, q) for i, p in enumerate(visible) for j, q in enumerate(visible) if (i != j or self_pairs)]
    if metric == "euclid":
        lengths = [math.dist(p, q) for p, q in pairs]
    else:
        lengths = [abs(p[0] - q[0]) + abs(p[1] - q[1]) for p, q in pairs]
    distance = sum(lengths) / len(lengths) if lengths else 0.0
    counted = [c for c, m in zip(cells, values) if m == (1 if count_removed else 0)]
    quadrant = lambda cell: (cell[0] >= grid_h // 2, cell[1] >= grid_w // 2)  # noqa: E731
    keys = [(False, False), (False, True), (True, False), (True, True)]
    counts = [sum(quadrant(c) == key for c in counted) for key in keys]
    if fractions:
        counts = [k / sum(quadrant(c) == key for c in cells) for k, key in zip(counts, keys)]
    spread = float(np.var(counts, ddof=ddof) ** power)
    return distance, spread


SPREAD_MISTAKES = [
    (lambda m, h, w: spread_loops(m, h, w, self_pairs=True), "distance of each patch to itself"),
    (lambda m, h, w: spread_loops(m, h, w, metric="manhattan"), "Manhattan"),
    (lambda m, h, w: (spread_loops(m, h, w, inverted=True)[0], spread_loops(m, h, w)[1]), "mask is 1 = removed"),
    (lambda m, h, w: spread_loops(m, h, w, ddof=1), "sample standard deviation"),
    (lambda m, h, w: spread_loops(m, h, w, power=1.0), "variance of the quadrant counts"),
    (lambda m, h, w: spread_loops(m, h, w, count_removed=True), "counted the removed patches"),
    (lambda m, h, w: spread_loops(m, h, w, fractions=True), "fractions of the quadrant"),
    (lambda m, h, w: spread_loops(m, h, w, swap=True), "rows and columns mixed up"),
    (lambda m, h, w: tuple(torch.tensor(v) for v in spread_loops(m, h, w)), "return Python floats"),
]


def test_spread_reference_and_alternative_get_full_marks():
    _full_marks("mae.visible_spread", EXERCISES["mae.visible_spread"].reference())
    _full_marks("mae.visible_spread", spread_loops)


@pytest.mark.parametrize("fn, words", SPREAD_MISTAKES)
def test_spread_mistakes_are_named(fn, words):
    _caught("mae.visible_spread", fn, words)


def test_grid_mask_at_75_percent_covers_the_quadrants_evenly():
    from coursekit.lessons import masking

    mask = masking.grid_mask(8, 8, 0.75, torch.Generator().manual_seed(0))
    distance, spread = EXERCISES["mae.visible_spread"].reference()(mask, 8, 8)
    assert spread == 0.0 and distance > 0


# What tests/grading/test_graders.py checks every registered exercise has: other correct versions, named mistakes.
ALTERNATIVES = {"simclr.overlap_matrix": [overlap_corrcoef, overlap_numpy],
                "moco.ema_lag_statistics": [lag_loops], "mae.visible_spread": [spread_loops]}
MISTAKES = [(exercise_id, fn, words) for exercise_id, cases in (
    ("simclr.overlap_matrix", OVERLAP_MISTAKES), ("moco.ema_lag_statistics", LAG_MISTAKES),
    ("mae.visible_spread", SPREAD_MISTAKES)) for fn, words in cases]
