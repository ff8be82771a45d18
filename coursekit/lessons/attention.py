"""Does a ViT's CLS attention find the object? (lesson 05)

DINO's paper shows the CLS attention of the last block as a segmentation: it keeps the most attended
patches that together hold 60% of the attention mass and compares that region with the object mask
(Caron et al., 2021, section 4.2.1). ``attention_mask`` does the thresholding, ``attention_iou`` the
comparison, on pixel masks such as those of the procedural shapes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

DINO_MASS = 0.6  # share of the attention mass kept, as in the DINO paper


def cls_attention_maps(attention: Tensor, grid: tuple[int, int]) -> Tensor:
    """The CLS token's attention to the patches, averaged over heads and summing to 1 per image.

    attention: ``[N, heads, 1 + L, 1 + L]`` (token 0 is CLS) -> ``[N, h, w]``.
    """
    height, width = grid
    if attention.dim() != 4 or attention.shape[-1] != 1 + height * width:
        raise ValueError(f"attention must be [N, heads, 1 + L, 1 + L] with L = {height}*{width}; "
                         f"got shape {list(attention.shape)}")
    to_patches = attention[:, :, 0, 1:].float().mean(dim=1)
    to_patches = to_patches / to_patches.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return to_patches.reshape(-1, height, width)


def attention_mask(maps: Tensor, mass: float = DINO_MASS) -> Tensor:
    """Keep, per image, the most attended patches that together hold at least ``mass`` of the attention.

    maps: ``[N, h, w]``, non-negative, each summing to 1 -> bool ``[N, h, w]``.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1]; got {mass}")
    flat = maps.flatten(1)
    ordered, order = flat.sort(dim=1, descending=True)
    mass_before = ordered.cumsum(dim=1) - ordered  # the mass of the more attended patches
    keep_sorted = mass_before < mass  # a patch is kept while the mass so far is below the target
    keep = torch.zeros_like(keep_sorted).scatter(1, order, keep_sorted)
    return keep.reshape(maps.shape)


def attention_iou(attention: Tensor, grid: tuple[int, int], object_masks: Tensor, mass: float = DINO_MASS) -> Tensor:
    """IoU, per image, between the thresholded CLS attention and the object's pixel mask.

    The patch mask of ``attention_mask`` is blown up to pixels (each patch covers its square of
    pixels) and compared with ``object_masks``.

    attention: ``[N, heads, 1 + L, 1 + L]``; object_masks: ``[N, H, W]`` (nonzero = object) -> ``[N]``.
    """
    patches = attention_mask(cls_attention_maps(attention, grid), mass)
    if object_masks.dim() != 3 or len(object_masks) != len(patches):
        raise ValueError(f"object_masks must be [N, H, W] with N = {len(patches)}; got {list(object_masks.shape)}")
    pixels = F.interpolate(patches[:, None].float(), size=object_masks.shape[-2:], mode="nearest")[:, 0] > 0.5
    objects = object_masks.to(pixels.device) > 0
    intersection = (pixels & objects).flatten(1).sum(dim=1).float()
    union = (pixels | objects).flatten(1).sum(dim=1).float()
    return intersection / union.clamp_min(1.0)
