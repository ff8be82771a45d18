"""Graded exercises of lesson 03 (MoCo): ``moco.momentum_update``, ``moco.infonce``, and the momentum analysis:
``moco.simulate_ema``, ``moco.ema_lag_statistics``."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .checks import (SEEDS, call, call_backward, expect_carries_gradient, expect_close, expect_equal, expect_gradient,
                     expect_no_gradient, expect_scalar, expect_value_first, gradients, randn, run_call, type_name)
from ..core import CheckFailed, exercise

# ---------------------------------------------------------------------------------------------
# moco.momentum_update
# ---------------------------------------------------------------------------------------------

momentum_exercise = exercise("moco.momentum_update", "momentum_update", reference="coursekit.methods.ema:momentum_update")
UPDATE_HINT = ("the target keeps the fraction m of itself and takes 1 - m from the online network, changing its "
               "own parameters in place and outside autograd")


def _network(seed: int) -> nn.Module:
    """A small network with parameters and buffers (BatchNorm statistics), all seeded."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2.0)
    return net


def _pair(requires_grad: bool = False) -> tuple[nn.Module, nn.Module]:
    online, target = _network(0), _network(1)
    target.requires_grad_(requires_grad)
    return online, target


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in tensors])


def _student_update(momentum_update, m: float, requires_grad: bool = False):
    """Run the student's update on a fresh pair; return (online, target, returned value)."""
    online, target = _pair(requires_grad)
    returned = call(momentum_update, online, target, m)
    return online, target, returned


def _target_flags(momentum_update, m: float) -> dict:
    """The flags of the target's parameters after the update of a target that requires grad."""
    online, target = _pair(requires_grad=True)
    return run_call(momentum_update, (online, target, m), {}).module_flags[1]


def _expected_parameters(m: float) -> torch.Tensor:
    online, target = _pair()
    momentum_exercise.reference()(online, target, m)
    return _flat(target.parameters())


@momentum_exercise.checks("updates the target in place and returns None", points=1,
                          hint="change the target's parameters in place (mul_, add_, copy_) and return nothing")
def _in_place(momentum_update):
    _, target, returned = _student_update(momentum_update, 0.9)
    _, untouched = _pair()
    if returned is not None and torch.equal(_flat(target.parameters()), _flat(untouched.parameters())):
        raise CheckFailed("returned a new network instead of updating target in place")
    if returned is not None:
        raise CheckFailed(f"returned {type_name(returned)}: the update works in place and returns None")


@momentum_exercise.checks("target parameters become m * target + (1 - m) * online", points=3, hint=UPDATE_HINT)
def _values(momentum_update):
    online_params, target_params = (_flat(net.parameters()) for net in _pair())
    for m in (0.9, 0.99, 0.5):
        _, target, _ = _student_update(momentum_update, m)
        mistakes = {
            "m and 1 - m swapped (the target should keep m of itself)": lambda m=m: _expected_parameters(1 - m),
            "target overwritten with the online weights (m ignored)": lambda: online_params,
            "target not updated (assigning to the loop variable does not change the parameter: "
            "update it in place)": lambda: target_params,
        }
        expect_close(_flat(target.parameters()), _expected_parameters(m), mistakes,
                     what=f"the target parameters (m = {m})")


@momentum_exercise.checks("leaves the online network unchanged", points=1,
                          hint="only the target changes; read the online parameters without modifying them")
def _online_unchanged(momentum_update):
    online, _, _ = _student_update(momentum_update, 0.9)
    if not torch.equal(_flat(online.state_dict().values()), _flat(_network(0).state_dict().values())):
        raise CheckFailed("the online network was changed: the update went into the online network")


@momentum_exercise.checks("updates parameters only, not buffers (BatchNorm statistics)", points=1,
                          hint="only parameters are averaged: buffers such as BatchNorm statistics stay as they are")
def _buffers_untouched(momentum_update):
    _, target, _ = _student_update(momentum_update, 0.9)
    if not torch.equal(_flat(target.buffers()), _flat(_network(1).buffers())):
        raise CheckFailed("the target's buffers changed: buffers also averaged (parameters only)")


@momentum_exercise.checks("records no gradient (the update is not part of the autograd graph)", points=1,
                          hint="the update is bookkeeping, not part of training: autograd must not record it")
def _no_gradient(momentum_update):
    try:
        flags = _target_flags(momentum_update, 0.9)
    except CheckFailed as failure:
        if "requires grad" in str(failure):
            raise CheckFailed("the update is recorded by autograd (in-place change of a parameter that requires "
                              "grad): wrap it in torch.no_grad()") from None
        raise
    if any(flag["history"] for flag in flags.values()):
        raise CheckFailed("the target parameters carry autograd history: update them under torch.no_grad()")
    if not all(flag["requires_grad"] for flag in flags.values()):
        raise CheckFailed("the update switched off requires_grad of the target parameters")


