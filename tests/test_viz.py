"""coursekit.viz: every picture function draws tiny inputs into a Figure (Agg backend)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from coursekit import viz  # noqa: E402
from coursekit.augment import normalize  # noqa: E402
from coursekit.data import make_shapes  # noqa: E402


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(4, image_size=32, seed=1, num_objects=(1, 2))


@pytest.fixture(autouse=True)
def close_figures():
    """After each test, every figure it made also renders (matplotlib checks some artists only when
    drawing), then is closed."""
    yield
    for number in plt.get_fignums():
        plt.figure(number).canvas.draw()
    plt.close("all")


def _rgb(images: torch.Tensor) -> np.ndarray:
    """uint8 [N, 3, H, W] -> what imshow should hold: float [N, H, W, 3] in [0, 1]."""
    return images.permute(0, 2, 3, 1).numpy() / 255


def _grid(fig, rows: int, cols: int) -> list[list]:
    """The figure's first rows * cols axes as rows (plt.subplots adds them row by row)."""
    return [fig.axes[row * cols:(row + 1) * cols] for row in range(rows)]


def _scaled(maps: torch.Tensor) -> np.ndarray:
    """Min-max scaling of one map to [0, 1], as the attention pictures promise."""
    return ((maps - maps.min()) / (maps.max() - maps.min())).numpy()


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
    expected, expected_local = _rgb(shapes.images), _rgb(shapes.images[..., :16, :16])

    fig = viz.show_images(shapes.images, shapes.labels, shapes.classes, ncols=2)
    assert len(fig.axes) == 4 and all(len(ax.images) == 1 for ax in fig.axes)  # 2 x 2, one image each
    assert [ax.get_title() for ax in fig.axes] == [shapes.classes[label] for label in shapes.labels.tolist()]
    for ax, image in zip(fig.axes, expected):
        np.testing.assert_allclose(ax.images[0].get_array(), image, atol=1e-6)

    fig = viz.augmentation_grid(shapes.images, views, ["global", "local"])
    rows = _grid(fig, 4, 3)
    assert len(fig.axes) == 4 * 3 and all(len(ax.images) == 1 for ax in fig.axes)  # original + 2 views per image
    assert [ax.get_title() for ax in rows[0]] == ["original", "global", "local"]
    assert all(ax.get_title() == "" for row in rows[1:] for ax in row)
    for row, (ax_original, ax_global, ax_local) in enumerate(rows):
        np.testing.assert_allclose(ax_original.images[0].get_array(), expected[row], atol=1e-6)
        np.testing.assert_allclose(ax_global.images[0].get_array(), expected[row], atol=1e-5)  # normalization undone
        np.testing.assert_allclose(ax_local.images[0].get_array(), expected_local[row], atol=1e-5)  # at its own size

    fig = viz.mae_reconstructions(shapes.images, shapes.images // 2, views[0])
    rows = _grid(fig, 4, 3)
    assert len(fig.axes) == 4 * 3 and [ax.get_title() for ax in rows[0]] == ["original", "masked", "reconstruction"]
    for row, columns in enumerate(rows):
        for ax, image in zip(columns, (expected[row], _rgb(shapes.images // 2)[row], expected[row])):
            np.testing.assert_allclose(ax.images[0].get_array(), image, atol=1e-5)

    indices = torch.tensor([[0, 1], [2, 3]])  # each query finds one image of its class and one of another
    fig = viz.retrieval_grid(shapes.images[:2], shapes.images, indices, shapes.labels[:2], shapes.labels)
    rows = _grid(fig, 2, 3)
    assert len(fig.axes) == 2 * 3 and [ax.get_title() for ax in rows[0]] == ["query", "#1", "#2"]
    for row, (query, *retrieved) in enumerate(rows):
        np.testing.assert_allclose(query.images[0].get_array(), expected[row], atol=1e-6)
        for ax, index in zip(retrieved, indices[row].tolist()):
            np.testing.assert_allclose(ax.images[0].get_array(), expected[index], atol=1e-6)
            frame = "tab:green" if shapes.labels[index] == shapes.labels[row] else "tab:red"
            assert all(to_rgba(spine.get_edgecolor()) == to_rgba(frame) for spine in ax.spines.values())
    frames = {to_rgba(ax.spines["top"].get_edgecolor()) for row in rows for ax in row[1:]}
    assert frames == {to_rgba("tab:green"), to_rgba("tab:red")}  # both a match and a miss are drawn
    with pytest.raises(ValueError, match="same number of images"):
        viz.mae_reconstructions(shapes.images, shapes.images[:2], shapes.images)


def test_removed_patches_are_drawn_in_hatched_gray_not_black(shapes):
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)  # black images, like Fashion-MNIST's background
    images[:, :, 4:, 4:] = 200
    tokens = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0]])  # 2 x 2 patches of 4 x 4 pixels, 1 = removed
    removed = tokens.reshape(2, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2).bool()  # [N, H, W]
    expected = _rgb(images)
    expected[removed.numpy()] = 0.5  # mid-gray where removed; the black visible pixels stay black
    fig = viz.masked_patches(images, tokens, title="what the encoder sees")
    rows = _grid(fig, 2, 2)  # the images above, what the encoder sees below
    for i in range(2):
        np.testing.assert_allclose(rows[0][i].images[0].get_array(), _rgb(images)[i], atol=1e-6)
        np.testing.assert_allclose(rows[1][i].images[0].get_array(), expected[i], atol=1e-6)
        assert len(rows[1][i].collections) == 1 and list(rows[1][i].collections[0].hatches) == ["////"]
    assert (expected[~removed.numpy()] == 0).any()  # black pixels remain where patches are visible, unlike removed
    plt.close(fig)
    masked = images * (1 - removed[:, None].to(torch.uint8))
    for mask in (removed[:, None].float(), removed, tokens):  # pixel masks [N, 1, H, W], [N, H, W]; tokens [N, L]
        fig = viz.mae_reconstructions(images, masked, images, mask=mask)
        rows = _grid(fig, 2, 3)
        assert [ax.get_title() for ax in rows[0]] == ["original", "masked (gray: removed)", "reconstruction"]
        for i in range(2):
            np.testing.assert_allclose(rows[i][1].images[0].get_array(), expected[i], atol=1e-6)
            assert len(rows[i][1].collections) == 1  # the hatching
        plt.close(fig)
    with pytest.raises(ValueError, match="square grid"):
        viz.masked_patches(images, torch.ones(2, 3))


