"""Procedural scenes: several objects per image on textured, cluttered backgrounds, with occlusion.

The in-domain data of the transfer lessons (09 detection, 10 segmentation): pretrain a backbone
self-supervised on many unlabeled scenes, fine-tune it on a few labeled ones. Unlike ``shapes`` (one
flat object on a gentle texture), a scene asks a model to find objects among clutter:

- objects: ``SCENE_CLASSES`` (disk, square, triangle, ring, plus, star), told apart by form only;
  2 to 5 per image, each with a random class, size (bounding-circle diameter from 10% to 45% of the
  side, log-uniform, at least ``MIN_RADIUS_PX`` in radius), position (fully inside the image),
  rotation and color (drawn independently of the class), with a soft shading gradient, sometimes
  stripes, and anti-aliased edges;
- occlusion: later objects are drawn over earlier ones, and a thin foreground line sometimes
  crosses the scene;
- backgrounds: a two-color gradient, smooth color blotches, a texture (stripes, a checkerboard or
  mid-frequency noise) and clutter: 4 to 12 elongated strokes and blobs (capsules at least 2.5
  times as long as wide, so never a disk) that belong to no class; then per-pixel noise.

Targets describe what is visible. An object whose visible pixels are fewer than ``min_visible``
(default 30%) of its full area, or fewer than 4 pixels, is dropped: it gets no box, no label and no
instance id, and its visible pixels are 255 ("don't know", ignored by ``train_segmentation`` and
``mean_iou``) in ``masks``. Every other object gets a box tight around its visible pixels (as
``shapes``' boxes). The last object drawn is never covered by another, so every image has a box.

Everything is drawn with vectorized torch ops in blocks of ``BLOCK`` images whose generators depend
only on ``(seed, block)``: the same seed gives the same images, and the first ``n`` images do not
depend on how many are asked for; blocks are drawn in parallel on torch's threads. Speed, measured
on the course's 2-core CPU (while other runs kept it busy, so in CPU time): 2,000 images of 64 px
cost about 4.5 CPU-seconds on one thread (about 14 at 128 px); objects and clutter are drawn only
in a window around each of them.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import Tensor

from .images import ImageSet
from .shapes import _boxes_from_instances

SCENE_CLASSES = ["disk", "square", "triangle", "ring", "plus", "star"]
BLOCK = 64  # images drawn per generator; part of the seed -> images contract, keep it fixed
MIN_RADIUS_PX = 3.5  # smaller objects would lose their form (a plus of radius 3.5 px has 2 px arms)
IGNORE = 255  # mask value of an object too hidden to label
_SEED_SALT = 0x5CE9E5  # keeps scene streams apart from other procedural data drawn with the same seed


def _uniform(generator: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> Tensor:
    return low + (high - low) * torch.rand(*shape, generator=generator)


def _grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-center coordinates ``(yy, xx)``, each ``[H, W]`` in pixels."""
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    return torch.meshgrid(pixel, pixel, indexing="ij")


def _disk(u: Tensor, v: Tensor) -> Tensor:
    return torch.sqrt(u * u + v * v) - 0.85


def _square(u: Tensor, v: Tensor) -> Tensor:
    return torch.maximum(u.abs(), v.abs()) - 0.7


def _triangle(u: Tensor, v: Tensor) -> Tensor:
    """Equilateral triangle of circumradius 1 (inradius 0.5): outside as soon as outside one edge."""
    edges = [u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]
    return torch.maximum(torch.maximum(edges[0], edges[1]), edges[2]) - 0.5


def _ring(u: Tensor, v: Tensor) -> Tensor:
    return (torch.sqrt(u * u + v * v) - 0.66).abs() - 0.24  # outer radius 0.9, hole of radius 0.42


def _plus(u: Tensor, v: Tensor) -> Tensor:
    arm, half_width = 0.95, 0.3
    au, av = u.abs(), v.abs()
    return torch.minimum(torch.maximum(au - arm, av - half_width), torch.maximum(av - arm, au - half_width))


def _star(u: Tensor, v: Tensor) -> Tensor:
    """Five-pointed star, tips at radius 1, inner corners at 0.45: fold the point into one half
    point (tip at angle 0, inner corner at pi/5) and measure its side of the edge between them."""
    sector = 2 * math.pi / 5
    folded = (torch.atan2(v, u) % sector - sector / 2).abs()  # pi/5 at a tip, 0 at an inner corner
    radius = torch.sqrt(u * u + v * v)
    px, py = radius * torch.cos(sector / 2 - folded), radius * torch.sin(sector / 2 - folded)
    ex, ey = 0.45 * math.cos(sector / 2) - 1.0, 0.45 * math.sin(sector / 2)  # tip (1, 0) -> inner corner
    return ((px - 1.0) * ey - py * ex) / math.hypot(ex, ey)  # < 0 on the center's side of the edge


