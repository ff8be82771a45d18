"""Self-supervised pretraining beats random init on real data (issue 5).

SimCLR pretrains a tiny ResNet-18 (width 8) for a few epochs on a Fashion-MNIST training subset at
32 px; the weighted kNN accuracy (k=200, t=0.1, the same subset as the labeled memory bank) on
held-out test images must beat the very same backbone at its random initialization (same seed,
same architecture) by ``MARGIN``.

The margin was verified over seeds 0-4 (idle 2-core CPU, ~28 s per seed): random init -> SimCLR
0.496->0.572, 0.492->0.566, 0.452->0.638, 0.528->0.626, 0.490->0.598, gains +0.074 ... +0.186;
MARGIN = 0.03 is well below the smallest. Short runs do NOT gain: 2 epochs (32 steps) lowered the
accuracy (seed 0: -0.044), 8 epochs gave +0.022/+0.052/+0.128 (seeds 0-2), too close to the noise
of 500 queries (standard error ~0.022). ``python tests/evaluate/test_ssl_gain.py 0 1 2`` prints the gains.
It runs on the CPU and skips only when the Fashion-MNIST files (Debian's ``dataset-fashion-mnist`` in /usr/share/datasets/fashion-mnist, or
``$COURSEKIT_DATA``) are absent, since tests never download.
"""
from __future__ import annotations

import copy

import pytest
import torch

from coursekit.data import load_images
from coursekit.data.fashion_mnist import DEBIAN_FOLDER, _find_split, search_folders
from coursekit.data.downloads import data_root
from coursekit.evaluate import accuracy, extract_features, knn_predict
from coursekit.methods import build_method
from coursekit.models import build_backbone
from coursekit.engine import TrainConfig, fit

NUM_TRAIN, NUM_TEST, IMAGE_SIZE, WIDTH = 1024, 500, 32, 8
CONFIG = dict(epochs=20, batch_size=64, lr=2e-3, weight_decay=1e-4, warmup_epochs=0.25)
SEED = 0
MARGIN = 0.03  # absolute kNN accuracy; set well below the smallest gain in GAINS_SEEN
SEEDS_CHECKED = (0, 1, 2, 3, 4)
GAINS_SEEN = {0: 0.076, 1: 0.074, 2: 0.186, 3: 0.098, 4: 0.108}  # seed -> measured gain with CONFIG


def fashion_mnist_present() -> bool:
    folders = search_folders(data_root())
    return all(_find_split(folders, split) is not None for split in ("train", "test"))


def measure_gain(seed: int) -> tuple[float, float]:
    """(random-init kNN accuracy, SimCLR-pretrained kNN accuracy) of the same backbone, for ``seed``
    (the seed of the initialization, the data order and the augmentations; the images are fixed)."""
    train = load_images("fashion_mnist", "train", n=NUM_TRAIN, image_size=IMAGE_SIZE, seed=0)
    test = load_images("fashion_mnist", "test", n=NUM_TEST, image_size=IMAGE_SIZE, seed=0)
    torch.manual_seed(seed)
    backbone = build_backbone("resnet18", width=WIDTH)
    initial = copy.deepcopy(backbone)

    def knn(model) -> float:
        # k = 200 exactly, as when GAINS_SEEN was measured (knn_accuracy would cap k at the smallest
        # class's ~90 bank images; with that cap seed 0 gains +0.012: 0.592 -> 0.604)
        bank = extract_features(model, train.images, device="cpu")
        queries = extract_features(model, test.images, device="cpu")
        return accuracy(knn_predict(bank, train.labels, queries, num_classes=10, k=200, temperature=0.1), test.labels)

    method = build_method("simclr", backbone, image_size=IMAGE_SIZE)
    fit(method, train.images, TrainConfig(**CONFIG, precision="fp32", seed=seed), progress=False, device="cpu")
    return knn(initial), knn(method.backbone)


@pytest.mark.skipif(not fashion_mnist_present(),
                    reason=f"Fashion-MNIST files absent (install Debian's dataset-fashion-mnist: {DEBIAN_FOLDER})")
def test_simclr_beats_random_init_on_fashion_mnist():
    random_init, pretrained = measure_gain(SEED)
    assert pretrained >= random_init + MARGIN, (
        f"SimCLR kNN accuracy {pretrained:.3f} does not beat the random-init backbone's {random_init:.3f} "
        f"by {MARGIN} (gains seen over seeds {SEEDS_CHECKED}: {GAINS_SEEN})")


if __name__ == "__main__":  # python tests/evaluate/test_ssl_gain.py [SEED...]: the gains behind MARGIN
    import sys
    import time

    torch.set_num_threads(2)
    for seed in map(int, sys.argv[1:] or SEEDS_CHECKED):
        start = time.perf_counter()
        random_init, pretrained = measure_gain(seed)
        print(f"seed {seed}: random init {random_init:.4f}, SimCLR {pretrained:.4f}, "
              f"gain {pretrained - random_init:+.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
