"""Self-supervised pretraining of a YOLO backbone with lightly's DINO, then fine-tuning in ultralytics.

The recipe (lesson 09), each step one function:

1. :func:`load_yolo` builds a YOLO11/YOLO12 model from its ``.yaml`` (offline) or loads a ``.pt``.
2. :func:`yolo_backbone` cuts the detection model to its backbone, reading the backbone length
   from the model's own yaml (``len(model.yaml["backbone"])``: 11 layers for YOLO11, 9 for YOLO12),
   adds a global-average-pooling head and switches gradients and BatchNorm training back on.
3. :func:`pretrain_yolo_backbone` trains it with DINO built from lightly's pieces.
4. :func:`transfer_backbone` copies the student backbone into a fresh YOLO model and reports what
   transferred; :func:`save_for_finetuning` writes a ``.pt`` checkpoint ultralytics trains from.
5. :func:`finetune` trains and validates that ``.pt`` on a YOLO-format dataset.

Why the ``.pt`` step: ``YOLO("x.yaml").train(...)`` rebuilds the model from the yaml and would drop
weights loaded into it in memory; ``YOLO("x.pt").train(...)`` rebuilds too, but then loads the
checkpoint's weights into the new model.

Set ``YOLO_OFFLINE=1`` before importing this module when there is no internet.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from coursekit.engine.device import module_device

try:
    from ultralytics import YOLO
    from ultralytics import __version__ as ULTRALYTICS_VERSION
    from ultralytics.utils.torch_utils import get_flops
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "coursekit.transfer.yolo needs ultralytics: pip install 'coursekit[yolo]'"
    ) from err

__all__ = [
    "YOLO_NORMALIZE",
    "YOLOBackbone",
    "load_yolo",
    "yolo_backbone",
    "pretrain_yolo_backbone",
    "transfer_backbone",
    "save_for_finetuning",
    "finetune",
    "model_size_table",
]

#: YOLO feeds images scaled to [0, 1] with no mean/std normalization; lightly transforms take this.
YOLO_NORMALIZE = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}

#: The largest stride of a YOLO backbone: input sizes must be multiples of it.
YOLO_STRIDE = 32


# ----------------------------------------------------------------------------------------------
# Model and backbone
# ----------------------------------------------------------------------------------------------


def load_yolo(model: str | Path = "yolo11n.yaml") -> YOLO:
    """Build a YOLO model from a ``.yaml`` name (no download) or load a ``.pt`` checkpoint.

    Args:
        model: ``"yolo11n.yaml"``, ``"yolo12s.yaml"``, ... (random init, works offline), or a
            ``.pt`` path/name (``"yolo11n.pt"`` downloads COCO weights when online).
    """
    suffix = Path(str(model)).suffix
    if suffix not in {".yaml", ".yml", ".pt"}:
        raise ValueError(f"model must be a .yaml or .pt name or path, got {model!r}")
    return YOLO(str(model))


def _detection_model(yolo_model) -> nn.Module:
    """The ``DetectionModel`` inside a ``YOLO`` wrapper (or the model itself)."""
    model = getattr(yolo_model, "model", None) if isinstance(yolo_model, YOLO) else yolo_model
    if not isinstance(model, nn.Module) or not hasattr(model, "yaml") or not hasattr(model, "model"):
        raise TypeError("expected an ultralytics YOLO or DetectionModel built from a yaml or a .pt")
    return model


class YOLOBackbone(nn.Module):
    """The backbone layers of a YOLO model with a global-average-pooling head.

    The layers keep their ultralytics names (``model.0``, ``model.1``, ...), so the state-dict keys
    are exactly those of the full detection model and transfer back by name.

    Attributes:
        model: ``nn.Sequential`` of the backbone layers (ultralytics modules with ``.i``/``.f``).
        feature_dim: channels of the last backbone layer, the width of the pooled feature.
    """

    def __init__(self, layers: list[nn.Module], feature_dim: int):
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = feature_dim
        # Outputs that later layers read by absolute index (ultralytics' routing through ``m.f``).
        self._save = {j for m in layers for j in _sources(m) if j != -1}

    def forward_map(self, x: Tensor) -> Tensor:
        """Run the backbone layers: ``[N, 3, H, W]`` in [0, 1] -> ``[N, C, H/32, W/32]``."""
        outputs: list[Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:  # input from earlier layers, as in ultralytics' BaseModel._predict_once
                x = outputs[layer.f] if isinstance(layer.f, int) else [
                    x if j == -1 else outputs[j] for j in layer.f
                ]
            x = layer(x)
            outputs.append(x if layer.i in self._save else None)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Pooled feature: ``[N, 3, H, W]`` -> ``[N, feature_dim]``."""
        return self.pool(self.forward_map(x)).flatten(1)


