"""Checkpoints that are never half-written, never loaded when damaged, never mixed up.

A checkpoint file is the bytes of ``torch.save(state)`` followed by a footer: a magic line and
the SHA-256 digest of those bytes. So that a crash (or a Colab disconnect) mid-write cannot
destroy the last good checkpoint, ``save_checkpoint`` writes a temporary file in the same folder,
flushes it to disk and only then renames it over the old one (``os.replace`` is atomic).
``load_checkpoint`` refuses a truncated file (no footer) or a corrupt one (digest mismatch) with
a ``CheckpointError``, and ``check_settings`` refuses a checkpoint made with other settings.
A process killed mid-write leaves its temporary file (``.checkpoint.pt.tmp<pid>``) behind;
``remove_stale_temporaries`` deletes those whose process is gone (every save calls it).

This module holds the checkpoint format, written and read here only:

- the file (above): ``save_checkpoint`` / ``load_checkpoint``, ``check_settings``;
- a run's checkpoint, ``<checkpoint_dir>/checkpoint.pt`` (``CHECKPOINT_NAME``, ``checkpoint_path``):
  ``training_state`` (written by ``engine.fit``: settings, step, total_steps, the method's
  state_dict, optimizer, scaler, history, RNG states) and ``restore_training_state``; a run's
  backbone as the checkpoint names it: ``read_run_backbone`` (what ``coursekit.pretrained.pretrained_backbone``
  builds the backbone from);
- the backbone file of ``coursekit export --format state_dict`` (``BACKBONE_FORMAT``):
  ``save_backbone`` / ``read_backbone_file`` (what ``coursekit.pretrained.load_backbone`` builds it from).

Building modules from these (``build_backbone``, the method classes) is left to the rooms above
(``coursekit.pretrained``), so that the engine imports nothing of the models or methods.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from coursekit import dry_run

CHECKPOINT_NAME = "checkpoint.pt"  # a run's checkpoint in its checkpoint_dir
BACKBONE_FORMAT = "coursekit-backbone"  # the "format" of a backbone file written by coursekit export --format state_dict
MAGIC = b"\ncoursekit-checkpoint-v1\n"
DIGEST_SIZE = 32  # bytes of a SHA-256 digest


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or was made with other settings."""


def _temporary_prefix(path: Path) -> str:
    """The name of a save's temporary file is this prefix followed by the writer's process id."""
    return f".{path.name}.tmp"


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of ``path`` left by killed saves (``.<name>.tmp<pid>`` of a
    process that no longer runs); a save in progress in a live process is left alone.
    Returns the deleted paths."""
    path = Path(path)
    removed = []
    prefix = _temporary_prefix(path)
    for candidate in path.parent.glob(f"{prefix}*"):
        pid = candidate.name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_is_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) to ``path`` atomically.

    The old file at ``path``, if any, is replaced only once the new one is completely on disk.
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    temporary = path.with_name(f"{_temporary_prefix(path)}{os.getpid()}")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.write(MAGIC)
            file.write(hashlib.sha256(data).digest())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: torch.device | str = "cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; tensors go to ``map_location``.

    Raises:
        CheckpointError: the file is missing, truncated (the footer is not there), corrupt (the
            digest does not match) or unreadable. Nothing is loaded from a damaged file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    raw = path.read_bytes()
    footer = len(MAGIC) + DIGEST_SIZE
    advice = "Delete it (or pick another checkpoint directory) to train from the start."
    if len(raw) < footer or raw[-footer:-DIGEST_SIZE] != MAGIC:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a coursekit checkpoint ({len(raw)} bytes, no "
            f"complete footer): it was not loaded. {advice}"
        )
    data, digest = raw[:-footer], raw[-DIGEST_SIZE:]
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is corrupt (its SHA-256 digest does not match its "
                              f"contents): it was not loaded. {advice}")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # a bad pickle inside a file whose digest matches
        raise CheckpointError(f"checkpoint {path} could not be read ({error}). {advice}") from error


def settings_differences(saved: dict, expected: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested settings dicts, e.g. ``"config.lr: 0.1 != 0.2"``."""
    differences = []
    for key in sorted(set(saved) | set(expected), key=str):
        name = f"{prefix}{key}"
        old, new = saved.get(key, "<missing>"), expected.get(key, "<missing>")
        if isinstance(old, dict) and isinstance(new, dict):
            differences += settings_differences(old, new, prefix=f"{name}.")
        elif old != new:
            differences.append(f"{name}: checkpoint has {old!r}, this run has {new!r}")
    return differences


