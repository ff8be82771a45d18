"""Batched image augmentations with independent random parameters per sample, and view recipes.

Every op works on a whole batch [N, C, H, W] at once, on the images' device (CPU or GPU), and is
split in two so that it can be tested and visualized with fixed parameters:

- ``sample_*(n, ..., generator)`` draws the parameters of n samples from an explicit
  ``torch.Generator``. Parameters are drawn on ``generator.device`` and then moved to the images'
  device, so a CPU generator gives the very same views whether the images are on the CPU or a
  GPU (the parameters are a few numbers per image: moving them costs nothing worth measuring).
  A CUDA generator works as well and keeps everything on the GPU.
- the op itself, e.g. ``adjust_hue(images, shift)``, applies given parameters to float images
  in [0, 1]. With the same parameters it agrees with ``torchvision.transforms.v2.functional``.

A view recipe (``SimCLRViews``, ``BYOLViews``, ``DINOViews``, ``MAEViews``) is a list of
``ViewAugment``: ``recipe(images, generator)`` takes uint8 images (or float images in [0, 1])
[N, C, H, W] and returns a list of normalized float32 views [N, C, size, size].
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from coursekit.data.images import check_images

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "to_float",
    "sample_crop_boxes", "sample_flips", "resized_crop",
    "sample_jitter", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_hue",
    "color_jitter", "sample_mask", "rgb_to_grayscale", "random_grayscale",
    "sample_blur_sigmas", "gaussian_blur", "solarize", "normalize", "denormalize",
    "blur_kernel_size", "ViewAugment", "Views", "SimCLRViews", "BYOLViews", "DINOViews", "MAEViews",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


# ----------------------------------------------------------------------------------------------
# Conversions


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] in 0..255 -> float32 in [0, 1]; float images (assumed in [0, 1]) are
    cast to float32."""
    check_images(images)
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    return images.float()


def _constant(values, like: torch.Tensor) -> torch.Tensor:
    """Python numbers -> a [len(values)] tensor on ``like``'s device and dtype, filled in place
    one number at a time. ``torch.tensor(values, device=...)`` would copy them from the host,
    which makes the host wait for the GPU on every call (these helpers run every training step)."""
    out = like.new_empty(len(values))
    for i, value in enumerate(values):
        out[i] = value
    return out


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """[N] -> [N, 1, 1, 1], to broadcast one value per sample over an image batch."""
    return values.view(-1, 1, 1, 1)


def _uniform(n: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """n numbers uniform in [low, high), drawn on the generator's device -> [n] float32."""
    low, high = bounds
    u = torch.rand(n, generator=generator, device=generator.device)
    return low + (high - low) * u


def sample_mask(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """[n] bool, each True with probability p (which samples an op is applied to)."""
    return torch.rand(n, generator=generator, device=generator.device) < p


# ----------------------------------------------------------------------------------------------
# Geometry: random resized crop and horizontal flip in one grid_sample


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
                      ratio: tuple[float, float], generator: torch.Generator,
                      attempts: int = 10) -> torch.Tensor:
    """Crop boxes of torchvision's RandomResizedCrop, per sample -> [n, 4] (top, left, h, w).

    The area is a `scale` fraction of the image, the aspect ratio w/h log-uniform in `ratio`.
    Like torchvision, it tries `attempts` times per sample and falls back to a central crop of
    the whole image (ratio clamped to `ratio`). Boxes are continuous (sub-pixel) positions.
    """
    area = height * width * _uniform(n * attempts, scale, generator).view(n, attempts)
    log_ratio = _uniform(n * attempts, (math.log(ratio[0]), math.log(ratio[1])), generator)
    aspect = torch.exp(log_ratio).view(n, attempts)
    w, h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)  # [n, attempts]
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)  # first attempt that fits (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)

    fallback_w, fallback_h = float(width), float(height)
    if width / height < ratio[0]:
        fallback_h = width / ratio[0]
    elif width / height > ratio[1]:
        fallback_w = height * ratio[1]
    found = fits.any(dim=1)
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))
    top = _uniform(n, (0.0, 1.0), generator) * (height - h)
    left = _uniform(n, (0.0, 1.0), generator) * (width - w)
    return torch.stack([top, left, h, w], dim=1)


