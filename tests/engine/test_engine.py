"""The engine's contracts: one optimizer step in the whole package, the method protocol (hooks,
options in checkpoints, views as an argument), GPU-correct choices (precision by compute
capability, no host-device sync inside a step, SyncBatchNorm where gradients flow) and the
collapse metrics."""
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from coursekit.augment import SimCLRViews
from coursekit.engine import OptimizerStep, TrainConfig, build_optimizer, fit, load_or_train, resolve_precision
from coursekit.engine.checkpoint import CheckpointError
from coursekit.engine.loop import sync_trained_batchnorm
from coursekit.methods import METHODS, build_method, embedding_std, method_options
from coursekit.models import build_backbone
from tests.conftest import backbone_for, random_images, tiny_backbone

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16

def source_files():
    for folder in ("coursekit", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if not relative.startswith("coursekit/grading/"):
                yield relative, path.read_text()


def test_the_source_holds_one_backward_and_one_optimizer_step():
    backward = [name for name, text in source_files() for _ in re.finditer(r"\.backward\(", text)]
    steps = [name for name, text in source_files() for _ in re.finditer(r"\b\w*(optimizer|scaler)\.step\(", text)]
    assert backward == ["coursekit/engine/step.py"]
    assert steps == ["coursekit/engine/step.py"]


# --- precision ---------------------------------------------------------------------------------


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp16"), ((7, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_needs_native_bf16(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # true on a T4 too
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("bf16", "cuda") == "bf16"


# --- methods -----------------------------------------------------------------------------------


SMALLEST = {"resnet18": {"width": 2}, "vit_tiny": {"depth": 1, "embed_dim": 16}}  # smaller than tiny_backbone's


def tiny_method(name, seed=0, **options):
    small = {"moco": {"queue_size": 16, "out_dim": 8}, "dino": {"n_local": 2, "out_dim": 16},
             "simclr": {"out_dim": 8}, "byol": {"out_dim": 8}}.get(name, {})
    # the backbone is built at SIZE; an image_size among the options changes the method's only (its views)
    torch.manual_seed(seed)
    backbone = tiny_backbone(backbone_for(name), SIZE, **SMALLEST[backbone_for(name)])
    return build_method(name, backbone, **{"image_size": SIZE, **small, **options})


def tiny_images(n=8, seed=0):
    return random_images(n, SIZE, seed)


def another_value(name: str, value):
    """A valid value different from ``value`` for option ``name``."""
    if isinstance(value, bool):
        return not value
    if value is None:
        return 8
    if name == "image_size":
        return 2 * value
    if isinstance(value, int):
        return value + 1
    return value / 2


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_option_of_a_finished_run_is_checked_on_resume(tmp_path, name):
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01)
    images = tiny_images(4)
    method = tiny_method(name)
    fit(method, images, config, tmp_path, progress=False)
    options = method.hparams()
    assert set(options) == set(method_options(name)) | {"views"}
    for option, value in options.items():
        if option == "views":
            continue
        changed = tiny_method(name, **{option: another_value(option, value)})
        with pytest.raises(CheckpointError, match=rf"hparams\.{option}: checkpoint has {re.escape(repr(value))}"):
            load_or_train(changed, images, config, tmp_path, progress=False)
    _, status = load_or_train(tiny_method(name, seed=1), images, config, tmp_path, progress=False)
    assert status == "loaded"  # the same options (other initial weights) reuse the finished run


def test_views_are_an_argument_and_part_of_the_checkpoint(tmp_path):
    config = TrainConfig(epochs=1, batch_size=4, lr=0.01)
    images = tiny_images(4)
    default = tiny_method("simclr")
    assert repr(default.views) == repr(SimCLRViews(SIZE))
    fit(default, images, config, tmp_path, progress=False)
    other = tiny_method("simclr", views=SimCLRViews(SIZE, min_scale=0.5))
    with pytest.raises(CheckpointError, match=r"hparams\.views"):
        load_or_train(other, images, config, tmp_path, progress=False)


