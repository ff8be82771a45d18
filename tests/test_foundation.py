"""coursekit.foundation: official DINOv2 keys, equivalence with timm, weights loading (offline)."""

import math

import pytest
import torch
import torch.nn.functional as F

from coursekit import foundation
from coursekit.foundation import (
    WeightsUnavailableError,
    create_dinov2,
    load_dinov2,
    prepare_images,
    weights_cache_path,
    weights_url,
)


def official_vits14_shapes() -> dict[str, tuple[int, ...]]:
    """The keys and shapes of dinov2_vits14_pretrain.pth, written from the official layout."""
    D, hidden = 384, 4 * 384
    shapes = {
        "cls_token": (1, 1, D),
        "pos_embed": (1, 37 * 37 + 1, D),  # pretrained at 518 px = 37 patches of 14
        "mask_token": (1, D),
        "patch_embed.proj.weight": (D, 3, 14, 14),
        "patch_embed.proj.bias": (D,),
        "norm.weight": (D,),
        "norm.bias": (D,),
    }
    for i in range(12):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "ls1.gamma": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "mlp.fc1.weight": (hidden, D), b + "mlp.fc1.bias": (hidden,),
            b + "mlp.fc2.weight": (D, hidden), b + "mlp.fc2.bias": (D,),
            b + "ls2.gamma": (D,),
        })
    return shapes


def shapes_of(state_dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def official_interpolate_pos_encoding(pos_embed, H, W, patch_size=14, offset=0.1, antialias=False):
    """DinoVisionTransformer.interpolate_pos_encoding of facebookresearch/dinov2, nearly verbatim
    (its ``w, h`` are the image's dims 2 and 3), as an independent reference."""
    w, h = H, W
    N = pos_embed.shape[1] - 1
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:].float()
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch_size, h // patch_size
    M = int(math.sqrt(N))
    sx, sy = float(w0 + offset) / M, float(h0 + offset) / M
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
        scale_factor=(sx, sy), mode="bicubic", antialias=antialias,
    )
    assert (w0, h0) == patch_pos_embed.shape[-2:]
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.fixture(scope="module")
def timm_vits14():
    """timm's independent DINOv2 ViT-S/14 (518 px pos_embed, dynamic sizes), random weights with
    LayerScale gammas, norms and biases spread out so that every block matters."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, dynamic_img_size=True
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma") or ("norm" in name and name.endswith("weight")):
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    return model.eval()


def load_timm_weights(model, timm_model):
    """timm's state dict has every official key but mask_token (which it does not use)."""
    state_dict = dict(timm_model.state_dict(), mask_token=torch.randn(1, model.embed_dim))
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def test_state_dict_matches_official_layout():
    assert shapes_of(create_dinov2("dinov2_vits14").state_dict()) == official_vits14_shapes()


def test_timm_reference_has_the_official_layout_but_mask_token(timm_vits14):
    expected = {k: v for k, v in official_vits14_shapes().items() if k != "mask_token"}
    assert shapes_of(timm_vits14.state_dict()) == expected


def test_giant_uses_official_swiglu_names():
    with torch.device("meta"):  # shapes only, no 1.1B-parameter allocation
        shapes = shapes_of(create_dinov2("dinov2_vitg14").state_dict())
    assert shapes["blocks.39.mlp.w12.weight"] == (2 * 4096, 1536)
    assert shapes["blocks.39.mlp.w3.weight"] == (1536, 4096)
    assert shapes["pos_embed"] == (1, 1370, 1536)


