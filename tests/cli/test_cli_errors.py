"""``coursekit`` commands fail early and clearly: every user error is one line
``coursekit: error: ...`` with exit status 2, found before any training step; values that make no
sense are refused, never replaced by defaults; damaged data and checkpoints are named."""
import gzip
import os
import shutil
import subprocess
import sys

import pytest
import torch

from coursekit.cli import UsageError, main, one_line
from coursekit.data import load_images
from coursekit.data.downloads import DatasetDamagedError
from coursekit.data.fashion_mnist import DEBIAN_FOLDER
from coursekit.engine.checkpoint import load_checkpoint, save_checkpoint
from coursekit.recipes import get_recipe

TINY = ["--dataset", "shapes", "--epochs", "1", "--num-images", "16", "--num-test", "16", "--batch-size", "8",
        "--width", "4", "--profile", "smoke", "--device", "cpu"]


def error_line(capsys, argv: list[str]) -> str:
    """Run ``coursekit argv`` in this process; assert exit status 2, nothing trained, and exactly
    one line on stderr; return that line."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("coursekit: error: "), captured.err
    assert "kNN accuracy" not in captured.out and "it/s" not in captured.err  # no progress bar: no step ran
    return lines[0]


@pytest.mark.parametrize("arguments, expected", [
    (["--epochs", "0"], "--epochs must be at least 1; got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1; got 0"),
    (["--num-images", "0"], "--num-images must be at least 1; got 0"),
    (["--width", "0"], "--width must be at least 1; got 0"),
    (["--num-test", "-5"], "--num-test must be at least 1; got -5"),
    (["--lr", "0"], "--lr must be a positive number; got 0.0"),
    (["--lr", "-0.1"], "--lr must be a positive number; got -0.1"),
    (["--weight-decay", "-1"], "--weight-decay must be 0 or more"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be 0 (only at the end) or more"),
    (["--batch-size", "32"], "--batch-size 32 is larger than the 16 images per process"),
    (["--batch-size", "1"], "--batch-size 1 is too small for simclr: it needs at least 2"),
    (["--temperature", "0"], "--temperature must be a positive number"),
    (["--momentum", "0.9"], "--momentum is not an option of simclr (its options: --temperature); "
                            "--momentum applies to moco, byol, dino"),
    (["--patch-size", "8"], "--patch-size sets a ViT's patches; resnet18 is a ResNet"),
    (["--epochs", "two"], "argument --epochs: invalid int value: 'two' (see: coursekit pretrain --help)"),
    (["--resume"], "--resume needs --checkpoint-dir"),
    (["--device", "gpu"], "--device 'gpu' is not a device: use cpu, cuda, cuda:N or mps"),
])
def test_bad_values_are_refused_in_one_line(capsys, arguments, expected):
    assert expected in error_line(capsys, ["pretrain", "--method", "simclr", *TINY, *arguments])


def test_vit_options_are_checked(capsys):
    mae = ["pretrain", "--method", "mae", *[a for a in TINY if a not in ("--width", "4")]]
    assert "--patch-size 5 does not divide the image size 32" in error_line(capsys, [*mae, "--patch-size", "5"])
    assert "--width sets a ResNet's width; vit_tiny is a ViT" in error_line(capsys, [*mae, "--width", "4"])
    assert "--mask-ratio must be between 0 and 1" in error_line(capsys, [*mae, "--mask-ratio", "1"])
    assert "mae needs a ViT backbone" in error_line(capsys, [*mae, "--backbone", "resnet18"])


def test_moco_queue_must_hold_a_step(capsys):
    line = error_line(capsys, ["pretrain", "--method", "moco", *TINY, "--queue-size", "4"])
    assert "MoCo's queue of 4 cannot hold one step's 8 keys: give --queue-size 8 or more" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_gpu_is_refused(capsys):
    assert "CUDA is not available on this machine" in error_line(
        capsys, ["pretrain", "--method", "simclr", *TINY[:-2], "--device", "cuda"])


def test_unusable_checkpoint_dir_fails_before_training(tmp_path, capsys):
    a_file = tmp_path / "hostname"
    a_file.write_text("not a folder")
    line = error_line(capsys, ["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(a_file / "run")])
    assert f"--checkpoint-dir: the folder {a_file / 'run'} cannot be created (Not a directory)" in line
    line = error_line(capsys, ["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(a_file)])
    assert f"--checkpoint-dir: {a_file} is a file, not a folder: choose another --checkpoint-dir" in line
    line = error_line(capsys, ["pretrain", "--method", "simclr", *TINY, "--report", str(a_file / "r.json")])
    assert f"--report: {a_file} is a file, not a folder: choose another --report" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_checkpoint_dir_fails_before_training(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    line = error_line(capsys, ["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(folder)])
    assert f"the folder {folder} is not writable" in line


def test_unknown_profile_in_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "fast")
    line = error_line(capsys, ["pretrain", "--method", "simclr", *TINY[:-4]])  # no --profile
    assert "Unknown coursekit profile 'fast' (from the environment variable COURSEKIT_PROFILE)" in line
    assert "unset COURSEKIT_PROFILE" in line
    assert "Unknown coursekit profile 'fast'" in error_line(capsys, ["profile"])


def test_unavailable_dataset_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("coursekit.data.downloads.DOWNLOAD_TIMEOUT_S", 5)  # never hang on a dead network
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))
    args = [a for a in TINY if a != "shapes"]
    args[args.index("--dataset") + 1:args.index("--dataset") + 1] = ["cifar10"]
    line = error_line(capsys, ["pretrain", "--method", "simclr", *args])
    assert "Dataset 'cifar10' is not available" in line and str(tmp_path) in line


@pytest.mark.skipif(not (DEBIAN_FOLDER / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST files")
def test_more_images_than_the_split_names_the_option(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))  # empty: the Debian files are used
    args = [a for a in TINY if a != "shapes"]
    args[args.index("--dataset") + 1:args.index("--dataset") + 1] = ["fashion_mnist"]
    line = error_line(capsys, ["pretrain", "--method", "simclr", *args, "--num-test", "20000"])
    assert "fashion_mnist test: n must be between 1 and 10000" in line and "(check --num-test)" in line


def train_tiny(tmp_path, *extra) -> None:
    assert main(["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(tmp_path), *extra]) == 0


def test_mismatched_or_damaged_checkpoint_is_refused_before_training(tmp_path, capsys):
    train_tiny(tmp_path)  # the smoke recipe's temperature (0.2) and learning rate
    capsys.readouterr()
    recipe = get_recipe("simclr", "smoke")
    resume = ["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(tmp_path), "--resume"]
    line = error_line(capsys, [*resume, "--temperature", "0.1"])
    assert "was made with other settings" in line
    assert f"hparams.temperature: checkpoint has {recipe.method_kwargs['temperature']}, this run has 0.1" in line
    line = error_line(capsys, [*resume, "--lr", "0.01"])
    assert f"config.lr: checkpoint has {recipe.lr(8)!r}, this run has 0.01" in line
    assert main([*resume, "--temperature", str(recipe.method_kwargs["temperature"])]) == 0  # the same run
    capsys.readouterr()

    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:-100])
    line = error_line(capsys, resume)
    assert f"checkpoint {path} is truncated" in line and "Delete it" in line


def test_the_recipe_is_used_and_printed_with_what_the_command_line_changed(tmp_path, capsys):
    train_tiny(tmp_path, "--temperature", "0.3")
    out = capsys.readouterr().out
    recipe = get_recipe("simclr", "smoke")
    assert recipe.describe() in out
    assert (f"this run: resnet18 {{'width': 4}}, 1 epochs, batch 8, {recipe.optimizer} lr {recipe.lr(8):.3g}, "
            f"weight decay {recipe.weight_decay:g}, warmup {recipe.warmup_epochs:g} epochs, method options "
            f"{{'temperature': 0.3}}, the recipe's views; changed on the command line: --epochs, --batch-size, --width, "
            f"--temperature") in out
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["settings"]["hparams"]["temperature"] == 0.3
    assert state["settings"]["config"]["lr"] == recipe.lr(8)  # the recipe's rate, scaled to batch 8


def test_stale_temporaries_are_removed_when_a_run_starts(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".checkpoint.pt.tmp{int(dead.stdout)}"  # a pid that no longer runs
    stale.write_bytes(b"half a checkpoint")
    alive = tmp_path / f".checkpoint.pt.tmp{os.getppid()}"  # a save in progress elsewhere is left alone
    alive.write_bytes(b"being written")
    assert error_line(capsys, ["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(tmp_path),
                               "--epochs", "0"])
    assert stale.exists()  # a refused command touches nothing
    save_checkpoint(tmp_path / "other.pt", {"step": 0})  # saves of other files leave them alone
    assert stale.exists()
    assert main(["pretrain", "--method", "simclr", *TINY, "--checkpoint-dir", str(tmp_path), "--epochs", "1",
                 "--checkpoint-every", "0", "--num-images", "8"]) == 0
    assert not stale.exists() and alive.exists()


def test_debug_shows_the_traceback():
    with pytest.raises(UsageError, match="--epochs must be at least 1"):
        main(["pretrain", "--method", "simclr", *TINY, "--epochs", "0", "--debug"])


def test_one_line_joins_multi_line_messages():
    assert one_line("settings differ:\n  a: 1 != 2\n  b: 3 != 4\nUse another folder.") == \
        "settings differ: a: 1 != 2; b: 3 != 4; Use another folder."
    assert one_line("Missing.\nGet it here.") == "Missing. Get it here."


def test_the_command_exits_with_status_2_and_one_line():
    result = subprocess.run([sys.executable, "-m", "coursekit", "pretrain", "--method", "simclr", "--epochs", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == "coursekit: error: --epochs must be at least 1; got 0\n"


# ----------------------------------------------------------------------------------------------
# Damaged Fashion-MNIST files


def idx_bytes(shape: tuple[int, ...], data: bytes) -> bytes:
    """An IDX file of uint8 values: magic 0 0 8 ndim, big-endian sizes, the data."""
    return bytes([0, 0, 8, len(shape)]) + b"".join(size.to_bytes(4, "big") for size in shape) + data


@pytest.mark.parametrize("name, content, problem", [
    ("t10k-images-idx3-ubyte.gz", gzip.compress(idx_bytes((10000, 28, 28), bytes(10000 * 784)))[:5000],
     "the gzip stream ends early (the file is truncated)"),
    ("t10k-images-idx3-ubyte.gz", b"<html>404 Not Found</html>", "it is not a gzip file although its name ends in .gz"),
    ("t10k-images-idx3-ubyte", idx_bytes((10000, 28, 28), bytes(23519)),
     "its header announces shape [10000, 28, 28] (7840000 bytes of data) but it holds 23519 bytes"),
    ("t10k-images-idx3-ubyte", b"PK\x03\x04 a zip file", "it is not an IDX file"),
    ("t10k-images-idx3-ubyte", idx_bytes((500, 28, 28), bytes(500 * 784)),
     "it holds torch.uint8 images of shape [500, 28, 28], not the test split's uint8 [10000, 28, 28]"),
])
def test_damaged_fashion_mnist_files_are_named(tmp_path, monkeypatch, name, content, problem):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / name).write_bytes(content)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes((10000,), bytes(10000)))
    with pytest.raises(DatasetDamagedError) as error:
        load_images("fashion_mnist", "test", n=16)
    message = str(error.value)
    assert f"Fashion-MNIST file {folder / name} is damaged: {problem}" in message
    assert "Delete it" in message and str(DEBIAN_FOLDER) in message


def test_damaged_fashion_mnist_is_one_line_from_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"truncated")
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes((60000,), bytes(60000)))
    args = [a for a in TINY if a != "shapes"]
    args[args.index("--dataset") + 1:args.index("--dataset") + 1] = ["fashion_mnist"]
    line = error_line(capsys, ["pretrain", "--method", "simclr", *args])
    assert f"Fashion-MNIST file {folder / 'train-images-idx3-ubyte.gz'} is damaged" in line


@pytest.mark.skipif(not (DEBIAN_FOLDER / "t10k-images-idx3-ubyte.gz").exists(), reason="no Fashion-MNIST files")
def test_truncated_copy_of_the_real_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSEKIT_DATA", str(tmp_path))
    shutil.copy(DEBIAN_FOLDER / "t10k-labels-idx1-ubyte.gz", tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes((DEBIAN_FOLDER / "t10k-images-idx3-ubyte.gz").read_bytes()[:-1000])
    with pytest.raises(DatasetDamagedError, match="truncated"):
        load_images("fashion_mnist", "test")


def test_exercises_from_a_folder_without_solutions_deletes_nothing(tmp_path, capsys):
    exercises = tmp_path / "exercises"
    exercises.mkdir()
    (exercises / "02_simclr.ipynb").write_text("{}")
    line = error_line(capsys, ["exercises", "--solutions", str(tmp_path / "missing"), "--exercises", str(exercises)])
    assert "--solutions" in line and "holds no notebooks" in line
    assert (exercises / "02_simclr.ipynb").exists()


def test_options_the_method_refuses_are_one_line(capsys):
    mae = ["pretrain", "--method", "mae", *[a for a in TINY if a not in ("--width", "4")]]
    line = error_line(capsys, [*mae, "--mask-ratio", "0.99"])  # 16 patches: none would stay visible
    assert "mae refuses the options {'mask_ratio': 0.99" in line
    assert "mask_ratio 0.99 must keep at least one of 16 patches" in line


def test_a_method_flag_reaches_the_argument_its_method_declares(tmp_path, capsys):
    """--temperature is DINO's student_temp: the run's checkpoint records it there."""
    checkpoint = tmp_path / "dino"
    assert main(["pretrain", "--method", "dino", *TINY, "--temperature", "0.25", "--checkpoint-dir", str(checkpoint)]) == 0
    hparams = load_checkpoint(checkpoint / "checkpoint.pt")["settings"]["hparams"]
    assert hparams["student_temp"] == 0.25
