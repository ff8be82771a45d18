"""Checkpoints that are never half-written, never loaded when damaged, never mixed up.

A checkpoint file is the bytes of ``torch.save(state)`` followed by a footer: a magic line and
the SHA-256 digest of those bytes. So that a crash (or a Colab disconnect) mid-write cannot
destroy the last good checkpoint, ``save_checkpoint`` writes a temporary file in the same folder,
flushes it to disk and only then renames it over the old one (``os.replace`` is atomic).
``load_checkpoint`` refuses a truncated file (no footer) or a corrupt one (digest mismatch) with
a ``CheckpointError``, and ``check_settings`` refuses a checkpoint made with other settings.
A process killed mid-write leaves its temporary file (``.checkpoint.pt.tmp<pid>``) behind;
``remove_stale_temporaries`` deletes those whose process is gone (every save calls it).
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

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