@momentum_exercise.checks("edge cases: m = 0 copies the online network, m = 1 leaves the target unchanged", points=1,
                          hint="use m and 1 - m exactly as in the formula, without special cases")
def _edge_momenta(momentum_update):
    for m in (0.0, 1.0):
        _, target, _ = _student_update(momentum_update, m)
        expect_close(_flat(target.parameters()), _expected_parameters(m), what=f"the target parameters (m = {m})")


# ---------------------------------------------------------------------------------------------
# moco.infonce
# ---------------------------------------------------------------------------------------------

infonce_exercise = exercise("moco.infonce", "infonce", reference="coursekit.methods.moco:infonce")
INFONCE_HINT = ("each query is a classification problem: its key is the right answer, the queue holds the wrong "
                "ones, and the logits are similarities sharpened by the temperature")


def _unit(seed: int, *shape: int) -> torch.Tensor:
    return F.normalize(randn(seed, *shape), dim=1)


def _infonce_mistakes(q, k, queue, temperature):
    reference = infonce_exercise.reference()
    zeros = torch.zeros(len(q), dtype=torch.long)
    positives = (q * k).sum(1, keepdim=True)
    return {
        "divided by the temperature twice": lambda: reference(q, k, queue, temperature ** 2),
        "temperature not applied": lambda: reference(q, k, queue, 1.0),
        "the positive is not at index 0 (logits must start with q.k, followed by q.queue)":
            lambda: F.cross_entropy(torch.cat([q @ queue.T, positives], 1) / temperature, zeros),
        "keys of the other samples used as negatives (the positive is only q[i].k[i], the negatives come "
        "from the queue)":
            lambda: F.cross_entropy(torch.cat([q @ k.T, q @ queue.T], 1) / temperature, torch.arange(len(q))),
        "summed over the batch instead of averaged": lambda: reference(q, k, queue, temperature) * len(q),
    }


def _expect_infonce(infonce, q, k, queue, temperature, what):
    expected = infonce_exercise.reference()(q, k, queue, temperature)
    value = expect_scalar(call(infonce, q.clone(), k.clone(), queue.clone(), temperature))
    expect_close(value, expected, _infonce_mistakes(q, k, queue, temperature), what=what)


@infonce_exercise.checks("returns a single number (0-dim float tensor)", points=1,
                         hint="the loss is one number: the average over the batch")
def _infonce_scalar(infonce):
    expect_scalar(call(infonce, _unit(0, 4, 8), _unit(1, 4, 8), _unit(2, 16, 8), 0.2))


@infonce_exercise.checks("matches InfoNCE on a small fixed example", points=2, hint=INFONCE_HINT)
def _infonce_fixed(infonce):
    q = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), dim=1)
    k = F.normalize(torch.tensor([[1.0, 0.5], [0.0, 1.0]]), dim=1)
    queue = F.normalize(torch.tensor([[-1.0, 0.0], [0.0, -1.0], [1.0, -1.0]]), dim=1)
    _expect_infonce(infonce, q, k, queue, 0.5, "the loss on the fixed example")


@infonce_exercise.checks("matches InfoNCE on random inputs (3 seeds, temperatures 0.07 and 0.2)", points=3,
                         hint=INFONCE_HINT)
def _infonce_random(infonce):
    for seed in SEEDS:
        for temperature in (0.07, 0.2):
            q, k, queue = _unit(seed, 8, 16), _unit(seed + 10, 8, 16), _unit(seed + 20, 32, 16)
            _expect_infonce(infonce, q, k, queue, temperature, f"the loss (seed {seed}, temperature {temperature})")


@infonce_exercise.checks("gradient flows into q and matches the reference", points=1,
                         hint="q is the output of the network being trained: the loss must stay connected to it")
def _infonce_grad_q(infonce):
    q, k, queue = _unit(3, 6, 8), _unit(4, 6, 8), _unit(5, 12, 8)
    reference = infonce_exercise.reference()
    value, (grad_q,) = call_backward(infonce, q.requires_grad_(), k.clone(), queue.clone(), 0.2)
    expect_value_first(expect_scalar(value), reference(q, k, queue, 0.2))
    expect_carries_gradient(value)
    expect_gradient(grad_q, gradients(lambda a: reference(a, k, queue, 0.2), q)[0], "q")


