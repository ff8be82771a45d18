"""coursekit: the implementations behind the self-supervised learning course.

Data flows data -> views -> backbone -> head -> loss, the engine drives it and evaluation reads
backbone features: ``profile`` (run profiles; ``dry_run``: ``COURSEKIT_DRY_RUN``, a profile's code paths with loops and
data cut short), ``data``, ``augment`` (views), ``models``
(backbones and heads), ``methods`` (SimCLR, MoCo, BYOL, DINO, MAE and their losses), ``engine``
(the training loop, checkpoints, distributed), ``evaluate`` (kNN, probes, fine-tuning, patch
features), ``foundation`` (DINOv2 weights), ``transfer`` (detection, segmentation, YOLO),
``viz``, ``lessons`` (lesson-only tools), ``grading`` and ``cli``.
"""

__version__ = "0.1.0"
