"""Tools that belong to one lesson only (and the reference solutions of its analysis homework).

- ``analysis``: labeling cost (lesson 01), augmentation-pair similarity (02), the EMA simulator (03).
- ``masking``: random, block and grid masks and how hard each makes MAE's task (06).

Everything reusable beyond one lesson lives in the package proper (``evaluate``, ``transfer``...).
"""
