"""The ultralytics recipe: backbone cut, DINO pretraining through the engine, transfer, save/reload, fine-tune."""

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("ultralytics")

from coursekit.engine import TrainConfig  # noqa: E402
from coursekit.models import build_backbone  # noqa: E402

from coursekit.transfer.yolo import (  # noqa: E402
    YOLO,
    YOLOBackbone,
    finetune,
    load_yolo,
    model_size_table,
    pretrain_yolo_backbone,
    save_for_finetuning,
    transfer_backbone,
    yolo_backbone,
)

FAMILIES = ["yolo11n.yaml", "yolo12n.yaml"]


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


def test_load_yolo_rejects_other_files():
    with pytest.raises(ValueError):
        load_yolo("yolo11n.onnx")


def test_cut_length_comes_from_the_yaml(family):
    yolo = load_yolo(family)
    backbone = yolo_backbone(yolo)
    expected = {"yolo11n.yaml": 11, "yolo12n.yaml": 9}[family]
    assert len(backbone.model) == len(yolo.model.yaml["backbone"]) == expected
    assert len(yolo.model.model) > expected  # the source model is left whole


def test_cut_output_equals_the_full_models_intermediate_output(family):
    torch.manual_seed(0)
    yolo = load_yolo(family)
    backbone = yolo_backbone(yolo).eval()
    full = yolo.model.eval()
    last = full.model[len(backbone.model) - 1]
    captured = {}
    handle = last.register_forward_hook(lambda module, inputs, output: captured.update(out=output))
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full(x)
        mine = backbone.forward_map(x)
    handle.remove()
    assert mine.shape == captured["out"].shape == (2, backbone.feature_dim, 2, 2)
    torch.testing.assert_close(mine, captured["out"])


def test_pyramid_holds_the_last_map_of_every_stride(family):
    """forward_pyramid against hooks on the full model: at each stride, the last backbone layer's output."""
    from coursekit.augment import IMAGENET_MEAN, IMAGENET_STD, normalize

    torch.manual_seed(0)
    yolo = load_yolo(family)
    backbone = yolo_backbone(yolo).eval()
    full = yolo.model.eval()
    seen = []  # (layer index, output) of every backbone layer, in order
    handles = [layer.register_forward_hook(lambda module, inputs, output, i=i: seen.append((i, output)))
               for i, layer in enumerate(full.model[:len(backbone.model)])]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        full(x)
        pyramid = backbone.forward_pyramid(normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    for handle in handles:
        handle.remove()
    assert [fmap.shape[-1] for fmap in pyramid] == [16, 8, 4, 2]  # strides 4, 8, 16, 32
    assert backbone.pyramid_dims == [fmap.shape[1] for fmap in pyramid] and backbone.pyramid_dims[-1] == backbone.feature_dim
    for fmap in pyramid:
        expected = [out for _, out in seen if out.shape[-1] == fmap.shape[-1]][-1]
        torch.testing.assert_close(fmap, expected, rtol=1e-4, atol=1e-5)


def test_pooling_head_and_gradients(family):
    yolo = load_yolo(family)
    yolo.model.requires_grad_(False)  # as ultralytics leaves loaded models
    backbone = yolo_backbone(yolo)
    assert isinstance(backbone, YOLOBackbone) and backbone.feature_dim == 256
    assert backbone.training
    assert all(p.requires_grad for p in backbone.parameters())
    bn = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.training for m in bn)
    features = backbone(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, backbone.feature_dim)
    features.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())


def test_fused_models_are_rejected():
    yolo = load_yolo("yolo11n.yaml")
    yolo.model.fuse()
    with pytest.raises(ValueError, match="fused"):
        yolo_backbone(yolo)


