"""Foundation models and their weights: DINOv2 loaded from the official checkpoints (lesson 08).

Weights (:func:`load_dinov2`) come from, in order: a file the caller names, the torch hub cache
(``torch.hub.get_dir()/checkpoints/dinov2_vits14_pretrain.pth``; ``$TORCH_HOME`` moves it), the
official download. Without any of them :class:`WeightsUnavailableError` says where to put the file;
random weights only with ``allow_random=True``, and then ``model.pretrained`` is False and
``model.banner`` says that the results are meaningless. In a dry run (``COURSEKIT_DRY_RUN``,
``coursekit.dry_run``) nothing is downloaded and missing weights give random ones, as missing
datasets give random images: the full profile's DINOv2 at 224 px runs offline. The architecture is
``coursekit.models.dinov2``.

Offline, lesson 08 needs features that mean something all the same: :func:`load_stand_in` gives the
course's own long DINO ViT run (``coursekit.pretrained``, shipped with the package) in DINOv2's
place, with the same feature interface and a banner that says it is a stand-in trained here, not
DINOv2.
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from torch import nn

from coursekit import dry_run, pretrained
from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD
from coursekit.models.dinov2 import DINOV2_CONFIGS, PATCH_SIZE, DinoVisionTransformer, create_dinov2

__all__ = ["WEIGHTS_URL", "STAND_IN", "WeightsUnavailableError", "load_dinov2", "load_stand_in", "prepare_images",
           "weights_cache_path", "weights_url", "create_dinov2", "DINOV2_CONFIGS"]

WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth"
DOWNLOAD_TIMEOUT_S = 10.0  # seconds to wait for the server before calling the machine offline
STAND_IN = "fmnist-dino-vit"  # the shipped run that stands in for DINOv2 offline (coursekit.pretrained)


class WeightsUnavailableError(RuntimeError):
    """No pretrained DINOv2 weights could be found or downloaded."""


def weights_url(name: str) -> str:
    """The official download address of ``name``'s pretrained weights."""
    return WEIGHTS_URL.format(name=name)


