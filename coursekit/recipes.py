"""Training recipes: every method's hyperparameters for every profile, in one place.

The notebooks, ``coursekit pretrain`` and the benchmarks read the same recipe::

    from coursekit.recipes import get_recipe
    recipe = get_recipe("byol", "demo")
    print(recipe.describe())
    method = recipe.build_method(recipe.build_backbone())  # options and views of the recipe
    history = fit(method, images, recipe.train_config(seed=0))

A recipe holds the optimizer, the learning rate for a batch of 256 (``base_lr``; the rate used is
``base_lr * batch_size / 256``, the linear scaling rule), warmup, weight decay, epochs, batch, the
method's own options (EMA momentum start, temperatures, multi-crop, mask ratio, head sizes) and its
view options (crop scale, jitter strength, color on or off), plus the evaluation protocol that
suits the method (kNN for the joint-embedding methods, a linear probe for MAE).

How the demo recipes were chosen (Fashion-MNIST, 4,096 images, ResNet-18 of width 16, a 2-core
CPU, pretraining within 5 minutes of wall time on the idle machine, at most about 400 CPU-seconds
at one thread; ``benchmarks/knn_methods.py`` measures them,
the README's "Measured results" shows what was measured and what was not):

- Fashion-MNIST is gray: saturation, hue and random grayscale do nothing (``color=False``).
- A 32 px garment survives a crop of a third of its area, not the 8% of ImageNet's recipes:
  crops of scale (0.3..0.4, 1) keep the object recognizable.
- Short budgets want many small steps (batch 128; BYOL 64). The EMA momentum rises to 1 with a cosine from
  0.99 (MoCo, BYOL) or 0.98 (DINO), not the papers' 0.996: in a short run a slow teacher lags
  behind its student (BYOL, 10 epochs at 0.996 on seed 1: -6.4 kNN points against random init).
- DINO: a small output (128 prototypes, not 65,536), no local crops (two 32 px global crops; 16 px
  local crops of a 32 px garment hold too little of it), no solarization (it inverts every pixel
  above mid-gray, so a bright garment on black turns dark), a sharp teacher (temperature 0.04) and
  BatchNorm in the head: without BatchNorm (256 prototypes, teacher 0.04 or 0.04 -> 0.07) the
  teacher's output went uniform on seed 0 (loss = ln 256); with it, it stays peaked.
- BYOL: its predictor learns at 10 times the encoder's rate. The predictor chases a moving target;
  a slow one makes the encoder's first epochs worse than its random init (Tian et al. 2021).
- MAE's features are not made for kNN (they are linear-probe / fine-tuning features, and the
  pixel-reconstruction objective keeps low-level detail): its protocol is the linear probe.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch
from torch import nn

from coursekit.augment import BYOLViews, DINOViews, MAEViews, SimCLRViews, Views
from coursekit.data import ImageSet
from coursekit.engine import History, TrainConfig, load_or_train
from coursekit.evaluate import extract_features, knn_accuracy, linear_probe
from coursekit.methods import build_method
from coursekit.models import build_backbone
from coursekit.profile import PROFILE_NAMES, get_profile
from coursekit.provenance import record

KNN_K, KNN_TEMPERATURE = 200, 0.1  # the weighted kNN of every coursekit report (Wu et al. 2018)
REFERENCE_BATCH = 256  # base_lr is the learning rate of a batch of this size
PROTOCOLS = ("knn", "linear")
VIT_METHODS = ("mae",)  # methods that need a ViT backbone; the others use the profile's ResNet
VIEW_CLASSES = {"simclr": SimCLRViews, "moco": SimCLRViews, "byol": BYOLViews, "dino": DINOViews, "mae": MAEViews}
MULTICROP_OPTIONS = ("local_size", "n_local")  # DINO options that are also its views' geometry


@dataclass(frozen=True)
class Recipe:
    """How to pretrain one method under one profile.

    Attributes:
        method: method name (``coursekit.methods.METHODS``).
        profile: profile name; its dataset, image size and number of images are the data.
        backbone: backbone name for ``coursekit.models.build_backbone``.
        backbone_kwargs: its constructor options (ResNet width; ViT image size, patch, depth).
        epochs, batch_size: passes over the profile's images, images per step.
        base_lr: peak learning rate for a batch of 256; scaled linearly with the batch.
        optimizer: "adamw" or "sgd" (momentum 0.9).
        weight_decay: decoupled (AdamW) or L2 (SGD), never on biases and norm weights.
        warmup_epochs: linear learning-rate warmup, then a cosine decay to 0.
        method_kwargs: options of the method's constructor (temperatures, momentum, heads...).
        view_options: options of the method's view recipe (``coursekit.augment``: crop scale,
            jitter strength, color on or off).
        protocol: the evaluation that suits the method: "knn" (weighted kNN, k=200, t=0.1) or
            "linear" (linear probe on frozen features).
        why: one line on why these values.
    """

    method: str
    profile: str
    backbone: str
    backbone_kwargs: dict
    epochs: int
    batch_size: int
    base_lr: float
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    method_kwargs: dict = field(default_factory=dict)
    view_options: dict = field(default_factory=dict)
    protocol: str = "knn"
    why: str = ""

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"recipe {self.method}/{self.profile}: protocol must be one of {PROTOCOLS}")

    @property
    def image_size(self) -> int:
        return get_profile(self.profile, device="cpu").image_size

    def lr(self, batch_size: int | None = None) -> float:
        """The peak learning rate for ``batch_size`` (default the recipe's): base_lr * batch / 256."""
        return self.base_lr * (batch_size or self.batch_size) / REFERENCE_BATCH

    def train_config(self, epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                     **fields) -> TrainConfig:
        """The TrainConfig of this recipe; any argument overrides it (``lr`` the scaled rate itself,
        other ``fields`` are TrainConfig fields such as seed, precision, checkpoint_every)."""
        # None means "the recipe's": an explicit 0 reaches TrainConfig, which refuses it
        batch_size = self.batch_size if batch_size is None else batch_size
        return TrainConfig(epochs=self.epochs if epochs is None else epochs, batch_size=batch_size,
                           lr=self.lr(batch_size) if lr is None else lr,
                           optimizer=self.optimizer, weight_decay=self.weight_decay,
                           warmup_epochs=self.warmup_epochs, **fields)

    def build_backbone(self) -> nn.Module:
        """The recipe's backbone at a fresh random initialization (seed it with torch.manual_seed)."""
        return build_backbone(self.backbone, **self.backbone_kwargs)

    def build_views(self) -> Views:
        """The method's view recipe with the recipe's view options (DINO's n_local and local_size
        come from method_kwargs, where the method reads them too)."""
        multicrop = {key: self.method_kwargs[key] for key in MULTICROP_OPTIONS if key in self.method_kwargs}
        return VIEW_CLASSES[self.method](self.image_size, **multicrop, **self.view_options)

    def build_method(self, backbone: nn.Module) -> nn.Module:
        """The method on ``backbone`` with the recipe's options, its views replaced by ``build_views()``."""
        method = build_method(self.method, backbone, image_size=self.image_size, **self.method_kwargs)
        method.views = self.build_views()
        return method

    def to_dict(self) -> dict:
        """Every field, plus the scaled learning rate: JSON-ready."""
        return {**dataclasses.asdict(self), "lr": self.lr()}

    def describe(self) -> str:
        """A few lines to print before training: what will be run, with which values."""
        options = json.dumps(self.method_kwargs, sort_keys=True)
        views = json.dumps(self.view_options, sort_keys=True)
        return (f"recipe {self.method}/{self.profile}: {self.backbone} {json.dumps(self.backbone_kwargs)}, "
                f"{self.epochs} epochs, batch {self.batch_size}, {self.optimizer} lr {self.lr():.3g} "
                f"(base {self.base_lr:g} per {REFERENCE_BATCH}), weight decay {self.weight_decay:g}, "
                f"warmup {self.warmup_epochs:g} epochs, evaluated by {self.protocol}\n"
                f"  method options: {options}\n  view options: {views}\n  why: {self.why}")


# The view options of gray 32 px garments: no color ops, crops that keep most of the object.
GRAY_32PX = {"color": False, "min_scale": 0.3}

# Per method and profile. smoke only has to run (one short epoch on synthetic shapes); demo is
# measured (benchmarks/knn_methods.py); full is the GPU profile (CIFAR-10, or the dataset named by
# COURSEKIT_DATASET), after solo-learn's and lightly's CIFAR-10 recipes, with plain SGD where they
# use LARS; it is not measured yet.
_RECIPES: dict[str, dict[str, dict]] = {
    "simclr": {
        "smoke": dict(epochs=1, batch_size=64, base_lr=2e-3, warmup_epochs=0.0, method_kwargs={"temperature": 0.2}),
        "demo": dict(epochs=8, batch_size=128, base_lr=4e-3, warmup_epochs=1.0, method_kwargs={"temperature": 0.2},
                     view_options=GRAY_32PX,
                     why="many small AdamW steps; temperature 0.2 (0.5 in the paper's long runs learns slower)"),
        "full": dict(epochs=30, batch_size=512, base_lr=0.3, optimizer="sgd", weight_decay=5e-4, warmup_epochs=3.0,
                     method_kwargs={"temperature": 0.2}, view_options={"min_scale": 0.08},
                     why="solo-learn's CIFAR-10 SimCLR (lr 0.3 per 256, temperature 0.2)"),
    },
    "moco": {
        "smoke": dict(epochs=1, batch_size=64, base_lr=2e-3, warmup_epochs=0.0,
                      method_kwargs={"temperature": 0.2, "momentum": 0.99, "queue_size": 256}),
        "demo": dict(epochs=24, batch_size=128, base_lr=8e-3, warmup_epochs=1.0,
                     method_kwargs={"temperature": 0.2, "momentum": 0.99, "queue_size": 1024}, view_options=GRAY_32PX,
                     why="a queue of 8 batches, so that few of its negatives are stale or random; fast key encoder; "
                         "a MoCo step is cheap (one view through the query encoder), so 24 epochs fit the budget; "
                         "seed 1 (the hardest): 16 epochs +2.9 kNN points (181 CPU-s), 24 epochs +4.4 (279 CPU-s); "
                         "seed 0, 8 epochs: +4.5 (lr 4e-3 at batch 128), +3.9 (2e-3)"),
        "full": dict(epochs=30, batch_size=512, base_lr=0.3, optimizer="sgd", weight_decay=5e-4, warmup_epochs=3.0,
                     method_kwargs={"temperature": 0.2, "momentum": 0.99, "queue_size": 4096},
                     view_options={"min_scale": 0.08},
                     why="solo-learn's CIFAR-10 MoCo v2+ (lr 0.3 per 256, temperature 0.2, queue 4096)"),
    },
    "byol": {
        "smoke": dict(epochs=1, batch_size=64, base_lr=2e-3, warmup_epochs=0.0, method_kwargs={"momentum": 0.99}),
        "demo": dict(epochs=16, batch_size=64, base_lr=8e-3, warmup_epochs=1.0,
                     method_kwargs={"momentum": 0.99, "predictor_lr": 10.0}, view_options=GRAY_32PX,
                     why="a predictor that learns 10 times faster than the encoder, so that it keeps up with the "
                         "target it predicts (Tian et al. 2021), batch 64 (twice the steps for the same CPU time: "
                         "the target moves once per step) and a fast target (momentum 0.99 -> 1); kNN gain over "
                         "random init at batch 128 without / with the fast predictor: seed 0 +4.1 / +7.3, seed 1 "
                         "-1.0 / +2.7, seed 2 -3.9 / +2.0 points; at batch 64 with it: seed 1 +5.4 (16 epochs, "
                         "about 410 CPU-s)"),
        "full": dict(epochs=30, batch_size=512, base_lr=1.0, optimizer="sgd", weight_decay=1e-5, warmup_epochs=3.0,
                     method_kwargs={"momentum": 0.99}, view_options={"min_scale": 0.08},
                     why="solo-learn's CIFAR-10 BYOL (lr 1.0 per 256, weight decay 1e-5, momentum 0.99)"),
    },
    "dino": {
        "smoke": dict(epochs=1, batch_size=64, base_lr=2e-3, warmup_epochs=0.0,
                      method_kwargs={"out_dim": 256, "n_local": 2, "momentum": 0.99}),
        "demo": dict(epochs=16, batch_size=128, base_lr=4e-3, warmup_epochs=1.0,
                     method_kwargs={"out_dim": 128, "n_local": 0, "momentum": 0.98, "teacher_temp": 0.04,
                                    "warmup_teacher_temp": 0.04, "center_momentum": 0.9, "head_batch_norm": True},
                     view_options={"color": False, "global_scale": (0.3, 1.0), "solarize_p": 0.0},
                     why="BatchNorm in the head, 128 prototypes, a sharp teacher (0.04), no local crops (two 32 px "
                         "global crops), a fast teacher (momentum 0.98 -> 1: in a short run a slower teacher lags "
                         "behind its student), no solarization (it turns a bright garment on black dark); teacher "
                         "kNN gain over random init without / with solarization: seed 0 +8.3 / +6.5, seed 1 "
                         "+2.8 / +1.2, seed 2 +5.0 / +4.4 points (16 epochs, about 380 CPU-s); seed 1 at momentum "
                         "0.99: teacher -0.3, student +3.0; without head BatchNorm (256 prototypes) the teacher "
                         "went uniform"),
        "full": dict(epochs=30, batch_size=512, base_lr=0.3, optimizer="sgd", weight_decay=1e-4, warmup_epochs=3.0,
                     method_kwargs={"out_dim": 4096, "n_local": 6, "local_size": 16, "momentum": 0.99,
                                    "teacher_temp": 0.07, "warmup_teacher_temp": 0.04, "center_momentum": 0.9},
                     view_options={"global_scale": (0.3, 1.0), "local_scale": (0.1, 0.3)},
                     why="solo-learn's CIFAR-10 DINO (out_dim 4096, teacher 0.04 -> 0.07), 6 local crops of 16 px"),
    },
    "mae": {
        "smoke": dict(epochs=1, batch_size=64, base_lr=2e-3, warmup_epochs=0.0, weight_decay=0.05, protocol="linear",
                      method_kwargs={"mask_ratio": 0.75, "norm_pix": True}),
        "demo": dict(epochs=20, batch_size=128, base_lr=3e-3, warmup_epochs=0.5, weight_decay=0.05, protocol="linear",
                     method_kwargs={"mask_ratio": 0.75, "norm_pix": True}, view_options={"min_scale": 0.3},
                     why="the encoder sees a quarter of the patches, so steps are cheap: more epochs; seed 0: "
                         "linear probe 0.705 -> 0.757, kNN 0.577 -> 0.624, 273 CPU-s"),
        "full": dict(epochs=30, batch_size=512, base_lr=1.5e-3, weight_decay=0.05, warmup_epochs=3.0, protocol="linear",
                     method_kwargs={"mask_ratio": 0.75, "norm_pix": True}, view_options={"min_scale": 0.2},
                     why="MAE's AdamW recipe (1.5e-4 per 256 for 800+ epochs) raised tenfold for 30 epochs"),
    },
}


def _backbone_for(method: str, profile_name: str) -> tuple[str, dict]:
    """The profile's ResNet (width) or, for ViT methods, its ViT (image size, patch size)."""
    profile = get_profile(profile_name, device="cpu")
    if method in VIT_METHODS:
        return profile.vit, {"img_size": profile.image_size, "patch_size": profile.patch_size}
    return profile.backbone, {"width": profile.width}


def get_recipe(method: str, profile_name: str | None = None) -> Recipe:
    """The recipe of ``method`` under ``profile_name`` (default: the current profile, see
    ``coursekit.profile.get_profile``).

    Raises:
        ValueError: an unknown method or profile, naming the valid ones.
    """
    if method not in _RECIPES:
        raise ValueError(f"no recipe for method {method!r}; methods with recipes: {', '.join(_RECIPES)}")
    profile = get_profile(profile_name, device="cpu").name
    backbone, backbone_kwargs = _backbone_for(method, profile)
    record("recipe", f"{method}/{profile}")
    return Recipe(method=method, profile=profile, backbone=backbone, backbone_kwargs=backbone_kwargs,
                  **_RECIPES[method][profile])


def load_or_pretrain(method: str, images: torch.Tensor, checkpoint_dir, seed: int = 0, profile_name: str | None = None,
                     device: torch.device | str | None = None, progress: bool = True,
                     **changes) -> tuple[nn.Module, History, str]:
    """The notebooks' pretraining: ``method``'s recipe under the profile, trained or loaded from the cache.

    Builds the recipe's backbone under ``torch.manual_seed(seed)``, the method with the recipe's
    options and views, and runs ``load_or_train`` with a checkpoint after every epoch (a disconnect
    loses at most one epoch). Lessons that call it with the same method, profile, seed and
    ``checkpoint_dir`` share one run: the first trains it, the others load it.

    images: [N, C, H, W] pretraining images of the profile's size.
    changes: Recipe fields to change for this run (e.g. ``epochs=4``; ``method_kwargs`` and
        ``view_options`` are merged into the recipe's), so that an ablation differs from the recipe
        in what it names only; give it its own ``checkpoint_dir``.
    Returns (method, History, status): status is "trained", "resumed" or "loaded".
    """
    recipe = get_recipe(method, profile_name)
    for key in ("method_kwargs", "view_options"):
        if key in changes:
            changes[key] = {**getattr(recipe, key), **changes[key]}
    recipe = dataclasses.replace(recipe, **changes)
    torch.manual_seed(seed)
    model = recipe.build_method(recipe.build_backbone())
    config = recipe.train_config(seed=seed, checkpoint_every=max(1, len(images) // recipe.batch_size))
    history, status = load_or_train(model, images, config, checkpoint_dir, progress=progress,
                                    device=device or get_profile(profile_name).device)
    return model, history, status


def recipe_names() -> list[tuple[str, str]]:
    """Every (method, profile) pair that has a recipe."""
    return [(method, profile) for method in _RECIPES for profile in PROFILE_NAMES]


def protocol_scores(backbone: nn.Module, protocol: str, bank: ImageSet, test: ImageSet,
                    device: torch.device | str = "cpu", seed: int = 0) -> dict[str, float]:
    """Accuracy of a backbone's frozen features on ``test``, with ``bank`` as the labeled training set.

    Returns {"knn": weighted kNN accuracy (k=200, t=0.1)} and, when ``protocol`` is "linear", also
    {"linear": linear-probe accuracy} (lr and weight decay picked on a held-out fifth of the bank).
    Run it on the backbone at random init and after pretraining to fill ``build_report``'s scores.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    bank_features = extract_features(backbone, bank.images, device=device)  # [M, D]
    test_features = extract_features(backbone, test.images, device=device)  # [T, D]
    num_classes = bank.num_classes
    scores = {"knn": knn_accuracy(bank_features, bank.labels.to(bank_features.device), test_features,
                                  test.labels.to(test_features.device), num_classes=num_classes,
                                  k=KNN_K, temperature=KNN_TEMPERATURE)}
    if protocol == "linear":
        scores["linear"] = linear_probe(bank_features, bank.labels.to(bank_features.device), test_features,
                                        test.labels.to(test_features.device), num_classes=num_classes,
                                        seed=seed).accuracy
    return scores


def build_report(recipe: Recipe, dataset: str, seed: int, steps: int, seconds: float,
                 scores: dict[str, dict[str, float]], **extra) -> dict:
    """The ``coursekit pretrain --report`` JSON of one run.

    scores: per protocol, ``{"random_init": accuracy, "pretrained": accuracy}`` of the same
    backbone before and after pretraining; it must hold "knn" and the recipe's protocol.
    extra: further JSON-ready entries (e.g. cpu_seconds, num_test).
    Returns ``{"method", "profile", "dataset", "seed", "steps", "seconds", "protocol", "knn",
    <protocol>, "recipe", **extra}``.
    """
    for protocol in dict.fromkeys(("knn", recipe.protocol)):
        pair = scores.get(protocol)
        if not isinstance(pair, dict) or set(pair) != {"random_init", "pretrained"}:
            raise ValueError(f"scores[{protocol!r}] must be {{'random_init': float, 'pretrained': float}}, got {pair!r}")
    report = {"method": recipe.method, "profile": recipe.profile, "dataset": dataset, "seed": seed,
              "steps": steps, "seconds": round(seconds, 1), "protocol": recipe.protocol}
    report.update({protocol: {name: float(value) for name, value in pair.items()} for protocol, pair in scores.items()})
    return {**report, "recipe": recipe.to_dict(), **extra}
