"""``coursekit export``: a DINO-pretrained yolo11n from a folder of images -> a YOLO .pt that ultralytics
loads and fine-tunes from; a ResNet -> a state_dict with its loader."""
import os
import warnings

os.environ.setdefault("YOLO_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from coursekit.cli import main  # noqa: E402
from coursekit.pretrained import load_backbone  # noqa: E402
from coursekit.data import export_yolo, make_shapes  # noqa: E402
from coursekit.data.folder import write_image_folder  # noqa: E402
from coursekit.engine.checkpoint import load_checkpoint  # noqa: E402

pytest.importorskip("ultralytics")

SMALL = ["--epochs", "1", "--batch-size", "8", "--image-size", "32", "--profile", "smoke", "--device", "cpu"]


def saved_backbone(checkpoint_dir, prefix="backbone."):
    """{name: tensor} of one backbone in a run's checkpoint ("backbone.": the trained one,
    "teacher_backbone.": DINO's teacher, the one DINO exports), with ultralytics' names."""
    method = load_checkpoint(checkpoint_dir / "checkpoint.pt")["method"]
    return {key.removeprefix(prefix): value for key, value in method.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    """coursekit pretrain --method dino --backbone yolo11n --data FOLDER (16 images + 2 damaged): 2 steps."""
    root = tmp_path_factory.mktemp("yolo_run")
    write_image_folder(make_shapes(16, image_size=40, seed=2).images, root / "images", damaged=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["pretrain", "--method", "dino", "--backbone", "yolo11n", "--data", str(root / "images"),
                     *SMALL, "--workers", "0", "--checkpoint-dir", str(root / "run")]) == 0
    return root


def test_export_ultralytics_transfers_every_tensor_and_yolo_loads_it(yolo_run, capsys):
    from ultralytics import YOLO

    out = yolo_run / "yolo11n_dino.pt"
    assert main(["export", "--checkpoint-dir", str(yolo_run / "run"), "--format", "ultralytics", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    teacher = saved_backbone(yolo_run / "run", "teacher_backbone.")  # DINO transfers its teacher
    assert f"transferred {len(teacher)}/{len(teacher)} backbone tensors into yolo11n" in printed
    assert len(teacher) == 240  # every tensor of the 11 backbone layers, BatchNorm statistics included
    loaded = YOLO(str(out)).model.state_dict()
    for name, tensor in teacher.items():
        torch.testing.assert_close(loaded[name].float(), tensor.float(), rtol=1e-3, atol=1e-3)  # saved in fp16
    student = saved_backbone(yolo_run / "run")
    assert any(not torch.allclose(loaded[name].float(), tensor.float(), rtol=1e-3, atol=1e-3)
               for name, tensor in student.items()), "the student was exported, not the teacher"


@pytest.mark.slow
def test_ultralytics_fine_tunes_from_the_export_keeping_the_weights(yolo_run):
    from ultralytics import YOLO

    out = yolo_run / "finetune_source.pt"
    assert main(["export", "--checkpoint-dir", str(yolo_run / "run"), "--format", "ultralytics", "--out", str(out)]) == 0
    data_yaml = export_yolo(make_shapes(8, image_size=64, seed=0), yolo_run / "labeled", task="detect")
    model = YOLO(str(out))
    at_start = {}
    model.add_callback("on_train_start", lambda trainer: at_start.update(
        {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}))
    model.train(data=str(data_yaml), epochs=1, imgsz=64, batch=4, workers=0, device="cpu", plots=False, val=False,
                seed=0, project=str(yolo_run / "runs"), name="ft", exist_ok=True, verbose=False)
    teacher = saved_backbone(yolo_run / "run", "teacher_backbone.")
    for name, tensor in teacher.items():  # training started from the pretrained backbone
        torch.testing.assert_close(at_start[name].float(), tensor.float(), rtol=1e-3, atol=1e-3)
    trained = YOLO(str(model.trainer.last)).model.state_dict()
    assert not torch.allclose(trained["model.0.conv.weight"].float(), at_start["model.0.conv.weight"].float())


def test_export_state_dict_of_a_resnet_and_its_loader(tmp_path, capsys):
    assert main(["pretrain", "--method", "simclr", "--dataset", "shapes", "--num-images", "16", "--num-test", "8",
                 "--width", "4", *SMALL, "--checkpoint-dir", str(tmp_path / "run")]) == 0
    out = tmp_path / "simclr_resnet.pt"
    assert main(["export", "--checkpoint-dir", str(tmp_path / "run"), "--format", "state_dict", "--out", str(out)]) == 0
    assert "load with coursekit.cli.export.load_backbone" in capsys.readouterr().out
    backbone = load_backbone(out)
    assert not backbone.training and backbone.feature_dim == 32  # width 4: 8 * 4 channels
    trained = saved_backbone(tmp_path / "run")
    assert backbone.state_dict().keys() == trained.keys()
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in trained.items())

    assert main(["export", "--checkpoint-dir", str(tmp_path / "run"), "--format", "ultralytics",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "--format ultralytics needs a YOLO backbone" in capsys.readouterr().err
    assert main(["export", "--checkpoint-dir", str(tmp_path / "run"), "--format", "state_dict",
                 "--out", str(tmp_path / "x.pth")]) == 2
    assert "--out must be a .pt file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a backbone written by coursekit export"):
        load_backbone(tmp_path / "run" / "checkpoint.pt")