def _sources(layer: nn.Module) -> list[int]:
    """The indices a YOLO layer reads from (``-1`` = the previous layer)."""
    return [layer.f] if isinstance(layer.f, int) else list(layer.f)


def yolo_backbone(yolo_model, image_size: int = 64) -> YOLOBackbone:
    """Cut a YOLO detection model to its backbone and add a pooling head, ready for SSL.

    The number of backbone layers comes from the model's own yaml (``len(model.yaml["backbone"])``),
    so the same call works for YOLO11 (11 layers), YOLO12 (9 layers) and any custom yaml. The layers
    are deep-copied: ``yolo_model`` is left untouched.

    Ultralytics switches ``requires_grad`` off for some parameters and loads ``.pt`` models in eval
    mode; the copy gets gradients on every parameter and is in training mode, so BatchNorm statistics
    follow the SSL data. A fused model (``model.fuse()`` folds BatchNorm into the convolutions, as
    predict/val do) has no BatchNorm left to train and is rejected.

    Args:
        yolo_model: an ultralytics ``YOLO`` or its ``DetectionModel``.
        image_size: side of the dummy input used to measure ``feature_dim`` (a multiple of 32).
    """
    model = _detection_model(yolo_model)
    if model.is_fused():
        raise ValueError("this YOLO model is fused (BatchNorm folded into convs): load a fresh one")
    _check_size(image_size, "image_size")
    n_backbone = len(model.yaml["backbone"])
    layers = [copy.deepcopy(layer) for layer in model.model[:n_backbone]]
    for layer in layers:
        if any(j >= n_backbone for j in _sources(layer)):
            raise ValueError(f"backbone layer {layer.i} reads from a layer outside the backbone")
    backbone = YOLOBackbone(layers, feature_dim=0).float()
    backbone.feature_dim = _output_channels(backbone, image_size)
    backbone.requires_grad_(True)
    return backbone.train()


@torch.no_grad()
def _output_channels(backbone: YOLOBackbone, image_size: int) -> int:
    """Channels of the backbone's last output, measured with a dummy forward pass in eval mode."""
    device = module_device(backbone)
    backbone.eval()
    return backbone.forward_map(torch.zeros(1, 3, image_size, image_size, device=device)).shape[1]


def _check_size(size: int, name: str) -> None:
    if size <= 0 or size % YOLO_STRIDE:
        raise ValueError(f"{name} must be a positive multiple of {YOLO_STRIDE}, got {size}")


# ----------------------------------------------------------------------------------------------
# DINO pretraining with lightly
# ----------------------------------------------------------------------------------------------


