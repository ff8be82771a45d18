"""The pictures the notebooks show: one function per picture, each returning a matplotlib Figure.

Images may be uint8 ``[N, C, H, W]`` (0..255) or float. Float images are taken as normalized with
the ImageNet mean and std that ``coursekit.augment`` uses (pass ``normalized=False`` for floats
in [0, 1]). A single image ``[C, H, W]`` and one-channel images work too. Tensors may live on any
device; everything is moved to the CPU for plotting.

Pixel coordinates follow ``coursekit.data``: pixel column ``c`` spans ``[c, c + 1)``, so a box
``x1, y1, x2, y2`` with exclusive right/bottom edges lines up with the pixels it covers.
"""
from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD, denormalize
from coursekit.evaluate.patches import first_component_map, principal_components

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "denormalize", "to_rgb", "show_images", "augmentation_grid",
    "plot_history", "plot_curves", "embedding_map", "similarity_matrix", "attention_maps", "attention_snapshots",
    "masked_patches", "mae_reconstructions", "draw_boxes", "mask_overlay", "patch_pca", "retrieval_grid",
]

CELL_INCHES = 1.6  # side of one image in a grid
IGNORE_INDEX = 255  # mask value drawn in gray ("don't know")


# ----------------------------------------------------------------------------------------------
# Helpers