@pytest.fixture(scope="module")
def pretrained(family):
    """A backbone after 2 DINO steps (engine.fit) on 16 random images at 64px, and its weights before."""
    torch.manual_seed(0)
    backbone = yolo_backbone(load_yolo(family))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = torch.randint(0, 256, (16, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=1, batch_size=8, precision="fp32")
    history = pretrain_yolo_backbone(backbone, images, config, progress=False, n_local=2, out_dim=128)
    return backbone, before, history


def test_pretraining_runs_and_changes_the_weights(pretrained):
    backbone, before, history = pretrained
    assert len(history.loss) == 2 and len(history.epoch_loss) == 1
    assert all(torch.isfinite(torch.tensor(history.loss)))
    changed = [k for k, v in backbone.state_dict().items() if not torch.equal(before[k], v)]
    assert len(changed) > len(before) // 2


def test_pretraining_rejects_sizes_off_the_stride():
    backbone = yolo_backbone(load_yolo("yolo11n.yaml"))
    config = TrainConfig(epochs=1, batch_size=2)
    with pytest.raises(ValueError, match="multiple of 32"):
        pretrain_yolo_backbone(backbone, torch.zeros(4, 3, 48, 48, dtype=torch.uint8), config, progress=False)
    with pytest.raises(ValueError, match="local_size must be a positive multiple of 32"):
        pretrain_yolo_backbone(backbone, torch.zeros(4, 3, 64, 64, dtype=torch.uint8), config, progress=False,
                               local_size=16)


def test_yolo_backbones_are_coursekit_backbones(family):
    """build_backbone("yolo11n") is the cut of the yaml; forward takes normalized images like any backbone."""
    from coursekit.augment import normalize

    name = family.removesuffix(".yaml")
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    x = torch.rand(2, 3, 64, 64)
    features = backbone.forward_features(normalize(x))
    assert features["grid"] == (2, 2) and features["patch"].shape == (2, 4, backbone.feature_dim)
    torch.testing.assert_close(features["global"], backbone.forward_map(x).mean(dim=(2, 3)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(backbone(normalize(x)), features["global"])
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("yolo13n")


def test_transfer_reports_every_backbone_tensor(pretrained, family):
    backbone, _, _ = pretrained
    fresh = load_yolo(family)
    report = transfer_backbone(backbone, fresh)
    assert report["transferred"] == report["backbone_tensors"] == len(backbone.model.state_dict())
    assert report["model_tensors"] > report["backbone_tensors"]
    assert report["mismatched"] == [] and report["missing"] == []
    target = fresh.model.state_dict()
    for name, tensor in backbone.model.state_dict().items():
        assert torch.equal(target[f"model.{name}"], tensor)


def test_transfer_names_mismatches(pretrained, family):
    backbone, _, _ = pretrained
    other = load_yolo(family.replace("n.yaml", "s.yaml"))  # wider layers: shapes differ
    report = transfer_backbone(backbone, other)
    assert report["transferred"] < report["backbone_tensors"]
    assert report["mismatched"] and all(name.startswith("model.") for name in report["mismatched"])


def test_save_and_reload_within_fp16_tolerance(pretrained, family, tmp_path):
    backbone, _, _ = pretrained
    fresh = load_yolo(family)
    transfer_backbone(backbone, fresh)
    path = save_for_finetuning(fresh, tmp_path / "ssl.pt")
    checkpoint = torch.load(path, weights_only=False)
    assert checkpoint["model"].model[0].conv.weight.dtype == torch.float16
    reloaded = YOLO(str(path)).model.state_dict()
    for name, tensor in backbone.model.state_dict().items():
        expected = tensor.float()
        torch.testing.assert_close(reloaded[f"model.{name}"].float(), expected, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError):
        save_for_finetuning(fresh, tmp_path / "ssl.pth")


@pytest.mark.slow
def test_finetune_from_the_saved_pt_runs_offline(pretrained, family, tmp_path):
    if family != "yolo11n.yaml":
        pytest.skip("one family is enough for the end-to-end run")
    from coursekit.data import export_yolo, make_shapes

    backbone, _, _ = pretrained
    fresh = load_yolo(family)
    transfer_backbone(backbone, fresh)
    pt = save_for_finetuning(fresh, tmp_path / "ssl.pt")
    data_yaml = export_yolo(make_shapes(8, image_size=64, seed=0), tmp_path / "shapes", task="detect")
    metrics = finetune(pt, data_yaml, epochs=1, imgsz=64, batch=4, project=tmp_path / "runs", name="ft",
                       device="cpu", seed=0)
    assert 0.0 <= metrics["mAP50-95"] <= metrics["mAP50"] <= 1.0
    assert os.path.exists(metrics["weights"])
    assert str(tmp_path) in metrics["save_dir"]


def test_finetune_checks_its_paths(tmp_path):
    with pytest.raises(ValueError):
        finetune(tmp_path / "missing.pt", tmp_path / "data.yaml")


def test_size_table_yolo12():
    rows = model_size_table("yolo12", imgsz=640)
    assert [r["model"] for r in rows] == ["yolo12n", "yolo12s", "yolo12m", "yolo12l", "yolo12x"]
    params = [r["params"] for r in rows]
    assert params == sorted(params) and len(set(params)) == 5
    gflops = [r["gflops"] for r in rows]
    assert gflops == sorted(gflops) and gflops[0] > 0
    assert 2.0e6 < params[0] < 3.5e6  # YOLO12n has about 2.6M parameters
    with pytest.raises(ValueError):
        model_size_table("yolo5")
