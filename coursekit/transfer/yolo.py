"""Self-supervised pretraining of a YOLO backbone with DINO, then fine-tuning in ultralytics.

The recipe (lesson 09), each step one function:

1. :func:`load_yolo` builds a YOLO11/YOLO12 model from its ``.yaml`` (offline) or loads a ``.pt``.
2. :func:`~coursekit.models.yolo.yolo_backbone` cuts the detection model to its backbone (the
   number of layers read from the model's own yaml) and adds a global-average-pooling head: a
   coursekit backbone (``coursekit.models.yolo``; ``build_backbone("yolo11n")`` does 1 and 2).
3. :func:`pretrain_yolo_backbone` trains it with coursekit's DINO through ``engine.fit``, the same
   loop as ``coursekit pretrain --backbone yolo11n`` (mixed precision, checkpoints, DDP).
4. :func:`transfer_backbone` copies the student backbone into a fresh YOLO model and reports what
   transferred; :func:`save_for_finetuning` writes a ``.pt`` checkpoint ultralytics trains from
   (``coursekit export --format ultralytics`` does both from a checkpoint folder).
5. :func:`finetune` trains and validates that ``.pt`` on a YOLO-format dataset.

Why the ``.pt`` step: ``YOLO("x.yaml").train(...)`` rebuilds the model from the yaml and would drop
weights loaded into it in memory; ``YOLO("x.pt").train(...)`` rebuilds too, but then loads the
checkpoint's weights into the new model.

Set ``YOLO_OFFLINE=1`` before importing this module when there is no internet.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from coursekit import dry_run
from coursekit.engine import History, TrainConfig, fit, load_or_train
from coursekit.methods import DINO
from coursekit.models.yolo import YOLOBackbone, check_size, detection_model, dino_local_size, yolo_backbone

try:
    from ultralytics import YOLO
    from ultralytics import __version__ as ULTRALYTICS_VERSION
    from ultralytics.utils.torch_utils import get_flops
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "coursekit.transfer.yolo needs ultralytics: pip install 'coursekit[yolo]'"
    ) from err

__all__ = [
    "YOLOBackbone",
    "load_yolo",
    "yolo_backbone",
    "pretrain_yolo_backbone",
    "transfer_backbone",
    "save_for_finetuning",
    "finetune",
    "model_size_table",
]


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


# ----------------------------------------------------------------------------------------------
# DINO pretraining through the engine
# ----------------------------------------------------------------------------------------------


def pretrain_yolo_backbone(
    backbone: YOLOBackbone,
    images: Tensor | Dataset,
    config: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    **dino_kwargs,
) -> History:
    """Pretrain a YOLO backbone in place with coursekit's DINO (``coursekit.methods.dino``) and ``engine.fit``.

    Two global crops of the image size and local crops of :func:`~coursekit.models.yolo.dino_local_size`
    (half the image, a multiple of 32) unless ``local_size`` is given; every other DINO setting
    (``n_local``, ``out_dim``, ``teacher_temp``...) passes through ``dino_kwargs``. With a
    ``checkpoint_dir`` the run goes through ``engine.load_or_train``: a finished run with the same
    settings is loaded, an unfinished one resumed.

    Args:
        backbone: from :func:`yolo_backbone` or ``build_backbone("yolo11n")``.
        images: uint8 ``[N, 3, S, S]`` or a Dataset of uint8 ``[3, S, S]`` (``coursekit.data.folder``);
            ``S`` a multiple of 32.
        config: the engine's TrainConfig (epochs, batch size, learning rate, precision, seed...).

    Returns:
        The engine's History (loss per step, epoch_loss...).
    """
    image_size = int(images[0].shape[-1])
    check_size(image_size, "the image size")
    local_size = dino_kwargs.pop("local_size", dino_local_size(image_size))
    check_size(local_size, "local_size")
    method = DINO(backbone, image_size=image_size, local_size=local_size, **dino_kwargs)
    if checkpoint_dir is None:
        return fit(method, images, config, progress=progress, device=device)
    return load_or_train(method, images, config, checkpoint_dir, progress=progress, device=device)[0]


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
    model = detection_model(yolo_model)
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
    model = detection_model(yolo_model)
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
        fraction: share of the training images to use (ultralytics takes the first ones). In a
            dry run (``coursekit.dry_run``): one epoch of about ``dry_run.MAX_STEPS`` batches.

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
    if dry_run.is_dry_run():
        epochs, fraction = 1, dry_run_fraction(data_yaml, batch, fraction)
    yolo = YOLO(str(pt_path))
    settings = {"workers": 0, "plots": False, "verbose": False, "exist_ok": True, **kw}
    yolo.train(
        data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=batch, fraction=fraction,
        project=str(Path(project).resolve()), name=name, **settings,
    )
    trainer = yolo.trainer
    weights = trainer.best if trainer.best.exists() else trainer.last
    return {**_box_metrics(trainer.validator.metrics), "weights": str(weights), "save_dir": str(trainer.save_dir)}


def dry_run_fraction(data_yaml: str | Path, batch: int, fraction: float) -> float:
    """The share of the training images (of the folder ``data_yaml`` names, as ``export_yolo``
    writes it) that makes about ``dry_run.MAX_STEPS`` batches, at most ``fraction``: ultralytics'
    own loop cannot be stopped after a number of steps, but it keeps ``round(n * fraction)`` images."""
    import yaml

    spec = yaml.safe_load(Path(data_yaml).read_text())
    folder = Path(spec.get("path", Path(data_yaml).parent)) / spec["train"]
    count = sum(1 for path in folder.iterdir() if path.is_file()) if folder.is_dir() else 0
    return fraction if count == 0 else min(fraction, dry_run.MAX_STEPS * batch / count)


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