def to_rgb(images: Tensor, normalized: bool = True) -> np.ndarray:
    """Images -> float numpy ``[N, H, W, 3]`` in [0, 1] for ``imshow``.

    Args:
        images: ``[N, C, H, W]`` or ``[C, H, W]``, C = 1 or 3; uint8 (0..255) or float.
        normalized: float images are normalized with ImageNet mean/std (undone here); with False
            they are taken as [0, 1].
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor [N, C, H, W]; got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] or [C, H, W] with C = 1 or 3; got shape {list(images.shape)}")
    images = images.detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif not images.is_floating_point():
        raise TypeError(f"images must be uint8 or float; got {images.dtype}")
    else:
        images = images.float()
        if normalized:
            images = denormalize(images.expand(-1, 3, -1, -1))
    return images.expand(-1, 3, -1, -1).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _show(ax: Axes, rgb: np.ndarray, title: str | None = None, **kwargs) -> None:
    """Draw one [H, W, 3] image with pixel-edge coordinates (column c spans [c, c + 1))."""
    height, width = rgb.shape[:2]
    ax.imshow(rgb, extent=(0, width, height, 0), interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _image_grid(rows: int, cols: int, title: str | None = None) -> tuple[Figure, np.ndarray]:
    """A figure with a ``rows x cols`` array of axes (always 2-D), every axis hidden until used."""
    fig, axes = plt.subplots(rows, cols, figsize=(CELL_INCHES * cols, CELL_INCHES * rows + 0.3 * bool(title)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return fig, axes


def _same_length(**tensors) -> int:
    lengths = {name: len(value) for name, value in tensors.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"expected the same number of images in each argument; got {lengths}")
    return next(iter(lengths.values()))


def _class_colors(num_classes: int) -> np.ndarray:
    """``[num_classes, 4]`` RGBA colors (tab10, then tab20 for more classes)."""
    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return cmap(np.arange(num_classes) % cmap.N)


# ----------------------------------------------------------------------------------------------
# Images


def show_images(images: Tensor, labels: Tensor | None = None, class_names: Sequence[str] | None = None,
                ncols: int = 8, title: str | None = None, normalized: bool = True) -> Figure:
    """A grid of images ``[N, C, H, W]``, each titled with its label (class name when given)."""
    rgb = to_rgb(images, normalized)
    if labels is not None:
        _same_length(images=rgb, labels=labels)
    ncols = min(ncols, len(rgb))
    fig, axes = _image_grid(-(-len(rgb) // ncols), ncols, title)
    for i, image in enumerate(rgb):
        label = None if labels is None else int(labels[i])
        name = None if label is None else (class_names[label] if class_names and label >= 0 else str(label))
        _show(axes.flat[i], image, name)
    fig.tight_layout()
    return fig


def augmentation_grid(originals: Tensor, views_list: Sequence[Tensor], view_names: Sequence[str] | None = None,
                      normalized: bool = True) -> Figure:
    """One row per image: the original, then each of its views.

    Args:
        originals: ``[N, C, H, W]`` (usually uint8).
        views_list: list of V view batches ``[N, C, h, w]`` (sizes may differ, e.g. DINO local crops).
        view_names: V column titles (default "view 1", "view 2", ...).
    """
    rows = [to_rgb(originals, normalized)] + [to_rgb(views, normalized) for views in views_list]
    _same_length(originals=rows[0], **{f"view_{i + 1}": views for i, views in enumerate(rows[1:])})
    names = ["original"] + list(view_names or [f"view {i + 1}" for i in range(len(views_list))])
    fig, axes = _image_grid(len(rows[0]), len(rows))
    for col, (name, images) in enumerate(zip(names, rows)):
        for row, image in enumerate(images):
            _show(axes[row, col], image, name if row == 0 else None)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Curves


X_AXES = ("step", "metrics_step", "throughput_step", "epoch")  # series that serve as x axes
X_LABELS = {"step": "optimizer step", "metrics_step": "optimizer step", "throughput_step": "optimizer step",
            "epoch": "epoch"}
# Panel titles, in words, of the series the training loop records (engine.History and the methods'
# step statistics); any other series is titled with its name, underscores turned to spaces.
HISTORY_TITLES = {
    "loss": "training loss",
    "epoch_loss": "training loss, mean per epoch",
    "lr": "learning rate",
    "images_per_sec": "training speed (images per second)",
    "embedding_std": "spread of the embeddings",
    "teacher_entropy": "teacher entropy",
    "teacher_student_kl": "teacher-student KL divergence",
    "prototypes_used": "prototypes in use",
}


def _numeric_series(history) -> tuple[dict[str, list[float]], dict[str, str]]:
    """(name -> numbers, name -> the name of its x axis) of a history mapping or object."""
    items = dict(history.items() if isinstance(history, Mapping) else vars(history).items())
    x_axes = {"images_per_sec": "throughput_step"}
    metrics = items.pop("metrics", None)
    if isinstance(metrics, Mapping):  # History.metrics: collapse metrics logged at metrics_step
        items.update(metrics)
        x_axes.update({name: "metrics_step" for name in metrics})
    series = {key: list(values) for key, values in items.items()
            if isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
            and all(isinstance(v, (int, float)) for v in values)}
    return series, {name: x_axes.get(name, "epoch" if name.startswith("epoch") else "step") for name in series}


def _history_title(key: str, titles: Mapping[str, str] | None = None) -> str:
    """The panel title of series ``key``: ``titles[key]``, its ``HISTORY_TITLES`` entry, or its name in words."""
    return (titles or {}).get(key) or HISTORY_TITLES.get(key) or key.replace("_", " ")


def plot_history(history, keys: Sequence[str] | None = None, ylabels: Mapping[str, str] | None = None,
                 xlabel: str | None = None, references: Mapping[str, Mapping[str, float]] | None = None,
                 sharey: bool = False, titles: Mapping[str, str] | None = None) -> Figure:
    """One panel per recorded series (loss, learning rate, accuracy...) against the step or epoch.

    Args:
        history: a mapping ``name -> list of numbers`` (or an object whose attributes are such
            lists, like ``engine.History``, whose ``metrics`` (embedding_std, DINO's teacher
            entropy...) become series too, against ``metrics_step``). A ``step`` (or ``epoch``)
            series of the same length becomes the x axis of the others.
        keys: the series to plot (default: all numeric ones except the x axes).
        ylabels: y-axis label of each series, with its unit (default: the series name).
        xlabel: x-axis label for series that have no x series to plot against (their x values are
            then 0, 1, 2...; say what one of them is, e.g. ``"epoch"``). Required for such series,
            except ``epoch_*`` series, which count epochs.
        references: per series, dashed horizontal lines to read it against, ``{label: y}`` (e.g.
            ``{"embedding_std": {"1/sqrt(D): spread out": 0.088, "0: collapsed": 0.0}}``), with a legend.
        sharey: one y scale for every panel (for series of the same quantity, e.g. the loss of
            several runs, so that the panels compare at a glance).
        titles: the title of each series' panel, in words (e.g. ``{"loss": "SimCLR loss"}``). Series
            not named here get their ``HISTORY_TITLES`` entry ("training loss", "spread of the
            embeddings", "teacher entropy"...), or else their name with underscores as spaces.
    """
    series, x_axes = _numeric_series(history)
    keys = list(keys) if keys is not None else [k for k in series if k not in X_AXES]
    missing = [k for k in keys if k not in series]
    if missing or not keys:
        raise ValueError(f"plot_history: keys {missing or keys} not found; the history has {sorted(series)}")
    stray = sorted(set(references or {}) - set(keys))
    if stray:
        raise ValueError(f"plot_history: references for {stray}, which are not plotted (keys: {keys})")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False, sharey=sharey)
    for ax, key in zip(axes[0], keys):
        values = series[key]
        x_name = x_axes[key] if len(series.get(x_axes[key], ())) == len(values) else None
        if x_name is None and xlabel is None and x_axes[key] != "epoch":
            raise ValueError(f"plot_history: series {key!r} has no step/epoch series to plot against; "
                             "pass xlabel (what one x unit is, e.g. 'epoch')")
        ax.plot(series[x_name] if x_name else range(len(values)), values,
                marker="o" if len(values) < 20 else None, markersize=3)  # a few points (one) stay visible
        ax.set_title(_history_title(key, titles))
        ax.set_xlabel(X_LABELS[x_name] if x_name else (xlabel or "epoch"))
        ax.set_ylabel(textwrap.fill((ylabels or {}).get(key, key), 32))  # a long label on two lines, not cut off
        for (label, y), color in zip((references or {}).get(key, {}).items(), ("gray", "black", "tab:red")):
            ax.axhline(y, color=color, linestyle="--", linewidth=1, label=label)
        if (references or {}).get(key):
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_curves(x: Sequence[float], ys: Mapping[str, Sequence[float]], xlabel: str, ylabel: str,
                logx: bool = False, title: str | None = None, legend_outside: bool = False,
                styles: Mapping[str, Mapping] | None = None, markers: bool = True,
                ylim: tuple[float | None, float | None] | None = None) -> Figure:
    """Several named curves over the same x (e.g. accuracy vs number of labels, one curve per method).

    Args:
        legend_outside: put the legend to the right of the axes (the figure grows to hold it), so that
            it hides no data: for many curves or long names.
        styles: per curve, keyword arguments for ``Axes.plot`` (``linestyle``, ``marker``, ``color``,
            ``alpha``...), e.g. one line style per family of curves when there are too many colors
            to tell apart.
        markers: draw a marker at each point (off for curves of hundreds of points).
        ylim: ``(bottom, top)`` of the y axis (None: automatic), e.g. ``(0, None)`` so that the axis
            starts at 0 and a small change is not drawn as a large one.
    """
    fig, ax = plt.subplots(figsize=(5, 3.5))
    unknown = sorted(set(styles or {}) - set(ys))
    if unknown:
        raise ValueError(f"plot_curves: styles for {unknown}, which are not curves ({list(ys)})")
    for name, values in ys.items():
        if len(values) != len(x):
            raise ValueError(f"plot_curves: curve {name!r} has {len(values)} values for {len(x)} x values")
        style = {"marker": "o" if markers else "", **(styles or {}).get(name, {})}
        ax.plot(list(x), list(values), label=name, **style)
    if logx:
        ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend_outside:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
        fig.set_figwidth(fig.get_figwidth() + 2.5)
    else:
        ax.legend()
    fig.tight_layout()
    return fig


def grouped_bars(groups: Sequence[str], series: Mapping[str, tuple[Sequence[float], Sequence[float]]], ylabel: str,
                 title: str | None = None, colors: Mapping[str, object] | None = None,
                 hatches: Mapping[str, str] | None = None, reference: str | None = None) -> Figure:
    """One bar per series in each group, with an error bar: e.g. accuracy (mean, std over label
    draws) of each backbone with 10 and with 100 labels per class. ``series``: name -> (means, stds),
    one value per group. The y-axis starts a little below the lowest bar, so that the gaps the bars
    compare are visible (its lower limit is printed on the axis), and the legend sits outside the bars.
    ``colors`` / ``hatches`` (name -> matplotlib color / hatch) let related series share a hue; the
    others get distinct colors (up to 20). ``reference`` names a series whose mean is also drawn as a
    dashed line across its group: the level the other bars are read against (e.g. the raw pixels)."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / max(1, len(series))
    # matplotlib's default cycle repeats after 10 colors: past 10 series, 20 distinct ones
    default = [None] * len(series) if len(series) <= 10 else [plt.get_cmap("tab20")(i % 20) for i in range(len(series))]
    colors, hatches = colors or {}, hatches or {}
    if reference is not None and reference not in series:
        raise ValueError(f"grouped_bars: reference {reference!r} is not a series: {', '.join(series)}")
    lowest, highest = 1.0, 0.0
    for i, (name, (means, stds)) in enumerate(series.items()):
        if len(means) != len(groups) or len(stds) != len(groups):
            raise ValueError(f"grouped_bars: series {name!r} needs one mean and one std per group ({len(groups)})")
        positions = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        ax.bar(positions, means, width, yerr=stds, capsize=3, label=name, color=colors.get(name, default[i]),
               hatch=hatches.get(name), edgecolor="white" if name in hatches else None)
        lowest = min(lowest, *(m - s for m, s in zip(means, stds)))
        highest = max(highest, *(m + s for m, s in zip(means, stds)))
    if reference is not None:
        for group, mean in enumerate(series[reference][0]):
            ax.hlines(mean, group - 0.42, group + 0.42, colors="black", linestyles="--", linewidth=1,
                      label=f"{reference} (level)" if group == 0 else None)
    ax.set_xticks(np.arange(len(groups)), list(groups))
    ax.set_ylim(max(0.0, lowest - 0.05), min(1.0, highest + 0.03))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Features


def embedding_map(features: Tensor, labels: Tensor, method: str = "pca", class_names: Sequence[str] | None = None,
                  seed: int = 0) -> Figure:
    """Features ``[N, D]`` projected to 2-D (``"pca"`` or ``"tsne"``), colored by label ``[N]``; the legend
    of the classes sits beside the axes, where it hides no point."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    points = features.detach().float().cpu().numpy()
    labels = labels.detach().cpu().numpy()
    _same_length(features=points, labels=labels)
    if method == "pca":
        projected = PCA(n_components=2, random_state=seed).fit_transform(points)
    elif method == "tsne":
        perplexity = min(30.0, max(1.0, (len(points) - 1) / 3))
        projected = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    else:
        raise ValueError(f"embedding_map: method must be 'pca' or 'tsne'; got {method!r}")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))  # the points, and the legend beside them
    colors = _class_colors(int(labels.max()) + 1)
    for label in np.unique(labels):
        chosen = labels == label
        name = class_names[label] if class_names else str(label)
        ax.scatter(projected[chosen, 0], projected[chosen, 1], s=6, color=colors[label], label=name)
    ax.set_title(f"{method.upper()} of {points.shape[1]}-d features")
    ax.legend(markerscale=2, fontsize=7, title="class", loc="center left", bbox_to_anchor=(1.01, 0.5))  # off the points
    ax.set_xticks([])  # the units of a projection carry no meaning; only distances between points do
    ax.set_yticks([])
    ax.set_xlabel(f"{method.upper()} component 1")
    ax.set_ylabel(f"{method.upper()} component 2")
    fig.tight_layout()
    return fig


def similarity_matrix(z1: Tensor, z2: Tensor, title: str = "cosine similarity",
                      names: Sequence[str] | None = None) -> Figure:
    """Heat map of cosine similarities ``[N, N]`` between ``z1[i]`` and ``z2[j]`` (positives on the diagonal).

    ``names`` (N strings, e.g. the class name of each image) label the rows and columns, so that bright
    off-diagonal cells between images of one class can be told from failures. The mean off-diagonal
    similarity goes into the title: near 1, every image lands in the same direction.
    """
    _same_length(z1=z1, z2=z2)
    count = len(z1)
    if names is not None and len(names) != count:
        raise ValueError(f"similarity_matrix: {len(names)} names for {count} images")
    sims = F.normalize(z1.detach().float().cpu(), dim=1) @ F.normalize(z2.detach().float().cpu(), dim=1).T
    off_diagonal = sims[~torch.eye(count, dtype=torch.bool)].mean().item() if count > 1 else float("nan")
    fig, ax = plt.subplots(figsize=(5.5, 4.8) if names else (4.5, 4))
    shown = ax.imshow(sims.numpy(), cmap="viridis", vmin=-1, vmax=1)
    fig.colorbar(shown, ax=ax, label="cosine similarity")
    if names is not None:
        ax.set_xticks(range(count), names, rotation=90, fontsize=7)
        ax.set_yticks(range(count), names, fontsize=7)
    ax.set_xlabel("image j, view 2")
    ax.set_ylabel("image i, view 1")
    ax.set_title(f"{title}\n(diagonal mean {sims.diagonal().mean():.2f}, off-diagonal mean {off_diagonal:.2f})",
                 fontsize=9)
    fig.tight_layout()
    return fig


def attention_maps(images: Tensor, attention: Tensor, grid: tuple[int, int], max_heads: int = 6,
                   normalized: bool = True, outlines: Tensor | None = None) -> Figure:
    """The CLS token's attention to the patches: the image, then the mean over heads and each head.

    Each map is the share of the CLS token's attention that goes to each patch, min-max scaled per map
    (0 = the least attended patch of that map, 1 = the most attended one; see the colorbar). Maps are
    drawn as what they are, one square per patch (a ``h x w`` grid, white lines at patch edges), next to
    the image at full brightness. ``outlines`` (``[N, H, W]`` bool object masks), when given, are drawn
    as cyan contours on every map, so that one sees whether the bright patches cover the object.

    Args:
        images: ``[N, C, H, W]``.
        attention: ``[N, heads, 1 + L, 1 + L]`` (a ViT's last block; token 0 is CLS).
        grid: ``(h, w)`` patch grid with ``h * w == L``.
        max_heads: show at most this many heads.
        outlines: optional ``[N, H, W]`` object masks to outline.
    """
    height, width = grid
    if attention.dim() != 4 or attention.shape[-1] != 1 + height * width or attention.shape[-2] != attention.shape[-1]:
        raise ValueError(f"attention must be [N, heads, 1 + L, 1 + L] with L = {height}*{width}; "
                         f"got shape {list(attention.shape)}")
    rgb = to_rgb(images, normalized)
    _same_length(images=rgb, attention=attention)
    if outlines is not None:
        outlines = outlines.detach().cpu().float().numpy()
        if outlines.shape != rgb.shape[:3]:
            raise ValueError(f"attention_maps: outlines must be [N, H, W] = {list(rgb.shape[:3])}; got {list(outlines.shape)}")
    cls_to_patches = attention[:, :, 0, 1:].detach().float().cpu().reshape(len(rgb), -1, height, width)
    maps = torch.cat([cls_to_patches.mean(dim=1, keepdim=True), cls_to_patches[:, :max_heads]], dim=1)
    maps = maps - maps.amin(dim=(2, 3), keepdim=True)
    maps = (maps / maps.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)).numpy()
    names = ["image", "mean of heads"] + [f"head {h}" for h in range(maps.shape[1] - 1)]
    fig, axes = _image_grid(len(rgb), len(names))
    shown = None
    for row, image in enumerate(rgb):
        _show(axes[row, 0], image, names[0] if row == 0 else None)
        for col in range(maps.shape[1]):
            ax = axes[row, col + 1]
            extent = (0, image.shape[1], image.shape[0], 0)
            shown = ax.imshow(maps[row, col], cmap="inferno", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            if outlines is not None and 0 < outlines[row].mean() < 1:
                centers_x, centers_y = np.arange(image.shape[1]) + 0.5, np.arange(image.shape[0]) + 0.5
                ax.contour(centers_x, centers_y, outlines[row], levels=[0.5], colors="cyan", linewidths=0.8)
            for edge in range(1, width):
                ax.axvline(edge * image.shape[1] / width, color="white", linewidth=0.3, alpha=0.5)
            for edge in range(1, height):
                ax.axhline(edge * image.shape[0] / height, color="white", linewidth=0.3, alpha=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            if row == 0:
                ax.set_title(names[col + 1], fontsize=8)
    fig.set_figwidth(fig.get_figwidth() + 1.0)  # room for the colorbar and its label
    fig.tight_layout(w_pad=0.8)
    fig.colorbar(shown, ax=axes[:, 1:].ravel().tolist(), shrink=0.8,
                 label="CLS attention (scaled per map)")
    return fig


def attention_snapshots(images: Tensor, maps: Mapping[str, Tensor], outlines: Tensor | None = None,
                        normalized: bool = True) -> Figure:
    """How attention changes over training: one row per image, the image, then one map per snapshot.

    Args:
        images: ``[N, C, H, W]``.
        maps: snapshot title (e.g. ``"step 40"``) -> ``[N, h, w]`` attention maps (e.g. from
            ``coursekit.lessons.attention.cls_attention_maps``); each map is min-max scaled for display.
        outlines: optional ``[N, H, W]`` object masks, drawn as cyan contours on every map.
    """
    rgb = to_rgb(images, normalized)
    if not maps:
        raise ValueError("attention_snapshots: no snapshots given")
    _same_length(images=rgb, **{f"snapshot_{i}": m for i, m in enumerate(maps.values())})
    if outlines is not None:
        outlines = outlines.detach().cpu().float().numpy()
    fig, axes = _image_grid(len(rgb), 1 + len(maps))
    extent = (0, rgb.shape[2], rgb.shape[1], 0)
    shown = None
    for row, image in enumerate(rgb):
        _show(axes[row, 0], image, "image" if row == 0 else None)
        for col, (title, snapshot) in enumerate(maps.items(), start=1):
            values = snapshot[row].detach().float().cpu()
            values = (values - values.min()) / (values.max() - values.min()).clamp_min(1e-12)
            ax = axes[row, col]
            shown = ax.imshow(values.numpy(), cmap="inferno", vmin=0, vmax=1, extent=extent, interpolation="nearest")
            if outlines is not None and 0 < outlines[row].mean() < 1:
                centers_x, centers_y = np.arange(rgb.shape[2]) + 0.5, np.arange(rgb.shape[1]) + 0.5
                ax.contour(centers_x, centers_y, outlines[row], levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=8)
    fig.set_figwidth(fig.get_figwidth() + 1.0)  # room for the colorbar and its label
    fig.tight_layout(w_pad=0.8)
    fig.colorbar(shown, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="CLS attention (scaled per map)")
    return fig


REMOVED_GRAY = 0.5  # removed (masked) patches: mid-gray, hatched; never black, which is a pixel value too


def _pixel_mask(mask: Tensor, images: np.ndarray) -> np.ndarray:
    """``mask`` (1 = removed) as bool ``[N, H, W]`` pixels of ``images`` ``[N, H, W, 3]``: a pixel mask
    ``[N, 1, H, W]`` or ``[N, H, W]``, or a token mask ``[N, L]`` over a square grid of patches."""
    count, height, width = images.shape[:3]
    mask = mask.detach().cpu()
    if mask.dim() == 2:  # [N, L] tokens, row-major over a square grid (MAE's random_masking)
        side = int(round(mask.shape[1] ** 0.5))
        if side * side != mask.shape[1] or height % side or width % side:
            raise ValueError(f"a token mask [N, L] needs a square grid that divides the {height} x {width} images; "
                             f"got L = {mask.shape[1]}")
        mask = mask.reshape(-1, side, side).repeat_interleave(height // side, 1).repeat_interleave(width // side, 2)
    elif mask.dim() == 4 and mask.shape[1] == 1:
        mask = mask[:, 0]
    if tuple(mask.shape) != (count, height, width):
        raise ValueError(f"mask must be [N, L], [N, H, W] or [N, 1, H, W] for {count} images of {height} x {width}; "
                         f"got shape {list(mask.shape)}")
    return mask.numpy() > 0.5


def _show_removed(ax: Axes, rgb: np.ndarray, removed: np.ndarray, title: str | None = None) -> None:
    """Draw an image with its ``removed`` pixels ``[H, W]`` (bool) in hatched mid-gray: a removed patch
    cannot be taken for a dark part of the image (Fashion-MNIST's background is black)."""
    shown = rgb.copy()
    shown[removed] = REMOVED_GRAY
    _show(ax, shown, title)
    if removed.any():
        height, width = removed.shape
        # contour levels halfway between pixel centers fall on pixel edges; the outer edges are repeated so
        # that the hatching reaches the border of the image
        xs = np.concatenate([[0], np.arange(width) + 0.5, [width]])
        ys = np.concatenate([[0], np.arange(height) + 0.5, [height]])
        padded = np.pad(removed.astype(float), 1, mode="edge")
        ax.contourf(xs, ys, padded, levels=[0.5, 1.5], colors="none", hatches=["////"])
        for collection in ax.collections:
            collection.set_edgecolor((0.8, 0.8, 0.8))
            collection.set_linewidth(0)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)


def masked_patches(images: Tensor, mask: Tensor, ncols: int = 8, title: str | None = None,
                   normalized: bool = True) -> Figure:
    """What a masked-image encoder sees: each image above, its visible patches below, the removed patches
    drawn in hatched mid-gray (not black, which real pixels are too).

    Args:
        images: ``[N, C, H, W]``.
        mask: 1 = removed; a token mask ``[N, L]`` over a square grid of patches (as ``random_masking``
            returns it), or a pixel mask ``[N, H, W]`` / ``[N, 1, H, W]``.
        ncols: images per row pair.
    """
    rgb = to_rgb(images, normalized)
    removed = _pixel_mask(mask, rgb)
    ncols = min(ncols, len(rgb))
    pairs = -(-len(rgb) // ncols)
    fig, axes = _image_grid(2 * pairs, ncols, title)
    for i, image in enumerate(rgb):
        row, col = 2 * (i // ncols), i % ncols
        _show(axes[row, col], image)
        _show_removed(axes[row + 1, col], image, removed[i])
    fig.tight_layout()
    return fig


def mae_reconstructions(images: Tensor, masked: Tensor, reconstructions: Tensor, normalized: bool = True,
                        mask: Tensor | None = None) -> Figure:
    """One row per image: the original, what the encoder saw (masked), the reconstruction (all ``[N, C, H, W]``).

    ``mask`` (1 = removed: ``[N, 1, H, W]`` or ``[N, H, W]`` pixels, as ``MAE.reconstruct`` returns it, or
    ``[N, L]`` tokens): the removed patches of the middle column are drawn in hatched mid-gray rather than
    as the black that ``masked`` holds there, which a learner would take for dark pixels.
    """
    columns = {"original": to_rgb(images, normalized), "masked": to_rgb(masked, normalized),
               "reconstruction": to_rgb(reconstructions, normalized)}
    count = _same_length(**columns)
    removed = _pixel_mask(mask, columns["masked"]) if mask is not None else None
    fig, axes = _image_grid(count, len(columns))
    for col, (name, rgb) in enumerate(columns.items()):
        if name == "masked" and removed is not None:
            name = "masked (gray: removed)"
        for row in range(count):
            if col == 1 and removed is not None:
                _show_removed(axes[row, col], rgb[row], removed[row], name if row == 0 else None)
            else:
                _show(axes[row, col], rgb[row], name if row == 0 else None)
    fig.tight_layout()
    return fig


def patch_pca(patch_features: Tensor, grid: tuple[int, int], images: Tensor | None = None, threshold: float = 0.5,
              normalized: bool = True) -> Figure:
    """Patch features as colors: the first 3 principal components of the foreground patches as RGB.

    As in the DINOv2 paper: the first principal component over all patches of all images separates
    objects from background; patches whose (min-max scaled) first component is above ``threshold``
    are foreground (the sign is chosen so that border patches are mostly background). A second PCA
    over the foreground patches gives their colors; background patches are black.

    Args:
        patch_features: ``[N, L, D]`` patch tokens.
        grid: ``(h, w)`` with ``h * w == L``.
        images: optional ``[N, C, H, W]`` shown above the maps.
    """
    count, length, _ = patch_features.shape
    height, width = grid
    if height * width != length:
        raise ValueError(f"patch_pca: grid {grid} does not hold L = {length} patches")
    tokens = patch_features.detach().float().cpu().reshape(count * length, -1)
    foreground = (first_component_map(patch_features.detach().float().cpu(), grid) > threshold).flatten()
    colors = torch.zeros(count * length, 3)
    if foreground.sum() >= 3:
        components = principal_components(tokens[foreground], 3)
        lows, highs = components.amin(dim=0), components.amax(dim=0)
        colors[foreground] = (components - lows) / (highs - lows).clamp_min(1e-12)
    maps = colors.reshape(count, height, width, 3).numpy()

    rows = [to_rgb(images, normalized)] if images is not None else []
    if rows:
        _same_length(images=rows[0], patch_features=maps)
    layout = "top: images; bottom: one square per patch" if rows else "one square per patch"
    fig, axes = _image_grid(len(rows) + 1, count, "patch features: first 3 principal components as colors\n"
                                                  f"({layout}, black = background)")
    for i in range(count):
        if rows:
            _show(axes[0, i], rows[0][i])
        _show(axes[-1, i], maps[i])
    fig.tight_layout()
    return fig


def retrieval_grid(queries: Tensor, gallery: Tensor, indices: Tensor, query_labels: Tensor | None = None,
                   gallery_labels: Tensor | None = None, normalized: bool = True) -> Figure:
    """One row per query: the query, then its nearest gallery images ``indices [Q, k]`` (best first).

    With labels, a retrieved image gets a green frame when its label matches the query's, red otherwise.
    """
    query_rgb, gallery_rgb = to_rgb(queries, normalized), to_rgb(gallery, normalized)
    _same_length(queries=query_rgb, indices=indices)
    indices = indices.detach().cpu()
    fig, axes = _image_grid(len(query_rgb), 1 + indices.shape[1])
    for row, query in enumerate(query_rgb):
        _show(axes[row, 0], query, "query" if row == 0 else None)
        for col, index in enumerate(indices[row].tolist()):
            ax = axes[row, col + 1]
            _show(ax, gallery_rgb[index], f"#{col + 1}" if row == 0 else None)
            if query_labels is not None and gallery_labels is not None:
                match = int(gallery_labels[index]) == int(query_labels[row])
                ax.axis("on")
                for spine in ax.spines.values():
                    spine.set_color("tab:green" if match else "tab:red")
                    spine.set_linewidth(3)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Detection and segmentation


def draw_boxes(images: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor], class_names: Sequence[str],
               scores: Sequence[Tensor] | None = None, ncols: int = 4, normalized: bool = True,
               title: str | None = None) -> Figure:
    """Images with their boxes: ``boxes[i]`` float ``[K_i, 4]`` xyxy pixels, ``labels[i]`` ``[K_i]``,
    optional ``scores[i]`` ``[K_i]`` (predictions), one color per class; ``title`` above the grid
    (laid out with it, so that it does not cover the top row)."""
    rgb = to_rgb(images, normalized)
    _same_length(images=rgb, boxes=boxes, labels=labels, **({"scores": scores} if scores is not None else {}))
    colors = _class_colors(len(class_names))
    ncols = min(ncols, len(rgb))
    fig, axes = _image_grid(-(-len(rgb) // ncols), ncols, title)
    for i, image in enumerate(rgb):
        ax = axes.flat[i]
        _show(ax, image)
        image_scores = [None] * len(labels[i]) if scores is None else scores[i].tolist()
        for box, label, score in zip(boxes[i].tolist(), labels[i].tolist(), image_scores):
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colors[label], linewidth=1.5))
            text = class_names[label] if score is None else f"{class_names[label]} {score:.2f}"
            ax.text(x1, y1, text, fontsize=6, color="white", va="bottom",
                    bbox=dict(facecolor=colors[label], alpha=0.8, pad=0.5, linewidth=0))
    fig.tight_layout()
    return fig


def _mask_colors(masks: np.ndarray, num_classes: int) -> np.ndarray:
    """uint masks ``[H, W]`` (0 = background, c + 1 = class c, 255 = ignore) -> RGBA ``[H, W, 4]``."""
    palette = np.zeros((256, 4))
    palette[1:num_classes + 1] = _class_colors(num_classes)
    palette[IGNORE_INDEX] = (0.6, 0.6, 0.6, 1.0)
    return palette[masks]


def mask_overlay(images: Tensor, masks: Tensor, predictions: Tensor | None = None, num_classes: int | None = None,
                 alpha: float = 0.75, normalized: bool = True, class_names: Sequence[str] | None = None) -> Figure:
    """One row per image: the image, its mask over it and, when given, the predicted mask over it.

    Masks are ``[N, H, W]`` integers: 0 = background (not colored), ``c + 1`` = class ``c``,
    255 = ignored (gray). ``num_classes`` sets the palette (default: from the largest value). A legend
    below the grid names each color (``class_names``, default "class 0", "class 1"...), so that a
    prediction that is all background (nothing colored: it looks like the input) reads as such.
    The masks are drawn over a dimmed gray copy of the image, so that the class colors cannot be
    mistaken for the colors of the objects themselves (the first column keeps the image's colors).
    """
    rgb = to_rgb(images, normalized)
    columns = {"ground truth": masks.detach().cpu().long().numpy()}
    if predictions is not None:
        columns["prediction"] = predictions.detach().cpu().long().numpy()
    _same_length(images=rgb, **columns)
    for name, values in columns.items():
        if values.shape[1:] != rgb.shape[1:3]:
            raise ValueError(f"mask_overlay: {name} masks are {list(values.shape)}, images {list(rgb.shape[:3])}")
    if num_classes is None:
        num_classes = max(int(v[v != IGNORE_INDEX].max(initial=0)) for v in columns.values())
    num_classes = max(num_classes, 1)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"mask_overlay: {len(class_names)} class names for {num_classes} classes")
    fig, axes = _image_grid(len(rgb), 1 + len(columns))
    for row, image in enumerate(rgb):
        _show(axes[row, 0], image, "image" if row == 0 else None)
        backdrop = np.repeat(0.3 + 0.4 * image.mean(axis=-1, keepdims=True), 3, axis=-1)  # gray, low contrast
        for col, (name, values) in enumerate(columns.items(), start=1):
            overlay = _mask_colors(values[row], num_classes)
            overlay[..., 3] *= alpha
            _show(axes[row, col], backdrop, name if row == 0 else None)
            axes[row, col].imshow(overlay, extent=(0, image.shape[1], image.shape[0], 0), interpolation="nearest")
    names = list(class_names or [f"class {c}" for c in range(num_classes)])
    handles = [Rectangle((0, 0), 1, 1, facecolor=color, alpha=alpha) for color in _class_colors(num_classes)]
    handles += [Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="black"),
                Rectangle((0, 0), 1, 1, facecolor=(0.6, 0.6, 0.6), alpha=alpha)]
    names += ["background (no color)", "ignored"]
    fig.tight_layout(rect=(0, 0.12 if len(rgb) < 3 else 0.06, 1, 1))
    fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    return fig
