"""coursekit.viz: every picture function draws tiny inputs into a Figure (Agg backend)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from coursekit import viz  # noqa: E402
from coursekit.augment import normalize  # noqa: E402
from coursekit.data import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(4, image_size=32, seed=1, num_objects=(1, 2))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _drawn(fig) -> bool:
    """The figure renders, and what it renders is not blank: some axes hold artists (images, lines,
    patches, texts) and the pixels are not all one color."""
    assert isinstance(fig, Figure)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    has_artists = any(ax.images or ax.lines or ax.patches or ax.collections or ax.texts for ax in fig.axes)
    return has_artists and bool((pixels != pixels[0, 0]).any())


def test_to_rgb_inverts_normalization_and_accepts_uint8_gray_and_single_images(shapes):
    as_float = shapes.images.float() / 255
    expected = as_float.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(viz.to_rgb(shapes.images), expected, atol=1e-6)
    np.testing.assert_allclose(viz.to_rgb(normalize(as_float)), expected, atol=1e-5)
    np.testing.assert_allclose(viz.to_rgb(as_float, normalized=False), expected, atol=1e-6)
    assert viz.to_rgb(shapes.images[0, :1]).shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        viz.to_rgb(torch.zeros(2, 4, 8, 8))


def test_image_pictures(shapes):
    views = [normalize(shapes.images.float() / 255), normalize(shapes.images[..., :16, :16].float() / 255)]
    assert _drawn(viz.show_images(shapes.images, shapes.labels, shapes.classes, ncols=2))
    assert _drawn(viz.augmentation_grid(shapes.images, views, ["global", "local"]))
    assert _drawn(viz.mae_reconstructions(shapes.images, shapes.images // 2, views[0]))
    assert _drawn(viz.retrieval_grid(shapes.images[:2], shapes.images, torch.tensor([[1, 2], [3, 0]]),
                                     shapes.labels[:2], shapes.labels))
    with pytest.raises(ValueError, match="same number of images"):
        viz.mae_reconstructions(shapes.images, shapes.images[:2], shapes.images)


def test_curve_pictures():
    history = {"step": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "lr": [0.1, 0.05, 0.0]}
    fig = viz.plot_history(history, ylabels={"loss": "NT-Xent loss (nats)"})
    assert _drawn(fig) and [ax.get_title() for ax in fig.axes] == ["loss", "lr"]
    assert [ax.get_ylabel() for ax in fig.axes] == ["NT-Xent loss (nats)", "lr"]
    assert {ax.get_xlabel() for ax in fig.axes} == {"optimizer step"}
    with pytest.raises(ValueError, match="accuracy"):
        viz.plot_history(history, keys=["accuracy"])
    per_epoch = {"loss": [1.0, 0.5]}  # no x series: the caller must say what the x values count
    with pytest.raises(ValueError, match="pass xlabel"):
        viz.plot_history(per_epoch)
    assert viz.plot_history(per_epoch, xlabel="epoch").axes[0].get_xlabel() == "epoch"
    from coursekit.engine import History

    history = History(step=[1, 2, 3, 4], loss=[3.0, 2.0, 1.5, 1.2], lr=[0.1] * 4, throughput_step=[2, 4],
                      images_per_sec=[10.0, 12.0], epoch_loss=[2.5, 1.35], metrics_step=[2, 4],
                      metrics={"embedding_std": [0.08, 0.09]})
    fig = viz.plot_history(history)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "lr", "images_per_sec", "epoch_loss", "embedding_std"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["optimizer step", "optimizer step", "optimizer step", "epoch", "optimizer step"]
    assert list(fig.axes[-1].lines[0].get_xdata()) == [2, 4]
    fig = viz.plot_history(history, keys=["loss", "embedding_std"],
                           references={"embedding_std": {"1/sqrt(D)": 0.09, "0: collapsed": 0.0}})
    assert [line.get_ydata()[0] for line in fig.axes[1].lines[1:]] == [0.09, 0.0]
    assert [text.get_text() for text in fig.axes[1].get_legend().get_texts()] == ["1/sqrt(D)", "0: collapsed"]
    assert fig.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="not plotted"):
        viz.plot_history(history, keys=["loss"], references={"embedding_std": {"0": 0.0}})
    assert _drawn(viz.plot_curves([1, 10, 100], {"ssl": [0.3, 0.5, 0.8], "scratch": [0.1, 0.3, 0.7]},
                                  "labels per class", "accuracy", logx=True))


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map(method):
    features, labels = torch.randn(24, 8, generator=torch.Generator().manual_seed(0)), torch.arange(24) % 3
    assert _drawn(viz.embedding_map(features, labels, method=method, class_names=["a", "b", "c"]))


def test_feature_pictures(shapes):
    generator = torch.Generator().manual_seed(0)
    assert _drawn(viz.similarity_matrix(torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)))
    same_direction = torch.ones(3, 4)
    fig = viz.similarity_matrix(same_direction, same_direction, names=["a", "b", "c"])
    assert "off-diagonal mean 1.00" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    assert fig.axes[1].get_ylabel() == "cosine similarity"  # the colorbar says what the colors mean
    attention = torch.rand(4, 3, 17, 17, generator=generator).softmax(dim=-1)
    fig = viz.attention_maps(shapes.images, attention, grid=(4, 4), outlines=shapes.masks > 0)
    assert _drawn(fig) and fig.axes[-1].get_ylabel() == "CLS attention (scaled per map)"
    snapshots = {f"step {s}": torch.rand(4, 4, 4, generator=generator) for s in (0, 10)}
    fig = viz.attention_snapshots(shapes.images, snapshots, outlines=shapes.masks > 0)
    assert _drawn(fig) and [ax.get_title() for ax in fig.axes[:3]] == ["image", "step 0", "step 10"]
    with pytest.raises(ValueError, match="same number"):
        viz.attention_snapshots(shapes.images, {"step 0": torch.rand(2, 4, 4)})
    with pytest.raises(ValueError, match="outlines"):
        viz.attention_maps(shapes.images, attention, grid=(4, 4), outlines=shapes.masks[:2] > 0)
    with pytest.raises(ValueError, match="L = 3\\*3"):
        viz.attention_maps(shapes.images, attention, grid=(3, 3))
    patches = torch.randn(4, 16, 8, generator=generator)
    assert _drawn(viz.patch_pca(patches, (4, 4), shapes.images))


def test_detection_and_segmentation_pictures(shapes):
    fig = viz.draw_boxes(shapes.images, shapes.boxes, shapes.box_labels, shapes.classes,
                         scores=[torch.rand(len(b)) for b in shapes.boxes], title="predictions")
    assert _drawn(fig) and sum(len(ax.patches) for ax in fig.axes) == sum(len(b) for b in shapes.boxes)
    # the title sits above the top row of images, not over it
    fig.canvas.draw()
    title_bottom = fig._suptitle.get_window_extent().y0
    assert title_bottom >= max(ax.get_window_extent().y1 for ax in fig.axes) - 1
    masks = shapes.masks.clone()
    masks[:, 0, :] = 255  # an ignored row is drawn too
    fig = viz.mask_overlay(shapes.images, masks, predictions=shapes.masks, num_classes=len(shapes.classes),
                           class_names=shapes.classes)
    assert _drawn(fig) and len(fig.axes) == 4 * 3
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == list(shapes.classes) + ["background (no color)", "ignored"]
    # the first column shows the image in its colors, the mask columns a gray copy under the class colors
    first, under_mask = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    assert np.ptp(np.asarray(first), axis=-1).max() > 0.1
    assert np.allclose(np.ptp(np.asarray(under_mask), axis=-1), 0)


def test_plot_history_can_share_one_y_scale():
    runs = {"short": [2.0, 1.0, 0.5], "long": [0.4, 0.3, 0.2]}
    fig = viz.plot_history(runs, xlabel="epoch", sharey=True)
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    assert viz.plot_history(runs, xlabel="epoch").axes[0].get_ylim() != viz.plot_history(runs, xlabel="epoch").axes[1].get_ylim()


def test_grouped_bars_draws_each_series_with_its_spread_and_an_axis_that_shows_the_gaps():
    series = {"raw pixels": ([0.70, 0.78], [0.01, 0.02]), "long run": ([0.74, 0.84], [0.02, 0.01])}
    figure = viz.grouped_bars(["10 per class", "100 per class"], series, ylabel="accuracy", title="probe")
    ax = figure.axes[0]
    heights = sorted(round(patch.get_height(), 2) for patch in ax.patches)
    assert heights == [0.70, 0.74, 0.78, 0.84]  # one bar per series and group, at its mean
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["raw pixels", "long run"]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["10 per class", "100 per class"]
    low, high = ax.get_ylim()
    assert 0.6 <= low < 0.69 and 0.85 <= high <= 0.9  # the lowest bar less its std, less 0.05; not from 0
    bars = [container for container in ax.containers if hasattr(container, "errorbar")]
    assert len(bars) == 2 and all(container.errorbar is not None for container in bars)  # each with its spread
    plt.close(figure)
    with pytest.raises(ValueError, match="one mean and one std per group"):
        viz.grouped_bars(["a", "b"], {"x": ([0.5], [0.1])}, ylabel="accuracy")


def test_grouped_bars_colors_stay_distinct_past_ten_series():
    series = {f"run {i}": ([0.5 + 0.01 * i, 0.6], [0.01, 0.01]) for i in range(12)}
    figure = viz.grouped_bars(["a", "b"], series, ylabel="accuracy")
    bars = [patch for patch in figure.axes[0].patches]
    assert len(bars) == 24
    colors = {tuple(bars[2 * i].get_facecolor()) for i in range(12)}  # one bar of each series
    assert len(colors) == 12
    plt.close(figure)