def test_curve_pictures():
    history = {"step": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "lr": [0.1, 0.05, 0.0]}
    fig = viz.plot_history(history, ylabels={"loss": "NT-Xent loss (nats)"})
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "learning rate"]
    for ax, key in zip(fig.axes, ["loss", "lr"]):  # one line per panel: the series against the steps
        assert len(ax.lines) == 1
        assert list(ax.lines[0].get_xdata()) == history["step"] and list(ax.lines[0].get_ydata()) == history[key]
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
    assert [ax.get_title() for ax in fig.axes] == ["training loss", "learning rate", "training speed (images per second)",
                                                   "training loss, mean per epoch", "spread of the embeddings"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["optimizer step", "optimizer step", "optimizer step", "epoch", "optimizer step"]
    assert list(fig.axes[-1].lines[0].get_xdata()) == [2, 4]
    fig = viz.plot_history(history, keys=["loss", "embedding_std"],
                           references={"embedding_std": {"1/sqrt(D)": 0.09, "0: collapsed": 0.0}})
    assert [line.get_ydata()[0] for line in fig.axes[1].lines[1:]] == [0.09, 0.0]
    assert [text.get_text() for text in fig.axes[1].get_legend().get_texts()] == ["1/sqrt(D)", "0: collapsed"]
    assert fig.axes[0].get_legend() is None
    fig = viz.plot_history(history, keys=["loss"], ylabels={"loss": "MSE on removed patches (normalized pixels)"})
    assert fig.axes[0].get_ylabel() == "MSE on removed patches\n(normalized pixels)"  # wrapped, not cut off
    with pytest.raises(ValueError, match="not plotted"):
        viz.plot_history(history, keys=["loss"], references={"embedding_std": {"0": 0.0}})
    curves = {"ssl": [0.3, 0.5, 0.8], "scratch": [0.1, 0.3, 0.7]}
    fig = viz.plot_curves([1, 10, 100], curves, "labels per class", "accuracy", logx=True)
    ax, = fig.axes
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines] == [([1, 10, 100], y) for y in curves.values()]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == list(curves)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_xscale()) == ("labels per class", "accuracy", "log")


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map(method):
    features, labels = torch.randn(24, 8, generator=torch.Generator().manual_seed(0)), torch.arange(24) % 3
    fig = viz.embedding_map(features, labels, method=method, class_names=["a", "b", "c"])
    ax, = fig.axes
    assert [len(points.get_offsets()) for points in ax.collections] == [8, 8, 8]  # one scatter per class, every point
    assert np.isfinite(np.concatenate([points.get_offsets() for points in ax.collections])).all()
    assert len({tuple(points.get_facecolor()[0]) for points in ax.collections}) == 3  # a color per class
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "class" and [t.get_text() for t in legend.get_texts()] == ["a", "b", "c"]
    assert ax.get_title() == f"{method.upper()} of 8-d features"
    assert (ax.get_xlabel(), ax.get_ylabel()) == (f"{method.upper()} component 1", f"{method.upper()} component 2")
    fig.canvas.draw()  # the legend lies beside the points, not over them
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_feature_pictures(shapes):
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=generator), torch.randn(6, 4, generator=generator)
    fig = viz.similarity_matrix(z1, z2)
    cosines = (z1[:, None] * z2[None]).sum(-1) / (z1.norm(dim=1)[:, None] * z2.norm(dim=1)[None])
    assert len(fig.axes) == 2 and len(fig.axes[0].images) == 1  # the matrix and its colorbar
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), cosines.numpy(), atol=1e-6)
    assert f"diagonal mean {cosines.diagonal().mean():.2f}" in fig.axes[0].get_title()
    same_direction = torch.ones(3, 4)
    fig = viz.similarity_matrix(same_direction, same_direction, names=["a", "b", "c"])
    assert "off-diagonal mean 1.00" in fig.axes[0].get_title()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b", "c"]
    assert fig.axes[1].get_ylabel() == "cosine similarity"  # the colorbar says what the colors mean
    attention = torch.rand(4, 3, 17, 17, generator=generator).softmax(dim=-1)
    fig = viz.attention_maps(shapes.images, attention, grid=(4, 4), outlines=shapes.masks > 0)
    assert fig.axes[-1].get_ylabel() == "CLS attention (scaled per map)"
    rows = _grid(fig, 4, 5)  # image, mean of the 3 heads, each head; then the colorbar
    assert len(fig.axes) == 4 * 5 + 1
    assert [ax.get_title() for ax in rows[0]] == ["image", "mean of heads", "head 0", "head 1", "head 2"]
    cls_to_patches = attention[:, :, 0, 1:].reshape(4, 3, 4, 4)
    for row, (image, *maps) in enumerate(rows):
        np.testing.assert_allclose(image.images[0].get_array(), _rgb(shapes.images)[row], atol=1e-6)
        expected = [cls_to_patches[row].mean(dim=0)] + list(cls_to_patches[row])
        for ax, values in zip(maps, expected):
            np.testing.assert_allclose(ax.images[0].get_array(), _scaled(values), atol=1e-5)
            assert len(ax.lines) == 3 + 3  # white lines at the inner patch edges of a 4 x 4 grid
            assert len(ax.collections) == 1  # the object's outline
    snapshots = {f"step {s}": torch.rand(4, 4, 4, generator=generator) for s in (0, 10)}
    fig = viz.attention_snapshots(shapes.images, snapshots, outlines=shapes.masks > 0)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "step 0", "step 10"]
    assert len(fig.axes) == 4 * 3 + 1 and fig.axes[-1].get_ylabel() == "CLS attention (scaled per map)"
    for row, (image, *maps) in enumerate(_grid(fig, 4, 3)):
        np.testing.assert_allclose(image.images[0].get_array(), _rgb(shapes.images)[row], atol=1e-6)
        for ax, values in zip(maps, snapshots.values()):
            np.testing.assert_allclose(ax.images[0].get_array(), _scaled(values[row]), atol=1e-5)
            assert len(ax.collections) == 1  # the object's outline
    with pytest.raises(ValueError, match="same number"):
        viz.attention_snapshots(shapes.images, {"step 0": torch.rand(2, 4, 4)})
    with pytest.raises(ValueError, match="outlines"):
        viz.attention_maps(shapes.images, attention, grid=(4, 4), outlines=shapes.masks[:2] > 0)
    with pytest.raises(ValueError, match="L = 3\\*3"):
        viz.attention_maps(shapes.images, attention, grid=(3, 3))
    patches = torch.randn(4, 16, 8, generator=generator)
    fig = viz.patch_pca(patches, (4, 4), shapes.images)
    images, maps = _grid(fig, 2, 4)  # the images above, one map of patch colors below each
    assert len(fig.axes) == 2 * 4 and all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.get_suptitle() == ("patch features: first 3 principal components as colors\n"
                                  "(top: images; bottom: one square per patch, black = background)")
    for i, (image, colors) in enumerate(zip(images, maps)):
        np.testing.assert_allclose(image.images[0].get_array(), _rgb(shapes.images)[i], atol=1e-6)
        patch_colors = np.asarray(colors.images[0].get_array())
        assert patch_colors.shape == (4, 4, 3) and 0 <= patch_colors.min() and patch_colors.max() <= 1


