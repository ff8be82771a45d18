"""Write an ``ImageSet`` with boxes (the shapes) in the ultralytics YOLO folder layout.

```
out_dir/data.yaml            path, train, val, names
out_dir/images/{train,val}/000000.png
out_dir/labels/{train,val}/000000.txt
```

Detection labels hold one line per object, ``class cx cy w h`` normalized by the image size;
segmentation labels hold ``class x1 y1 x2 y2 ...``, the normalized outline of the object's visible
pixels (traced with OpenCV, which ultralytics installs).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import write_png
from tqdm.auto import tqdm

from .shapes import make_shapes
from .boxes import xyxy_to_yolo
from .images import ImageSet

TASKS = ("detect", "segment")


def _detection_lines(boxes: Tensor, labels: Tensor, width: int, height: int) -> list[str]:
    rows = xyxy_to_yolo(boxes, width, height)  # [K, 4] normalized (cx, cy, w, h)
    return [f"{int(c)} " + " ".join(f"{v:.6f}" for v in row) for c, row in zip(labels.tolist(), rows.tolist())]


def object_outline(pixels: Tensor, box: Tensor) -> list[tuple[float, float]]:
    """Outline ``[(x, y), ...]`` in pixels of the largest connected part of a bool ``[H, W]`` mask.

    Points are pixel centers on the border (``index + 0.5``); a part too small for a polygon gets
    the corners of its ``box`` (xyxy).
    """
    import cv2  # installed with ultralytics (the ``yolo`` extra)

    contours, _ = cv2.findContours(pixels.numpy().astype("uint8"), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2)
    if len(largest) < 3:
        x1, y1, x2, y2 = box.tolist()
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return [(x + 0.5, y + 0.5) for x, y in largest.tolist()]


def _segmentation_lines(instances: Tensor, boxes: Tensor, labels: Tensor) -> list[str]:
    height, width = instances.shape
    lines = []
    for k, (box, label) in enumerate(zip(boxes, labels.tolist())):
        outline = object_outline(instances == k + 1, box)
        lines.append(f"{label} " + " ".join(f"{x / width:.6f} {y / height:.6f}" for x, y in outline))
    return lines


def _validation_split(count: int, val_fraction: float, seed: int) -> Tensor:
    """bool ``[count]``: True for the images that go to ``val`` (at least one each side)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"export_yolo: val_fraction must be in (0, 1); got {val_fraction}")
    if count < 2:
        raise ValueError(f"export_yolo: need at least 2 images (one for train, one for val); got {count}")
    num_val = min(count - 1, max(1, round(val_fraction * count)))
    is_val = torch.zeros(count, dtype=torch.bool)
    is_val[torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:num_val]] = True
    return is_val


def _check_exportable(data: ImageSet, task: str, name: str) -> None:
    if data.boxes is None or data.box_labels is None:
        raise ValueError(f"export_yolo: {name} has no boxes; export an ImageSet from make_shapes or make_scenes")
    if task == "segment" and data.instances is None:
        raise ValueError(f"export_yolo: task='segment' needs {name}.instances (object ids per pixel); got None")


def _write_data_yaml(out_dir: Path, classes: list[str]) -> Path:
    names = "\n".join(f"  {i}: {json.dumps(name)}" for i, name in enumerate(classes))
    path = out_dir / "data.yaml"
    path.write_text(f"path: {json.dumps(str(out_dir.resolve()))}\ntrain: images/train\nval: images/val\n"
                    f"names:\n{names}\n")
    return path


def export_yolo(data: ImageSet | Mapping, out_dir: str | Path, task: str = "detect", val_fraction: float = 0.2,
                seed: int = 0, val: ImageSet | None = None) -> Path:
    """Export images with boxes (and instance masks for ``segment``) for ultralytics.

    Args:
        data: an ``ImageSet`` with ``boxes`` (e.g. from ``make_shapes``), or a mapping of
            ``make_shapes`` arguments (``{"n": 64, "image_size": 64, "num_objects": (1, 3)}``).
        out_dir: folder to write (created; existing files of the same names are overwritten).
        task: ``"detect"`` (boxes) or ``"segment"`` (polygons; needs ``data.instances``).
        val_fraction: share of images in the validation split (chosen at random with ``seed``).
        seed: seed of the train / val split.
        val: a separate validation set (e.g. a test split): then all of ``data`` goes to ``train``,
            all of ``val`` to ``val``, and ``val_fraction`` and ``seed`` are not used.

    Returns:
        the path of ``data.yaml``, ready for ``YOLO(...).train(data=...)``.
    """
    if task not in TASKS:
        raise ValueError(f"export_yolo: task must be one of {', '.join(TASKS)}; got {task!r}")
    if isinstance(data, Mapping):
        data = make_shapes(**data)
    _check_exportable(data, task, "data")
    out_dir = Path(out_dir)
    if val is None:  # file names keep the image's index in data
        is_val = _validation_split(len(data), val_fraction, seed)
        names = {"train": torch.nonzero(~is_val).squeeze(1).tolist(), "val": torch.nonzero(is_val).squeeze(1).tolist()}
        parts = {split: data.subset(indices) for split, indices in names.items()}
    else:
        _check_exportable(val, task, "val")
        if val.classes != data.classes:
            raise ValueError(f"export_yolo: val has classes {val.classes}, data has {data.classes}")
        parts = {"train": data, "val": val}
        names = {"train": list(range(len(data))), "val": list(range(len(val)))}
    for split, part in parts.items():
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        height, width = part.image_size
        for j, i in enumerate(tqdm(names[split], desc=f"export_yolo ({task}, {split})", leave=False)):
            write_png(part.images[j].cpu(), str(out_dir / "images" / split / f"{i:06d}.png"))
            boxes, labels = part.boxes[j].cpu(), part.box_labels[j].cpu()
            lines = (_detection_lines(boxes, labels, width, height) if task == "detect"
                     else _segmentation_lines(part.instances[j].cpu(), boxes, labels))
            (out_dir / "labels" / split / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))
    return _write_data_yaml(out_dir, data.classes)
