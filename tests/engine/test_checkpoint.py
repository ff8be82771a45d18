"""Atomic checkpoint files: round trip, damaged files refused, the old file kept when a save fails."""
import pytest
import torch

from coursekit.engine.checkpoint import CheckpointError, check_settings, load_checkpoint, save_checkpoint, settings_differences


def test_round_trip(tmp_path):
    state = {"weights": torch.arange(6.0).view(2, 3), "step": 7, "history": {"loss": [0.5, 0.25]}}
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", state)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["weights"], state["weights"])
    assert loaded["step"] == 7 and loaded["history"] == state["history"]
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_failed_save_keeps_the_old_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"step": 2, "unpicklable": lambda: None})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-10], "truncated"),
    (lambda data: data[:100], "truncated"),
    (lambda data: data[:50] + bytes([data[50] ^ 1]) + data[51:], "corrupt"),
    (lambda data: b"", "truncated"),
])
def test_damaged_files_are_refused(tmp_path, damage, message):
    path = save_checkpoint(tmp_path / "ckpt.pt", {"weights": torch.ones(100)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_plain_torch_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"step": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a coursekit checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_settings_differences_name_every_nested_setting():
    saved = {"method": "SimCLR", "config": {"lr": 0.1, "epochs": 5}, "extra": {}}
    expected = {"method": "MoCo", "config": {"lr": 0.1, "epochs": 6}, "extra": {"width": 8}}
    assert settings_differences(saved, expected) == [
        "config.epochs: checkpoint has 5, this run has 6",
        "extra.width: checkpoint has '<missing>', this run has 8",
        "method: checkpoint has 'SimCLR', this run has 'MoCo'",
    ]
    check_settings("ckpt.pt", saved, saved)  # equal settings pass
    with pytest.raises(CheckpointError, match="other settings"):
        check_settings("ckpt.pt", saved, expected)
