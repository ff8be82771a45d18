"""A collapsed run is reported by the loop, the command line and ``--report``, never passed on silently."""
import json
import math

import torch
from torch import nn

import coursekit.engine.collapse as collapse
from coursekit.cli import main
from coursekit.engine import TrainConfig, fit
from coursekit.engine.checkpoint import load_checkpoint
from coursekit.methods import MAE, Method
from coursekit.methods.dino import DINO
from coursekit.models import build_backbone
from tests.conftest import random_images


def test_the_rules_on_numbers_worked_out_by_hand():
    # D = 64: a healthy spread is 1/8 = 0.125; collapsed is below 0.25 / 8 = 0.03125
    assert collapse.collapse_signs({"embedding_std": 0.03}, embedding_dim=64)
    assert not collapse.collapse_signs({"embedding_std": 0.032}, embedding_dim=64)
    assert not collapse.collapse_signs({"embedding_std": 0.0}, embedding_dim=None)  # D unknown: not judged
    # K = 128: uniform is ln 128 = 4.852; 95% of it is 4.609
    assert collapse.collapse_signs({"teacher_entropy": 4.861}, teacher_outputs=128)  # lesson 09's run: loss ln 128
    assert collapse.collapse_signs({"teacher_entropy": 4.62}, teacher_outputs=128)
    assert not collapse.collapse_signs({"teacher_entropy": 4.60}, teacher_outputs=128)
    assert not collapse.collapse_signs({"teacher_entropy": 1.2}, teacher_outputs=128)
    both = collapse.collapse_signs({"embedding_std": 0.001, "teacher_entropy": 6.9}, embedding_dim=64,
                                   teacher_outputs=1000)
    assert len(both) == 2 and "0.0010" in both[0] and "uniform" in both[1]
    # one prototype: e^entropy of the batch's mean teacher output under 2
    assert collapse.collapse_signs({"prototypes_used": 1.0}, teacher_outputs=128)
    assert collapse.collapse_signs({"prototypes_used": 1.9}, teacher_outputs=128)
    assert not collapse.collapse_signs({"prototypes_used": 2.1}, teacher_outputs=128)
    assert not collapse.collapse_signs({"prototypes_used": 12.4}, teacher_outputs=128)  # a dozen: not collapse
    assert collapse.collapse_warning([]) == ""
    assert collapse.collapse_warning(both).startswith("WARNING: this run collapsed")


class ConstantEmbedding(Method):
    """Maps every image to the same embedding (the backbone's output is multiplied by 0): complete collapse."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.views = None

    def training_step(self, images, generator):
        z = self.backbone(images.float() / 255) * 0 + torch.ones(1, self.backbone.feature_dim)
        self.record(z)
        return (self.backbone(images.float() / 255) ** 2).mean()


class SpreadEmbedding(ConstantEmbedding):
    """Records the backbone's features of random images as the embedding: spread out."""

    def training_step(self, images, generator):
        self.record(torch.randn(len(images), 32, generator=generator))
        return (self.backbone(images.float() / 255) ** 2).mean()


def tiny_images(n=32):
    return random_images(n, 16)


def test_fit_reports_a_complete_collapse_and_saves_the_verdict(tmp_path, capsys):
    history = fit(ConstantEmbedding(build_backbone("resnet18", width=4)), tiny_images(),
                  TrainConfig(epochs=1, batch_size=8, log_every=1), checkpoint_dir=tmp_path, progress=False)
    assert history.collapsed and "embeddings collapsed" in history.collapse[0]
    assert "WARNING: this run collapsed" in capsys.readouterr().out
    saved = load_checkpoint(tmp_path / "checkpoint.pt")["history"]
    assert saved["collapse"] == history.collapse

    healthy = fit(SpreadEmbedding(build_backbone("resnet18", width=4)), tiny_images(),
                  TrainConfig(epochs=1, batch_size=8, log_every=1), progress=False)
    assert not healthy.collapsed and healthy.collapse == []
    assert "WARNING" not in capsys.readouterr().out