def _target_receives_no_gradient(infonce, which: int, name: str) -> None:
    inputs = [_unit(6, 6, 8), _unit(7, 6, 8), _unit(8, 12, 8)]
    value, grads = call_backward(infonce, *[t.requires_grad_() for t in inputs], 0.2)
    expect_value_first(expect_scalar(value), infonce_exercise.reference()(*inputs, 0.2))
    expect_no_gradient(grads[which], name)


@infonce_exercise.checks("no gradient flows into the keys k", points=1,
                         hint="k comes from the momentum encoder, which this loss does not train")
def _infonce_no_grad_k(infonce):
    _target_receives_no_gradient(infonce, 1, "keys k")


@infonce_exercise.checks("no gradient flows into the queue", points=1, hint="the queue holds keys of earlier batches: they are constants for this loss")
def _infonce_no_grad_queue(infonce):
    _target_receives_no_gradient(infonce, 2, "queue")


@infonce_exercise.checks("handles a batch of one and a queue of one", points=1,
                         hint="nothing in the code should assume more than one query or more than one key in the queue")
def _infonce_tiny(infonce):
    _expect_infonce(infonce, _unit(9, 1, 4), _unit(10, 1, 4), _unit(11, 1, 4), 0.2, "the loss for N = 1, K = 1")


# ---------------------------------------------------------------------------------------------
# moco.simulate_ema (analysis exercise: lag vs stability of a momentum encoder)
# ---------------------------------------------------------------------------------------------

from .checks import expect_tensor  # noqa: E402 - used by the checks below

ema_exercise = exercise("moco.simulate_ema", "simulate_ema", reference="coursekit.lessons.analysis:simulate_ema")
EMA_HINT = ("the target starts as a copy of the signal, then at each step keeps m of its previous value and "
            "takes 1 - m from the current signal")


def _ema_variant(signal: torch.Tensor, m: float, start=None, late: bool = False) -> torch.Tensor:
    """An EMA as written with a known mistake: another start value or a one-step-late input."""
    signal = signal.double()
    target = torch.empty_like(signal)
    target[0] = signal[0] if start is None else start(signal, m)
    for t in range(1, len(signal)):
        target[t] = m * target[t - 1] + (1 - m) * signal[t - 1 if late else t]
    return target


def _ema_mistakes(signal: torch.Tensor, m: float) -> dict:
    return {
        "m and 1 - m swapped (the target should keep m of its old value)": lambda: _ema_variant(signal, 1 - m),
        "target started at 0 instead of at signal[0] (the target starts as a copy of the online network)":
            lambda: _ema_variant(signal, m, start=lambda s, m: torch.zeros_like(s[0])),
        "target started at (1 - m) * signal[0] (an update from 0) instead of at signal[0]":
            lambda: _ema_variant(signal, m, start=lambda s, m: (1 - m) * s[0]),
        "one step late: target[t] should use signal[t], not signal[t - 1]": lambda: _ema_variant(signal, m, late=True),
        "returned the signal itself (no averaging)": lambda: signal,
        "running mean of the signal instead of an exponential moving average":
            lambda: signal.double().cumsum(0) / torch.arange(1, len(signal) + 1, dtype=torch.float64).reshape(
                -1, *[1] * (signal.dim() - 1)),
    }


def _expect_ema(fn, signal: torch.Tensor, m: float, what: str) -> None:
    expected = ema_exercise.reference()(signal, m)
    value = expect_tensor(call(fn, signal.clone(), m), what, shape=signal.shape, floating=True)
    expect_close(value, expected, _ema_mistakes(signal, m), what=what, atol=1e-4)


def _step_signal(length: int = 40, jump_at: int = 5) -> torch.Tensor:
    signal = torch.zeros(length)
    signal[jump_at:] = 1.0
    return signal


@ema_exercise.checks("returns a float tensor of the same shape as the signal", points=1,
                     hint="return one target value per signal value, as a float tensor of the same shape")
def _ema_shape(fn):
    signal = randn(0, 12)
    expect_tensor(call(fn, signal.clone(), 0.9), "the result", shape=signal.shape, floating=True)


@ema_exercise.checks("follows the EMA recurrence on a small fixed example", points=2, hint=EMA_HINT)
def _ema_fixed(fn):
    _expect_ema(fn, torch.tensor([2.0, 0.0, 1.0, 1.0, -1.0]), 0.5, "the target on [2, 0, 1, 1, -1] with m = 0.5")


@ema_exercise.checks("responds to a step and to a noisy signal like the EMA (m = 0.9, 0.99)", points=2, hint=EMA_HINT)
def _ema_step_and_noise(fn):
    for m in (0.9, 0.99):
        _expect_ema(fn, _step_signal(), m, f"the step response (m = {m})")
        _expect_ema(fn, torch.linspace(0, 1, 60) + 0.3 * randn(int(m * 100), 60), m, f"the noisy signal (m = {m})")


