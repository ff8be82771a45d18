"""The backbone of an ultralytics YOLO11/YOLO12 model as a coursekit backbone.

:func:`yolo_backbone` cuts a detection model to its backbone: the number of layers comes from the
model's own yaml (``len(model.yaml["backbone"])``: 11 for YOLO11, 9 for YOLO12), the layers keep
their ultralytics names (``model.0``, ``model.1``, ...), so the weights transfer back by name
(``coursekit.transfer.yolo.transfer_backbone``). :func:`build_yolo_backbone` does it from a yaml
name (``"yolo11n"``, offline, random init): that is what ``build_backbone("yolo11n")`` and
``coursekit pretrain --backbone yolo11n`` use, so every coursekit method trains it through
``engine.fit`` like any other backbone.

Inputs: like every coursekit backbone, ``forward`` and ``forward_features`` take ImageNet-normalized
images (what the views and ``extract_features`` produce). YOLO reads images in [0, 1] without
normalization, so the backbone undoes the normalization first: the weights learn on exactly the
input ultralytics feeds them after export. ``forward_map`` takes YOLO's [0, 1] input directly.

Set ``YOLO_OFFLINE=1`` before importing ultralytics when there is no internet.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from coursekit.augment import denormalize
from coursekit.engine.device import module_device
from coursekit.models import YOLO_BACKBONES

try:
    from ultralytics import YOLO
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("YOLO backbones need ultralytics: pip install 'coursekit[yolo]'") from err

__all__ = ["YOLO_BACKBONES", "YOLO_STRIDE", "PYRAMID_STRIDES", "YOLOBackbone", "yolo_backbone", "build_yolo_backbone",
           "detection_model",
           "dino_local_size", "check_size"]


#: The largest stride of a YOLO backbone: input sizes must be multiples of it.
YOLO_STRIDE = 32
#: The strides of ``YOLOBackbone.forward_pyramid``'s maps (a segmentation decoder's inputs).
PYRAMID_STRIDES = (4, 8, 16, 32)


def detection_model(yolo_model) -> nn.Module:
    """The ``DetectionModel`` inside a ``YOLO`` wrapper (or the model itself)."""
    model = getattr(yolo_model, "model", None) if isinstance(yolo_model, YOLO) else yolo_model
    if not isinstance(model, nn.Module) or not hasattr(model, "yaml") or not hasattr(model, "model"):
        raise TypeError("expected an ultralytics YOLO or DetectionModel built from a yaml or a .pt")
    return model


def _sources(layer: nn.Module) -> list[int]:
    """The indices a YOLO layer reads from (``-1`` = the previous layer)."""
    return [layer.f] if isinstance(layer.f, int) else list(layer.f)


class YOLOBackbone(nn.Module):
    """The backbone layers of a YOLO model with a global-average-pooling head.

    Attributes:
        model: ``nn.Sequential`` of the backbone layers (ultralytics modules with ``.i``/``.f``);
            its state-dict keys, prefixed with ``model.``, are those of the full detection model.
        feature_dim: channels of the last backbone layer, the width of the pooled feature.
        pyramid_dims: channels of ``forward_pyramid``'s maps, finest first.
    """

    def __init__(self, layers: list[nn.Module], feature_dim: int):
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        self.pyramid_dims: list[int] = []  # measured by yolo_backbone
        # Outputs that later layers read by absolute index (ultralytics' routing through ``m.f``).
        self._save = {j for m in layers for j in _sources(m) if j != -1}

    def _layer_outputs(self, x: Tensor):
        """Yield every backbone layer's output, in order, for YOLO's input ``[N, 3, H, W]`` in [0, 1]."""
        outputs: list[Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:  # input from earlier layers, as in ultralytics' BaseModel._predict_once
                x = outputs[layer.f] if isinstance(layer.f, int) else [
                    x if j == -1 else outputs[j] for j in layer.f
                ]
            x = layer(x)
            outputs.append(x if layer.i in self._save else None)
            yield x

    def forward_map(self, x: Tensor) -> Tensor:
        """Run the backbone layers on YOLO's input: ``[N, 3, H, W]`` in [0, 1] -> ``[N, C, H/32, W/32]``."""
        for x in self._layer_outputs(x):
            pass
        return x

    def forward_pyramid(self, x: Tensor) -> list[Tensor]:
        """ImageNet-normalized ``[N, 3, H, W]`` -> the last feature map at each of ``PYRAMID_STRIDES``,
        finest first: ``[N, C_s, H/s, W/s]`` (YOLO11n: 64, 128, 128 and 256 channels at strides 4, 8,
        16 and 32; ultralytics' detection head reads the last three)."""
        side = x.shape[-1]
        levels = {side // out.shape[-1]: out for out in self._layer_outputs(denormalize(x))}
        return [levels[stride] for stride in PYRAMID_STRIDES]

    def forward_features(self, x: Tensor, return_attention: bool = False) -> dict:
        """ImageNet-normalized ``[N, 3, H, W]`` -> ``{"global": [N, C], "patch": [N, h*w, C], "grid": (h, w)}``
        with ``(h, w) = (H/32, W/32)``, the last feature map as row-major tokens."""
        if return_attention:
            raise ValueError("return_attention=True needs a ViT; a YOLO backbone returns no attention map")
        fmap = self.forward_map(denormalize(x))  # YOLO's convention: [0, 1], no mean/std
        return {"global": self.pool(fmap).flatten(1), "patch": fmap.flatten(2).transpose(1, 2),
                "grid": tuple(fmap.shape[-2:])}

    def forward(self, x: Tensor) -> Tensor:
        """Pooled feature: ImageNet-normalized ``[N, 3, H, W]`` -> ``[N, feature_dim]``."""
        return self.pool(self.forward_map(denormalize(x))).flatten(1)


def yolo_backbone(yolo_model, image_size: int = 64) -> YOLOBackbone:
    """Cut a YOLO detection model to its backbone and add a pooling head, ready for SSL.

    The layers are deep-copied: ``yolo_model`` is left untouched. Ultralytics switches
    ``requires_grad`` off for some parameters and loads ``.pt`` models in eval mode; the copy gets
    gradients on every parameter and is in training mode, so BatchNorm statistics follow the SSL
    data. A fused model (``model.fuse()`` folds BatchNorm into the convolutions, as predict/val do)
    has no BatchNorm left to train and is rejected.

    Args:
        yolo_model: an ultralytics ``YOLO`` or its ``DetectionModel``.
        image_size: side of the dummy input used to measure ``feature_dim`` (a multiple of 32).
    """
    model = detection_model(yolo_model)
    if model.is_fused():
        raise ValueError("this YOLO model is fused (BatchNorm folded into convs): load a fresh one")
    check_size(image_size, "image_size")
    n_backbone = len(model.yaml["backbone"])
    layers = [copy.deepcopy(layer) for layer in model.model[:n_backbone]]
    for layer in layers:
        if any(j >= n_backbone for j in _sources(layer)):
            raise ValueError(f"backbone layer {layer.i} reads from a layer outside the backbone")
    backbone = YOLOBackbone(layers, feature_dim=0).float()
    backbone.pyramid_dims = _output_channels(backbone, image_size)
    backbone.feature_dim = backbone.pyramid_dims[-1]
    backbone.requires_grad_(True)
    return backbone.train()


def build_yolo_backbone(name: str) -> YOLOBackbone:
    """The randomly initialized backbone of ``name.yaml`` (``"yolo11n"``, ``"yolo12s"``, ...), offline."""
    if name not in YOLO_BACKBONES:
        raise ValueError(f"unknown YOLO backbone {name!r}; valid names: {', '.join(YOLO_BACKBONES)}")
    return yolo_backbone(YOLO(f"{name}.yaml", verbose=False))


@torch.no_grad()
def _output_channels(backbone: YOLOBackbone, image_size: int) -> list[int]:
    """Channels of the backbone's pyramid maps (the last is its output), measured with a dummy
    forward pass in eval mode."""
    device = module_device(backbone)
    backbone.eval()
    return [fmap.shape[1] for fmap in backbone.forward_pyramid(torch.zeros(1, 3, image_size, image_size, device=device))]


def dino_local_size(image_size: int) -> int:
    """DINO's local crop side for a YOLO backbone: half the image, rounded down to the stride (at least 32)."""
    return max(YOLO_STRIDE, image_size // 2 // YOLO_STRIDE * YOLO_STRIDE)


def check_size(size: int, name: str) -> None:
    """YOLO inputs are multiples of the stride (YOLO12's area attention needs it at the last stages)."""
    if size <= 0 or size % YOLO_STRIDE:
        raise ValueError(f"{name} must be a positive multiple of {YOLO_STRIDE}, got {size}")