def test_detection_and_segmentation_pictures(shapes):
    scores = [torch.rand(len(b)) for b in shapes.boxes]
    fig = viz.draw_boxes(shapes.images, shapes.boxes, shapes.box_labels, shapes.classes, scores=scores,
                         title="predictions")
    assert sum(len(ax.patches) for ax in fig.axes) == sum(len(b) for b in shapes.boxes)
    assert len(fig.axes) == 4 and fig.get_suptitle() == "predictions"
    for ax, image, boxes, labels, image_scores in zip(fig.axes, _rgb(shapes.images), shapes.boxes,
                                                      shapes.box_labels, scores):
        np.testing.assert_allclose(ax.images[0].get_array(), image, atol=1e-6)
        drawn = [(*patch.get_xy(), patch.get_x() + patch.get_width(), patch.get_y() + patch.get_height())
                 for patch in ax.patches]
        assert drawn == [tuple(box) for box in boxes.tolist()]  # xyxy, in pixel-edge coordinates
        assert [text.get_text() for text in ax.texts] == [
            f"{shapes.classes[label]} {score:.2f}" for label, score in zip(labels.tolist(), image_scores.tolist())]
    # the title sits above the top row of images, not over it
    fig.canvas.draw()
    title_bottom = fig._suptitle.get_window_extent().y0
    assert title_bottom >= max(ax.get_window_extent().y1 for ax in fig.axes) - 1
    masks = shapes.masks.clone()
    masks[:, 0, :] = 255  # an ignored row is drawn too
    fig = viz.mask_overlay(shapes.images, masks, predictions=shapes.masks, num_classes=len(shapes.classes),
                           class_names=shapes.classes)
    assert len(fig.axes) == 4 * 3
    rows = _grid(fig, 4, 3)
    assert [ax.get_title() for ax in rows[0]] == ["image", "ground truth", "prediction"]
    assert all([len(ax.images) for ax in row] == [1, 2, 2] for row in rows)  # each mask over its own backdrop
    for row, (_, truth, prediction) in enumerate(rows):
        for ax, mask in ((truth, masks[row]), (prediction, shapes.masks[row])):
            overlay = np.asarray(ax.images[1].get_array())
            assert overlay.shape == (32, 32, 4)
            assert ((overlay[..., 3] > 0) == (mask > 0).numpy()).all()  # background is not colored
            colors = {value: {tuple(c) for c in overlay[(mask == value).numpy()]} for value in mask.unique().tolist()}
            assert all(len(shades) == 1 for shades in colors.values())  # one color per class
            assert len({shades.pop() for shades in colors.values()}) == len(colors)  # a different one each
        np.testing.assert_allclose(truth.images[1].get_array()[0, :, :3], 0.6)  # the ignored row is gray
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == list(shapes.classes) + ["background (no color)", "ignored"]
    # the first column shows the image in its colors, the mask columns a gray copy under the class colors
    first, under_mask = fig.axes[0].images[0].get_array(), fig.axes[1].images[0].get_array()
    assert np.ptp(np.asarray(first), axis=-1).max() > 0.1
    assert np.allclose(np.ptp(np.asarray(under_mask), axis=-1), 0)