@pytest.mark.parametrize("size", [(56, 56), (70, 98)])
def test_matches_timm_with_timm_interpolation(timm_vits14, size):
    """With timm's resampling (antialias, exact size) the whole network agrees with timm's."""
    timm_like = create_dinov2("dinov2_vits14", interpolate_antialias=True, interpolate_offset=0.0)
    model = load_timm_weights(timm_like, timm_vits14)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        reference = timm_vits14.forward_features(x)  # [N, 1 + L, D], after the final norm
        features = model.forward_features(x)
    h, w = size[0] // 14, size[1] // 14
    assert features["grid"] == (h, w)
    assert features["patch"].shape == (2, h * w, 384)
    torch.testing.assert_close(features["global"], reference[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features["patch"], reference[:, 1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(56, 56), (70, 98), (518, 532)])
def test_position_embeddings_follow_official_code(size):
    model = create_dinov2("dinov2_vits14")
    h, w = size[0] // 14, size[1] // 14
    with torch.no_grad():
        ours = model.interpolate_pos_encoding(h, w)
    torch.testing.assert_close(ours, official_interpolate_pos_encoding(model.pos_embed.detach(), *size))
    assert ours.shape == (1, 1 + h * w, 384)


def test_pretraining_size_keeps_position_embeddings():
    model = create_dinov2("dinov2_vits14")
    assert model.interpolate_pos_encoding(37, 37) is model.pos_embed


def test_default_model_is_timm_blocks_with_official_interpolation(timm_vits14):
    """The default (official) model equals timm's network fed with the officially resampled grid;
    timm's own resampling differs (antialias, no offset), so the outputs differ from its."""
    timm = pytest.importorskip("timm")
    model = load_timm_weights(create_dinov2("dinov2_vits14"), timm_vits14)
    fixed = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=56).eval()
    state_dict = timm_vits14.state_dict()
    with torch.no_grad():
        state_dict["pos_embed"] = official_interpolate_pos_encoding(timm_vits14.pos_embed, 56, 56)
    fixed.load_state_dict(state_dict, strict=True)
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        ours = model.forward_features(x)
        reference = fixed.forward_features(x)
        timm_dynamic = timm_vits14.forward_features(x)
    torch.testing.assert_close(ours["global"], reference[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours["patch"], reference[:, 1:], atol=1e-5, rtol=1e-5)
    assert (ours["patch"] - timm_dynamic[:, 1:]).abs().max() > 1e-3


def test_backbone_interface_and_attention():
    model = create_dinov2("dinov2_vits14").eval()
    x = torch.randn(2, 3, 42, 56)
    with torch.no_grad():
        plain = model.forward_features(x)
        features = model.forward_features(x, return_attention=True)
        cls = model(x)
        encoded = model.encode(model.embed(x))
    assert model.feature_dim == 384 and "attention" not in plain
    assert features["grid"] == (3, 4)
    attention = features["attention"]
    assert attention.shape == (2, 6, 13, 13)
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 6, 13))
    torch.testing.assert_close(features["global"], plain["global"])
    torch.testing.assert_close(cls, plain["global"])
    torch.testing.assert_close(encoded[:, 1:], plain["patch"])


def test_masks_replace_patches_by_mask_token():
    model = create_dinov2("dinov2_vits14")
    with torch.no_grad():
        model.mask_token.normal_()
        masks = torch.tensor([[True, False, False, True]])
        tokens = model.embed(torch.randn(1, 3, 28, 28), masks=masks)  # [1, 4, D]
        pos = model.interpolate_pos_encoding(2, 2)[:, 1:]
    torch.testing.assert_close(tokens[0, 0], model.mask_token[0] + pos[0, 0])
    torch.testing.assert_close(tokens[0, 3], model.mask_token[0] + pos[0, 3])
    assert not torch.allclose(tokens[0, 1], model.mask_token[0] + pos[0, 1])


def test_size_not_multiple_of_14_is_a_clear_error():
    model = create_dinov2("dinov2_vits14")
    with pytest.raises(ValueError, match="multiples of 14.*50x56"):
        model(torch.randn(1, 3, 50, 56))


def test_unknown_model_name():
    with pytest.raises(ValueError, match="dinov2_vits14"):
        load_dinov2("dinov2_vitx14")


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_offline_error_names_file_and_url(empty_torch_home, monkeypatch):
    """The real download path against an address that refuses connections: a quick, clear error."""
    cache = empty_torch_home / "torch" / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    assert weights_cache_path("dinov2_vits14") == cache
    official = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
    assert weights_url("dinov2_vits14") == official
    monkeypatch.setattr(foundation, "WEIGHTS_URL", "http://127.0.0.1:9/{name}_pretrain.pth")
    with pytest.raises(WeightsUnavailableError) as info:
        load_dinov2("dinov2_vits14")
    message = str(info.value)
    assert str(cache) in message
    assert "http://127.0.0.1:9/dinov2_vits14_pretrain.pth" in message
    assert "download failed" in message and "allow_random=True" in message
    assert not cache.exists()


