"""coursekit.augment: per-sample randomness, reproducibility, ranges, agreement with torchvision."""

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from coursekit import augment as A
from tests.conftest import generator

N, SIZE = 6, 32


@pytest.fixture
def images() -> torch.Tensor:
    """Smooth, colorful float images in [0, 1] [N, 3, 32, 32] (no saturated pixels)."""
    g = generator(123)
    coarse = torch.rand(N, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=SIZE, mode="bilinear").clamp(0.02, 0.98)


def per_image(op, images, params):
    """Apply a torchvision functional op image by image with that image's parameters."""
    return torch.stack([op(img, *p) for img, *p in zip(images, *params)])


# ---------------------------------------------------------------------------------------------
# Each op equals torchvision's functional op with fixed parameters


def test_resized_crop_and_flip_match_torchvision(images):
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 24], [10, 2, 16, 16],
                          [0, 8, 24, 18], [4, 4, 28, 28], [16, 16, 16, 16]], dtype=torch.float32)
    flips = torch.tensor([False, True, False, True, True, False])
    out = A.resized_crop(images, boxes, 16, flips)
    assert out.shape == (N, 3, 16, 16)
    for img, (t, l, h, w), flip, got in zip(images, boxes.int().tolist(), flips, out):
        expected = TF.resized_crop(img, t, l, h, w, [16, 16], antialias=False)
        expected = TF.horizontal_flip(expected) if flip else expected
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ours, theirs, low, high", [
    (A.adjust_brightness, TF.adjust_brightness, 0.3, 1.8),
    (A.adjust_contrast, TF.adjust_contrast, 0.3, 1.8),
    (A.adjust_saturation, TF.adjust_saturation, 0.0, 1.8),
    (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
])
def test_color_ops_match_torchvision(images, ours, theirs, low, high):
    factors = torch.linspace(low, high, N)
    expected = per_image(lambda img, f: theirs(img, f.item()), images, [factors])
    torch.testing.assert_close(ours(images, factors), expected, atol=1e-5, rtol=0)


def test_color_jitter_is_the_four_ops_in_order(images):
    factors = torch.tensor([[1.2, 0.7, 1.5, 0.1]]).repeat(N, 1)
    expected = images
    for op, f in zip([TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation,
                      TF.adjust_hue], factors[0].tolist()):
        expected = op(expected, f)
    torch.testing.assert_close(A.color_jitter(images, factors), expected, atol=1e-5, rtol=0)


def test_grayscale_matches_torchvision_only_where_masked(images):
    mask = torch.tensor([True, False, True, False, False, True])
    out = A.random_grayscale(images, mask)
    gray = TF.rgb_to_grayscale(images, num_output_channels=3)
    torch.testing.assert_close(out[mask], gray[mask], atol=1e-6, rtol=0)
    assert torch.equal(out[~mask], images[~mask])


def test_gaussian_blur_matches_torchvision_per_sample_sigma(images):
    sigmas = torch.tensor([0.3, 0.8, 1.5, 2.0, 0.5, 1.0])
    out = A.gaussian_blur(images, sigmas, kernel_size=7)
    expected = per_image(lambda img, s: TF.gaussian_blur(img, [7, 7], [s.item()] * 2),
                         images, [sigmas])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_gaussian_blur_sigma_zero_is_identity(images):
    out = A.gaussian_blur(images, torch.zeros(N), kernel_size=5)
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


def test_solarize_matches_torchvision_only_where_masked(images):
    mask = torch.tensor([True, True, False, False, True, False])
    out = A.solarize(images, mask, threshold=0.5)
    torch.testing.assert_close(out[mask], TF.solarize(images[mask], 0.5))
    assert torch.equal(out[~mask], images[~mask])


def test_normalize_matches_torchvision_and_denormalize_inverts(images):
    out = A.normalize(images)
    expected = TF.normalize(images, list(A.IMAGENET_MEAN), list(A.IMAGENET_STD))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(A.denormalize(out), images)


# ---------------------------------------------------------------------------------------------
# Parameter sampling


def test_crop_boxes_lie_inside_with_scale_and_ratio_in_range():
    boxes = A.sample_crop_boxes(500, 32, 48, (0.08, 1.0), (3 / 4, 4 / 3), generator())
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32 + 1e-4).all() and (left + w <= 48 + 1e-4).all()
    area = h * w / (32 * 48)
    assert area.min() >= 0.08 - 1e-4 and area.max() <= 1 + 1e-4
    found = area < 32 * 32 * 4 / 3 / (32 * 48) - 1e-3  # boxes other than the fallback
    ratio = (w / h)[found]
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4


def test_crop_boxes_fall_back_to_a_central_crop_when_nothing_fits():
    # a crop covering 100% of a 1:4 image with ratio in [3/4, 4/3] never fits
    boxes = A.sample_crop_boxes(4, 64, 16, (1.0, 1.0), (3 / 4, 4 / 3), generator())
    torch.testing.assert_close(boxes[:, 2:], torch.tensor([[64 / 3, 16.0]]).expand(4, 2))


def test_parameters_differ_per_sample():
    view = A.ViewAugment(SIZE, jitter_p=1.0, blur_p=1.0)
    params = view.sample_params(N, SIZE, SIZE, generator())
    for name in ("boxes", "jitter", "blur"):
        assert torch.unique(params[name], dim=0).shape[0] == N, name


