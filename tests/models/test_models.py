"""coursekit.models: backbone shapes and interface, ViT details, heads, bad input."""

import pytest
import torch
import torch.nn as nn

from coursekit.models import (DINOHead, PredictionHead, ProjectionHead, ResNet, VisionTransformer,
                              build_backbone)
from tests.conftest import tiny_backbone


def tiny_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)  # initialization draws from the global generator
    return tiny_backbone("vit_tiny", 32, **{"embed_dim": 24, "num_heads": 3, **kwargs})


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# ResNet


@pytest.mark.parametrize("size, grid", [(32, 4), (16, 2), (24, 3)])
def test_resnet_shapes_and_features(size, grid):
    model = build_backbone("resnet18", width=8).eval()
    assert model.feature_dim == 64
    x = images(2, size)
    assert model(x).shape == (2, 64)
    features = model.forward_features(x)
    assert features["grid"] == (grid, grid)
    assert features["patch"].shape == (2, grid * grid, 64)
    torch.testing.assert_close(features["global"], features["patch"].mean(dim=1))
    torch.testing.assert_close(features["global"], model(x))


def test_resnet_has_cifar_stem():
    model = build_backbone("resnet18", width=8)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_resnet18_parameter_count():
    model = build_backbone("resnet18")  # width 64, CIFAR stem, no classifier
    n_params = sum(p.numel() for p in model.parameters())
    assert 11.1e6 < n_params < 11.25e6
    assert model.feature_dim == 512


def test_resnet_channels_last_gives_the_same_features():
    model = build_backbone("resnet18", width=8).eval()
    x = images()
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected,
                               atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# ViT


@pytest.mark.parametrize("name, dim, heads", [("vit_tiny", 192, 3), ("vit_small", 384, 6)])
def test_vit_presets(name, dim, heads):
    model = build_backbone(name, img_size=32, patch_size=8, depth=1)
    assert model.feature_dim == dim and model.num_heads == heads
    assert len(build_backbone(name, img_size=32, patch_size=8).blocks) == 12


@pytest.mark.parametrize("patch_size", [4, 8])
def test_vit_shapes_and_attention(patch_size):
    model = tiny_vit(patch_size=patch_size).eval()
    grid = 32 // patch_size
    x = images()
    features = model.forward_features(x, return_attention=True)
    assert features["global"].shape == (2, 24)
    assert features["patch"].shape == (2, grid * grid, 24)
    assert features["grid"] == (grid, grid)
    attention = features["attention"]
    assert attention.shape == (2, 3, 1 + grid * grid, 1 + grid * grid)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 3, 1 + grid * grid))
    assert (attention >= 0).all()
    torch.testing.assert_close(features["global"], model(x), atol=1e-5, rtol=1e-5)
    assert "attention" not in model.forward_features(x)


def test_vit_attention_path_equals_fused_path():
    model = tiny_vit().eval()
    x = images()
    with_attention = model.forward_features(x, return_attention=True)
    without = model.forward_features(x)
    torch.testing.assert_close(with_attention["patch"], without["patch"], atol=1e-5, rtol=1e-5)


def test_vit_embed_and_encode_compose_to_forward():
    model = tiny_vit().eval()
    x = images()
    tokens = model.embed(x)  # [N, L, D]
    assert tokens.shape == (2, 16, 24)
    encoded = model.encode(tokens)
    assert encoded.shape == (2, 17, 24)
    torch.testing.assert_close(encoded[:, 0], model(x))
    assert model.encode(tokens[:, :4]).shape == (2, 5, 24)  # a subset, as MAE encodes


def test_vit_position_embedding_interpolation():
    model = tiny_vit(patch_size=4).eval()
    pos = model.pos_embed[:, 1:]
    assert torch.equal(model.patch_pos_embed((8, 8)), pos)  # training size: untouched
    big = model.patch_pos_embed((16, 16))
    assert big.shape == (1, 256, 24)
    # bicubic upsampling: the mean over the grid stays close to the learned one
    torch.testing.assert_close(big.mean(dim=1), pos.mean(dim=1), atol=2e-3, rtol=0)
    features = model.forward_features(images(2, 64))
    assert features["patch"].shape == (2, 256, 24) and features["grid"] == (16, 16)
    assert model.forward_features(images(2, 48, seed=1))["grid"] == (12, 12)


def test_vit_position_embeddings_at_training_size_are_used_as_learned():
    model = tiny_vit().eval()
    x = images()
    with torch.no_grad():
        model.pos_embed.add_(1.0)
    tokens = model.patch_embed(x) + model.pos_embed[:, 1:]
    torch.testing.assert_close(model.embed(x), tokens)


# ---------------------------------------------------------------------------------------------
# Heads


def test_projection_and_prediction_heads():
    head = ProjectionHead(16, 32, 8, num_layers=3)
    assert head(torch.randn(4, 16)).shape == (4, 8)
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 2
    no_bn = ProjectionHead(16, 32, 8, num_layers=2, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in no_bn.modules())
    predictor = PredictionHead(8, 32, 8)
    assert predictor(torch.randn(4, 8)).shape == (4, 8)


def test_dino_head_last_layer_is_weight_normalized():
    head = DINOHead(24, 50, hidden_dim=32, bottleneck_dim=16)
    weight = head.last_layer.weight  # [50, 16], computed from weight_g and weight_v
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(50))
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad
    assert DINOHead(24, 50, 32, 16, norm_last_layer=False).last_layer.parametrizations \
        .weight.original0.requires_grad
    out = head(torch.randn(4, 24))
    assert out.shape == (4, 50) and out.abs().max() <= 1 + 1e-5  # cosine logits
    out.sum().backward()
    assert head.last_layer.parametrizations.weight.original1.grad is not None
    head.cancel_last_layer_gradients()
    assert all(p.grad is None for p in head.last_layer.parameters())
    assert head.mlp[0].weight.grad is not None


# ---------------------------------------------------------------------------------------------
# Bad input


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet18, vit_tiny, vit_small"):
        build_backbone("resnet50")


@pytest.mark.parametrize("model", [ResNet(width=4), tiny_vit()], ids=["resnet", "vit"])
@pytest.mark.parametrize("bad, error, words", [
    (torch.zeros(3, 32, 32), ValueError, "4-D"),
    (torch.zeros(1, 1, 32, 32), ValueError, "3 channels"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, "float"),
])
def test_bad_images_raise_clear_errors(model, bad, error, words):
    with pytest.raises(error, match=words):
        model(bad)


def test_patch_size_must_divide_the_image():
    with pytest.raises(ValueError, match="patch_size 5 must divide img_size 32"):
        tiny_vit(patch_size=5)
    with pytest.raises(ValueError, match="patch_size 8 must divide the image size.*36x36"):
        tiny_vit()(images(1, 36))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_heads"):
        tiny_vit(num_heads=5)
    with pytest.raises(ValueError, match="depth"):
        tiny_vit(depth=0)
    with pytest.raises(ValueError, match="width"):
        ResNet(width=0)
    with pytest.raises(ValueError, match="num_layers"):
        ProjectionHead(8, 8, 8, num_layers=0)
    with pytest.raises(ValueError, match="return_attention"):
        ResNet(width=4).forward_features(images(), return_attention=True)
