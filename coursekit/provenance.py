"""Which coursekit values a published lesson read, and a fingerprint of each.

A lesson's outputs depend on more than its code: the run sizes of its profile, the recipes it
trains with, the shipped long runs and stored benchmark results it loads. When one of them changes,
the outputs no longer show what the code would print. So ``coursekit publish`` runs the lesson with
``COURSEKIT_READS`` naming a file; ``get_profile``, ``get_recipe`` and ``coursekit.pretrained`` append
one key per value they hand out (``profile:demo``, ``recipe:byol/demo``, ``pretrained:fmnist-byol``,
``results:transfer``), and the stamp keeps ``{key: fingerprint(key)}``. A published lesson is stale
when a fingerprint differs from the one stamped (``coursekit.notebooks.staleness``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

READS_ENV = "COURSEKIT_READS"


def record(kind: str, name: str) -> None:
    """Note that value ``kind:name`` was read, when a publish is listening (``COURSEKIT_READS`` is set)."""
    path = os.environ.get(READS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as log:
            log.write(f"{kind}:{name}\n")


def read_keys(path: Path) -> list[str]:
    """The distinct keys a run recorded in ``path``, sorted (none when the file was never written)."""
    path = Path(path)
    return sorted(set(path.read_text(encoding="utf-8").split())) if path.is_file() else []


def _sha256_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=repr).encode("utf-8")).hexdigest()


def fingerprint(key: str) -> str | None:
    """sha256 of the current value behind ``key``, or None when it no longer exists.

    profile: the profile's sizes (its device is stamped apart: it is the machine's, not the course's);
    recipe: every field of the recipe; pretrained: the manifest entry (its weights' sha256, command
    and metrics); results: the stored file's bytes.
    """
    kind, _, name = key.partition(":")
    try:
        if kind == "profile":
            from coursekit.profile import get_profile

            sizes = dataclasses.asdict(get_profile(name, device="cpu"))
            sizes.pop("device")
            return _sha256_json(sizes)
        if kind == "recipe":
            from coursekit.recipes import get_recipe

            method, _, profile = name.partition("/")
            return _sha256_json(dataclasses.asdict(get_recipe(method, profile)))
        if kind == "pretrained":
            from coursekit.pretrained import read_manifest

            found = [e for e in read_manifest().get("entries", []) if e["name"] == name]
            return _sha256_json(found[0]) if found else None
        if kind == "results":
            from coursekit.pretrained import FOLDER

            path = FOLDER / f"{name}.json"
            return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    except ValueError:  # an unknown profile, method or entry: the value is gone
        return None
    raise ValueError(f"unknown kind of value {kind!r} in {key!r}; known: profile, recipe, pretrained, results")
