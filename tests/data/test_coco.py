"""COCO export (known values on a hand-made set) and COCO -> YOLO with ultralytics' converter."""
import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit.data import ImageSet, export_yolo, make_shapes  # noqa: E402
from coursekit.data.coco import coco_to_yolo, export_coco  # noqa: E402


def hand_made() -> ImageSet:
    """Two 6 x 10 images (H x W, not square: a swapped axis shows); image 0 holds two objects."""
    instances = torch.zeros(2, 6, 10, dtype=torch.uint8)
    instances[0, 1:3, 2:6] = 1  # rows 1-2, columns 2-5: box (2, 1, 6, 3), 8 pixels
    instances[0, 3:6, 7:9] = 2  # rows 3-5, columns 7-8: box (7, 3, 9, 6), 6 pixels
    instances[1, 0:2, 0:1] = 1  # rows 0-1, column 0: box (0, 0, 1, 2), 2 pixels (too thin for a polygon)
    return ImageSet(
        images=torch.zeros(2, 3, 6, 10, dtype=torch.uint8), labels=torch.tensor([1, 0]), classes=["cat", "dog"],
        boxes=[torch.tensor([[2.0, 1, 6, 3], [7, 3, 9, 6]]), torch.tensor([[0.0, 0, 1, 2]])],
        box_labels=[torch.tensor([1, 0]), torch.tensor([0])], instances=instances,
    )


def test_export_coco_known_values(tmp_path):
    paths = export_coco(hand_made(), tmp_path / "coco", val_fraction=0.5, seed=0)
    splits = {split: json.loads(path.read_text()) for split, path in paths.items()}
    by_image = {image["id"]: (split, image) for split, coco in splits.items() for image in coco["images"]}
    assert sorted(by_image) == [0, 1] and {s for s, _ in by_image.values()} == {"train", "val"}
    split0, image0 = by_image[0]
    assert image0 == {"id": 0, "file_name": "000000.png", "width": 10, "height": 6}
    assert (tmp_path / "coco" / "images" / split0 / "000000.png").is_file()
    assert splits[split0]["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    first, second = splits[split0]["annotations"]
    assert first["category_id"] == 2 and first["bbox"] == [2.0, 1.0, 4.0, 2.0] and first["area"] == 8
    assert first["segmentation"] == [[2.5, 1.5, 2.5, 2.5, 5.5, 2.5, 5.5, 1.5]]  # pixel centers of the outline
    assert second["category_id"] == 1 and second["bbox"] == [7.0, 3.0, 2.0, 3.0] and second["area"] == 6
    split1, _ = by_image[1]
    (thin,) = splits[split1]["annotations"]
    assert thin["bbox"] == [0.0, 0.0, 1.0, 2.0] and thin["area"] == 2 and thin["iscrowd"] == 0
    assert thin["segmentation"] == [[0.0, 0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 2.0]]  # the box corners


def test_export_coco_boxes_only_and_bad_input(tmp_path):
    data = hand_made()
    paths = export_coco(data, tmp_path / "boxes", val_fraction=0.5, masks=False)
    annotations = [a for p in paths.values() for a in json.loads(p.read_text())["annotations"]]
    assert all("segmentation" not in a for a in annotations)
    assert sorted(a["area"] for a in annotations) == [2.0, 6.0, 8.0]  # box areas
    data.instances = None
    with pytest.raises(ValueError, match="masks=True needs data.instances"):
        export_coco(data, tmp_path / "x", masks=True)
    data.boxes = None
    with pytest.raises(ValueError, match="no boxes"):
        export_coco(data, tmp_path / "y")


def _labels(folder):
    """{split/name: [[class, values...], ...]} of every label file under folder/labels."""
    return {f"{p.parent.name}/{p.stem}": [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
            for p in sorted((folder / "labels").glob("*/*.txt"))}


def _assert_same_labels(converted, exported):
    assert converted.keys() == exported.keys()
    for name in exported:
        assert len(converted[name]) == len(exported[name]), name
        for row, expected in zip(converted[name], exported[name]):
            assert row[0] == expected[0] and len(row) == len(expected)
            assert max(abs(a - b) for a, b in zip(row[1:], expected[1:])) < 1e-5, name  # %g vs %.6f


@pytest.mark.parametrize("task", ["detect", "segment"])
def test_coco_to_yolo_with_ultralytics_matches_our_yolo_export(tmp_path, task):
    pytest.importorskip("ultralytics")
    data = make_shapes(12, image_size=32, seed=3, num_objects=(1, 3))
    export_coco(data, tmp_path / "coco", val_fraction=0.25, seed=1)
    data_yaml = coco_to_yolo(tmp_path / "coco", tmp_path / "converted", segments=task == "segment")
    reference = export_yolo(data, tmp_path / "yolo", task=task, val_fraction=0.25, seed=1)
    _assert_same_labels(_labels(tmp_path / "converted"), _labels(tmp_path / "yolo"))
    images = sorted(p.relative_to(tmp_path / "converted") for p in (tmp_path / "converted" / "images").glob("*/*.png"))
    assert images == sorted(p.relative_to(tmp_path / "yolo") for p in (tmp_path / "yolo" / "images").glob("*/*.png"))
    assert data_yaml.read_text().split("names:")[1] == reference.read_text().split("names:")[1]
    with pytest.raises(ValueError, match="exists"):
        coco_to_yolo(tmp_path / "coco", tmp_path / "converted")