_SHAPES = (_disk, _square, _triangle, _ring, _plus, _star)  # in the order of SCENE_CLASSES


def _shape_distance(u: Tensor, v: Tensor, classes: Tensor, used: Tensor) -> Tensor:
    """Signed distance (negative inside, in object units) to the outline of each object's class;
    ``inf`` for the images where the slot is not ``used``.

    ``u, v``: ``[B, H, W]`` object coordinates (offsets from the center, rotated, divided by the
    radius: every shape fits the unit disc); ``classes``: long ``[B]``; ``used``: bool ``[B]``.
    Exact near the edges, which is all anti-aliasing needs. Each image computes its own class only.
    """
    distance = torch.full_like(u, torch.inf)
    for c, shape in enumerate(_SHAPES):
        picked = torch.nonzero(used & (classes == c)).squeeze(1)
        if len(picked):
            distance[picked] = shape(u[picked], v[picked])
    return distance


def _capsule_distance(xx: Tensor, yy: Tensor, center: Tensor, half: Tensor, width: Tensor) -> Tensor:
    """Signed distance in pixels to capsules: segments ``center - half -> center + half`` thickened
    by ``width``. ``center, half`` ``[B, 2]`` (x, y), ``width`` ``[B]``; ``xx, yy`` broadcast to
    ``[B, h, w]`` (pixel centers) -> ``[B, h, w]``."""
    dx, dy = xx - center[:, 0, None, None], yy - center[:, 1, None, None]
    hx, hy = half[:, 0, None, None], half[:, 1, None, None]
    t = ((dx * hx + dy * hy) / (hx * hx + hy * hy).clamp(min=1e-6)).clamp_(-1, 1)
    return (dx - t * hx).square_().add_((dy - t * hy).square_()).sqrt_().sub_(width[:, None, None])


def _random_strokes(generator: torch.Generator, count: int, size: int, width_range: tuple[float, float],
                    length_range: tuple[float, float]) -> tuple[Tensor, Tensor, Tensor]:
    """Capsules of random position, direction, half-width (px) and length (a multiple of the width
    in ``length_range``): ``center, half`` ``[count, 2]`` (half the segment), ``width`` ``[count]``."""
    center = _uniform(generator, count, 2, high=size)
    width = _uniform(generator, count, low=width_range[0], high=width_range[1])
    length = width * _uniform(generator, count, low=length_range[0], high=length_range[1])
    angle = _uniform(generator, count, high=math.pi)
    return center, torch.stack([angle.cos(), angle.sin()], 1) * (length / 2)[:, None], width


