"""The exercise checks, one module per homework, and which graded exercises each homework notebook holds.

Each homework's exercises live in a module named after it (``simclr.py`` grades ``02_simclr``,
``yolo_transfer.py`` grades ``09_yolo_transfer``...), registered in ``coursekit.grading.core``'s
``EXERCISES`` when this package is imported (``coursekit.grading`` imports it); ``checks.py``
holds the helpers every check uses. The checks stand on ``coursekit.grading.core`` (the
registry, ``grade``, ``check``) and ``coursekit.grading.wire`` only; the batch grader
(``coursekit.grading.batch``) stands on them.

The homework id is the notebook's stem (``solutions/02_simclr.ipynb`` -> ``"02_simclr"``); a
notebook may also name it in its metadata (``metadata.coursekit.homework``). To grade a new
exercise in a homework, add its id to the list in ``HOMEWORK`` here.
"""
from __future__ import annotations

HOMEWORK: dict[str, list[str]] = {
    "01_label_bottleneck": ["bottleneck.stratified_subset"],
    "02_simclr": ["simclr.nt_xent", "simclr.augmentation_pair_similarity", "simclr.overlap_matrix"],
    "03_moco": ["moco.momentum_update", "moco.infonce", "moco.simulate_ema", "moco.ema_lag_statistics"],
    "04_byol": ["byol.regression_loss"],
    "05_dino": ["dino.dino_loss", "dino.update_center"],
    "06_mae": ["mae.patchify", "mae.random_masking", "mae.loss", "mae.block_mask", "mae.masking_difficulty",
               "mae.visible_spread"],
    "07_linear_probe": ["probe.knn_predict", "probe.ridge_classifier"],
    "08_dinov2": ["dinov2.cosine_top_k", "dinov2.foreground_mask"],
    "09_yolo_transfer": ["detection.box_iou", "detection.xyxy_to_yolo", "detection.param_groups"],
    "10_segmentation": ["segmentation.mean_iou", "segmentation.tokens_to_feature_map"],
}


def exercises_of(homework_id: str) -> list[str]:
    """The exercise ids of a homework, or a ``ValueError`` that lists the known homework ids."""
    if homework_id not in HOMEWORK:
        raise ValueError(f"unknown homework {homework_id!r}; known: {', '.join(HOMEWORK)}")
    return HOMEWORK[homework_id]


from . import (byol, dino, dinov2, label_bottleneck, linear_probe, mae, moco, segmentation,  # noqa: E402,F401 - registers
               simclr, yolo_transfer)  # the exercises; one file per homework, named after it
