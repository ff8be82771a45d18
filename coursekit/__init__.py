"""coursekit: the implementations behind the self-supervised learning course.

Data flows data -> views -> backbone -> head -> loss; the trainer drives it and evaluation reads
backbone features. Modules: ``profile`` (run profiles), ``data``, ``augment``, ``models``,
``methods``, ``train``, ``evaluate``, ``foundation``, ``transfer``, ``viz`` and ``grading``.
"""

__version__ = "0.1.0"