def test_build_method_names_the_options_it_has():
    assert method_options("simclr") == {"image_size": 32, "temperature": 0.5, "hidden_dim": None, "out_dim": 128}
    with pytest.raises(ValueError, match="simclr has no option queue_size; its options: image_size, temperature"):
        build_method("simclr", build_backbone("resnet18", width=2), queue_size=10)


def predictor_and_rest_deltas(tmp_path, predictor_lr):
    """One plain-SGD step of a tiny BYOL -> (mean |change| of the predictor, of the backbone)."""
    method = tiny_method("byol", predictor_lr=predictor_lr)
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, optimizer="sgd", momentum=0.0, weight_decay=0.0,
                         precision="fp32")
    fit(method, tiny_images(8), config, tmp_path / str(predictor_lr), progress=False)
    change = {name: (p.detach() - before[name]).abs().mean().item() for name, p in method.named_parameters()
              if p.requires_grad}
    predictor = [value for name, value in change.items() if name.startswith("prediction_head.")]
    rest = [value for name, value in change.items() if not name.startswith("prediction_head.")]
    return sum(predictor) / len(predictor), sum(rest) / len(rest)


def test_byol_predictor_lr_multiplies_the_predictors_step_only(tmp_path):
    # the same seed and data, so the gradients of the first step are the same: with plain SGD the
    # predictor's change scales with its learning rate, the rest's does not change
    predictor_1, rest_1 = predictor_and_rest_deltas(tmp_path, 1.0)
    predictor_10, rest_10 = predictor_and_rest_deltas(tmp_path, 10.0)
    assert predictor_1 > 0
    assert predictor_10 / predictor_1 == pytest.approx(10.0, rel=1e-3)
    assert rest_10 == pytest.approx(rest_1, rel=1e-5)


def test_build_optimizer_puts_every_parameter_in_one_group_at_its_rate():
    method = tiny_method("byol", predictor_lr=4.0)
    optimizer = build_optimizer(method, TrainConfig(lr=0.5))
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    listed = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(listed) == len(set(listed))  # no parameter twice
    for name, p in method.named_parameters():
        if not p.requires_grad:
            assert id(p) not in lr_of  # the EMA target is not optimized
            continue
        assert lr_of[id(p)] == (2.0 if name.startswith("prediction_head.") else 0.5), name


def test_bad_learning_rate_multipliers_are_refused():
    with pytest.raises(ValueError, match="predictor_lr must be > 0"):
        tiny_method("byol", predictor_lr=0.0)
    method = tiny_method("simclr")
    method.lr_scales = lambda: {"no_such_head": 2.0}
    with pytest.raises(ValueError, match="'no_such_head' -> 2.0 must name a submodule"):
        build_optimizer(method, TrainConfig())


def test_dino_keeps_its_prototypes_fixed_during_the_first_epoch():
    method = tiny_method("dino", freeze_last_layer=1.0)
    last_layer = method.head.last_layer.parametrizations.weight.original1  # weight_v, [out_dim, bottleneck]
    snapshots = []
    fit(method, tiny_images(4), TrainConfig(epochs=2, batch_size=4, lr=0.01), progress=False,
        on_step=lambda step: snapshots.append(last_layer.detach().clone()))
    initial = tiny_method("dino").head.last_layer.parametrizations.weight.original1
    assert torch.equal(snapshots[0], initial)  # step 1 of 2 is in epoch 0: no update
    assert not torch.equal(snapshots[1], snapshots[0])  # epoch 1 trains the prototypes
    assert any(not torch.equal(a, b) for a, b in zip(method.head.mlp.parameters(),
                                                      tiny_method("dino").head.mlp.parameters()))


def test_sync_batchnorm_only_in_networks_that_receive_gradients():
    method = tiny_method("byol")
    sync_trained_batchnorm(method)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in method.backbone.modules())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in method.projection_head.modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in method.target_backbone.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in method.target_backbone.modules())