def test_dino_declares_its_teacher_outputs_and_embedding():
    dino = DINO(build_backbone("resnet18", width=4), image_size=16, n_local=0, out_dim=40, bottleneck_dim=24)
    assert dino.teacher_outputs == 40
    dino.training_step(tiny_images(8), torch.Generator().manual_seed(0))
    assert dino.embedding_dim == 24  # the spread is read on the bottleneck the prototypes score, not the logits
    assert set(dino.step_metrics) >= {"embedding_std", "teacher_entropy", "prototypes_used"}
    assert dino.step_metrics["teacher_entropy"] <= math.log(40) + 1e-4


def test_dino_counts_the_prototypes_its_teacher_uses():
    """prototypes_used, worked out here from the teacher's outputs on the same views: e^H(mean softmax)."""
    dino = DINO(build_backbone("resnet18", width=4), image_size=16, n_local=0, out_dim=40, warmup_teacher_temp=0.04)
    images = tiny_images(8)
    dino.training_step(images, torch.Generator().manual_seed(0))
    views = dino.views(images, torch.Generator().manual_seed(0))
    with torch.no_grad():
        global_views = torch.cat(views[:2])  # one batch, as DINO runs its teacher (BatchNorm sees both crops)
        logits = dino.teacher_head(dino.teacher_backbone(global_views))  # [16, 40]
    share = torch.softmax(logits / 0.04, dim=1).mean(dim=0)  # the center is still 0 at the first step
    expected = math.exp(-sum(p * math.log(p) for p in share.tolist() if p > 0))
    assert abs(dino.step_metrics["prototypes_used"].item() - expected) < 1e-3 * expected

    # every image sent to prototype 0: a center far below its score (logits are cosines, in [-1, 1])
    dino.center.zero_()
    dino.center[0, 0] = -100.0
    dino.training_step(images, torch.Generator().manual_seed(0))
    used = float(dino.step_metrics["prototypes_used"])
    assert used < 1.01
    assert any("one prototype" in sign for sign in collapse.collapse_signs({"prototypes_used": used}, teacher_outputs=40))


TINY = ["--dataset", "shapes", "--epochs", "1", "--num-images", "32", "--num-test", "24", "--batch-size", "8",
        "--width", "4", "--profile", "smoke", "--device", "cpu"]


def test_the_command_prints_the_warning_and_reports_the_verdict(tmp_path, capsys, monkeypatch):
    healthy_path = tmp_path / "healthy.json"
    assert main(["pretrain", "--method", "simclr", *TINY, "--report", str(healthy_path)]) == 0
    healthy = json.loads(healthy_path.read_text())
    assert healthy["verdict"] == "ok" and healthy["collapse"] == []
    assert "WARNING" not in capsys.readouterr().out

    # Any spread counts as collapsed under this threshold: the same run must now be reported so.
    monkeypatch.setattr(collapse, "COLLAPSED_SPREAD", 1e6)
    collapsed_path = tmp_path / "collapsed.json"
    assert main(["pretrain", "--method", "simclr", *TINY, "--report", str(collapsed_path)]) == 0
    report = json.loads(collapsed_path.read_text())
    assert report["verdict"] == "collapsed" and "embeddings collapsed" in report["collapse"][0]
    assert "WARNING: this run collapsed" in capsys.readouterr().out


def test_mae_is_judged_on_its_predictions():
    """MAE collapses by predicting the same pixels for every image; its CLS token, which the loss never
    trains, is no guide (a healthy MAE run on scenes ended with a CLS spread of 0.0026)."""
    torch.manual_seed(0)
    mae = MAE(build_backbone("vit_tiny", img_size=32, patch_size=8), image_size=32)
    images = (torch.rand(16, 3, 32, 32) * 255).to(torch.uint8)

    def signs():
        with torch.no_grad():
            mae.training_step(images, torch.Generator().manual_seed(0))
        assert mae.embedding_dim == 8 * 8 * 3  # one predicted patch
        return collapse.collapse_signs({k: float(v) for k, v in mae.step_metrics.items()}, mae.embedding_dim)

    assert signs() == []
    with torch.no_grad():
        mae.decoder.pred.weight.zero_()  # every patch of every image gets the bias: one prediction for all
    assert signs() and "embeddings collapsed" in signs()[0]
