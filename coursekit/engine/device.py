"""Where and in what precision a model runs: the device a module lives on, the mixed-precision
choice for a device, its autocast context and gradient scaler."""
from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (the CPU for a module without parameters)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """ "auto" -> "bf16" on CUDA where supported, "fp16" on older CUDA GPUs, "fp32" elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    if torch.device(device).type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(precision: str, device: torch.device | str):
    """The autocast context of a resolved precision (disabled for "fp32")."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def make_grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