def weights_cache_path(name: str) -> Path:
    """Where torch hub keeps (and :func:`load_dinov2` looks for) ``name``'s weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}_pretrain.pth"


def _read_weights(path: Path) -> dict[str, Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _download_weights(name: str) -> dict[str, Tensor]:
    """Fetch the official weights into the hub cache. Raises OSError (URLError, timeout) when the
    server cannot be reached; a short request with a timeout goes first, so that an offline
    machine fails within ``DOWNLOAD_TIMEOUT_S`` instead of hanging."""
    url = weights_url(name)
    with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=DOWNLOAD_TIMEOUT_S):
        pass
    return torch.hub.load_state_dict_from_url(
        url, map_location="cpu", progress=True, file_name=weights_cache_path(name).name, weights_only=True
    )


def load_dinov2(
    name: str = "dinov2_vits14",
    weights: str | os.PathLike | None = None,
    allow_random: bool = False,
    device: torch.device | str | None = None,
    download: bool = True,
    seed: int = 0,
) -> DinoVisionTransformer:
    """A DINOv2 model with pretrained weights, in eval mode.

    Weights come from, in order: ``weights`` (a file path; an error if it does not exist), the
    torch hub cache (:func:`weights_cache_path`), the official download (:func:`weights_url`; only
    with ``download=True``). When none works, :class:`WeightsUnavailableError` names the file to put
    in place and its URL, unless ``allow_random=True``: then the model gets random weights (drawn
    with ``seed``, the global RNG untouched), ``model.pretrained`` is False and ``model.banner``
    warns that the results are meaningless. In a dry run (``coursekit.dry_run``) nothing is
    downloaded and missing weights are random ones, as with ``allow_random=True``.
    """
    if name not in DINOV2_CONFIGS:
        raise ValueError(f"unknown DINOv2 model {name!r}; choose one of {sorted(DINOV2_CONFIGS)}")
    cache = weights_cache_path(name)
    if weights is not None:
        source = Path(weights).expanduser()
        if not source.is_file():
            raise WeightsUnavailableError(f"{name}: the weights file {source} does not exist")
        state_dict = _read_weights(source)
    elif cache.is_file():
        source, state_dict = cache, _read_weights(cache)
    elif dry_run.is_dry_run():  # offline by design: random weights stand in, as random images do for data
        source, state_dict, reason = cache, None, "a dry run downloads nothing (COURSEKIT_DRY_RUN)"
        allow_random = True
    else:
        source, state_dict, reason = cache, None, "downloading is switched off (download=False)"
        if download:
            try:
                state_dict = _download_weights(name)
            except OSError as err:  # offline, DNS failure, timeout, HTTP error (URLError is an OSError)
                reason = f"the download failed ({err})"

    if state_dict is None:
        message = (
            f"No pretrained weights for {name}: {reason}. Download {weights_url(name)} and put it at "
            f"{cache} (or pass weights=PATH), then run again."
        )
        if not allow_random:
            raise WeightsUnavailableError(
                message + " load_dinov2(..., allow_random=True) gives random weights."
            )
        warnings.warn(message + " Using RANDOM weights: results are meaningless.", stacklevel=2)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_dinov2(name)
        model.weights_hint = f" Put {cache} in place (from {weights_url(name)})."
    else:
        with torch.device("meta"):  # no random init (and no second copy) of weights about to be replaced
            model = create_dinov2(name)
        try:
            model.load_state_dict(state_dict, strict=True, assign=True)
        except RuntimeError as err:
            raise WeightsUnavailableError(f"{source} does not hold {name} weights: {err}") from err
        model.pretrained, model.weights_source = True, str(source)
    return model.to(device).eval()


def load_stand_in(name: str = STAND_IN, device: torch.device | str | None = None) -> nn.Module:
    """The shipped long run ``name`` (``coursekit.pretrained``; a ViT) in DINOv2's place, in eval mode.

    For a machine without DINOv2's weights: a ViT that the course trained itself, self-supervised,
    on its own data (the run's command, data and CPU time are in its manifest entry). It has
    DINOv2's feature interface (``forward_features`` -> ``global``, ``patch``, ``grid``;
    ``feature_dim``, ``patch_size``) and takes ImageNet-normalized images as :func:`prepare_images`
    makes them, at its own training size ``model.input_size`` (pixels). ``model.banner`` says that
    it is a stand-in trained here, not DINOv2; ``model.pretrained`` is True (its weights are trained).
    """
    def is_vit(run: dict) -> bool:  # vit_tiny, vit_small: patch tokens as DINOv2 has
        return run["backbone"].startswith("vit")

    entry = pretrained.entry(name)
    if not is_vit(entry):
        raise ValueError(f"{name} is a {entry['backbone']} run; a stand-in for DINOv2 must be a ViT "
                         f"(patch features): choose one of {[e['name'] for e in pretrained.entries() if is_vit(e)]}")
    model = pretrained.load(name)
    model.input_size, model.pretrained, model.weights_source = entry["image_size"], True, name
    kwargs = entry["backbone_kwargs"]
    model.banner = (f"STAND-IN, not DINOv2: {name}, a {entry['backbone']}/{kwargs['patch_size']} trained here with "
                    f"{entry['method'].upper()} on {entry['images']:,} unlabeled {entry['dataset']} images at "
                    f"{entry['image_size']} px ({entry['epochs']} epochs, {entry['cpu_seconds'] / 60:.0f} CPU-minutes; "
                    f"command in coursekit/pretrained/manifest.json)")
    return model.to(device)


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def prepare_images(images: Tensor, size: int = 224, patch_size: int = PATCH_SIZE) -> Tensor:
    """Images for a DINOv2 model: uint8 [N, C, H, W] (or float in [0, 1]) -> float32 [N, 3, S, S],
    resized (bilinear, antialiased) and normalized with the ImageNet mean and std.

    ``S`` is ``size`` rounded to the nearest multiple of ``patch_size`` (at least one patch), so that
    ``prepare_images(x, 100)`` gives 98 x 98 images. Grayscale (C = 1) is repeated to 3 channels.
    Works on the images' device.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    side = max(patch_size, round(size / patch_size) * patch_size)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    x = x.expand(-1, 3, -1, -1)  # grayscale -> RGB; a no-op for 3 channels
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