def test_random_weights_only_when_asked(empty_torch_home):
    with pytest.raises(WeightsUnavailableError, match="dinov2_vits14_pretrain.pth"):
        load_dinov2("dinov2_vits14", download=False)
    state = torch.random.get_rng_state()
    with pytest.warns(UserWarning, match="RANDOM weights"):
        model = load_dinov2("dinov2_vits14", download=False, allow_random=True)
    with pytest.warns(UserWarning):
        again = load_dinov2("dinov2_vits14", download=False, allow_random=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeded privately
    assert torch.equal(model.pos_embed, again.pos_embed)
    assert model.pretrained is False and model.weights_source is None and not model.training
    assert "RANDOM weights: results are meaningless" in model.banner
    assert "dinov2_vits14_pretrain.pth" in model.banner


def test_a_dry_run_downloads_nothing_and_runs_on_random_weights(empty_torch_home, monkeypatch):
    """COURSEKIT_DRY_RUN=1: no download is tried, the model has random weights and its banner says so,
    as a missing dataset gives random images; unset, missing weights stay an error."""
    def no_download(name):
        raise AssertionError("a dry run must not download")
    monkeypatch.setattr(foundation, "_download_weights", no_download)
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "1")
    with pytest.warns(UserWarning, match="a dry run downloads nothing"):
        model = load_dinov2("dinov2_vits14")
    assert model.pretrained is False and "RANDOM weights" in model.banner
    assert model.forward_features(torch.zeros(1, 3, 224, 224))["grid"] == (16, 16)  # the full profile's size
    monkeypatch.setenv("COURSEKIT_DRY_RUN", "0")
    with pytest.raises(AssertionError, match="must not download"):
        load_dinov2("dinov2_vits14")


def test_named_file_and_hub_cache_round_trip(empty_torch_home):
    with pytest.warns(UserWarning):
        random_model = load_dinov2("dinov2_vits14", download=False, allow_random=True, seed=1)
    path = empty_torch_home / "my_weights.pth"
    torch.save(random_model.state_dict(), path)
    x = torch.randn(1, 3, 56, 70)

    from_file = load_dinov2("dinov2_vits14", weights=path, download=False)
    assert from_file.pretrained and from_file.weights_source == str(path)
    assert str(path) in from_file.banner and "RANDOM" not in from_file.banner

    cache = weights_cache_path("dinov2_vits14")
    cache.parent.mkdir(parents=True)
    path.rename(cache)
    from_cache = load_dinov2("dinov2_vits14", download=False)
    assert from_cache.weights_source == str(cache)
    with torch.no_grad():
        expected = random_model.forward_features(x)
        for model in (from_file, from_cache):
            got = model.forward_features(x)
            assert torch.equal(got["global"], expected["global"])
            assert torch.equal(got["patch"], expected["patch"])


def test_named_file_must_exist_and_fit(empty_torch_home):
    with pytest.raises(WeightsUnavailableError, match="missing.pth does not exist"):
        load_dinov2("dinov2_vits14", weights=empty_torch_home / "missing.pth")
    wrong = empty_torch_home / "wrong.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="does not hold dinov2_vits14 weights"):
        load_dinov2("dinov2_vits14", weights=wrong)


def test_prepare_images():
    images = torch.full((2, 3, 40, 60), 255, dtype=torch.uint8)
    images[:, 1] = 0
    x = prepare_images(images, size=100)
    assert x.shape == (2, 3, 98, 98) and x.dtype == torch.float32
    expected = torch.tensor([(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), expected)
    gray = prepare_images(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), size=28)
    assert gray.shape == (1, 3, 28, 28)
    assert prepare_images(images, size=3).shape[-1] == 14
    with pytest.raises(ValueError, match="expected images"):
        prepare_images(torch.zeros(3, 28, 28, dtype=torch.uint8))


# --- the stand-in: the course's own long DINO ViT run, when DINOv2's weights cannot be had -------


def test_the_stand_in_is_a_shipped_vit_with_the_dinov2_feature_interface():
    from coursekit import pretrained

    model = foundation.load_stand_in()
    entry = pretrained.entry(foundation.STAND_IN)
    assert entry["backbone"].startswith("vit") and model.input_size == entry["image_size"]
    assert model.banner.startswith("STAND-IN, not DINOv2") and foundation.STAND_IN in model.banner
    assert model.pretrained and not model.training
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = prepare_images(images, model.input_size, model.patch_size)
    side = model.input_size // model.patch_size
    with torch.no_grad():
        out = model.forward_features(x)
        assert out["grid"] == (side, side)
        assert out["global"].shape == (3, model.feature_dim) and out["patch"].shape == (3, side * side, model.feature_dim)
        torch.testing.assert_close(out["global"], pretrained.load(foundation.STAND_IN)(x))  # the shipped weights


def test_only_a_vit_run_can_stand_in():
    from coursekit import pretrained

    for entry in pretrained.entries():
        if entry["backbone"].startswith("vit"):
            assert foundation.load_stand_in(entry["name"]).feature_dim > 0
        else:
            with pytest.raises(ValueError, match="must be a ViT"):
                foundation.load_stand_in(entry["name"])