def test_plot_history_titles_its_panels_in_words():
    from coursekit.engine import History

    history = History(step=[1, 2], loss=[3.0, 2.0], lr=[0.1, 0.1], metrics_step=[1, 2],
                      metrics={"embedding_std": [0.08, 0.09], "teacher_entropy": [4.1, 3.0],
                               "teacher_student_kl": [0.2, 0.5], "some_new_statistic": [1.0, 2.0]})
    fig = viz.plot_history(history, keys=["loss", "embedding_std", "teacher_entropy", "teacher_student_kl",
                                          "some_new_statistic"])
    titles = [fig.axes[i].get_title() for i in range(5)]
    assert titles == ["training loss", "spread of the embeddings", "teacher entropy", "teacher-student KL divergence",
                      "some new statistic"]  # an unknown series: its name, underscores as spaces
    assert not any("_" in title for title in titles)
    plt.close(fig)
    fig = viz.plot_history(history, keys=["loss", "lr"], titles={"loss": "DINO loss"})
    assert [fig.axes[i].get_title() for i in range(2)] == ["DINO loss", "learning rate"]  # the caller's title wins
    plt.close(fig)


def test_plot_curves_can_keep_the_legend_off_the_data_and_style_families_of_curves():
    curves = {"a probe": [0.3, 0.5, 0.8], "b probe": [0.2, 0.4, 0.7], "a kNN": [0.1, 0.3, 0.6]}
    fig = viz.plot_curves([1, 10, 100], curves, "labels per class", "accuracy", logx=True, legend_outside=True,
                          styles={"a kNN": {"linestyle": "--", "marker": "s"}}, ylim=(0, None))
    ax, = fig.axes
    assert [line.get_linestyle() for line in ax.lines] == ["-", "-", "--"]
    assert [line.get_marker() for line in ax.lines] == ["o", "o", "s"]
    assert ax.get_ylim()[0] == 0
    fig.canvas.draw()  # the legend lies right of the axes, not over the curves
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    plt.close(fig)
    fig = viz.plot_curves([0, 1], {"online": [0.0, 1.0]}, "step", "value", markers=False)
    assert fig.axes[0].lines[0].get_marker() in ("", "None")
    plt.close(fig)
    with pytest.raises(ValueError, match="not curves"):
        viz.plot_curves([0, 1], {"online": [0.0, 1.0]}, "step", "value", styles={"offline": {}})


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


