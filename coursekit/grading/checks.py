"""Helpers shared by the exercise checks of every lesson.

Each helper either returns quietly or raises ``CheckFailed`` with feedback in plain words. When a
value is wrong, ``expect_close`` compares it with the values that known mistakes give, so the
feedback can name the mistake ("divided by the temperature twice") instead of just a number.
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch

from .core import CheckFailed, NotImplementedYet

SEEDS = (0, 1, 2)


def call(fn: Callable, *args, **kwargs):
    """Call the student's function; its exceptions become feedback."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotImplementedYet() from None
    except SystemExit:
        raise CheckFailed("your function called sys.exit(): return a value instead") from None
    except Exception as error:  # noqa: BLE001 - any student exception is feedback
        message = str(error).strip().splitlines()
        detail = f": {message[0][:200]}" if message else ""
        raise CheckFailed(f"your function raised {type(error).__name__}{detail}") from None


def randn(seed: int, *shape: int, requires_grad: bool = False) -> torch.Tensor:
    """A reproducible float32 random tensor (the same numbers in the child process and in tests)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Fresh leaf copies that record gradients, so reference and student never share a graph."""
    return [t.detach().clone().requires_grad_(True) for t in tensors]


def shape_text(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def number_text(value: float) -> str:
    return f"{value:.4g}"


def expect_tensor(value, what: str = "the result", shape=None, dtype: torch.dtype | None = None,
                  floating: bool = False) -> torch.Tensor:
    """``value`` is a tensor with the given shape and dtype (or a floating dtype) and no NaN/inf."""
    if not isinstance(value, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(value).__name__}")
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


def backward(loss: torch.Tensor, what: str = "the loss") -> None:
    """Backpropagate from the student's loss; no graph means the computation was detached."""
    if not loss.requires_grad:
        raise CheckFailed(f"{what} carries no gradient: do not detach the inputs or convert to numbers "
                          "(.item(), .numpy()) inside the function")
    loss.backward()


def expect_gradient(tensor: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """The gradient reaching ``tensor`` equals the reference gradient."""
    if tensor.grad is None or not tensor.grad.abs().sum() > 0:
        raise CheckFailed(f"no gradient flows into {name}: do not detach it")
    expect_close(tensor.grad, expected, what=f"the gradient with respect to {name}")


def expect_no_gradient(tensor: torch.Tensor, name: str) -> None:
    """``tensor`` is a target: no gradient may reach it."""
    if tensor.grad is not None and tensor.grad.abs().sum() > 0:
        raise CheckFailed(f"gradient flows into the {name}: it is a target, use .detach() on it")


def gradients(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> list[torch.Tensor | None]:
    """Gradients of ``loss_fn(*copies)`` with respect to fresh copies of ``tensors`` (reference side)."""
    copies = leaves(*tensors)
    loss_fn(*copies).backward()
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
