"""Procedural shapes: colored shapes on textured, noisy backgrounds, with labels, boxes and masks.

One offline dataset serves classification (the class of the largest object), detection (a tight box
per object) and segmentation (a pixel mask). Everything is drawn with vectorized torch ops from a
seed, in blocks of ``BLOCK`` images whose generators depend only on ``(seed, block)``: the same seed
gives the same images, and the first ``n`` images do not depend on how many are asked for.

Shapes are defined in object coordinates ``(u, v)``: pixel offsets from the object's center,
rotated by its angle and divided by its radius ``r``, so that every shape fits the unit disc and
therefore the object's ``2r x 2r`` square, which is placed fully inside the image.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import ImageSet

SHAPE_CLASSES = ["circle", "square", "triangle", "cross"]
BLOCK = 64  # images drawn per generator; part of the seed -> images contract, keep it fixed


def _inside_shapes(u: Tensor, v: Tensor) -> Tensor:
    """Which pixels lie inside each shape class: bool ``[B, len(SHAPE_CLASSES), H, W]``.

    ``u, v``: ``[B, H, W]`` object coordinates (unit disc = the object's bounding circle).
    """
    circle = u**2 + v**2 <= 0.85**2
    square = torch.maximum(u.abs(), v.abs()) <= 0.7
    # Equilateral triangle with circumradius 1: inside all three edges (inradius 0.5).
    edges = [u * math.cos(a) + v * math.sin(a) <= 0.5 for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    triangle = edges[0] & edges[1] & edges[2]
    arm, half_width = 0.95, 0.3
    cross = ((u.abs() <= arm) & (v.abs() <= half_width)) | ((v.abs() <= arm) & (u.abs() <= half_width))
    return torch.stack([circle, square, triangle, cross], dim=1)


def _background(count: int, size: int, generator: torch.Generator) -> Tensor:
    """Textured backgrounds: float ``[B, 3, H, W]`` in about [0, 1].

    A linear gradient between two random colors, colored stripes of random frequency, angle and
    amplitude, and smooth low-frequency blotches.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5  # [-0.5, 0.5]
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def projection(angle: Tensor) -> Tensor:  # [B] -> [B, 1, H, W]
        return (xx * angle.cos()[:, None, None] + yy * angle.sin()[:, None, None])[:, None]

    def uniform(*shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    color0, color1 = uniform(count, 3, 1, 1), uniform(count, 3, 1, 1)
    gradient = color0 + (color1 - color0) * (projection(uniform(count, high=2 * math.pi)) + 0.5).clamp(0, 1)
    frequency = uniform(count, 1, 1, 1, low=2.0, high=7.0)
    phase = uniform(count, 1, 1, 1, high=2 * math.pi)
    stripes = torch.sin(2 * math.pi * frequency * projection(uniform(count, high=2 * math.pi)) + phase)
    amplitude = uniform(count, 3, 1, 1, high=0.15)
    blotches = F.interpolate(uniform(count, 3, 4, 4, low=-0.15, high=0.15), size=(size, size),
                             mode="bilinear", align_corners=False)
    return gradient + amplitude * stripes + blotches


def _draw_block(count: int, size: int, generator: torch.Generator, num_objects: tuple[int, int],
                size_range: tuple[float, float], noise: float) -> tuple[Tensor, Tensor, Tensor]:
    """Draw ``count`` images.

    Returns:
        images: float ``[B, 3, H, W]`` in [0, 1];
        instances: long ``[B, H, W]``, 0 = background, ``j + 1`` = object slot ``j`` (the topmost one);
        classes: long ``[B, J]``, the class of each object slot (J = the most objects per image).
    """
    min_objects, max_objects = num_objects
    canvas = _background(count, size, generator)
    instances = torch.zeros(count, size, size, dtype=torch.long)
    object_counts = torch.randint(min_objects, max_objects + 1, (count,), generator=generator)
    classes = torch.randint(len(SHAPE_CLASSES), (count, max_objects), generator=generator)
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(pixel, pixel, indexing="ij")
    batch = torch.arange(count)
    for slot in range(max_objects):
        rand = torch.rand(count, 6, generator=generator)
        radius = size * (size_range[0] + (size_range[1] - size_range[0]) * rand[:, 0])
        cx = radius + rand[:, 1] * (size - 2 * radius)
        cy = radius + rand[:, 2] * (size - 2 * radius)
        angle = rand[:, 3] * 2 * math.pi
        dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
        cos, sin = angle.cos()[:, None, None], angle.sin()[:, None, None]
        u, v = (dx * cos + dy * sin) / radius[:, None, None], (dy * cos - dx * sin) / radius[:, None, None]
        inside = _inside_shapes(u, v)[batch, classes[:, slot]] & (slot < object_counts)[:, None, None]

        color = torch.rand(count, 3, generator=generator)
        under = canvas[batch, :, cy.long().clamp(max=size - 1), cx.long().clamp(max=size - 1)]
        too_close = (color - under).norm(dim=1, keepdim=True) < 0.4
        color = torch.where(too_close, (under + 0.5) % 1.0, color)  # 0.5 away in every channel
        canvas = torch.where(inside[:, None], color[:, :, None, None], canvas)
        instances = torch.where(inside, slot + 1, instances)
    canvas = canvas + noise * torch.randn(canvas.shape, generator=generator)
    return canvas.clamp(0, 1), instances, classes


def _boxes_from_instances(instances: Tensor, num_slots: int) -> tuple[Tensor, Tensor, Tensor]:
    """Tight boxes around each slot's pixels.

    Returns ``boxes`` float ``[B, J, 4]`` (xyxy, exclusive right/bottom edges), ``present`` bool
    ``[B, J]`` (the slot has visible pixels) and ``areas`` long ``[B, J]`` (visible pixel counts).
    """
    width, height = instances.shape[2], instances.shape[1]
    boxes, present, areas = [], [], []
    for slot in range(num_slots):
        pixels = instances == slot + 1
        cols, rows = pixels.any(dim=1).float(), pixels.any(dim=2).float()
        x1, y1 = cols.argmax(dim=1), rows.argmax(dim=1)
        x2, y2 = width - cols.flip(1).argmax(dim=1), height - rows.flip(1).argmax(dim=1)
        boxes.append(torch.stack([x1, y1, x2, y2], dim=1).float())
        areas.append(pixels.sum(dim=(1, 2)))
        present.append(areas[-1] > 0)
    return torch.stack(boxes, 1), torch.stack(present, 1), torch.stack(areas, 1)


def _check_arguments(n: int, image_size: int, num_objects: tuple[int, int], size_range: tuple[float, float]) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"make_shapes: n must be a positive int; got {n!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"make_shapes: image_size must be an int >= 8; got {image_size!r}")
    if not (len(num_objects) == 2 and 1 <= num_objects[0] <= num_objects[1] <= 255):
        raise ValueError(f"make_shapes: num_objects must be (min, max) with 1 <= min <= max <= 255; got {num_objects!r}")
    low, high = size_range
    if not 0 < low <= high <= 0.5:
        raise ValueError(f"make_shapes: size_range must be (low, high) with 0 < low <= high <= 0.5; got {size_range!r}")
    if 0.3 * low * image_size < 0.75:  # the thinnest shape (the cross) must cover a pixel center
        raise ValueError(
            f"make_shapes: objects of radius {low} * {image_size}px would cover no pixel; "
            f"raise size_range[0] to at least {2.5 / image_size:.3f} or use larger images"
        )


def make_shapes(n: int, image_size: int = 32, seed: int = 0, num_objects: tuple[int, int] = (1, 1),
                size_range: tuple[float, float] = (0.15, 0.35), noise: float = 0.04) -> ImageSet:
    """Draw ``n`` images of colored shapes (classes ``SHAPE_CLASSES``) on textured backgrounds.

    Each object has a random class, radius, position, rotation and color (a color is redrawn half a
    unit away in every channel when it is too close to what lies under the object's center, so
    objects stay visible; class and color are independent). Later objects may cover earlier ones.

    Args:
        n: number of images.
        image_size: side of the square images in pixels (>= 8).
        seed: the images are a function of the seed (and image n of the first n + BLOCK images).
        num_objects: ``(min, max)`` objects per image, drawn uniformly.
        size_range: object radius as a fraction of the image side, ``(low, high)``.
        noise: standard deviation of the per-pixel Gaussian noise (pixel values in [0, 1]).

    Returns:
        ``ImageSet`` with uint8 images ``[n, 3, S, S]``, ``labels`` (class of the largest visible
        object), ``boxes`` / ``box_labels`` (one tight box per visible object) and ``masks``
        (0 = background, ``c + 1`` = class ``c``) and ``instances`` (0 = background, ``k + 1`` = box ``k``).
    """
    _check_arguments(n, image_size, num_objects, size_range)
    parts = []
    for block, start in enumerate(range(0, n, BLOCK)):
        generator = torch.Generator().manual_seed((seed * 1_000_003 + block) % 2**63)
        parts.append(_draw_block(BLOCK, image_size, generator, num_objects, size_range, noise))
    images, instances, classes = (torch.cat(part)[:n] for part in zip(*parts))

    boxes, present, areas = _boxes_from_instances(instances, num_objects[1])
    labels = classes.gather(1, areas.argmax(dim=1, keepdim=True)).squeeze(1)
    slot_class = classes.gather(1, (instances - 1).clamp(min=0).flatten(1)).view_as(instances)
    masks = torch.where(instances > 0, slot_class + 1, 0).to(torch.uint8)
    box_index = present.long().cumsum(dim=1)  # slot j -> its 1-based position among the visible boxes
    instance_ids = torch.where(instances > 0, box_index.gather(1, (instances - 1).clamp(min=0).flatten(1))
                               .view_as(instances), 0).to(torch.uint8)
    return ImageSet(
        images=(images * 255).round().to(torch.uint8),
        labels=labels,
        classes=list(SHAPE_CLASSES),
        boxes=[b[p] for b, p in zip(boxes, present)],
        box_labels=[c[p] for c, p in zip(classes, present)],
        masks=masks,
        instances=instance_ids,
    )
