"""Run profiles: one switch that sizes every notebook, test and command-line run.

``COURSEKIT_PROFILE`` picks ``smoke`` (tests and CI), ``demo`` (live coding on a laptop CPU) or
``full`` (a Colab GPU). Unset, the profile is ``full`` when a CUDA GPU is present and ``demo``
otherwise. ``COURSEKIT_DATASET`` replaces the profile's dataset (e.g. ``fashion_mnist`` to run the
full profile on a GPU machine without internet, where CIFAR-10 cannot be downloaded). Notebooks
read every size from the profile, never from numbers typed in a cell::

    from coursekit.profile import get_profile
    profile = get_profile()
    print(profile.banner())
    images = load_images(profile.dataset, n=profile.num_train, image_size=profile.image_size)
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from coursekit import dry_run
from coursekit.data import DATASET_NAMES
from coursekit.provenance import record

PROFILE_ENV = "COURSEKIT_PROFILE"
DATASET_ENV = "COURSEKIT_DATASET"
CACHE_ENV = "COURSEKIT_CACHE"


def cache_dir() -> Path:
    """Where checkpoints and exports are kept: ``$COURSEKIT_CACHE`` (e.g. a Google Drive folder on
    Colab, so a disconnect loses nothing) or ``~/.cache/coursekit``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "coursekit")


@dataclass(frozen=True)
class Profile:
    """Sizes for one kind of run. Every field is read by notebooks and code; none is decoration.

    Attributes:
        name: ``smoke``, ``demo`` or ``full``.
        dataset: dataset name understood by ``coursekit.data`` (``shapes``, ``fashion_mnist``, ``cifar10``...).
        image_size: side of the square images, in pixels, fed to the backbones.
        num_train: number of (unlabeled) training images for pretraining.
        num_test: number of labeled test images for evaluation.
        backbone: backbone name for ``coursekit.models`` (e.g. ``resnet18``).
        width: base channel width of the ResNet (64 is the standard ResNet-18).
        vit: ViT name for ``coursekit.models`` (``vit_tiny``, ``vit_small``).
        patch_size: ViT patch size in pixels.
        epochs: pretraining epochs.
        batch_size: pretraining batch size.
        workers: DataLoader workers (device-side pipelines use none).
        device: ``cuda``, ``mps`` or ``cpu``.
        foundation_size: side in pixels of the images fed to a pretrained foundation model
            (DINOv2, lesson 08): a multiple of its 14-pixel patches; 224 is DINOv2's own size.
        detection_size: side in pixels of the detection images of lesson 09 (YOLO's ``imgsz``):
            a multiple of YOLO's stride 32.
    """

    name: str
    dataset: str
    image_size: int
    num_train: int
    num_test: int
    backbone: str
    width: int
    vit: str
    patch_size: int
    epochs: int
    batch_size: int
    workers: int
    device: str
    foundation_size: int = 224
    detection_size: int = 64

    def banner(self) -> str:
        """One line a notebook prints at its top: which profile, on which device, at what size; in a
        dry run (``COURSEKIT_DRY_RUN``, ``coursekit.dry_run``) it says so, and what the dry run cuts."""
        mode = f" {dry_run.describe()};" if dry_run.is_dry_run() else ""
        return (
            f"coursekit profile '{self.name}'{mode} on {self.device}: {self.dataset} "
            f"({self.num_train} train / {self.num_test} test images at {self.image_size}px), "
            f"{self.backbone} (width {self.width}) / {self.vit} (patch {self.patch_size}), "
            f"{self.epochs} epochs, batch {self.batch_size}. Set {PROFILE_ENV} to change it."
        )

    def checkpoint_dir(self, run_name: str) -> Path:
        """The checkpoint folder of a named run under this profile, e.g. ``profile.checkpoint_dir("simclr")``;
        a dry run's runs have their own folder (``<cache>/dry-run/checkpoints``), apart from real runs."""
        root = cache_dir() / "dry-run" if dry_run.is_dry_run() else cache_dir()
        return root / "checkpoints" / f"{self.name}-{run_name}"

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed, e.g. ``profile.replace(epochs=1)``."""
        return dataclasses.replace(self, **changes)


# Sizes per profile (the device is filled in at selection time).
_PROFILES: dict[str, dict] = {
    "smoke": dict(dataset="shapes", image_size=32, num_train=256, num_test=128, backbone="resnet18",
                  width=8, vit="vit_tiny", patch_size=8, epochs=1, batch_size=64, workers=0,
                  foundation_size=42),
    "demo": dict(dataset="fashion_mnist", image_size=32, num_train=4096, num_test=2000, backbone="resnet18",
                 width=16, vit="vit_tiny", patch_size=8, epochs=5, batch_size=256, workers=0,
                 foundation_size=112, detection_size=64),
    "full": dict(dataset="cifar10", image_size=32, num_train=50000, num_test=10000, backbone="resnet18",
                 width=64, vit="vit_small", patch_size=4, epochs=30, batch_size=512, workers=2,
                 foundation_size=224, detection_size=224),
}

PROFILE_NAMES = tuple(_PROFILES)


def default_device() -> str:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


class ProfileError(ValueError):
    """An unknown profile name (in the argument or in ``COURSEKIT_PROFILE``)."""


def profile_name(name: str | None = None) -> str:
    """Resolve the profile name: the argument, else ``COURSEKIT_PROFILE``, else by hardware."""
    chosen = name if name is not None else os.environ.get(PROFILE_ENV, "").strip()
    if not chosen:
        return "full" if torch.cuda.is_available() else "demo"
    chosen = chosen.lower()
    if chosen not in _PROFILES:
        source = "argument" if name is not None else f"environment variable {PROFILE_ENV}"
        raise ProfileError(
            f"Unknown coursekit profile {chosen!r} (from the {source}). "
            f"Valid profiles: {', '.join(PROFILE_NAMES)}; use one of them"
            + ("." if name is not None else f", or unset {PROFILE_ENV} to choose by hardware.")
        )
    return chosen


def dataset_override() -> str | None:
    """The dataset named by ``COURSEKIT_DATASET`` (None when unset or empty).

    Raises:
        ValueError: for a name ``coursekit.data`` does not know, listing the valid ones.
    """
    chosen = os.environ.get(DATASET_ENV, "").strip().lower()
    if not chosen:
        return None
    if chosen not in DATASET_NAMES:
        raise ValueError(f"Unknown dataset {chosen!r} in the environment variable {DATASET_ENV}. "
                         f"Valid datasets: {', '.join(DATASET_NAMES)}.")
    return chosen


def get_profile(name: str | None = None, device: str | None = None) -> Profile:
    """The run profile: ``name`` if given, else ``COURSEKIT_PROFILE``, else ``full`` on CUDA / ``demo``;
    its dataset replaced by ``COURSEKIT_DATASET`` when that is set.

    Args:
        name: profile name to force (``smoke``, ``demo``, ``full``).
        device: device to force; by default CUDA, then MPS, then CPU.

    Raises:
        ProfileError: (a ValueError) for an unknown profile name, listing the valid ones.
        ValueError: for an unknown dataset name in COURSEKIT_DATASET, listing the valid ones.
    """
    chosen = profile_name(name)
    sizes = _PROFILES[chosen]
    record("profile", chosen)
    return Profile(name=chosen, device=device or default_device(),
                   **{**sizes, "dataset": dataset_override() or sizes["dataset"]})
