"""Helpers shared by the exercise checks of every lesson.

Checks call the student's function only through ``call`` / ``call_backward``: the function runs in
this process (``check()`` in a notebook) or in the student's own kernel (the batch grader), and
either way the checks see values rebuilt from plain data (``wire``). Each helper either returns
quietly or raises ``CheckFailed`` with feedback in plain words. When a value is wrong,
``expect_close`` compares it with the values that known mistakes give, so the feedback can name
the mistake ("divided by the temperature twice") instead of just a number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .. import wire
from ..core import CheckFailed, NotImplementedYet, Unscored

SEEDS = (0, 1, 2)
_input_salt = 0  # added to every input seed; the batch grader draws it per submission


def set_input_salt(salt: int) -> None:
    """Shift every input the checks draw (``randn``, ``generator``): the batch grader uses a secret
    salt per submission, so a submission cannot know its inputs in advance."""
    global _input_salt
    _input_salt = salt


def generator(seed: int) -> torch.Generator:
    """A seeded generator for drawing check inputs (salted, see ``set_input_salt``)."""
    return torch.Generator().manual_seed(_input_salt + seed)


def randn(seed: int, *shape: int, requires_grad: bool = False) -> torch.Tensor:
    """A reproducible float32 random tensor (salted, see ``set_input_salt``)."""
    return torch.randn(*shape, generator=generator(seed)).requires_grad_(requires_grad)


@dataclass
class Called:
    """One call of the student's function: the value it returned, the gradients that reached the
    leaf arguments (``call_backward``), and for each module argument (by position) the flags of its
    parameters after the call: ``{name: {"requires_grad": bool, "history": bool}}``."""

    value: object
    grads: list = field(default_factory=list)
    module_flags: dict = field(default_factory=dict)


def run_call(fn: Callable, args: tuple, kwargs: dict, backward: dict | None = None,
             global_seed: int | None = None) -> Called:
    """Call the student's function, in this process or in the student's (``fn`` a ``RemoteFunction``).

    Either way the result is rebuilt from plain data (``wire``), tensor and module arguments show
    the changes the function made to them, and the student's exceptions become feedback.
    """
    if hasattr(fn, "remote_call"):
        outcome, called = fn.remote_call(args, kwargs, backward, global_seed)
    else:
        outcome, called = _local_call(fn, args, kwargs, backward, global_seed)
    if outcome == "ok":
        return called
    kind, text = outcome
    if kind == "not_implemented":
        raise NotImplementedYet()
    if kind == "exit":
        raise CheckFailed("your function called sys.exit(): return a value instead")
    if kind == "raised":
        raise CheckFailed(f"your function raised {text}")
    raise CheckFailed(f"your result could not be read ({text})")


def _local_call(fn, args, kwargs, backward, global_seed):
    if backward is not None:  # fresh leaves, so that gradients never mix between calls
        args = tuple(_fresh_leaves(a) for a in args)
    outcome, value, grads = wire.invoke(fn, list(args), dict(kwargs), backward, global_seed)
    if outcome != "ok":
        return outcome, None
    modules = {i: a for i, a in enumerate(args) if isinstance(a, torch.nn.Module)}
    params = {id(p): (i, name) for i, m in modules.items() for name, p in m.named_parameters()}
    try:
        arrays: list = []
        value = wire.decode(wire.encode(value, arrays, params), arrays, modules)
    except wire.WireError as error:
        return ("unreadable", str(error)), None
    grads = [None if g is None else g.detach().clone() for g in grads]
    flags = {i: {name: {"requires_grad": p.requires_grad, "history": p.grad_fn is not None}
                 for name, p in m.named_parameters()} for i, m in modules.items()}
    return "ok", Called(value, grads, flags)


def _fresh_leaves(value):
    if isinstance(value, torch.Tensor) and value.requires_grad:
        return value.detach().clone().requires_grad_(True)
    if isinstance(value, (list, tuple)):
        return type(value)(_fresh_leaves(v) for v in value)
    return value


def call(fn: Callable, *args, global_seed: int | None = None, **kwargs):
    """The student's ``fn(*args, **kwargs)``, as if called here (see ``run_call``).

    ``global_seed`` seeds torch's global generator just before the call, in the process where the
    function runs: results that must come from a ``generator`` argument must not depend on it.
    """
    return run_call(fn, args, kwargs, global_seed=global_seed).value


def call_backward(fn: Callable, *args, upstream: torch.Tensor | None = None, **kwargs):
    """``(value, grads)``: call ``fn``, backpropagate from its value (a scalar loss) or from
    ``sum(value * upstream)``, and return the gradient that reached each tensor argument that
    requires grad (in order, also inside lists; None where none arrived)."""
    called = run_call(fn, args, kwargs, backward={"upstream": upstream})
    return called.value, called.grads


def type_name(value) -> str:
    """The type name of a student's value, also for objects that came back only as a name."""
    return value.type_name if isinstance(value, wire.Foreign) else type(value).__name__


def shape_text(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def number_text(value: float) -> str:
    return f"{value:.4g}"


def expect_tensor(value, what: str = "the result", shape=None, dtype: torch.dtype | None = None,
                  floating: bool = False) -> torch.Tensor:
    """``value`` is a tensor with the given shape and dtype (or a floating dtype) and no NaN/inf."""
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type_name(value)}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise CheckFailed(f"{what} has shape {shape_text(value.shape)}, expected {shape_text(shape)}")
    if dtype is not None and value.dtype != dtype:
        raise CheckFailed(f"{what} has dtype {value.dtype}, expected {dtype}")
    if floating and not value.is_floating_point():
        raise CheckFailed(f"{what} has dtype {value.dtype}, expected a floating point tensor")
    if value.is_floating_point() and not torch.isfinite(value).all():
        raise CheckFailed(f"{what} contains NaN or infinite values")
    return value


