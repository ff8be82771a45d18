"""The analysis exercises of lessons 02 and 03 (``simclr.augmentation_pair_similarity``,
``moco.simulate_ema``) and their reference code in ``coursekit.lessons.analysis``: the reference and a
differently written correct version get full marks, typical mistakes lose points and are named."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from coursekit.lessons import analysis
from coursekit.grading import grade

# ------------------------------------------------------------------------------ reference code


def test_labeling_cost_is_images_times_seconds_times_rate():
    hours, cost = analysis.labeling_cost(3600, 2.0, 10.0, labels_per_image=3)
    assert hours == pytest.approx(6.0) and cost == pytest.approx(60.0)


def test_pair_similarity_of_identical_and_opposite_views():
    x = torch.randn(5, 4)
    result = analysis.augmentation_pair_similarity({"a": x, "b": 2 * x, "c": -x})
    assert list(result) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert result[("a", "b")] == pytest.approx(1.0, abs=1e-6)
    assert result[("a", "c")] == pytest.approx(-1.0, abs=1e-6)


def test_simulate_ema_step_response_and_half_life():
    signal = torch.ones(200)
    signal[0] = 0.0
    for m in (0.9, 0.99):
        target = analysis.simulate_ema(signal, m)
        # after t steps the target has covered 1 - m ** t of the jump
        assert target[10].item() == pytest.approx(1 - m ** 10, rel=1e-5)
        assert analysis.steps_to_reach(target, 0.5) == math.ceil(analysis.ema_half_life(m))


# ------------------------------------------------------------------------------ augmentation pairs


def pairs_with_loops(view_features):
    names, result = list(view_features), {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            a, b = view_features[names[i]], view_features[names[j]]
            total = 0.0
            for row in range(len(a)):
                total += (torch.dot(a[row], b[row]) / (a[row].norm() * b[row].norm())).item()
            result[(names[i], names[j])] = total / len(a)
    return result


def pairs_unnormalized(view_features):
    return {(a, b): (view_features[a] * view_features[b]).sum(1).mean().item()
            for a, b in itertools.combinations(view_features, 2)}


def pairs_cosine_of_means(view_features):
    return {(a, b): F.cosine_similarity(view_features[a].mean(0), view_features[b].mean(0), dim=0).item()
            for a, b in itertools.combinations(view_features, 2)}


def pairs_all_images(view_features):
    unit = {k: F.normalize(v, dim=1) for k, v in view_features.items()}
    return {(a, b): (unit[a] @ unit[b].T).mean().item() for a, b in itertools.combinations(view_features, 2)}


def pairs_wrong_dim(view_features):
    unit = {k: F.normalize(v, dim=0) for k, v in view_features.items()}
    return {(a, b): (unit[a] * unit[b]).sum(1).mean().item() for a, b in itertools.combinations(view_features, 2)}


def pairs_with_self(view_features):
    result = analysis.augmentation_pair_similarity(view_features)
    result.update({(a, a): 1.0 for a in view_features})
    return result


def pairs_both_orders(view_features):
    result = analysis.augmentation_pair_similarity(view_features)
    result.update({(b, a): s for (a, b), s in list(result.items())})
    return result


def pairs_as_tensors(view_features):
    unit = {k: F.normalize(v, dim=1) for k, v in view_features.items()}
    return {(a, b): (unit[a] * unit[b]).sum(1).mean() for a, b in itertools.combinations(view_features, 2)}


def pairs_in_place(view_features):
    for value in view_features.values():
        value.div_(value.norm(dim=1, keepdim=True))
    return {(a, b): (view_features[a] * view_features[b]).sum(1).mean().item()
            for a, b in itertools.combinations(view_features, 2)}


# ------------------------------------------------------------------------------ EMA simulator


def ema_vectorized(signal, m):
    """The closed form: target[t] = m^t s[0] + sum_{u=1..t} (1 - m) m^(t-u) s[u]."""
    t = torch.arange(len(signal), dtype=torch.float64)
    weights = (1 - m) * (m ** (t[:, None] - t[None, :]).clamp_min(0)) * (t[:, None] >= t[None, :])
    weights[:, 0] = m ** t
    flat = signal.double().reshape(len(signal), -1)
    return (weights @ flat).reshape(signal.shape).float()


def ema_with_list(signal, m):
    values = [signal[0].clone()]
    for x in signal[1:]:
        values.append(m * values[-1] + (1 - m) * x)
    return torch.stack(values)


def ema_swapped(signal, m):
    return ema_with_list(signal, 1 - m)


def ema_from_zero(signal, m):
    values, current = [], torch.zeros_like(signal[0])
    for x in signal:
        current = m * current + (1 - m) * x
        values.append(current)
    return torch.stack(values)


def ema_late(signal, m):
    values = [signal[0].clone()]
    for t in range(1, len(signal)):
        values.append(m * values[-1] + (1 - m) * signal[t - 1])
    return torch.stack(values)


def ema_running_mean(signal, m):
    return signal.cumsum(0) / torch.arange(1, len(signal) + 1).reshape(-1, *[1] * (signal.dim() - 1))


def ema_in_place(signal, m):
    for t in range(1, len(signal)):
        signal[t] = m * signal[t - 1] + (1 - m) * signal[t]
    return signal


def ema_last_only(signal, m):
    return ema_with_list(signal, m)[-1]


def ema_1d_only(signal, m):
    return torch.tensor([v.item() for v in ema_with_list(signal, m)])


ALTERNATIVES = {
    "simclr.augmentation_pair_similarity": pairs_with_loops,
    "moco.simulate_ema": ema_vectorized,
}

MISTAKES = [
    ("simclr.augmentation_pair_similarity", pairs_unnormalized, "not L2-normalized"),
    ("simclr.augmentation_pair_similarity", pairs_cosine_of_means, "cosine similarity of the mean features"),
    ("simclr.augmentation_pair_similarity", pairs_all_images, "all pairs of images"),
    ("simclr.augmentation_pair_similarity", pairs_wrong_dim, "wrong dimension"),
    ("simclr.augmentation_pair_similarity", pairs_with_self, "with itself"),
    ("simclr.augmentation_pair_similarity", pairs_both_orders, "both (a, b) and (b, a)"),
    ("simclr.augmentation_pair_similarity", pairs_as_tensors, "Python float"),
    ("simclr.augmentation_pair_similarity", pairs_in_place, "input features were changed"),
    ("moco.simulate_ema", ema_swapped, "m and 1 - m swapped"),
    ("moco.simulate_ema", ema_from_zero, "(1 - m) * signal[0]"),
    ("moco.simulate_ema", ema_late, "one step late"),
    ("moco.simulate_ema", ema_running_mean, "running mean"),
    ("moco.simulate_ema", ema_in_place, "signal was modified"),
    ("moco.simulate_ema", ema_last_only, "shape"),
    ("moco.simulate_ema", ema_1d_only, "several weights at once"),
]


@pytest.mark.parametrize("exercise_id", sorted(ALTERNATIVES))
def test_reference_and_alternative_get_full_marks(exercise_id):
    from coursekit.grading import EXERCISES

    for fn in (EXERCISES[exercise_id].reference(), ALTERNATIVES[exercise_id]):
        result = grade(exercise_id, fn)
        assert result.passed and result.score == result.max_score, result.feedback


@pytest.mark.parametrize("exercise_id, mistaken, words", MISTAKES, ids=[f"{m[0]}-{m[1].__name__}" for m in MISTAKES])
def test_mistake_loses_points_and_is_named(exercise_id, mistaken, words):
    result = grade(exercise_id, mistaken)
    assert result.score < result.max_score
    assert any(words in line for line in result.feedback), result.feedback


def test_stub_is_not_implemented():
    def stub(*args):
        raise NotImplementedError

    for exercise_id in ALTERNATIVES:
        result = grade(exercise_id, stub)
        assert result.score == 0 and "not implemented" in result.feedback[0]