def sample_flips(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """[n] bool: which samples are flipped horizontally."""
    return sample_mask(n, p, generator)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int],
                 flips: torch.Tensor | None = None) -> torch.Tensor:
    """Crop each image to its box, resize it bilinearly to `size` and flip it horizontally where
    `flips` is True, all in one batched ``grid_sample``.

    images: float [N, C, H, W]; boxes: [N, 4] (top, left, h, w) in pixels; flips: [N] bool or
    None -> [N, C, size, size]. Equals torchvision's ``resized_crop(..., antialias=False)``
    (then ``hflip``) for boxes at least as large as `size`; like any GPU crop it does not
    antialias, and at the crop's border it interpolates with the real neighbouring pixels.
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    N, C, H, W = images.shape
    boxes = boxes.to(device=images.device, dtype=images.dtype)
    top, left, h, w = boxes.unbind(dim=1)
    # affine map from output to input coordinates, both normalized to [-1, 1] (align_corners=False)
    sx = w / W
    if flips is not None:
        sx = torch.where(flips.to(images.device), -sx, sx)
    theta = torch.zeros(N, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + w) / W - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / H, (2 * top + h) / H - 1
    grid = F.affine_grid(theta, [N, C, out_h, out_w], align_corners=False)  # [N, h, w, 2]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ----------------------------------------------------------------------------------------------
# Color


def sample_jitter(n: int, p: float, brightness: float, contrast: float, saturation: float,
                  hue: float, generator: torch.Generator) -> torch.Tensor:
    """Color-jitter factors of torchvision's ColorJitter, applied with probability p -> [n, 4].

    Columns: brightness, contrast and saturation factors uniform in [max(0, 1 - s), 1 + s], hue
    shift uniform in [-hue, hue]. Samples that are not jittered get the identity (1, 1, 1, 0).
    """
    factors = torch.stack([
        _uniform(n, (max(0.0, 1 - brightness), 1 + brightness), generator),
        _uniform(n, (max(0.0, 1 - contrast), 1 + contrast), generator),
        _uniform(n, (max(0.0, 1 - saturation), 1 + saturation), generator),
        _uniform(n, (-hue, hue), generator),
    ], dim=1)
    identity = _constant((1.0, 1.0, 1.0, 0.0), factors)
    return torch.where(sample_mask(n, p, generator)[:, None], factors, identity)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * images + (1 - factor) * other, clamped to [0, 1]; factor: [N]."""
    factor = _per_sample(factor.to(images))
    return (factor * images + (1 - factor) * other).clamp_(0, 1)


def rgb_to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W] -> luma [N, 1, H, W]."""
    weights = _constant(GRAY_WEIGHTS, images)
    return (images * weights.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale the intensities: float [N, C, H, W], factor [N] -> [N, C, H, W]."""
    return _blend(images, torch.zeros_like(images), factor)


def adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean gray level: float [N, 3, H, W], factor [N]."""
    mean = rgb_to_grayscale(images).mean(dim=(1, 2, 3), keepdim=True)  # [N, 1, 1, 1]
    return _blend(images, mean, factor)


def adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its grayscale version: float [N, 3, H, W], factor [N]."""
    return _blend(images, rgb_to_grayscale(images), factor)