def expect_scalar(value, what: str = "the loss") -> torch.Tensor:
    """A finite 0-dim floating point tensor (a loss)."""
    if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() > 1:
        raise CheckFailed(f"{what} has shape {shape_text(value.shape)}: return one number, "
                          "the mean over the batch (per-sample losses not averaged)")
    if isinstance(value, torch.Tensor) and value.dim() != 0:
        raise CheckFailed(f"{what} has shape {shape_text(value.shape)}, expected a 0-dim tensor (a single number)")
    return expect_tensor(value, what, floating=True)


def is_close(actual, expected, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Same shape and close values (tensors or numbers)."""
    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    return actual.shape == expected.shape and bool(torch.allclose(actual, expected, atol=atol, rtol=rtol))


def expect_close(actual, expected, mistakes: Mapping[str, Callable[[], object]] | None = None,
                 what: str = "the value", atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """``actual`` matches ``expected``; otherwise name the first known mistake whose value it matches.

    ``mistakes`` maps a plain-words mistake ("self-similarity not excluded") to a function that
    computes the value that mistake gives on the same inputs (computed only when needed).
    """
    if is_close(actual, expected, atol, rtol):
        return
    named = matching_mistakes(mistakes, lambda value: is_close(actual, value, atol, rtol))
    raise CheckFailed(f"{what} is wrong: {named or difference_text(actual, expected)}")


def matching_mistakes(mistakes: Mapping[str, Callable[[], object]] | None, matches: Callable[[object], bool]) -> str:
    """The names of the known mistakes whose value ``matches`` accepts ("A; or B"), or ""."""
    names = []
    for name, mistaken_value in (mistakes or {}).items():
        try:
            if matches(mistaken_value()):
                names.append(name)
        except Exception:  # noqa: BLE001 - a mistake that does not apply to these inputs
            continue
    return "; or ".join(names)


def difference_text(actual, expected) -> str:
    actual = torch.as_tensor(actual).detach().double()
    expected = torch.as_tensor(expected).detach().double()
    if actual.numel() == 1 and expected.numel() == 1:
        return f"got {number_text(actual.item())}, expected {number_text(expected.item())}"
    if actual.shape != expected.shape:
        return f"got shape {shape_text(actual.shape)}, expected {shape_text(expected.shape)}"
    different = (~torch.isclose(actual, expected, atol=1e-5, rtol=1e-4)).sum().item()
    return f"{different} of {expected.numel()} entries differ from the expected values"


def expect_carries_gradient(value: torch.Tensor, what: str = "the loss") -> None:
    """The student's result is still connected to the inputs' autograd graph."""
    if not value.requires_grad:
        raise CheckFailed(f"{what} carries no gradient: it was cut from the inputs (by .detach(), .item(), "
                          ".numpy() or a new torch.tensor(...)), so training could not learn from it")


def expect_gradient(grad: torch.Tensor | None, expected: torch.Tensor, name: str) -> None:
    """The gradient that reached the input ``name`` equals the reference gradient. Called only
    once the value itself is right, so a difference means part of the graph was cut."""
    if grad is None or not grad.abs().sum() > 0:
        raise CheckFailed(f"no gradient reaches {name} although the value is right: the path from {name} "
                          "to the loss was cut (.detach(), .data or a copy)")
    if not is_close(grad, expected):
        raise CheckFailed(f"the gradient with respect to {name} differs from the reference although the value is "
                          "right: part of the computation was cut from the graph (.detach(), .data or a copy)")


def expect_no_gradient(grad: torch.Tensor | None, name: str) -> None:
    """``name`` is a target: no gradient may reach it."""
    if grad is not None and grad.abs().sum() > 0:
        raise CheckFailed(f"gradient flows into the {name}: it is a target, so it must be cut from the graph")


def expect_value_first(value, expected, what: str = "the loss") -> None:
    """Checks of gradients and other secondary properties only mean something when the value is
    right: when it is not, the check is not scored and says nothing (the value check already did)."""
    if not is_close(value, expected):
        raise Unscored(f"{what} is wrong")


def gradients(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, upstream=None) -> list[torch.Tensor | None]:
    """Gradients of ``loss_fn(*copies)`` (or of ``sum(loss_fn(*copies) * upstream)``) with respect to
    fresh copies of ``tensors`` (the reference side)."""
    copies = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = loss_fn(*copies)
    (value if upstream is None else (value * upstream).sum()).backward()
    return [c.grad for c in copies]


def expect_equal(actual: torch.Tensor, expected: torch.Tensor, mistakes: Mapping[str, Callable[[], object]] | None = None,
                 what: str = "the result") -> None:
    """Exact equality (integer results), naming a known mistake when one matches."""
    def same(value, target) -> bool:
        value, target = torch.as_tensor(value), torch.as_tensor(target)
        return value.shape == target.shape and bool(torch.equal(value.to(target.dtype), target))

    if same(actual, expected):
        return
    named = matching_mistakes(mistakes, lambda value: same(actual, value))
    if named:
        raise CheckFailed(f"{what} is wrong: {named}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise CheckFailed(f"{what} has shape {shape_text(actual.shape)}, expected {shape_text(expected.shape)}")
    different = (actual.to(expected.dtype) != expected).sum().item()
    raise CheckFailed(f"{what} is wrong: {different} of {expected.numel()} entries differ from the expected values")