# --- no host-device synchronization inside a step ----------------------------------------------


class HostSyncDetector(TorchFunctionMode):
    """Records every call that makes the host wait for the device on CUDA: reading a value
    (item, tolist, bool/float/int of a tensor), data-dependent shapes (nonzero, boolean masks),
    and tensors built from Python data on a device (torch.tensor(..., device=...))."""

    READS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero", "masked_select", "numpy", "cpu"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in self.READS:
            self.record(name)
        if name in ("tensor", "as_tensor") and kwargs.get("device") is not None:
            self.record(f"{name}(device=...)")
        if name in ("__getitem__", "__setitem__") and any(
                isinstance(index, torch.Tensor) and index.dtype == torch.bool
                for index in (args[1] if isinstance(args[1], tuple) else (args[1],))):
            self.record(f"{name} with a boolean mask")
        return func(*args, **kwargs)

    def record(self, what: str) -> None:
        """Note the call and the coursekit line that made it. Calls inside ``torch.optim`` are
        left out: the optimizers read their step counters from CPU tensors (or, fused on CUDA,
        not at all), which costs no sync on a GPU."""
        frame, where = sys._getframe(2), None
        while frame is not None:
            filename = frame.f_code.co_filename
            if "/torch/optim/" in filename:
                return
            if where is None and "/coursekit/" in filename:
                where = f"{Path(filename).name}:{frame.f_lineno}"
            frame = frame.f_back
        self.calls.append(f"{what} at {where}")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_never_waits_for_the_device(name):
    method = tiny_method(name)
    optimizer_step = OptimizerStep(build_optimizer(method, TrainConfig(lr=0.01)), "fp32", "cpu", grad_clip=1.0,
                                   hooks=method, total_steps=4, steps_per_epoch=2)
    images = tiny_images(8)
    optimizer_step(method.training_step(images, torch.Generator().manual_seed(0)), 0)  # lazy state created
    detector = HostSyncDetector()
    with detector:
        for step in (1, 2):  # epoch 0 (DINO's last layer frozen) and epoch 1
            with optimizer_step.autocast():
                loss = method.training_step(images, torch.Generator().manual_seed(step))
            optimizer_step(loss, step)
    assert detector.calls == []
    assert method.step_metrics and all(v.ndim == 0 for v in method.step_metrics.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_training_step_on_cuda_passes_the_sync_debug_mode(name):
    device = torch.device("cuda")
    method = tiny_method(name).to(device)
    optimizer_step = OptimizerStep(build_optimizer(method, TrainConfig(lr=0.01), device),
                                   resolve_precision("fp16", device), device, grad_clip=1.0, hooks=method,
                                   total_steps=4, steps_per_epoch=2)
    images = tiny_images(8).to(device)
    optimizer_step(method.training_step(images, torch.Generator(device).manual_seed(0)), 0)
    torch.cuda.set_sync_debug_mode("error")  # a host-device synchronization in the step raises
    try:
        for step in (1, 2):
            with optimizer_step.autocast():
                loss = method.training_step(images, torch.Generator(device).manual_seed(step))
            optimizer_step(loss, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item() and optimizer_step.scaler.is_enabled()  # fp16 ran, with its loss scaler


# --- collapse metrics --------------------------------------------------------------------------


def test_embedding_std_tells_spread_from_collapse():
    spread = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
    assert embedding_std(spread).item() == pytest.approx(1 / math.sqrt(64), rel=0.02)
    collapsed = torch.ones(16, 64) + 1e-4 * torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    assert embedding_std(collapsed).item() < 1e-3


@pytest.mark.parametrize("name", ["simclr", "dino"])
def test_collapse_metrics_are_logged_per_window_and_checkpointed(tmp_path, name):
    config = TrainConfig(epochs=2, batch_size=4, lr=0.01, log_every=3)  # 2 steps per epoch, 4 steps
    images = tiny_images(8)
    method = tiny_method(name)
    history, _ = load_or_train(method, images, config, tmp_path, progress=False)
    assert history.metrics_step == [2, 3, 4]  # end of epoch 1, log_every, end of epoch 2
    expected = {"embedding_std"} | ({"teacher_entropy", "teacher_student_kl", "prototypes_used"} if name == "dino" else set())
    assert set(history.metrics) == expected and all(len(v) == 3 for v in history.metrics.values())
    assert all(0 < value <= 1 for value in history.metrics["embedding_std"])
    if name == "dino":
        assert all(0 <= value <= math.log(16) + 1e-5 for value in history.metrics["teacher_entropy"])
        assert all(value >= -1e-4 for value in history.metrics["teacher_student_kl"])
        assert all(1 - 1e-4 <= value <= 16 + 1e-3 for value in history.metrics["prototypes_used"])
    loaded, status = load_or_train(tiny_method(name), images, config, tmp_path, progress=False)
    assert status == "loaded" and loaded == history


# --- every loop trains through the one step, in the precision asked for ------------------------


def train_each_loop(precision: str) -> None:
    """One short run of every training loop of the package, in ``precision``, on the CPU."""
    from coursekit.evaluate import fine_tune, train_linear
    from coursekit.transfer.detection import build_faster_rcnn, train_detector
    from coursekit.transfer.segmentation import SegmentationModel, train_segmentation

    images, labels = tiny_images(8), torch.arange(8) % 2
    fit(tiny_method("simclr"), images, TrainConfig(epochs=1, batch_size=4, precision=precision), progress=False)
    train_linear(torch.randn(8, 4), labels, 2, 0.1, 0.0, 1, 4, 0, precision=precision)
    # head from zero: the count below is fine-tuning's own 2 steps (the probe's head is checked on its own)
    fine_tune(build_backbone("resnet18", width=2), images, labels, images, labels, epochs=1, batch_size=4,
              head_init="zeros", precision=precision, progress=False)
    segmenter = SegmentationModel(build_backbone("resnet18", width=2), num_classes=2)
    train_segmentation(segmenter, images, torch.randint(0, 2, (8, SIZE, SIZE)), epochs=1, batch_size=4,
                       precision=precision, progress=False)
    detector = build_faster_rcnn(build_backbone("resnet18", width=2), num_classes=2, min_size=SIZE, max_size=SIZE)
    boxes = [torch.tensor([[2.0, 2.0, 12.0, 12.0]])] * 2
    train_detector(detector, images[:2], boxes, [torch.tensor([0]), torch.tensor([1])], epochs=1, batch_size=2,
                   precision=precision, progress=False)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_loop_steps_through_optimizer_step_in_the_asked_precision(monkeypatch, precision):
    steps, forwards = [], []
    original_call, original_autocast = OptimizerStep.__call__, OptimizerStep.autocast

    def counting_call(self, loss, step):
        steps.append((self.precision, torch.is_autocast_enabled("cpu"), loss.dtype))
        return original_call(self, loss, step)

    def counting_autocast(self):
        forwards.append(self.precision)
        return original_autocast(self)

    monkeypatch.setattr(OptimizerStep, "__call__", counting_call)
    monkeypatch.setattr(OptimizerStep, "autocast", counting_autocast)
    train_each_loop(precision)
    assert len(steps) == 2 + 2 + 2 + 2 + 1  # fit, probe, fine-tuning, segmentation, detection
    assert forwards == [precision] * len(steps)  # every forward under the step's autocast
    # fine-tuning from the probe: the probe's search and fit (inside fine_tune) step in the same precision
    from coursekit.evaluate import fine_tune
    steps.clear()
    forwards.clear()
    fine_tune(build_backbone("resnet18", width=2), tiny_images(8), torch.arange(8) % 2, tiny_images(8),
              torch.arange(8) % 2, epochs=1, batch_size=4, precision=precision, progress=False)
    assert len(steps) > 2 and forwards == [precision] * len(steps)
    assert set(steps) == {(precision, False, torch.float32)}  # fp32 losses; backward outside autocast
