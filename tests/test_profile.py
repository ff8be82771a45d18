import pytest
import torch

from coursekit.profile import PROFILE_NAMES, default_device, get_profile


def test_environment_variable_selects_profile(monkeypatch):
    for name in PROFILE_NAMES:
        monkeypatch.setenv("COURSEKIT_PROFILE", name)
        assert get_profile().name == name


def test_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "demo")
    assert get_profile("smoke").name == "smoke"


def test_automatic_choice_follows_hardware(monkeypatch):
    monkeypatch.delenv("COURSEKIT_PROFILE", raising=False)
    assert get_profile().name == ("full" if torch.cuda.is_available() else "demo")


def test_bad_value_lists_valid_profiles(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "turbo")
    with pytest.raises(ValueError) as error:
        get_profile()
    message = str(error.value)
    assert "turbo" in message and "COURSEKIT_PROFILE" in message
    assert all(name in message for name in PROFILE_NAMES)


def test_profiles_grow_from_smoke_to_full():
    smoke, demo, full = (get_profile(n) for n in ("smoke", "demo", "full"))
    assert smoke.num_train < demo.num_train < full.num_train
    assert smoke.width <= demo.width <= full.width
    assert smoke.dataset == "shapes"  # offline, no download in tests


def test_device_and_banner():
    profile = get_profile("smoke")
    assert profile.device == default_device()
    banner = profile.banner()
    assert "\n" not in banner and "smoke" in banner and profile.device in banner


def test_replace_returns_changed_copy():
    profile = get_profile("smoke")
    changed = profile.replace(epochs=profile.epochs + 2)
    assert changed.epochs == profile.epochs + 2 and changed.dataset == profile.dataset


def test_cli_prints_banner(capsys):
    from coursekit.cli import main

    assert main(["profile", "--name", "smoke"]) == 0
    assert "profile 'smoke'" in capsys.readouterr().out


def test_checkpoint_dir_follows_cache_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSEKIT_CACHE", str(tmp_path))
    assert get_profile("smoke").checkpoint_dir("simclr") == tmp_path / "checkpoints" / "smoke-simclr"
