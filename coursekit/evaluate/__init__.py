"""How good are the features? The evaluation protocols of self-supervised learning.

Every protocol reads the *backbone's* global feature (never the projection head's output):

- ``knn_predict`` / ``knn_accuracy``: weighted k-nearest neighbours on L2-normalized features
  (k=200, temperature 0.1, as in InstDisc and lightly's benchmarks; ``knn_accuracy`` never uses
  more neighbours than the smallest class has labeled images, ``knn_neighbours``). No training at all.
- ``linear_probe``: a linear classifier on frozen, cached features, with a small search of the
  learning rate and weight decay on a held-out part of the training set.
- ``fine_tune``: a linear head on the backbone that starts as the linear probe (LP-FT), everything
  trained, the backbone with a smaller learning rate; ``train_from_scratch`` is the same loop on a
  freshly built backbone, its head from zero.
- ``label_fraction_experiment``: lesson 07's table, every backbone and protocol with 1%, 10%, 100% of
  the labels (``table_to_json`` / ``table_from_json`` store it).
- ``few_labels``: kNN and the linear probe with n labeled images per class, over several draws;
  ``pixel_features``, the raw-pixel baseline every backbone must beat.

Images are uint8 ``[N, 3, H, W]``; they become float in [0, 1], then ImageNet-normalized
(``coursekit.augment.normalize``), exactly as the views of pretraining.

Files: ``features`` (extraction, raw pixels), ``knn``, ``linear`` (logistic and ridge probes),
``finetune`` (fine-tuning and training from scratch), ``fractions`` (label-fraction experiment),
``few_labels`` (n labels per class), ``patches`` (patch-token tools: grids, principal components,
foreground masks) and ``retrieval``.
"""
from coursekit.evaluate.features import default_normalize, extract_features, pixel_features
from coursekit.evaluate.finetune import FineTuneResult, fine_tune, simple_augment, train_from_scratch
from coursekit.evaluate.fractions import (FRACTIONS, PROTOCOLS, label_fraction_experiment, table_from_json,
                                          table_to_json)
from coursekit.evaluate.knn import accuracy, knn_accuracy, knn_neighbours, knn_predict
from coursekit.evaluate.linear import ProbeResult, fit_linear_probe, linear_probe, ridge_classifier, train_linear

__all__ = [
    "default_normalize", "extract_features", "pixel_features", "knn_predict", "knn_accuracy", "knn_neighbours",
    "accuracy", "ProbeResult", "train_linear", "fit_linear_probe", "linear_probe", "ridge_classifier", "FineTuneResult", "simple_augment",
    "fine_tune", "train_from_scratch", "FRACTIONS", "PROTOCOLS", "label_fraction_experiment",
    "table_to_json", "table_from_json",
]