@ema_exercise.checks("works on several weights at once: signal [T, P], recurrence along dim 0", points=1,
                     hint="index time with signal[t] so that every weight is updated together")
def _ema_batched(fn):
    _expect_ema(fn, randn(5, 15, 3), 0.8, "the target of a [15, 3] signal")


@ema_exercise.checks("edge cases: m = 0 copies the signal, m = 1 never moves, a single step; signal unchanged",
                     points=1, hint="leave the signal unchanged, and handle a signal of a single step")
def _ema_edges(fn):
    signal = randn(6, 10)
    copy_of_signal = signal.clone()
    _expect_ema(fn, signal, 0.0, "the target with m = 0")
    _expect_ema(fn, signal, 1.0, "the target with m = 1")
    _expect_ema(fn, torch.tensor([3.0]), 0.9, "the target of a one-step signal")
    call(fn, signal, 0.5)
    if not torch.equal(signal, copy_of_signal):
        raise CheckFailed("the signal was modified: write the target into a new tensor")


# ---------------------------------------------------------------------------------------------
# moco.ema_lag_statistics (analysis exercise: distance, staleness and stability of a momentum encoder)
# ---------------------------------------------------------------------------------------------

lag_exercise = exercise("moco.ema_lag_statistics", "ema_lag_statistics",
                        reference="coursekit.grading.homework.moco:ema_lag_statistics")
LAG_HINT = ("at each step compare the two parameter vectors by their Euclidean distance; the staleness asks which "
            "earlier (or current) online state the current target is nearest to, and how many steps ago that was; "
            "the stability is how much each target parameter varies over time, averaged over the parameters")


