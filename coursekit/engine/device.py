"""Where and in what precision a model runs: the device a module lives on, the mixed-precision
choice for a device, its autocast context and gradient scaler, and the memory format of
convolutional networks."""
from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter (the CPU for a module without parameters)."""
    parameter = next(module.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """ "auto" -> "bf16" on CUDA GPUs with native bf16 (compute capability 8.0 and up: A100, RTX 30xx,
    H100...), "fp16" (with a gradient scaler) on older ones (T4, V100), "fp32" elsewhere.

    ``torch.cuda.is_bf16_supported()`` is True on a T4 too, where bf16 is emulated and slower
    than fp32: the capability is what decides."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"


def autocast(precision: str, device: torch.device | str):
    """The autocast context of a resolved precision (disabled for "fp32")."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def make_grad_scaler(precision: str, device: torch.device | str) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def is_convolutional(module: nn.Module) -> bool:
    """True for networks built of 2-D convolutions with BatchNorm (the ResNets), not for ViTs
    (whose patch embedding is a single convolution)."""
    return any(isinstance(m, nn.BatchNorm2d) for m in module.modules())


def use_channels_last(module: nn.Module, device: torch.device | str) -> bool:
    """Channels-last (NHWC) memory format pays off for convolutional networks on CUDA (tensor
    cores read NHWC); on the CPU and for ViTs it changes nothing worth having."""
    return torch.device(device).type == "cuda" and is_convolutional(module)