class _Canvas:
    """Images (and object ids) with a margin, painted one window at a time.

    A primitive covers a small part of the image: each is drawn in the ``(2 half + 1)^2`` window
    of pixels around its center (a quarter of the image or less), which the margin keeps inside the
    tensors wherever the center lies in the image. Pixels are stored channels-last and flat
    (``[B * H' * W', 3]``) so that a window is one ``index_select`` and one ``index_copy_``.
    """

    def __init__(self, images: Tensor, margin: int):
        count, _, size, _ = images.shape
        self.count, self.size, self.margin, self.side = count, size, margin, size + 2 * margin
        self.pixels = F.pad(images, (margin,) * 4).permute(0, 2, 3, 1).reshape(-1, 3).contiguous()
        self.instances = torch.zeros(count * self.side * self.side, dtype=torch.long)

    def window(self, center: Tensor, half: int) -> tuple[Tensor, Tensor, Tensor]:
        """Flat indices ``[B * w * w]`` of the window around ``center`` ``[B, 2]`` (x, y pixels) and
        its pixel-center coordinates ``yy`` ``[B, w, 1]``, ``xx`` ``[B, 1, w]``."""
        if half + 1 > self.margin:
            raise ValueError(f"window half-size {half} needs a margin of {half + 1}; the canvas has {self.margin}")
        corner = center.floor().long() - half  # [B, 2] top-left pixel (x, y)
        offsets = torch.arange(2 * half + 1)
        cols, rows = corner[:, 0, None] + offsets, corner[:, 1, None] + offsets  # [B, w], image pixels
        first = (torch.arange(self.count) * self.side * self.side)[:, None, None]
        index = first + (rows[:, :, None] + self.margin) * self.side + (cols[:, None, :] + self.margin)
        return index.flatten(), rows[:, :, None] + 0.5, cols[:, None, :] + 0.5

    def read(self, index: Tensor) -> Tensor:
        """The window's pixels ``[B, w, w, 3]``."""
        width = math.isqrt(len(index) // self.count)
        return self.pixels.index_select(0, index).view(self.count, width, width, 3)

    def paint(self, index: Tensor, distance_px: Tensor, color: Tensor) -> None:
        """Composite ``color`` (``[B, 3]`` or ``[B, w, w, 3]``) where the signed distance ``[B, w, w]``
        is negative, anti-aliased over one pixel."""
        patch = self.read(index)
        if color.dim() == 2:
            color = color[:, None, None, :]
        alpha = (0.5 - distance_px).clamp_(0, 1)[..., None]
        self.pixels.index_copy_(0, index, patch.lerp_(color.expand_as(patch), alpha.expand_as(patch)).view(-1, 3))

    def mark(self, index: Tensor, inside: Tensor, value: int) -> None:
        """Set the object id of the window's pixels where ``inside`` (bool ``[B, w, w]``)."""
        self.instances.index_copy_(0, index, self.instances.index_select(0, index).masked_fill_(inside.flatten(), value))

    def cropped(self) -> tuple[Tensor, Tensor]:
        """The images ``[B, 3, S, S]`` and object ids ``[B, S, S]`` without the margin."""
        inner = slice(self.margin, self.margin + self.size)
        images = self.pixels.view(self.count, self.side, self.side, 3)[:, inner, inner].permute(0, 3, 1, 2)
        return images.contiguous(), self.instances.view(self.count, self.side, self.side)[:, inner, inner]


def _background(count: int, size: int, generator: torch.Generator) -> Tensor:
    """Textured backgrounds without clutter: float ``[B, 3, H, W]`` in about [0, 1]."""
    yy, xx = _grid(size)
    unit_x, unit_y = xx / size - 0.5, yy / size - 0.5

    def projection(angle: Tensor) -> Tensor:  # [B] -> [B, 1, H, W], in image sides
        return (unit_x * angle.cos()[:, None, None] + unit_y * angle.sin()[:, None, None])[:, None]

    color0, color1 = _uniform(generator, count, 3, 1, 1), _uniform(generator, count, 3, 1, 1)
    mix = (projection(_uniform(generator, count, high=2 * math.pi)) + 0.5).clamp(0, 1)
    canvas = color0 + (color1 - color0) * mix
    canvas = canvas + F.interpolate(_uniform(generator, count, 3, 4, 4, low=-0.2, high=0.2), size=(size, size),
                                    mode="bicubic", align_corners=False)

    # One texture per image, in its own color direction: stripes, a checkerboard or blotchy noise.
    frequency = _uniform(generator, count, 1, 1, 1, low=3.0, high=12.0)
    phase = _uniform(generator, count, 2, 1, 1, high=2 * math.pi)
    angle = _uniform(generator, count, high=math.pi)
    stripes = torch.sin(2 * math.pi * frequency * projection(angle) + phase[:, :1])
    checker = torch.sign(stripes * torch.sin(2 * math.pi * frequency * projection(angle + math.pi / 2) + phase[:, 1:]))
    noise = F.interpolate(torch.randn(count, 1, 12, 12, generator=generator), size=(size, size), mode="bilinear",
                          align_corners=False)
    kind = torch.randint(3, (count, 1, 1, 1), generator=generator)
    texture = torch.where(kind == 0, stripes, torch.where(kind == 1, checker, noise))
    tint = _uniform(generator, count, 3, 1, 1, low=-1.0, high=1.0)
    return canvas + _uniform(generator, count, 1, 1, 1, low=0.04, high=0.16) * tint * texture


def _clutter(canvas: _Canvas, generator: torch.Generator, max_clutter: int = 12) -> None:
    """Paint 4 to ``max_clutter`` strokes (thin, long) and blobs (thick, at least 2.5 times as long as
    wide: never a disk) of any color, which belong to no class."""
    count, size = canvas.count, canvas.size
    clutter_count = torch.randint(4, max_clutter + 1, (count,), generator=generator)
    blob_width = 0.035 * size + 1.2
    half = math.ceil(max(0.18 * size + 1.2, 4 * blob_width)) + 1  # the longest half-extent + 1
    for slot in range(max_clutter):
        thin = torch.rand(count, generator=generator) < 0.5
        center, axis, width = _random_strokes(generator, count, size, (0.5, 1.2), (6.0, 0.3 * size))
        _, blob_axis, blob = _random_strokes(generator, count, size, (1.2, blob_width), (3.0, 6.0))
        axis = torch.where(thin[:, None], axis, blob_axis)
        width = torch.where(slot < clutter_count, torch.where(thin, width, blob), -torch.inf)
        index, yy, xx = canvas.window(center, half)
        canvas.paint(index, _capsule_distance(xx, yy, center, axis, width), torch.rand(count, 3, generator=generator))


def _draw_block(count: int, size: int, generator: torch.Generator, num_objects: tuple[int, int],
                size_range: tuple[float, float], noise: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Draw ``count`` scenes.

    Returns:
        images: float ``[B, 3, H, W]`` in [0, 1];
        instances: long ``[B, H, W]``, 0 = background, ``j + 1`` = object slot ``j`` (the topmost);
        classes: long ``[B, J]``, the class of each slot (J = the most objects per image);
        full_areas: long ``[B, J]``, each slot's pixels before occlusion (0 for unused slots).
    """
    min_objects, max_objects = num_objects
    max_radius = max(size * size_range[1] / 2, MIN_RADIUS_PX)
    object_half = math.ceil(max_radius) + 1
    canvas = _Canvas(_background(count, size, generator), margin=math.ceil(0.2 * size + 6) + object_half)
    _clutter(canvas, generator)
    object_counts = torch.randint(min_objects, max_objects + 1, (count,), generator=generator)
    classes = torch.randint(len(SCENE_CLASSES), (count, max_objects), generator=generator)
    full_areas = []
    # Slots are filled from the last: an image with k objects uses slots J-k..J-1, so the topmost
    # object is always slot J-1, drawn last and never covered by another object.
    for slot in range(max_objects):
        used = slot >= max_objects - object_counts  # [B]
        rand = torch.rand(count, 8, generator=generator)
        low, high = math.log(size_range[0]), math.log(size_range[1])
        radius = (size * torch.exp(low + (high - low) * rand[:, 0]) / 2).clamp(min=MIN_RADIUS_PX)
        center = radius[:, None] + rand[:, 1:3] * (size - 2 * radius[:, None])  # the object lies inside the image
        index, yy, xx = canvas.window(center, object_half)
        angle = rand[:, 3] * 2 * math.pi
        dx, dy = xx - center[:, 0, None, None], yy - center[:, 1, None, None]
        cos, sin, r = angle.cos()[:, None, None], angle.sin()[:, None, None], radius[:, None, None]
        u, v = (dx * cos + dy * sin) / r, (dy * cos - dx * sin) / r
        distance = _shape_distance(u, v, classes[:, slot], used).mul_(r)  # in pixels
        inside = distance < 0
        full_areas.append(inside.sum(dim=(1, 2)))

        # Color: uniform, moved half a unit in every channel when too close to what lies under the
        # object (so it stays visible); shaded by a linear gradient, striped in a quarter of objects.
        color = torch.rand(count, 3, generator=generator)
        under = canvas.read(index)  # [B, w, w, 3]
        weight = inside.flatten(1).float()
        under = torch.einsum("bpc,bp->bc", under.flatten(1, 2), weight) / weight.sum(1, keepdim=True).clamp(min=1)
        color = torch.where((color - under).norm(dim=1, keepdim=True) < 0.4, (under + 0.5) % 1.0, color)
        shading = (rand[:, 4, None, None] - 0.5) * 0.5 * u + (rand[:, 5, None, None] - 0.5) * 0.5 * v
        stripes = torch.where(rand[:, 6] < 0.25, 0.12, 0.0)[:, None, None] * torch.sign(
            torch.sin(math.pi * (2 + 3 * rand[:, 7, None, None]) * u))
        canvas.paint(index, distance, color[:, None, None, :] * (1 + shading + stripes)[..., None])
        canvas.mark(index, inside, slot + 1)

    # A thin line in front of everything in half of the images: it hides what it crosses.
    images, instances = canvas.cropped()
    pixel_y, pixel_x = _grid(size)
    center, axis, width = _random_strokes(generator, count, size, (0.5, 1.0), (0.4 * size, 1.2 * size))
    front = torch.rand(count, generator=generator) < 0.5
    distance = _capsule_distance(pixel_x, pixel_y, center, axis, torch.where(front, width, -torch.inf))
    instances = instances.masked_fill(distance < 0, 0)
    alpha = (0.5 - distance).clamp_(0, 1)[:, None]
    images = images + alpha * (torch.rand(count, 3, 1, 1, generator=generator) - images)

    images = images + noise * torch.randn(images.shape, generator=generator)
    return images.clamp(0, 1), instances, classes, torch.stack(full_areas, 1)


def _check_arguments(n: int, image_size: int, num_objects: tuple[int, int], size_range: tuple[float, float],
                     min_visible: float) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"make_scenes: n must be a positive int; got {n!r}")
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"make_scenes: image_size must be an int >= 32; got {image_size!r}")
    if not (len(num_objects) == 2 and 1 <= num_objects[0] <= num_objects[1] <= 254):
        raise ValueError(f"make_scenes: num_objects must be (min, max) with 1 <= min <= max <= 254; got {num_objects!r}")
    low, high = size_range
    if not 0 < low <= high <= 0.9:
        raise ValueError(f"make_scenes: size_range must be (low, high) with 0 < low <= high <= 0.9; got {size_range!r}")
    if not 0 <= min_visible <= 1:
        raise ValueError(f"make_scenes: min_visible must be in [0, 1]; got {min_visible!r}")


def make_scenes(n: int, image_size: int = 64, seed: int = 0, num_objects: tuple[int, int] = (2, 5),
                size_range: tuple[float, float] = (0.1, 0.45), min_visible: float = 0.3,
                noise: float = 0.03) -> ImageSet:
    """Draw ``n`` scenes of objects (classes ``SCENE_CLASSES``) on cluttered backgrounds.

    Args:
        n: number of images.
        image_size: side of the square images in pixels (>= 32; 64 or more shows the forms well).
        seed: the images are a function of the seed (and image i of the first i + BLOCK images).
        num_objects: ``(min, max)`` objects drawn per image, uniformly (before occlusion).
        size_range: object size, the diameter of its bounding circle as a fraction of the image
            side, ``(low, high)``, drawn log-uniformly; radii below ``MIN_RADIUS_PX`` are raised to it.
        min_visible: an object with a smaller visible share of its pixels (or under 4 visible
            pixels) is dropped from the targets (its pixels are 255 in ``masks``).
        noise: standard deviation of the per-pixel Gaussian noise (pixel values in [0, 1]).

    Returns:
        ``ImageSet`` with uint8 images ``[n, 3, S, S]``; ``labels`` (the class of the largest visible
        object); ``boxes`` / ``box_labels`` (one box per labeled object, xyxy, tight around its
        visible pixels, in drawing order: the last is in front); ``masks`` (0 = background,
        ``c + 1`` = class ``c``, 255 = a dropped object's pixels) and ``instances`` (0 = background
        or dropped, ``k + 1`` = box ``k``).
    """
    _check_arguments(n, image_size, num_objects, size_range, min_visible)
    def draw(block: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        generator = torch.Generator().manual_seed((seed * 1_000_003 + block + _SEED_SALT) % 2**63)
        return _draw_block(BLOCK, image_size, generator, num_objects, size_range, noise)

    # Blocks are independent: draw them on as many threads as torch uses (its ops release the GIL;
    # each block has its own generator, so the images do not depend on the threads).
    blocks = range(-(-n // BLOCK))
    with ThreadPoolExecutor(max_workers=max(1, min(torch.get_num_threads(), len(blocks)))) as pool:
        parts = list(pool.map(draw, blocks))
    images, instances, classes, full_areas = (torch.cat(part)[:n] for part in zip(*parts))

    boxes, _, areas = _boxes_from_instances(instances, num_objects[1])
    kept = (areas >= 4) & (areas >= min_visible * full_areas)
    labels = classes.gather(1, torch.where(kept, areas, -1).argmax(dim=1, keepdim=True)).squeeze(1)
    slot = (instances - 1).clamp(min=0).flatten(1)
    slot_class = classes.gather(1, slot).view_as(instances)
    slot_kept = kept.gather(1, slot).view_as(instances)
    visible = instances > 0
    masks = torch.where(visible, torch.where(slot_kept, slot_class + 1, IGNORE), 0).to(torch.uint8)
    box_index = kept.long().cumsum(dim=1)  # slot j -> its 1-based position among the labeled boxes
    instance_ids = torch.where(visible & slot_kept, box_index.gather(1, slot).view_as(instances), 0)
    return ImageSet(
        images=(images * 255).round().to(torch.uint8),
        labels=labels,
        classes=list(SCENE_CLASSES),
        boxes=[b[k] for b, k in zip(boxes, kept)],
        box_labels=[c[k] for c, k in zip(classes, kept)],
        masks=masks,
        instances=instance_ids.to(torch.uint8),
    )