def test_probabilities_are_respected():
    mask = A.sample_mask(4000, 0.2, generator())
    assert abs(mask.float().mean().item() - 0.2) < 0.03
    jitter = A.sample_jitter(4000, 0.8, 0.4, 0.4, 0.4, 0.1, generator())
    identity = (jitter == torch.tensor([1.0, 1.0, 1.0, 0.0])).all(dim=1)
    assert abs(identity.float().mean().item() - 0.2) < 0.03
    assert jitter[:, :3].min() >= 0.6 and jitter[:, :3].max() <= 1.4
    assert jitter[:, 3].abs().max() <= 0.1


# ---------------------------------------------------------------------------------------------
# Recipes


RECIPES = [
    (A.SimCLRViews(SIZE), [SIZE] * 2),
    (A.BYOLViews(SIZE), [SIZE] * 2),
    (A.DINOViews(SIZE, local_size=16, n_local=3), [SIZE] * 2 + [16] * 3),
    (A.MAEViews(SIZE), [SIZE]),
]


@pytest.mark.parametrize("recipe, sizes", RECIPES, ids=lambda r: type(r).__name__)
def test_recipe_shapes_dtype_and_reproducibility(recipe, sizes, images):
    uint8 = (images * 255).round().to(torch.uint8)
    views = recipe(uint8, generator(0))
    assert [tuple(v.shape) for v in views] == [(N, 3, s, s) for s in sizes]
    assert all(v.dtype == torch.float32 for v in views)
    again = recipe(uint8, generator(0))
    assert all(torch.equal(a, b) for a, b in zip(views, again))
    other = recipe(uint8, generator(1))
    assert not any(torch.equal(a, b) for a, b in zip(views, other))


@pytest.mark.parametrize("recipe, sizes", RECIPES, ids=lambda r: type(r).__name__)
def test_recipe_outputs_stay_in_range_before_normalization(recipe, sizes, images):
    views = recipe(images, generator(3), normalized=False)
    for view in views:
        assert view.min() >= 0 and view.max() <= 1


def test_uint8_and_float_input_give_the_same_views(images):
    uint8 = (images * 255).round().to(torch.uint8)
    recipe = A.BYOLViews(SIZE)
    from_uint8 = recipe(uint8, generator(5))
    from_float = recipe(uint8.float() / 255, generator(5))
    for a, b in zip(from_uint8, from_float):
        torch.testing.assert_close(a, b)


def test_views_of_the_two_simclr_branches_differ(images):
    v1, v2 = A.SimCLRViews(SIZE)(images, generator(0))
    assert not torch.allclose(v1, v2)


def test_simclr_defaults_scale_with_image_size():
    small, large = A.SimCLRViews(32).views[0], A.SimCLRViews(224).views[0]
    assert small.blur_p == 0.0 and small.jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
    assert large.blur_p == 0.5 and large.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2))
    assert large.blur_sigma == pytest.approx((0.1, 2.0))


def test_byol_and_dino_views_are_asymmetric():
    byol = A.BYOLViews(SIZE).views
    assert (byol[0].blur_p, byol[0].solarize_p, byol[1].blur_p, byol[1].solarize_p) == \
        (1.0, 0.0, 0.1, 0.2)
    dino = A.DINOViews(SIZE, 16, 2).views
    assert [v.scale for v in dino] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 2
    assert [v.solarize_p for v in dino] == [0.0, 0.2, 0.0, 0.0]


@pytest.mark.parametrize("views", [A.BYOLViews, A.DINOViews])
def test_solarize_p_turns_a_bright_image_dark_only_when_asked(views):
    # a uniformly bright image (a garment's pixels): jitter off, so only solarization can darken it
    bright = torch.full((8, 3, SIZE, SIZE), 230, dtype=torch.uint8)
    kwargs = {"n_local": 0} if views is A.DINOViews else {}
    for solarize_p, expected in ((0.0, 230 / 255), (1.0, 1 - 230 / 255)):
        second = views(SIZE, jitter_strength=0.0, solarize_p=solarize_p, **kwargs)(bright, generator(),
                                                                                    normalized=False)[1]
        assert torch.allclose(second, torch.full_like(second, expected), atol=1e-3)


def test_dino_demo_recipe_does_not_solarize_gray_garments():
    from coursekit.recipes import get_recipe

    recipe = get_recipe("dino", "demo")
    assert [view.solarize_p for view in recipe.build_views().views] == [0.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("bad, error, words", [
    (torch.zeros(3, SIZE, SIZE), ValueError, "4-D"),
    (torch.zeros(2, 1, SIZE, SIZE), ValueError, "3 channels"),
    (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.int64), TypeError, "uint8 or float"),
    ([[0.0]], TypeError, "torch.Tensor"),
])
def test_bad_images_raise_clear_errors(bad, error, words):
    with pytest.raises(error, match=words):
        A.SimCLRViews(SIZE)(bad, generator())


def test_bad_arguments_raise_clear_errors(images):
    with pytest.raises(TypeError, match="generator"):
        A.MAEViews(SIZE)(images, 0)
    with pytest.raises(ValueError, match="image_size"):
        A.SimCLRViews(0)
    with pytest.raises(ValueError, match="n_local"):
        A.DINOViews(SIZE, 16, -1)
    with pytest.raises(ValueError, match="scale must be"):
        A.ViewAugment(SIZE, scale=(0.5, 0.1))
    with pytest.raises(ValueError, match="gray_p"):
        A.ViewAugment(SIZE, gray_p=1.5)
    with pytest.raises(ValueError, match="kernel_size"):
        A.gaussian_blur(images, torch.ones(N), kernel_size=4)