def ema_lag_statistics(online: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The reference: how far behind, and how steady, a momentum target is.

    online, target: ``[T, P]``, the parameters of the online network and of its EMA target at steps 0..T-1.
    Returns ``(distance, staleness, variance)``:

    - ``distance`` float ``[T]``: the Euclidean (L2) distance between ``online[t]`` and ``target[t]``;
    - ``staleness`` int64 ``[T]``: ``t - s`` where ``s <= t`` is the step whose online parameters are nearest
      (L2) to ``target[t]`` (ties: the earliest such step);
    - ``variance``: Python float, the variance over time of each target parameter (population variance,
      numpy's default), averaged over the P parameters.
    """
    online, target = online.double(), target.double()
    steps = len(online)
    distance = (online - target).norm(dim=1)
    to_online = torch.cdist(target, online)  # [T, T]: target at step t (row) to online at step s (column)
    future = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)  # s > t: not yet seen
    nearest = to_online.masked_fill(future, float("inf")).argmin(dim=1)
    staleness = torch.arange(steps) - nearest
    variance = target.var(dim=0, unbiased=False).mean().item()
    return distance, staleness, variance


def _lag_mistakes(online: torch.Tensor, target: torch.Tensor) -> dict:
    """The values of the known mistakes, as (distance, staleness, variance)."""
    distance, staleness, variance = ema_lag_statistics(online, target)
    online, target = online.double(), target.double()
    steps = len(online)
    to_online = torch.cdist(target, online)
    past = torch.triu(torch.ones(steps, steps, dtype=torch.bool), diagonal=1)
    return {
        "squared distance: take the square root of the sum of squares":
            lambda: ((online - target).pow(2).sum(1), staleness, variance),
        "root-mean-square over the parameters instead of the Euclidean (L2) distance":
            lambda: ((online - target).pow(2).mean(1).sqrt(), staleness, variance),
        "the staleness is the step of the nearest online state, not how many steps behind it is (t - s)":
            lambda: (distance, to_online.masked_fill(past, float("inf")).argmin(1), variance),
        "future online states searched too: only steps s <= t exist when the target is at step t":
            lambda: (distance, torch.arange(steps) - to_online.argmin(1), variance),
        "searched for the target state nearest to the current online parameters (the roles are swapped)":
            lambda: (distance, torch.arange(steps) - to_online.T.masked_fill(past, float("inf")).argmin(1), variance),
        "sample variance (divides by T - 1); use the population variance (divides by T)":
            lambda: (distance, staleness, target.var(dim=0, unbiased=True).mean().item()),
        "variance across the parameters at each step instead of over time for each parameter":
            lambda: (distance, staleness, target.var(dim=1, unbiased=False).mean().item()),
        "variance of the online parameters instead of the target's":
            lambda: (distance, staleness, online.var(dim=0, unbiased=False).mean().item()),
        "standard deviation instead of the variance":
            lambda: (distance, staleness, target.std(dim=0, unbiased=False).mean().item()),
    }


def _lag_answer(fn, online, target):
    """The student's (distance, staleness, variance), checked for types and shapes."""
    value = call(fn, online.clone(), target.clone())
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise CheckFailed(f"return a tuple (distance, staleness, variance), got {type_name(value)}")
    steps = len(online)
    distance = expect_tensor(value[0], "the distance", shape=(steps,), floating=True)
    staleness = expect_tensor(value[1], "the staleness", shape=(steps,), dtype=torch.int64)
    variance = value[2]
    if isinstance(variance, torch.Tensor) and variance.numel() == 1:
        variance = variance.item()
    if not isinstance(variance, (int, float)) or isinstance(variance, bool) or not math.isfinite(variance):
        raise CheckFailed(f"the variance should be a finite Python float, got {type_name(variance)}")
    return distance, staleness, float(variance)


def _expect_lag(fn, online, target, what, part):
    """Compare one part (0 distance, 1 staleness, 2 variance) of the student's answer with the reference."""
    actual = _lag_answer(fn, online, target)[part]
    expected = ema_lag_statistics(online, target)[part]
    mistakes = {name: (lambda value=value: value()[part]) for name, value in _lag_mistakes(online, target).items()}
    if part == 1:
        expect_equal(actual, expected, mistakes, what=what)
    else:
        expect_close(actual, expected, mistakes, what=what, atol=1e-4)


def _walk_and_target(seed: int, steps: int = 30, params: int = 6, m: float = 0.8):
    """A random walk (online) from 0 and its EMA target from 1: the simulator of the homework, small.
    The target follows the online walk from step 1 on, so it is the EMA of that walk with a first value of 1.
    Both go out in float64: the staleness is an argmin, and float32 rounding could flip a near tie."""
    from coursekit.lessons.analysis import simulate_ema

    online = torch.cat([torch.zeros(1, params), 0.1 * randn(seed, steps - 1, params)]).cumsum(0)
    return online.double(), simulate_ema(torch.cat([torch.ones(1, params), online[1:]]), m).double()


@lag_exercise.checks("returns (distance float [T], staleness int64 [T], variance Python float)", points=1,
                     hint="one distance and one staleness per step, and a single number for the variance")
def _lag_types(fn):
    online, target = _walk_and_target(0, steps=5)
    _lag_answer(fn, online, target)


@lag_exercise.checks("all three on a fixed example (T = 4, P = 2)", points=2, hint=LAG_HINT)
def _lag_fixed(fn):
    online = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0], [3.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.9], [0.4, 0.5], [0.9, 0.4], [1.2, 1.9]], dtype=torch.float64)
    for part, name in enumerate(("distance", "staleness", "variance")):
        _expect_lag(fn, online, target, f"the {name} on the fixed example", part)


@lag_exercise.checks("the distance on random walks with their EMA targets (3 seeds)", points=1, hint=LAG_HINT)
def _lag_random_distance(fn):
    for seed in SEEDS:
        _expect_lag(fn, *_walk_and_target(seed), f"the distance (seed {seed})", 0)


@lag_exercise.checks("the staleness on random walks with their EMA targets (3 seeds, m = 0.8 and 0.95)", points=2,
                     hint=LAG_HINT)
def _lag_random_staleness(fn):
    for seed in SEEDS:
        for m in (0.8, 0.95):
            _expect_lag(fn, *_walk_and_target(seed, m=m), f"the staleness (seed {seed}, m = {m})", 1)


@lag_exercise.checks("the variance on random walks with their EMA targets (3 seeds)", points=1, hint=LAG_HINT)
def _lag_random_variance(fn):
    for seed in SEEDS:
        _expect_lag(fn, *_walk_and_target(seed, params=7, m=0.9), f"the variance (seed {seed})", 2)


@lag_exercise.checks("a single step (staleness 0, variance 0) and the inputs unchanged", points=1,
                     hint="at step 0 the only online state is the current one; leave the inputs unchanged")
def _lag_edges(fn):
    online, target = _walk_and_target(4, steps=1)
    for part, name in enumerate(("distance", "staleness", "variance")):
        _expect_lag(fn, online, target, f"the {name} of a single step", part)
    online, target = _walk_and_target(5, steps=8)
    copies = online.clone(), target.clone()
    call(fn, online, target)
    if not (torch.equal(online, copies[0]) and torch.equal(target, copies[1])):
        raise CheckFailed("the inputs were modified: compute on copies")