def _rgb_to_hsv(images: torch.Tensor) -> torch.Tensor:
    """float RGB [N, 3, H, W] in [0, 1] -> HSV [N, 3, H, W], hue in [0, 1)."""
    r, g, b = images.unbind(dim=1)
    value, _ = images.max(dim=1)
    chroma = value - images.min(dim=1).values
    gray = chroma == 0
    saturation = chroma / torch.where(gray, torch.ones_like(value), value)
    chroma = torch.where(gray, torch.ones_like(chroma), chroma)  # avoid 0/0; hue is 0 there
    rc, gc, bc = (value - r) / chroma, (value - g) / chroma, (value - b) / chroma
    hue = torch.where(value == r, bc - gc,
                      torch.where(value == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(gray, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0, 1.0)
    return torch.stack([hue, saturation, value], dim=1)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """HSV [N, 3, H, W] -> float RGB [N, 3, H, W] in [0, 1]."""
    hue, saturation, value = hsv.unbind(dim=1)
    sector = torch.floor(hue * 6)
    frac = hue * 6 - sector
    sector = sector.long().remainder(6).unsqueeze(1)  # [N, 1, H, W], which sixth of the circle
    p = (value * (1 - saturation)).clamp(0, 1)
    q = (value * (1 - saturation * frac)).clamp(0, 1)
    t = (value * (1 - saturation * (1 - frac))).clamp(0, 1)
    # per sector 0..5: (r, g, b) = (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    r = torch.stack([value, q, p, p, t, value], dim=1).gather(1, sector)
    g = torch.stack([t, value, value, q, p, p], dim=1).gather(1, sector)
    b = torch.stack([p, p, t, value, value, q], dim=1).gather(1, sector)
    return torch.cat([r, g, b], dim=1)


def adjust_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue: float [N, 3, H, W] in [0, 1], shift [N] in [-0.5, 0.5] (a fraction of the
    color circle) -> [N, 3, H, W]."""
    hsv = _rgb_to_hsv(images)
    hue = torch.remainder(hsv[:, :1] + _per_sample(shift.to(images)), 1.0)
    return _hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], dim=1))


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation, then hue, with the [N, 4] factors of `sample_jitter`.

    torchvision's ColorJitter shuffles the order per call; a fixed order keeps one batched
    kernel per op (the views' statistics hardly differ).
    """
    brightness, contrast, saturation, hue = factors.to(images.device).unbind(dim=1)
    images = adjust_brightness(images, brightness)
    images = adjust_contrast(images, contrast)
    images = adjust_saturation(images, saturation)
    return adjust_hue(images, hue)


def random_grayscale(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace the images where mask [N] is True by their luma, repeated to 3 channels."""
    gray = rgb_to_grayscale(images).expand_as(images)
    return torch.where(_per_sample(mask.to(images.device)), gray, images)


# ----------------------------------------------------------------------------------------------
# Blur, solarization, normalization


def sample_blur_sigmas(n: int, p: float, sigma: tuple[float, float],
                       generator: torch.Generator) -> torch.Tensor:
    """Blur strength per sample -> [n]: uniform in `sigma` with probability p, else 0 (no blur)."""
    sigmas = _uniform(n, sigma, generator)
    return torch.where(sample_mask(n, p, generator), sigmas, torch.zeros_like(sigmas))


def blur_kernel_size(max_sigma: float, image_size: int) -> int:
    """Odd kernel size covering +-3 max_sigma, at most image_size."""
    largest_odd = (image_size - 1) // 2 * 2 + 1
    return min(2 * math.ceil(3 * max_sigma) + 1, largest_odd)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per sample, as grouped convolutions (one kernel per
    image and channel) with reflect padding.

    images: float [N, C, H, W]; sigmas: [N] in pixels (0 leaves an image unchanged);
    kernel_size: odd, smaller than H and W -> [N, C, H, W].
    """
    N, C, H, W = images.shape
    if kernel_size % 2 != 1 or kernel_size // 2 >= min(H, W):
        raise ValueError(
            f"kernel_size must be odd and smaller than the image ({H}x{W}), got {kernel_size}"
        )
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - kernel_size // 2
    sigmas = sigmas.to(images).clamp_min(1e-6)  # a tiny sigma is a delta kernel: no blur
    kernels = torch.exp(-0.5 * (x / sigmas[:, None]) ** 2)  # [N, k]
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # [N*C, k]
    pad = kernel_size // 2
    out = F.pad(images.reshape(1, N * C, H, W), (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, kernels.view(N * C, 1, 1, kernel_size), groups=N * C)  # along rows
    out = F.conv2d(out, kernels.view(N * C, 1, kernel_size, 1), groups=N * C)  # along columns
    return out.view(N, C, H, W)


def solarize(images: torch.Tensor, mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels >= threshold (1 - x) of the images where mask [N] is True."""
    inverted = torch.where(images >= threshold, 1 - images, images)
    return torch.where(_per_sample(mask.to(images.device)), inverted, images)


def _channel_stats(images: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """mean and std as [1, C, 1, 1] tensors on the images' device."""
    return tuple(_constant(v, images).view(1, -1, 1, 1) for v in (mean, std))


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """(x - mean) / std per channel: float [N, C, H, W] in [0, 1] -> [N, C, H, W]."""
    mean, std = _channel_stats(images, mean, std)
    return (images - mean) / std


def denormalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of `normalize` (for plotting): x * std + mean, [N, C, H, W]."""
    mean, std = _channel_stats(images, mean, std)
    return images * std + mean


# ----------------------------------------------------------------------------------------------
# One view and the recipes


@dataclass(frozen=True)
class ViewAugment:
    """One view's pipeline: random resized crop + flip, color jitter with probability jitter_p,
    grayscale, Gaussian blur, solarization, normalization. An op with probability 0 is skipped.

    jitter: (brightness, contrast, saturation, hue) strengths; blur_sigma: sigma range in pixels
    of the output view.
    """

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self):
        _check_size("size", self.size)
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ValueError(
                f"scale must be (low, high) with 0 < low <= high <= 1, got {self.scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be (low, high) with 0 < low <= high, got {self.ratio!r}")

    def sample_params(self, n: int, height: int, width: int,
                      generator: torch.Generator) -> dict[str, torch.Tensor]:
        """All random parameters of n samples from `generator`, in a fixed order."""
        params = {
            "boxes": sample_crop_boxes(n, height, width, self.scale, self.ratio, generator),
            "flips": sample_flips(n, self.flip_p, generator),
        }
        if self.jitter_p > 0:
            params["jitter"] = sample_jitter(n, self.jitter_p, *self.jitter, generator)
        if self.gray_p > 0:
            params["gray"] = sample_mask(n, self.gray_p, generator)
        if self.blur_p > 0:
            params["blur"] = sample_blur_sigmas(n, self.blur_p, self.blur_sigma, generator)
        if self.solarize_p > 0:
            params["solarize"] = sample_mask(n, self.solarize_p, generator)
        return params

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor],
              normalized: bool = True) -> torch.Tensor:
        """float [N, 3, H, W] in [0, 1] -> view [N, 3, size, size] (in [0, 1] if not normalized)."""
        views = resized_crop(images, params["boxes"], self.size, params["flips"])
        if "jitter" in params:
            views = color_jitter(views, params["jitter"])
        if "gray" in params:
            views = random_grayscale(views, params["gray"])
        if "blur" in params:
            kernel_size = blur_kernel_size(self.blur_sigma[1], self.size)
            views = gaussian_blur(views, params["blur"], kernel_size)
        if "solarize" in params:
            views = solarize(views, params["solarize"])
        return normalize(views, self.mean, self.std) if normalized else views

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 normalized: bool = True) -> torch.Tensor:
        """uint8 or float [N, 3, H, W] -> float32 view [N, 3, size, size]."""
        images = to_float(images)
        N, _, H, W = images.shape
        return self.apply(images, self.sample_params(N, H, W, generator), normalized)


class Views:
    """A list of `ViewAugment`s: recipe(images, generator) -> list of views, one per entry."""

    views: list[ViewAugment]

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 normalized: bool = True) -> list[torch.Tensor]:
        """uint8 or float [N, 3, H, W] -> [view [N, 3, size_i, size_i] for each view]."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        images = to_float(images)
        return [view(images, generator, normalized) for view in self.views]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.views})"


def _check_size(name: str, value) -> None:
    if not isinstance(value, int) or value < 8:
        raise ValueError(f"{name} must be an int of at least 8 pixels, got {value!r}")


def _blur_sigma(image_size: int) -> tuple[float, float]:
    """The published sigma range (0.1, 2.0) px for 224 px images, scaled to image_size."""
    return (0.1 * image_size / 224, 2.0 * image_size / 224)


SMALL_IMAGE = 64  # at or below this size (CIFAR-like), SimCLR halves the jitter and drops blur


class SimCLRViews(Views):
    """SimCLR: two views from the same distribution (lightly's SimCLRTransform defaults).

    Crop scale (min_scale, 1), flip 0.5, color jitter with p 0.8 and strengths
    (0.8, 0.8, 0.8, 0.2) * jitter_strength, grayscale 0.2, blur with p blur_p.
    For images of at most 64 px (CIFAR) the defaults follow SimCLR's CIFAR setup:
    jitter_strength 0.5 and no blur; otherwise jitter_strength 1.0 and blur_p 0.5.
    With color=False (grayscale data such as Fashion-MNIST) only brightness and contrast are
    jittered: saturation, hue and random grayscale do nothing to gray images but cost time.
    """

    def __init__(self, image_size: int, jitter_strength: float | None = None,
                 blur_p: float | None = None, min_scale: float = 0.08, color: bool = True):
        _check_size("image_size", image_size)
        small = image_size <= SMALL_IMAGE
        s = (0.5 if small else 1.0) if jitter_strength is None else jitter_strength
        blur_p = (0.0 if small else 0.5) if blur_p is None else blur_p
        view = ViewAugment(image_size, scale=(min_scale, 1.0), blur_p=blur_p, blur_sigma=_blur_sigma(image_size),
                           **_color_ops((0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s), color))
        self.views = [view, view]


def _color_ops(jitter: tuple[float, float, float, float], color: bool) -> dict:
    """ViewAugment's jitter strengths and grayscale probability: as given for color images; for
    gray ones (color=False) brightness and contrast only, and no random grayscale."""
    if color:
        return {"jitter": jitter, "gray_p": 0.2}
    brightness, contrast, _, _ = jitter
    return {"jitter": (brightness, contrast, 0.0, 0.0), "gray_p": 0.0}


BYOL_JITTER = (0.4, 0.4, 0.2, 0.1)


class BYOLViews(Views):
    """BYOL: two asymmetric views (lightly's BYOLView1/2Transform): crop scale (min_scale, 1),
    flip 0.5, jitter p 0.8 with strengths (0.4, 0.4, 0.2, 0.1) * jitter_strength, grayscale 0.2;
    blur p 1.0 / 0.1 and solarization p 0.0 / ``solarize_p`` (0.2) for view 1 / view 2.
    color=False: brightness and contrast jitter only, no grayscale (see ``SimCLRViews``).
    Solarization inverts every pixel above mid-gray: a bright garment on a black background turns
    dark, so gray data such as Fashion-MNIST may do better with ``solarize_p=0``."""

    def __init__(self, image_size: int, min_scale: float = 0.08, jitter_strength: float = 1.0,
                 color: bool = True, solarize_p: float = 0.2):
        _check_size("image_size", image_size)
        base = dict(scale=(min_scale, 1.0), blur_sigma=_blur_sigma(image_size),
                    **_color_ops(tuple(jitter_strength * j for j in BYOL_JITTER), color))
        self.views = [
            ViewAugment(image_size, blur_p=1.0, solarize_p=0.0, **base),
            ViewAugment(image_size, blur_p=0.1, solarize_p=solarize_p, **base),
        ]


class DINOViews(Views):
    """DINO multi-crop (lightly's DINOTransform): 2 global crops of image_size, scale global_scale
    (0.4, 1), and n_local local crops of local_size (default image_size // 2), scale local_scale
    (0.05, 0.4). Jitter p 0.8 with strengths (0.4, 0.4, 0.2, 0.1) * jitter_strength, grayscale
    0.2, blur p 1.0 / 0.1 / 0.5 (global 1 / global 2 / locals), solarization ``solarize_p`` (0.2) on
    global 2 only (see ``BYOLViews``).
    color=False: brightness and contrast jitter only, no grayscale (see ``SimCLRViews``).
    The first two views returned are the global ones."""

    def __init__(self, image_size: int, local_size: int | None = None, n_local: int = 6,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 jitter_strength: float = 1.0, color: bool = True, solarize_p: float = 0.2):
        local_size = image_size // 2 if local_size is None else local_size
        _check_size("image_size", image_size)
        _check_size("local_size", local_size)
        if not isinstance(n_local, int) or n_local < 0:
            raise ValueError(f"n_local must be an int >= 0, got {n_local!r}")
        base = dict(blur_sigma=_blur_sigma(image_size),
                    **_color_ops(tuple(jitter_strength * j for j in BYOL_JITTER), color))
        glob = dict(size=image_size, scale=tuple(global_scale), **base)
        local = ViewAugment(local_size, scale=tuple(local_scale), blur_p=0.5, **base)
        self.views = [
            ViewAugment(blur_p=1.0, **glob),
            ViewAugment(blur_p=0.1, solarize_p=solarize_p, **glob),
        ] + [local] * n_local


class MAEViews(Views):
    """MAE: one view, random resized crop with scale (0.2, 1) and a horizontal flip, no color."""

    def __init__(self, image_size: int, min_scale: float = 0.2):
        _check_size("image_size", image_size)
        self.views = [ViewAugment(image_size, scale=(min_scale, 1.0), jitter_p=0.0, gray_p=0.0)]