def pretrain_yolo_backbone(
    backbone: YOLOBackbone,
    images_uint8: Tensor,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    global_crop_size: int = 224,
    local_crop_size: int = 96,
    n_local_views: int = 6,
    hidden_dim: int = 512,
    bottleneck_dim: int = 64,
    output_dim: int = 2048,
    momentum: tuple[float, float] = (0.996, 1.0),
    warmup_teacher_temp_epochs: int = 5,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Pretrain a YOLO backbone with DINO assembled from lightly's pieces; trains ``backbone`` in place.

    - views: ``lightly.transforms.DINOTransform`` with YOLO's normalization (mean 0, std 1, i.e.
      images stay in [0, 1]) applied per image on the CPU, as lightly does: 2 global crops and
      ``n_local_views`` local crops per image;
    - student = backbone + ``DINOProjectionHead``; the teacher is a copy with gradients off
      (``deactivate_requires_grad``) that follows the student by ``update_momentum`` with a cosine
      schedule from ``momentum[0]`` to ``momentum[1]``;
    - loss: ``lightly.loss.DINOLoss`` (teacher centering and sharpening, the teacher sees only the
      global views, the teacher temperature warms up over ``warmup_teacher_temp_epochs``).

    The projection head is small by default (``output_dim=2048``) to suit small data; DINO's paper
    uses 65536. For reproducibility the global ``torch``, ``random`` and ``numpy`` generators are
    seeded with ``seed`` (lightly's transforms draw from them).

    Args:
        backbone: from :func:`yolo_backbone`.
        images_uint8: ``[N, 3, H, W]`` uint8 images (CPU), the unlabeled data.
        global_crop_size, local_crop_size: crop sides, multiples of 32 (YOLO's stride).

    Returns:
        ``{"loss": [...], "epoch_loss": [...]}``: the loss of every step and the mean of every epoch.
    """
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum
    from lightly.utils.scheduler import cosine_schedule
    from tqdm.auto import tqdm

    _check_images(images_uint8)
    _check_size(global_crop_size, "global_crop_size")
    _check_size(local_crop_size, "local_crop_size")
    if epochs < 1 or batch_size < 2:
        raise ValueError("epochs must be >= 1 and batch_size >= 2 (BatchNorm needs a batch)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _seed_everything(seed)

    transform = _dino_transform(global_crop_size, local_crop_size, n_local_views)
    pil_images = _to_pil(images_uint8)

    backbone.to(device).train().requires_grad_(True)
    head_dims = (backbone.feature_dim, hidden_dim, bottleneck_dim, output_dim)
    student_head = DINOProjectionHead(*head_dims, freeze_last_layer=1).to(device)
    teacher_backbone = copy.deepcopy(backbone)
    # The head's weight-normalized last layer cannot be deep-copied: build it and copy the weights.
    teacher_head = DINOProjectionHead(*head_dims).to(device)
    teacher_head.load_state_dict(student_head.state_dict())
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    criterion = DINOLoss(output_dim=output_dim, warmup_teacher_temp_epochs=warmup_teacher_temp_epochs)
    params = list(backbone.parameters()) + list(student_head.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)

    steps_per_epoch = max(1, len(pil_images) // batch_size)  # drop the last partial batch
    total_steps = epochs * steps_per_epoch
    history: dict[str, list[float]] = {"loss": [], "epoch_loss": []}
    bar = tqdm(total=total_steps, desc="DINO pretraining", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(len(pil_images)).tolist()
        for step_in_epoch in range(steps_per_epoch):
            step = epoch * steps_per_epoch + step_in_epoch
            batch = [pil_images[i] for i in order[step_in_epoch * batch_size:][:batch_size]]
            views = [v.to(device) for v in _make_views(transform, batch)]  # 2 + n_local x [B, 3, s, s]

            m = cosine_schedule(step, total_steps, momentum[0], momentum[1])
            update_momentum(backbone, teacher_backbone, m=m)
            update_momentum(student_head, teacher_head, m=m)

            with torch.no_grad():
                teacher_out = [teacher_head(teacher_backbone(v)) for v in views[:2]]  # [B, K] each
            student_out = [student_head(backbone(v)) for v in views]
            loss = criterion(teacher_out, student_out, epoch=epoch)

            optimizer.zero_grad()
            loss.backward()
            student_head.cancel_last_layer_gradients(current_epoch=epoch)
            optimizer.step()

            history["loss"].append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history["epoch_loss"].append(float(np.mean(history["loss"][-steps_per_epoch:])))
    bar.close()
    return history


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError("images_uint8 must be a uint8 tensor [N, 3, H, W]")
    if len(images) < 2:
        raise ValueError("need at least 2 images")


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _dino_transform(global_crop_size: int, local_crop_size: int, n_local_views: int):
    """lightly's DINO views with YOLO's input convention (no mean/std normalization)."""
    from lightly.transforms import DINOTransform

    return DINOTransform(
        global_crop_size=global_crop_size,
        local_crop_size=local_crop_size,
        n_local_views=n_local_views,
        normalize=YOLO_NORMALIZE,
    )


def _to_pil(images_uint8: Tensor) -> list:
    """uint8 ``[N, 3, H, W]`` -> list of PIL images (lightly's transforms are per image)."""
    from torchvision.transforms.functional import to_pil_image

    return [to_pil_image(img) for img in images_uint8.cpu()]


def _make_views(transform, pil_images: list) -> list[Tensor]:
    """Apply the multi-view transform per image and stack each view over the batch."""
    per_image = [transform(img) for img in pil_images]  # B lists of V tensors [3, s, s]
    return [torch.stack(views) for views in zip(*per_image)]  # V tensors [B, 3, s, s]


# ----------------------------------------------------------------------------------------------
# Back into ultralytics
# ----------------------------------------------------------------------------------------------


def transfer_backbone(backbone: YOLOBackbone, yolo_model) -> dict:
    """Copy the (student) backbone's weights into a YOLO model, matching tensors by name and shape.

    Parameters and BatchNorm buffers both transfer (``state_dict`` tensors). Use a fresh model of
    the same family and size as the one the backbone was cut from.

    Returns:
        A report: ``transferred`` (tensors copied), ``backbone_tensors`` (tensors in the backbone),
        ``model_tensors`` (tensors in the YOLO model), ``mismatched`` (names with a different shape),
        ``missing`` (backbone names the YOLO model lacks).
    """
    model = _detection_model(yolo_model)
    source = backbone.model.state_dict()  # keys "0.conv.weight", ...
    target = model.state_dict()  # keys "model.0.conv.weight", ...
    matched, mismatched, missing = {}, [], []
    for name, tensor in source.items():
        key = f"model.{name}"
        if key not in target:
            missing.append(key)
        elif target[key].shape != tensor.shape:
            mismatched.append(f"{key}: {tuple(tensor.shape)} -> {tuple(target[key].shape)}")
        else:
            matched[key] = tensor.detach().to(target[key].device, target[key].dtype)
    model.load_state_dict(matched, strict=False)
    return {
        "transferred": len(matched),
        "backbone_tensors": len(source),
        "model_tensors": len(target),
        "mismatched": mismatched,
        "missing": missing,
    }


def save_for_finetuning(yolo_model, path: str | Path) -> Path:
    """Save a YOLO model as an ultralytics checkpoint that ``YOLO(path).train(...)`` starts from.

    The structure is ultralytics' own (as ``Model.save`` writes it): ``{"model": the module in half
    precision, "ema": None, "train_args": {}, "date", "version", ...}``; ``YOLO(path)`` loads
    ``ckpt["ema"] or ckpt["model"]`` back to float32. Weights survive up to fp16 rounding.
    """
    model = _detection_model(yolo_model)
    path = Path(path)
    if path.suffix != ".pt":
        raise ValueError(f"the checkpoint must be a .pt file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).half().to(memory_format=torch.contiguous_format)
    checkpoint = {
        "model": half,
        "ema": None,
        "train_args": {},
        "date": datetime.now().isoformat(),
        "version": ULTRALYTICS_VERSION,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    }
    torch.save(checkpoint, path)
    return path


def finetune(
    pt_path: str | Path,
    data_yaml: str | Path,
    epochs: int = 10,
    imgsz: int = 640,
    batch: int = 16,
    fraction: float = 1.0,
    project: str | Path = "runs/coursekit",
    name: str = "finetune",
    **kw,
) -> dict:
    """Fine-tune a saved ``.pt`` on a YOLO-format dataset with ultralytics and report box mAP.

    Wraps ``YOLO(pt_path).train(...)``, which rebuilds the model from the checkpoint's yaml, loads
    the checkpoint's weights (the head's class layer is re-initialized when the class count differs)
    and ends with a validation of the best weights. ``workers=0`` and ``plots=False`` suit notebooks;
    any other ultralytics train argument passes through ``**kw`` (``lr0``, ``device``, ``seed``,
    ``warmup_epochs``, ``val``...).

    Args:
        fraction: share of the training images to use (ultralytics takes the first ones).

    Returns:
        ``{"mAP50", "mAP50-95", "precision", "recall", "weights", "save_dir"}``; ``weights`` is
        the path of the best checkpoint, for ``YOLO(weights).predict(...)``.
    """
    pt_path = Path(pt_path)
    if pt_path.suffix != ".pt" or not pt_path.exists():
        raise ValueError(f"pt_path must be an existing .pt file (see save_for_finetuning), got {pt_path}")
    if not Path(data_yaml).exists():
        raise FileNotFoundError(f"dataset yaml not found: {data_yaml}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    yolo = YOLO(str(pt_path))
    settings = {"workers": 0, "plots": False, "verbose": False, "exist_ok": True, **kw}
    yolo.train(
        data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, fraction=fraction,
        project=str(Path(project).resolve()), name=name, **settings,
    )
    trainer = yolo.trainer
    weights = trainer.best if trainer.best.exists() else trainer.last
    return {**_box_metrics(trainer.validator.metrics), "weights": str(weights), "save_dir": str(trainer.save_dir)}


def _box_metrics(metrics) -> dict[str, float]:
    """Box precision, recall, mAP50 and mAP50-95 from ultralytics' DetMetrics."""
    box = metrics.box
    return {
        "mAP50": float(box.map50),
        "mAP50-95": float(box.map),
        "precision": float(box.mp),
        "recall": float(box.mr),
    }


# ----------------------------------------------------------------------------------------------
# Model sizes
# ----------------------------------------------------------------------------------------------


def model_size_table(family: str = "yolo12", sizes: str = "nsmlx", imgsz: int = 640) -> list[dict]:
    """Parameters and GFLOPs of every size of a YOLO family, computed offline from the yaml files.

    Counts are of the unfused training model (ultralytics' ``model.info()``; the published tables
    fuse Conv+BatchNorm, which gives slightly fewer parameters and FLOPs) with 80 classes.

    Returns:
        One dict per size: ``{"model", "layers", "params", "params_M", "gflops"}``.
    """
    if family not in {"yolo11", "yolo12"}:
        raise ValueError(f"family must be 'yolo11' or 'yolo12', got {family!r}")
    if not sizes or set(sizes) - set("nsmlx"):
        raise ValueError(f"sizes must be letters from 'nsmlx', got {sizes!r}")
    rows = []
    for size in sizes:
        name = f"{family}{size}"
        model = YOLO(f"{name}.yaml", verbose=False).model
        params = sum(p.numel() for p in model.parameters())
        rows.append({
            "model": name,
            "layers": len(list(model.modules())),
            "params": params,
            "params_M": round(params / 1e6, 2),
            "gflops": round(get_flops(model, imgsz), 1),
        })
    return rows
