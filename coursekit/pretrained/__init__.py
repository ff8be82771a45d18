"""Long runs shipped with the course: what the recipes reach with an hour of compute, offline.

A lesson can train a method for five minutes in class; it cannot show what the same recipe reaches
with ten times the compute. So the course ships such runs, made by ``coursekit pretrain`` (the exact
command, seed, commit, device and seconds of each are in ``manifest.json`` beside this file), as
data-only safetensors files of the backbone's tensors in fp16 (nothing is unpickled, no code runs
on load)::

    from coursekit import pretrained
    for entry in pretrained.entries():
        print(entry["name"], entry["method"], entry["metrics"])
    backbone = pretrained.load("fmnist-simclr")   # an nn.Module in eval mode: backbone(x) -> [N, D]

``load`` checks the file's SHA-256 against the manifest before reading it, so a damaged or
swapped file is refused. ``coursekit export --pretrained NAME`` writes one for other tools.
``scripts/ship_pretrained.py`` turns a finished run into an entry and measures its metrics.

``results(name)`` reads a stored benchmark report shipped here: ``results("byol_ablation")`` is
lesson 04's ablation (``benchmarks/byol_ablation.py``), ``results("label_fractions")`` lesson 07's tables
of the five-minute runs (``benchmarks/label_fractions.py``). ``transfer_results()`` is what ``benchmarks/transfer.py`` measured with the shipped in-domain
backbones (fine-tuned against the same architecture from scratch, several seeds): the lessons on
detection and segmentation show it next to the one run they can afford live.

The backbones of your own runs are built here too, from the files the engine's checkpoint format
(``coursekit.engine.checkpoint``) reads: ``pretrained_backbone(checkpoint_dir)`` is the pretrained
backbone of a ``coursekit pretrain`` run's checkpoint, ``load_backbone(path)`` the backbone file
written by ``coursekit export --format state_dict``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from coursekit.engine.checkpoint import read_backbone_file, read_run_backbone
from coursekit.methods import METHODS
from coursekit.models import build_backbone
from coursekit.provenance import record

FOLDER = Path(__file__).parent
MANIFEST = FOLDER / "manifest.json"
TRANSFER = FOLDER / "transfer.json"  # written by benchmarks/transfer.py --report
ENTRY_FIELDS = ("name", "method", "backbone", "backbone_kwargs", "dataset", "images", "image_size", "epochs", "steps",
                "seed", "init_seed", "command", "commit", "device", "cpu_seconds", "date", "file", "sha256", "metrics")


class PretrainedError(ValueError):
    """An unknown entry, or a shipped file that is missing or does not match its manifest."""


def read_manifest() -> dict:
    """The manifest: ``{"entries": [entry, ...], "baselines": {...}}`` (empty when none is shipped)."""
    if not MANIFEST.is_file():
        return {"entries": [], "baselines": {}}
    return json.loads(MANIFEST.read_text())


def entries() -> list[dict]:
    """Every shipped run, as its manifest entry (``ENTRY_FIELDS``)."""
    record("results", MANIFEST.stem)  # a lesson that lists them depends on the whole manifest
    return read_manifest()["entries"]


def entry(name: str) -> dict:
    """The manifest entry called ``name``; PretrainedError naming the shipped ones otherwise."""
    shipped = read_manifest()["entries"]
    for candidate in shipped:
        if candidate["name"] == name:
            record("pretrained", name)
            return candidate
    names = ", ".join(e["name"] for e in shipped) or "none"
    raise PretrainedError(f"no shipped run called {name!r}; shipped: {names}")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights(name: str) -> dict[str, torch.Tensor]:
    """The backbone tensors of entry ``name`` as stored (fp16 floats), after checking the file's SHA-256."""
    from safetensors.torch import load_file

    found = entry(name)
    path = FOLDER / found["file"]
    if not path.is_file():
        raise PretrainedError(f"{name}: its weights {path} are missing (reinstall coursekit)")
    if file_sha256(path) != found["sha256"]:
        raise PretrainedError(f"{name}: {path} does not match the SHA-256 in the manifest (damaged or replaced): "
                              f"reinstall coursekit")
    return load_file(path)


def load(name: str) -> nn.Module:
    """The backbone of shipped run ``name`` with its weights (fp32), in eval mode."""
    found = entry(name)
    backbone = build_backbone(found["backbone"], **found["backbone_kwargs"])
    dtypes = {key: value.dtype for key, value in backbone.state_dict().items()}  # fp16 back to the model's own
    backbone.load_state_dict({key: value.to(dtypes[key]) for key, value in weights(name).items()})
    return backbone.eval()


def pretrained_backbone(checkpoint_dir: Path) -> tuple[nn.Module, dict]:
    """The pretrained backbone of a run's checkpoint (the method's ``pretrained_backbone``: DINO's
    teacher, the others' trained backbone) -> (backbone with its weights, run info
    ``{"backbone", "kwargs", "method", "step", "total_steps"}``). CheckpointError for a damaged
    checkpoint or one that does not name its backbone."""
    found = read_run_backbone(checkpoint_dir)
    backbone = build_backbone(found["backbone"], **found["kwargs"])
    # The method's state_dict holds it as "<pretrained_backbone_name>.*", e.g. "backbone.*".
    method_class = {cls.__name__: cls for cls in METHODS.values()}[found["method"]]  # a class name
    prefix = method_class.pretrained_backbone_name + "."
    weights = {key.removeprefix(prefix): value for key, value in found["method_state"].items() if key.startswith(prefix)}
    backbone.load_state_dict(weights)
    info = {key: found[key] for key in ("backbone", "kwargs", "method", "step", "total_steps")}
    return backbone, info


def load_backbone(path: str | Path) -> nn.Module:
    """The backbone saved by ``coursekit export --format state_dict``, with its weights, in eval mode."""
    saved = read_backbone_file(path)
    backbone = build_backbone(saved["backbone"], **saved["kwargs"])
    backbone.load_state_dict(saved["state_dict"])
    return backbone.eval()


def results(name: str) -> dict:
    """A stored benchmark report shipped beside the weights (``<name>.json``): what a lesson shows but
    cannot compute in class (more seeds, more runs), with its command, device and date."""
    path = FOLDER / f"{name}.json"
    if name == MANIFEST.stem or not path.is_file():
        stored = sorted(p.stem for p in FOLDER.glob("*.json") if p != MANIFEST)
        raise PretrainedError(f"no stored results called {name!r} in {FOLDER}; stored: {', '.join(stored) or 'none'}")
    record("results", name)
    return json.loads(path.read_text())


def transfer_results() -> dict:
    """``benchmarks/transfer.py``'s report: per task and label regime, the score of every seed for the
    SSL-initialized and the scratch model, with its settings and environment (command, device, date)."""
    return results(TRANSFER.stem)


def save_weights(backbone: nn.Module, path: Path) -> str:
    """Write ``backbone``'s tensors to ``path`` as safetensors (floats in fp16) -> the file's SHA-256."""
    from safetensors.torch import save_file

    tensors = {key: (value.half() if value.is_floating_point() else value).contiguous()
               for key, value in backbone.state_dict().items()}
    save_file(tensors, path)
    return file_sha256(path)


__all__ = ["PretrainedError", "entries", "entry", "load", "weights", "save_weights", "read_manifest",
           "pretrained_backbone", "load_backbone",
           "transfer_results", "MANIFEST", "TRANSFER", "ENTRY_FIELDS"]
