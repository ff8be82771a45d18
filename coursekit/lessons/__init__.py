"""Tools that belong to one lesson only (and the reference solutions of its analysis homework).

- ``analysis``: labeling cost (lesson 01), augmentation-pair similarity (02), the EMA simulator (03).
- ``pretext``: the classic pretext tasks, rotation, jigsaw and inpainting (the tour in 02).
- ``attention``: how well a ViT's thresholded CLS attention covers the object (05).
- ``masking``: random, block and grid masks and how hard each makes MAE's task (06).

Everything reusable beyond one lesson lives in the package proper (``evaluate``, ``transfer``...).
"""
