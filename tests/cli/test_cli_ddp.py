"""``coursekit pretrain`` end to end on the shapes dataset: one process in-process, and two CPU
processes under torchrun (gloo backend, DDP)."""
import os
import subprocess
import sys

import torch

from coursekit.engine.checkpoint import load_checkpoint
from coursekit.cli import main

TINY = ["--dataset", "shapes", "--epochs", "1", "--num-images", "32", "--num-test", "24", "--batch-size", "8",
        "--width", "4", "--profile", "smoke", "--device", "cpu"]


def test_pretrain_trains_checkpoints_and_prints_knn(tmp_path, capsys):
    assert main(["pretrain", "--method", "byol", *TINY, "--checkpoint-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kNN accuracy (k=200, temperature=0.1) on shapes test (24 images):" in out
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["finished"] and state["step"] == 4  # 32 images / batch 8
    assert state["settings"]["extra"] == {"dataset": "shapes", "backbone": "resnet18", "backbone_kwargs": {"width": 4}}
    assert (tmp_path / "history.json").is_file()

    assert main(["pretrain", "--method", "byol", *TINY, "--checkpoint-dir", str(tmp_path), "--resume"]) == 0
    assert "kNN accuracy" in capsys.readouterr().out  # the finished run is evaluated, not retrained
    assert torch.equal(load_checkpoint(tmp_path / "checkpoint.pt")["method"]["backbone.conv1.weight"],
                       state["method"]["backbone.conv1.weight"])


def test_unknown_method_or_dataset_is_refused(capsys):
    assert main(["pretrain", "--method", "swav", *TINY]) == 2
    assert "coursekit: error: argument --method: invalid choice: 'swav'" in capsys.readouterr().err
    assert main(["pretrain", "--method", "simclr", "--dataset", "imagenet"]) == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_torchrun_two_cpu_processes_twice_give_the_same_checkpoint(tmp_path):
    def start(folder):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "-m", "coursekit", "pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(folder)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    runs = [start(tmp_path / "first"), start(tmp_path / "second")]  # --standalone: each its own rendezvous
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-3000:]
        assert stdout.count("kNN accuracy (k=200, temperature=0.1)") == 1  # rank 0 only
        assert "2 process(es)" in stdout
    state = load_checkpoint(tmp_path / "first" / "checkpoint.pt")
    assert state["finished"] and state["step"] == 2  # 32 images / 2 processes / batch 8
    assert state["settings"]["world_size"] == 2
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["checkpoint.pt", "history.json"]  # no leftovers
    again = load_checkpoint(tmp_path / "second" / "checkpoint.pt")
    for name, tensor in state["method"].items():  # the seed decides the initial weights on every process
        assert torch.equal(tensor, again["method"][name]), name
