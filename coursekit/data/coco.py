"""COCO labels: an ``ImageSet`` with boxes (and instance masks) as COCO JSON, and COCO to YOLO.

Most public detection datasets (COCO itself, BDD100K after its converter, LVIS, Objects365...) ship
their labels as COCO JSON; ultralytics trains on YOLO txt files. :func:`export_coco` writes::

    out_dir/images/{train,val}/000000.png
    out_dir/annotations/instances_{train,val}.json

with the same train/val split as ``export_yolo`` for the same ``val_fraction`` and ``seed``. Each
JSON holds ``images`` (``id``, ``file_name``, ``width``, ``height``), ``categories`` (``id`` =
class + 1: COCO counts from 1) and ``annotations``: ``bbox`` ``[x, y, width, height]`` in pixels
from the top-left corner, ``area`` (the object's mask pixels, or the box area without masks),
``iscrowd`` 0 and, with instance masks, ``segmentation``: one polygon ``[x1, y1, x2, y2, ...]``
per object (the outline ``export_yolo`` writes for segmentation, in pixels).

:func:`coco_to_yolo` converts the other way with ultralytics' own converter
(``ultralytics.data.converter.convert_coco``), so no new conversion code stands between a COCO
dataset and YOLO training: it adds the images and a ``data.yaml``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from torchvision.io import write_png

from .images import ImageSet
from .yolo_export import _validation_split, _write_data_yaml, object_outline

SPLITS = ("train", "val")


def coco_annotations(data: ImageSet, indices: list[int], with_masks: bool) -> dict:
    """The COCO JSON dict of the images ``indices`` of ``data`` (file names ``{i:06d}.png``)."""
    height, width = data.image_size
    images, annotations = [], []
    for i in indices:
        images.append({"id": i, "file_name": f"{i:06d}.png", "width": width, "height": height})
        for k, (box, label) in enumerate(zip(data.boxes[i].tolist(), data.box_labels[i].tolist())):
            x1, y1, x2, y2 = box  # exclusive right/bottom edges: x2 - x1 is the width in pixels
            annotation = {"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                          "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            if with_masks:
                pixels = data.instances[i] == k + 1
                outline = object_outline(pixels.cpu(), data.boxes[i][k].cpu())
                annotation["segmentation"] = [[round(v, 2) for point in outline for v in point]]
                annotation["area"] = int(pixels.sum())
            annotations.append(annotation)
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(data.classes)]
    return {"images": images, "annotations": annotations, "categories": categories}


def export_coco(data: ImageSet, out_dir: str | Path, val_fraction: float = 0.2, seed: int = 0,
                masks: bool | None = None) -> dict[str, Path]:
    """Write ``data`` as a COCO dataset (PNG images + one JSON per split).

    Args:
        data: an ``ImageSet`` with ``boxes`` and ``box_labels`` (e.g. ``make_shapes``).
        out_dir: folder to write (created).
        val_fraction, seed: the train/val split, the same as ``export_yolo``'s.
        masks: write polygons (needs ``data.instances``); default: when ``data`` has instances.

    Returns:
        ``{"train": path of instances_train.json, "val": ...}``.
    """
    if data.boxes is None or data.box_labels is None:
        raise ValueError("export_coco: data has no boxes; export an ImageSet with boxes (e.g. make_shapes)")
    masks = data.instances is not None if masks is None else masks
    if masks and data.instances is None:
        raise ValueError("export_coco: masks=True needs data.instances (object ids per pixel); got None")
    out_dir = Path(out_dir)
    is_val = _validation_split(len(data), val_fraction, seed)
    paths = {}
    for split in SPLITS:
        indices = [i for i in range(len(data)) if bool(is_val[i]) == (split == "val")]
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        for i in indices:
            write_png(data.images[i].cpu(), str(out_dir / "images" / split / f"{i:06d}.png"))
        paths[split] = out_dir / "annotations" / f"instances_{split}.json"
        paths[split].parent.mkdir(parents=True, exist_ok=True)
        paths[split].write_text(json.dumps(coco_annotations(data, indices, masks)))
    return paths


def coco_to_yolo(coco_dir: str | Path, out_dir: str | Path, segments: bool = False) -> Path:
    """Convert a COCO dataset (``coco_dir/annotations/instances_{split}.json`` and
    ``coco_dir/images/{split}/``) to the YOLO layout with ultralytics' ``convert_coco``.

    Labels go to ``out_dir/labels/{split}/`` (``class cx cy w h``, or polygons with ``segments``;
    class = ``category_id - 1``), the images are copied to ``out_dir/images/{split}/`` and a
    ``data.yaml`` names the categories. ``out_dir`` must not exist yet (ultralytics would write to
    ``out_dir2`` instead). Images without annotations get no label file (YOLO reads that as "no
    objects"). Returns the path of ``data.yaml``.
    """
    from ultralytics.data.converter import convert_coco

    coco_dir, out_dir = Path(coco_dir), Path(out_dir)
    jsons = sorted((coco_dir / "annotations").glob("instances_*.json"))
    if not jsons:
        raise ValueError(f"coco_to_yolo: no annotations/instances_*.json under {coco_dir}")
    if out_dir.exists():
        raise ValueError(f"coco_to_yolo: {out_dir} exists; give a new folder")
    categories = sorted(json.loads(jsons[0].read_text())["categories"], key=lambda c: c["id"])
    if [c["id"] for c in categories] != list(range(1, len(categories) + 1)):
        raise ValueError("coco_to_yolo: category ids must be 1, 2, ..., K (class = id - 1)")
    convert_coco(labels_dir=str(coco_dir / "annotations"), save_dir=str(out_dir), use_segments=segments,
                 cls91to80=False)
    for json_path in jsons:
        split = json_path.stem.removeprefix("instances_")
        shutil.copytree(coco_dir / "images" / split, out_dir / "images" / split, dirs_exist_ok=True)
    return _write_data_yaml(out_dir, [c["name"] for c in categories])