def test_grouped_bars_shares_hues_where_asked_and_draws_the_reference_level():
    series = {"raw pixels": ([0.60, 0.80], [0.01, 0.01]), "simclr, 5 min": ([0.62, 0.77], [0.01, 0.01]),
              "simclr, 1 hour": ([0.70, 0.83], [0.01, 0.01])}
    figure = viz.grouped_bars(["10", "100"], series, ylabel="accuracy", colors={"simclr, 5 min": "#9ecae1",
                              "simclr, 1 hour": "#08519c"}, hatches={"simclr, 1 hour": "//"}, reference="raw pixels")
    ax = figure.axes[0]
    bars = {container.get_label(): container for container in ax.containers if hasattr(container, "patches")}
    assert matplotlib.colors.to_hex(bars["simclr, 5 min"].patches[0].get_facecolor()) == "#9ecae1"
    assert bars["simclr, 1 hour"].patches[1].get_hatch() == "//" and bars["raw pixels"].patches[0].get_hatch() is None
    horizontal = [segment for collection in ax.collections for segment in collection.get_segments()
                  if segment[0][1] == segment[1][1]]  # the error bars are vertical
    assert sorted(round(float(segment[0][1]), 2) for segment in horizontal) == [0.60, 0.80]  # one line per group
    assert "raw pixels (level)" in [text.get_text() for text in ax.get_legend().get_texts()]
    plt.close(figure)
    with pytest.raises(ValueError, match="reference"):
        viz.grouped_bars(["a"], {"x": ([0.5], [0.1])}, ylabel="accuracy", reference="y")