def check_settings(path: str | os.PathLike, saved: dict, expected: dict) -> None:
    """Raise a ``CheckpointError`` naming every setting in which the checkpoint differs from this run."""
    differences = settings_differences(saved, expected)
    if differences:
        raise CheckpointError(
            f"checkpoint {path} was made with other settings:\n  " + "\n  ".join(differences)
            + "\nUse another checkpoint directory, delete the checkpoint, or run with the same settings."
        )


# ----------------------------------------------------------------------------------------------
# A run's checkpoint: what engine.fit saves and resumes from


def checkpoint_path(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    return None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME


def finished_run(checkpoint_dir: str | os.PathLike) -> bool:
    """Whether ``checkpoint_dir`` holds a finished run: ``load_or_train`` would load it, not train.
    (Whether its settings match is checked when it is loaded.) A dry run's checkpoint (its settings
    hold ``dry_run``: ``coursekit.dry_run``) is finished only for another dry run, never for a real one."""
    path = checkpoint_path(checkpoint_dir)
    if not path.is_file():
        return False
    state = load_checkpoint(path)
    if ("dry_run" in state["settings"]) != dry_run.is_dry_run():
        return False
    return state["step"] == state["total_steps"]


def rng_states(device: torch.device) -> dict:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> None:
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def training_state(method, optimizer_step, history, step, total_steps, settings, device) -> dict:
    """Everything needed to continue (or reuse) a run after ``step`` of ``total_steps`` steps."""
    return {
        "settings": settings, "step": step, "total_steps": total_steps, "finished": step == total_steps,
        "method": method.state_dict(), **optimizer_step.state_dict(),
        "history": history.to_dict(), "rng": rng_states(device),
    }


def restore_training_state(path: Path, method, optimizer_step, settings: dict,
                           device: torch.device) -> tuple[int, dict]:
    """Load the checkpoint at ``path`` into the method, optimizer and scaler -> (step, the history
    as saved: ``History.to_dict()``). Refuses (CheckpointError) a damaged checkpoint or one made
    with other settings, naming them."""
    state = load_checkpoint(path, map_location=device)
    check_settings(path, state["settings"], settings)
    method.load_state_dict(state["method"])
    optimizer_step.load_state_dict(state)
    set_rng_states(state["rng"], device)
    return state["step"], state["history"]


def read_run_backbone(checkpoint_dir: str | os.PathLike) -> dict:
    """What a run's checkpoint (made by ``coursekit pretrain``) says about its backbone ->
    ``{"backbone", "kwargs", "method" (the method's class name), "step", "total_steps",
    "method_state" (the method's state_dict: the backbone's tensors are under the method's
    ``pretrained_backbone_name``)}``. CheckpointError if the checkpoint does not name its backbone."""
    checkpoint_dir = Path(checkpoint_dir)
    state = load_checkpoint(checkpoint_dir / CHECKPOINT_NAME)
    extra = state["settings"].get("extra", {})
    if "backbone" not in extra:
        raise CheckpointError(f"{checkpoint_dir}: the checkpoint does not name its backbone (made by coursekit pretrain?)")
    return {"backbone": extra["backbone"], "kwargs": dict(extra.get("backbone_kwargs", {})),
            "method": state["settings"]["method"], "step": state["step"], "total_steps": state["total_steps"],
            "method_state": state["method"]}


# ----------------------------------------------------------------------------------------------
# The backbone file of coursekit export --format state_dict


def save_backbone(path: str | os.PathLike, state_dict: dict, info: dict) -> None:
    """Write a backbone's tensors and what rebuilds it: ``{"format": BACKBONE_FORMAT, "backbone":
    name, "kwargs": constructor kwargs, "state_dict", "method", "step"}`` (``info`` holds
    backbone, kwargs, method and step)."""
    torch.save({"format": BACKBONE_FORMAT, "backbone": info["backbone"], "kwargs": info["kwargs"],
                "state_dict": state_dict, "method": info["method"], "step": info["step"]}, path)


def read_backbone_file(path: str | os.PathLike) -> dict:
    """The contents of a file written by ``save_backbone`` (``coursekit export --format state_dict``);
    ValueError for any other file."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != BACKBONE_FORMAT:
        raise ValueError(f"{path} is not a backbone written by coursekit export --format state_dict")
    return saved
