"""Training throughput: coursekit's ``fit`` vs lightly's standard pipeline vs the model-only ceiling.

For each method (SimCLR, BYOL, DINO, MoCo) the pipelines train the same backbone (ResNet-18, CIFAR
stem, same initial weights) at the same batch size, image size and precision, and every one of
them is trained by ``coursekit.engine.fit`` itself, so that all share fit's ``OptimizerStep`` (learning
rate schedule, autocast, gradient scaler, AdamW with fit's parameter groups, the method's hooks):

- ``coursekit``: ``fit(method, images, config)`` as a user calls it: uint8 images on the device,
  the method's batched device-side views, its loss;
- ``lightly_<W>w``: lightly's standard pipeline with W DataLoader workers (0, 1, 2, 4, ... up to the
  CPU count): PIL images through lightly's transform (SimCLRTransform, BYOLTransform, DINO's
  view transforms) with the options of coursekit's view recipe, the views copied to the device
  every step, lightly's heads and loss on the same backbone; the fastest W is reported as ``lightly``;
- ``ceiling``: coursekit's method on views made once by its own recipe and kept on the device (no
  augmentation, no data movement): the speed of the model, loss and step alone.

Timing: one round of a pipeline is one ``fit`` call; the clock runs from the end of its first
steps (fit's setup, the optimizer's first step, a DataLoader's prefetch head start) to the end of
its last step. Rounds are interleaved: after one untimed warm-up round each, every round runs each
pipeline once, in a new random order, so that a change of the machine's load hits them alike. The
ratios coursekit / lightly and coursekit / ceiling are taken round by round; their median and min
are reported. ``--clock cpu`` (the CPU default) counts CPU seconds instead of wall seconds, with
one torch thread: this process's CPU time plus the CPU time DataLoader workers spent on the timed
batches, which other jobs on a shared machine do not inflate (images per CPU-second).

MAE is left out: it needs a ViT and this benchmark compares pipelines on one ResNet-18.
Images are random uint8 pixels (the cost of the ops does not depend on them).
Writes benchmarks/results/throughput_<device>.json.

    python benchmarks/throughput.py [--methods simclr byol dino moco] [--workers 0 1 2] [--clock cpu]
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torchvision.transforms.functional as TF
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead,
                                    MoCoProjectionHead, SimCLRProjectionHead)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, SimCLRTransform
from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform
from lightly.transforms.dino_transform import DINOViewTransform
from lightly.transforms.multi_view_transform import MultiViewTransform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, default_collate, get_worker_info

import common
from coursekit.augment import BYOLViews, DINOViews, SimCLRViews, ViewAugment, Views
from coursekit.engine import OptimizerStep, TrainConfig, build_optimizer, fit, module_device, resolve_precision
from coursekit.methods import Method, build_method
from coursekit.methods.dino import multicrop_forward, teacher_temperature
from coursekit.models import build_backbone

METHODS = ("simclr", "byol", "dino", "moco")
NOT_MEASURED = {"mae": "needs a ViT backbone; this benchmark compares pipelines on one ResNet-18"}
PREFETCH_FACTOR = 2  # DataLoader's default: batches each worker makes ahead


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    """What every pipeline shares. CPU defaults are small (a 2-core machine), GPU defaults the
    issue's: ResNet-18 width 64, batch 512, bf16 (precision "auto"). ``workers`` is the DataLoader
    workers of a single lightly run (quality.py); throughput.py sweeps several."""

    width: int
    batch_size: int
    image_size: int = 32
    precision: str = "auto"
    channels_last: bool = False
    workers: int = 2
    lr: float = 1e-3
    seed: int = 0

    @classmethod
    def defaults(cls, device: torch.device) -> "Settings":
        if device.type == "cuda":
            return cls(width=64, batch_size=512, channels_last=True, workers=min(8, os.cpu_count() or 1))
        return cls(width=8, batch_size=64, workers=os.cpu_count() or 1)

    def train_config(self, seed: int) -> TrainConfig:
        """fit's configuration for one round: one pass over the round's images."""
        return TrainConfig(epochs=1, batch_size=self.batch_size, lr=self.lr, precision=self.precision,
                           channels_last=self.channels_last, seed=seed)


def random_images(n: int, image_size: int, seed: int) -> Tensor:
    """uint8 [n, 3, S, S] random pixels on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=generator)


def seeded_backbone(width: int, seed: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem; the same weights for every pipeline."""
    torch.manual_seed(seed)
    return build_backbone("resnet18", width=width)


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """As ``coursekit.engine.fit`` prepares a method for one process (quality.py's lightly runs)."""
    model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def worker_counts(cpus: int) -> list[int]:
    """The DataLoader worker counts to sweep: 0, then powers of two up to the CPU count."""
    counts, workers = [0], 1
    while workers <= cpus:
        counts.append(workers)
        workers *= 2
    return counts


# ----------------------------------------------------------------------------------------------
# lightly's reference models: lightly's heads and losses on the same backbone, the same sizes as
# coursekit's methods (hidden 4 * feature_dim, output 128; DINO 1024 prototypes)


class LightlyModel(nn.Module):
    """What the reference models share: ``training_step(views) -> loss`` on views already made,
    and the two hooks of coursekit's optimizer step (nothing by default)."""

    def on_before_optimizer_step(self, epoch: float) -> None:
        """Between backward and the optimizer step; lightly's examples edit no gradients."""

    def on_after_step(self, progress: float) -> None:
        """After the optimizer step: momentum encoders move here."""


class LightlySimCLR(LightlyModel):
    """lightly's SimCLR example: SimCLRProjectionHead and NTXentLoss (temperature 0.5)."""

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        dim = backbone.feature_dim
        self.backbone = backbone
        self.head = SimCLRProjectionHead(dim, 4 * dim, 128)
        self.criterion = NTXentLoss(temperature=0.5)

    def training_step(self, views: list[Tensor]) -> Tensor:
        z0, z1 = self.head(self.backbone(torch.cat(views))).chunk(2)
        return self.criterion(z0, z1)


class LightlyMoCo(LightlyModel):
    """lightly's MoCo v2 example: MoCoProjectionHead, momentum key encoder, NTXentLoss with a
    memory bank of 4096 keys (temperature 0.2)."""

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        dim = backbone.feature_dim
        self.backbone = backbone
        self.head = MoCoProjectionHead(dim, dim, 128)
        self.key_backbone, self.key_head = _frozen_copy(backbone), _frozen_copy(self.head)
        self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))

    def training_step(self, views: list[Tensor]) -> Tensor:
        query = self.head(self.backbone(views[0]))
        with torch.no_grad():
            key = self.key_head(self.key_backbone(views[1]))
        return self.criterion(query, key)

    def on_after_step(self, progress: float) -> None:
        m = _lightly_momentum(progress, 0.99)
        update_momentum(self.backbone, self.key_backbone, m)
        update_momentum(self.head, self.key_head, m)


class LightlyBYOL(LightlyModel):
    """lightly's BYOL example: BYOL projection and prediction heads, momentum target,
    NegativeCosineSimilarity, symmetric loss."""

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        dim = backbone.feature_dim
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, 4 * dim, 128)
        self.prediction_head = BYOLPredictionHead(128, 4 * dim, 128)
        self.target_backbone = _frozen_copy(backbone)
        self.target_projection_head = _frozen_copy(self.projection_head)
        self.criterion = NegativeCosineSimilarity()

    def training_step(self, views: list[Tensor]) -> Tensor:
        both = torch.cat(views)
        p0, p1 = self.prediction_head(self.projection_head(self.backbone(both))).chunk(2)
        with torch.no_grad():
            z0, z1 = self.target_projection_head(self.target_backbone(both)).chunk(2)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def on_after_step(self, progress: float) -> None:
        m = _lightly_momentum(progress, 0.99)
        update_momentum(self.backbone, self.target_backbone, m)
        update_momentum(self.projection_head, self.target_projection_head, m)


class LightlyDINO(LightlyModel):
    """lightly's DINO example: DINOProjectionHead (last layer frozen in the first epoch), EMA
    teacher, DINOLoss (which keeps the center); crops of the same size go through the network
    together, as coursekit does."""

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        dim = backbone.feature_dim
        self.backbone = backbone
        # lightly's DINO head uses the old weight_norm, which deepcopy refuses: build two, copy the weights
        self.head, self.teacher_head = (DINOProjectionHead(dim, 4 * dim, min(256, dim), 1024, freeze_last_layer=1)
                                        for _ in range(2))
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher_head)
        self.teacher_backbone = _frozen_copy(backbone)
        self.criterion = DINOLoss(output_dim=1024, warmup_teacher_temp=0.04, teacher_temp=0.07)
        self.progress = 0.0

    def training_step(self, views: list[Tensor]) -> Tensor:
        student = multicrop_forward(lambda x: self.head(self.backbone(x)), views)
        with torch.no_grad():
            teacher = multicrop_forward(lambda x: self.teacher_head(self.teacher_backbone(x)), views[:2])
        temp = teacher_temperature(self.progress, 0.04, 0.07, 0.3)
        return self.criterion(teacher, student, teacher_temp=temp)

    def on_before_optimizer_step(self, epoch: float) -> None:
        """As lightly's example: the prototypes stay fixed during the first epoch."""
        self.head.cancel_last_layer_gradients(current_epoch=int(epoch))

    def on_after_step(self, progress: float) -> None:
        self.progress = progress
        m = _lightly_momentum(progress, 0.996)
        update_momentum(self.backbone, self.teacher_backbone, m)
        update_momentum(self.head, self.teacher_head, m)


def _frozen_copy(module: nn.Module) -> nn.Module:
    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


def _lightly_momentum(progress: float, base: float) -> float:
    """lightly's cosine momentum schedule from ``base`` to 1 at ``progress`` in [0, 1]."""
    return cosine_schedule(round(progress * 10_000), 10_000, base, 1.0)


LIGHTLY_MODELS = {"simclr": LightlySimCLR, "moco": LightlyMoCo, "byol": LightlyBYOL, "dino": LightlyDINO}
DEFAULT_VIEWS = {"simclr": SimCLRViews, "moco": SimCLRViews, "byol": BYOLViews, "dino": DINOViews}  # as the methods build them


# ----------------------------------------------------------------------------------------------
# lightly's transforms with the options of coursekit's view recipes


def lightly_transform(method: str, image_size: int, views: Views | None = None):
    """lightly's transform for ``method`` with the options of coursekit's view recipe ``views``
    (default: the method's default recipe at ``image_size``): crop size and scale, flip, color
    jitter strengths and probability, grayscale, blur probability and sigmas, solarization,
    normalization. Read from the recipe, so both pipelines make the same views at every image
    size (e.g. SimCLR: half-strength jitter and no blur up to 64 px, full jitter and blur above)."""
    if method not in LIGHTLY_MODELS:
        raise ValueError(f"no lightly pipeline for {method!r}; valid: {', '.join(LIGHTLY_MODELS)}")
    recipe = (views or DEFAULT_VIEWS[method](image_size)).views
    if method in ("simclr", "moco"):
        view = recipe[0]
        return SimCLRTransform(input_size=view.size, min_scale=view.scale[0], gaussian_blur=view.blur_p,
                               **_shared_options(view))
    if method == "byol":
        first, second = recipe
        return BYOLTransform(
            BYOLView1Transform(input_size=first.size, min_scale=first.scale[0], gaussian_blur=first.blur_p,
                               solarization_prob=first.solarize_p, **_shared_options(first)),
            BYOLView2Transform(input_size=second.size, min_scale=second.scale[0], gaussian_blur=second.blur_p,
                               solarization_prob=second.solarize_p, **_shared_options(second)))
    # DINO: DINOTransform's own view transforms, one per view of the recipe (two global crops,
    # then the local ones); built here because DINOTransform drops cj_strength for its second view
    return MultiViewTransform([DINOViewTransform(crop_size=view.size, crop_scale=view.scale, gaussian_blur=view.blur_p,
                                                 solarization_prob=view.solarize_p, **_shared_options(view))
                               for view in recipe])


def _shared_options(view: ViewAugment) -> dict:
    """lightly's options for what every view of a recipe shares: flip, jitter, grayscale, blur
    sigmas, normalization (lightly multiplies the jitter strengths by cj_strength: 1 here)."""
    brightness, contrast, saturation, hue = view.jitter
    return dict(hf_prob=view.flip_p, cj_prob=view.jitter_p, cj_strength=1.0, cj_bright=brightness,
                cj_contrast=contrast, cj_sat=saturation, cj_hue=hue, random_gray_scale=view.gray_p,
                sigmas=view.blur_sigma, normalize={"mean": list(view.mean), "std": list(view.std)})


class PILViews(Dataset):
    """uint8 images [N, 3, H, W] as PIL images through a lightly transform -> list of view tensors."""

    def __init__(self, images: Tensor, transform):
        self.images = [TF.to_pil_image(image) for image in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> list[Tensor]:
        return self.transform(self.images[index])


def lightly_loader(images: Tensor, transform, batch_size: int, workers: int, device: torch.device,
                   sampler=None, shuffle: bool = False, seed: int = 0) -> DataLoader:
    """The standard pipeline's DataLoader: PIL images, a lightly transform in ``workers`` worker
    processes (kept alive between epochs), pinned memory on CUDA, full batches only (quality.py)."""
    return DataLoader(PILViews(images, transform), batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      drop_last=True, generator=torch.Generator().manual_seed(seed))


class TimedBatches(Dataset):
    """The standard pipeline's batches, each stamped with who made it and that process's CPU
    time: ``dataset[indices]`` -> (views [B, 3, S, S] per view, (worker id, CPU seconds)); the id
    is -1 in the main process. The same work as a DataLoader with ``batch_size`` (the per-image
    transform, then ``default_collate``), done as one fetch per batch (torch's DataLoader with
    ``batch_size=None`` and a BatchSampler), so that a worker's CPU time between two of its
    batches (the transforms, and handing the previous batch over) is known batch by batch."""

    def __init__(self, views: PILViews):
        self.views = views

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, indices: list[int]) -> tuple[list[Tensor], tuple[int, float]]:
        batch = default_collate([self.views[i] for i in indices])
        worker = get_worker_info()
        return batch, (worker.id if worker is not None else -1, time.process_time())


def workers_seconds(stamps: list[tuple[int, float]], lead: int) -> float:
    """CPU seconds the workers spent on the batches after the first ``lead``: per worker, its CPU
    time at its last batch minus that at its last batch among the first ``lead`` (each worker
    made one of those: DataLoader hands batches to its workers in turn)."""
    before, last = {}, {}
    for step, (worker, cpu) in enumerate(stamps):
        (before if step < lead else last)[worker] = cpu
    return sum(cpu - before[worker] for worker, cpu in last.items())


def timed_loader(dataset: TimedBatches, steps: int, batch_size: int, workers: int, device: torch.device,
                 seed: int) -> DataLoader:
    """``steps`` random batches of ``dataset`` made by ``workers`` worker processes (none: in this
    process), pinned on CUDA; a new loader per round, whose workers end with it."""
    indices = RandomSampler(range(len(dataset)), replacement=True, num_samples=steps * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    return DataLoader(dataset, batch_size=None, sampler=BatchSampler(indices, batch_size, drop_last=True),
                      num_workers=workers, prefetch_factor=PREFETCH_FACTOR if workers else None,
                      pin_memory=device.type == "cuda")


# ----------------------------------------------------------------------------------------------
# fit's optimizer step for quality.py's lightly runs (throughput.py trains every pipeline with fit)


class Trainer:
    """``coursekit.engine.OptimizerStep``, the step fit takes, for a lightly model that quality.py
    trains in its own loop: the loss under autocast, backward through the gradient scaler (fp16
    only), the optimizer step, then the model's ``on_after_step`` (EMA teachers). AdamW with fit's
    parameter groups; the learning rate is the one given to ``step`` (quality.py's schedule)."""

    def __init__(self, model: nn.Module, settings: Settings, device: torch.device, total_steps: int):
        config = TrainConfig(batch_size=settings.batch_size, lr=settings.lr)
        self.optimizer_step = OptimizerStep(build_optimizer(model, config, device),
                                            resolve_precision(settings.precision, device), device, hooks=model,
                                            total_steps=total_steps)
        self.steps_done = 0

    def step(self, compute_loss, lr: float | None = None) -> Tensor:
        """One step on the loss ``compute_loss()`` at learning rate ``lr`` (None: unchanged);
        returns the loss (detached, not synchronized)."""
        if lr is not None:
            for group in self.optimizer_step.optimizer.param_groups:
                group["base_lr"] = lr
        with self.optimizer_step.autocast():
            loss = compute_loss()
        self.optimizer_step(loss, self.steps_done)
        self.steps_done += 1
        return loss.detach()


# ----------------------------------------------------------------------------------------------
# The pipelines, as methods that fit trains


class LightlyMethod(Method):
    """A lightly model as a coursekit method, so that ``fit`` trains it with its own step: each
    ``training_step`` takes the next batch of views from lightly's DataLoader (``batches``, set
    before each fit call) and copies it to the device. The batch of images fit passes in is not
    used: the DataLoader serves the data, as in lightly's pipeline."""

    def __init__(self, model: LightlyModel):
        super().__init__()
        self.model = model
        self.batches = None  # iterator over (views, stamp) of a TimedBatches DataLoader
        self.stamps: list[tuple[int, float]] = []  # per step: its batch's (worker id, worker CPU time)

    def hparams(self) -> dict:
        """What a checkpoint would record: the lightly model (its views come from the DataLoader)."""
        return {"model": type(self.model).__name__}

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        views, stamp = next(self.batches)
        self.stamps.append(stamp)
        device = module_device(self.model)
        return self.model.training_step([view.to(device, non_blocking=True) for view in views])

    def on_before_optimizer_step(self, epoch: float) -> None:
        self.model.on_before_optimizer_step(epoch)

    def on_after_step(self, progress: float) -> None:
        self.model.on_after_step(progress)


class PremadeViews:
    """A view recipe that returns the same views at every call: the ceiling's views, made once
    by the method's own recipe and kept on the device."""

    def __init__(self, views: list[Tensor]):
        self.views = views

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return self.views


@dataclass
class Pipeline:
    """A method that ``fit`` trains for ``lead + steps`` steps per round; the clock runs from the
    end of step ``lead`` to the end of the last step. ``before_round(seed)`` prepares a round
    (lightly: a new DataLoader); ``end_round()`` ends it (lightly: its workers) and returns the
    clock seconds spent in other processes on the timed steps (lightly's workers, on the CPU clock)."""

    method: nn.Module
    images: Tensor
    lead: int
    before_round: Callable[[int], None] | None = None
    end_round: Callable[[], float] | None = None

    def images_per_second(self, settings: Settings, steps: int, clock: Callable[[], float], device: torch.device,
                          seed: int) -> float:
        """One round: source images per clock second over the timed steps."""
        if self.before_round is not None:
            self.before_round(seed)
        marks = []

        def on_step(done: int) -> None:
            if done in (self.lead, self.lead + steps):
                marks.append(clock())

        round_images = self.images[:(self.lead + steps) * settings.batch_size]
        fit(self.method, round_images, settings.train_config(seed), progress=False, device=device, on_step=on_step)
        seconds = marks[1] - marks[0] + (self.end_round() if self.end_round is not None else 0.0)
        return steps * settings.batch_size / seconds


def coursekit_pipeline(method: str, settings: Settings, images: Tensor, device: torch.device,
                       ceiling: bool = False) -> Pipeline:
    """coursekit's method, trained by fit; with ``ceiling``, on views made once by its recipe."""
    model = build_method(method, seeded_backbone(settings.width, settings.seed), image_size=settings.image_size)
    if ceiling:
        batch = images[:settings.batch_size].to(device)
        model.views = PremadeViews(model.views(batch, torch.Generator(device).manual_seed(settings.seed)))
    return Pipeline(model, images, lead=1)


def lightly_pipeline(method: str, settings: Settings, images: Tensor, dataset: TimedBatches, workers: int,
                     steps: int, device: torch.device, clock: str) -> Pipeline:
    """lightly's model and transform with ``workers`` DataLoader workers, trained by fit. The
    first 1 + PREFETCH_FACTOR * workers steps of a round are untimed: the batches the workers
    made ahead while fit set up are not counted as made in the timed steps."""
    model = LightlyMethod(LIGHTLY_MODELS[method](seeded_backbone(settings.width, settings.seed), steps))
    lead = 1 + PREFETCH_FACTOR * workers

    def before_round(seed: int) -> None:
        model.batches = iter(timed_loader(dataset, lead + steps, settings.batch_size, workers, device, seed))
        model.stamps = []

    def end_round() -> float:
        """Ends the workers; returns the CPU seconds they spent on the timed steps' batches (this
        process's own time is on the clock already; the wall clock sees them run in parallel)."""
        model.batches = None
        return workers_seconds(model.stamps, lead) if clock == "cpu" and workers > 0 else 0.0

    return Pipeline(model, images, lead, before_round, end_round)


# ----------------------------------------------------------------------------------------------
# The run


def ratio_summary(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Round-by-round ratios -> their median and min."""
    ratios = [n / d for n, d in zip(numerators, denominators)]
    return {"median": round(statistics.median(ratios), 3), "min": round(min(ratios), 3)}


def measure_method(method: str, settings: Settings, device: torch.device, workers_sweep: list[int],
                   rounds: int, steps: int, clock: str) -> dict:
    """images/s of every pipeline for one method (median over rounds), the best worker count of
    lightly's, and the round-by-round ratios."""
    lead_max = 1 + PREFETCH_FACTOR * max(workers_sweep)
    images = random_images((lead_max + steps) * settings.batch_size, settings.image_size, settings.seed).to(device)
    pipelines = {"coursekit": coursekit_pipeline(method, settings, images, device),
                 "ceiling": coursekit_pipeline(method, settings, images, device, ceiling=True)}
    recipe = pipelines["coursekit"].method.views
    dataset = TimedBatches(PILViews(images.cpu(), lightly_transform(method, settings.image_size, recipe)))
    lightly_names = {workers: f"lightly_{workers}w" for workers in workers_sweep}
    for workers, name in lightly_names.items():
        pipelines[name] = lightly_pipeline(method, settings, images, dataset, workers, steps, device, clock)
    read_clock = common.make_clock(clock, device)
    order = random.Random(settings.seed)
    per_round: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_index in range(rounds + 1):  # round 0 warms up every pipeline, untimed
        names = list(pipelines)
        order.shuffle(names)
        for name in names:
            speed = pipelines[name].images_per_second(settings, steps, read_clock, device, seed=round_index)
            if round_index > 0:
                per_round[name].append(speed)
    median = {name: round(statistics.median(values), 1) for name, values in per_round.items()}
    best_workers = max(workers_sweep, key=lambda workers: median[lightly_names[workers]])
    best = lightly_names[best_workers]
    return {
        "images_per_s": {"coursekit": median["coursekit"], "lightly": median[best], "ceiling": median["ceiling"]},
        "lightly_best_workers": best_workers,
        "lightly_images_per_s_by_workers": {str(workers): median[name] for workers, name in lightly_names.items()},
        "coursekit_over_lightly": ratio_summary(per_round["coursekit"], per_round[best]),
        "coursekit_over_ceiling": ratio_summary(per_round["coursekit"], per_round["ceiling"]),
        "rounds_images_per_s": {name: [round(v, 1) for v in values] for name, values in per_round.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(common.default_device()))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--width", type=int, help="ResNet-18 width (default: 64 on CUDA, 8 on the CPU)")
    parser.add_argument("--batch-size", type=int, help="default: 512 on CUDA, 64 on the CPU")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16, fp32")
    parser.add_argument("--workers", type=int, nargs="+",
                        help="DataLoader worker counts of lightly's pipeline to sweep (default: 0, 1, 2, 4, ... "
                             "up to the CPU count)")
    parser.add_argument("--clock", choices=common.CLOCKS,
                        help="cpu: CPU seconds with one torch thread (default on the CPU; usable on a loaded "
                             "machine); wall: wall-clock seconds (default on CUDA)")
    parser.add_argument("--rounds", type=int, help="timed rounds per pipeline (default 5)")
    parser.add_argument("--steps", type=int, help="timed steps per round (default 20 on CUDA, 4 on the CPU)")
    parser.add_argument("--results-dir", help="where to write the JSON (default benchmarks/results)")
    args = parser.parse_args(argv)
    for name in ("width", "batch_size", "image_size", "rounds", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1; got {getattr(args, name)}")
    if args.workers is not None and min(args.workers) < 0:
        parser.error(f"--workers must be >= 0; got {args.workers}")
    return args


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    """Defaults for the device, overridden by the arguments given."""
    settings = Settings.defaults(device)
    for name in ("width", "batch_size"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    settings.image_size, settings.precision = args.image_size, args.precision
    return settings


def run(args: argparse.Namespace, device: torch.device, clock: str) -> dict:
    """Measure every method asked for -> the result (environment, settings, methods)."""
    gpu = device.type == "cuda"
    settings = settings_from(args, device)
    workers_sweep = sorted(set(args.workers)) if args.workers is not None else worker_counts(os.cpu_count() or 1)
    rounds = args.rounds or 5
    steps = args.steps or (20 if gpu else 4)
    result = {
        **common.environment(device),
        "settings": {**asdict(settings), "backbone": "resnet18 (CIFAR stem)",
                     "precision_resolved": resolve_precision(settings.precision, device),
                     "lightly_workers_swept": workers_sweep, "clock": clock, "rounds": rounds,
                     "timed_steps_per_round": steps,
                     "timing": "every pipeline trained by coursekit.engine.fit; one untimed warm-up round each, "
                               "then rounds interleaved in random order; a round's first steps untimed "
                               "(1, plus 2 per DataLoader worker); median over rounds of source images per "
                               "clock second; ratios round by round (median, min)",
                     "data": "random uint8 pixels"},
        "not_measured": NOT_MEASURED,
        "methods": {},
    }
    for method in args.methods:
        result["methods"][method] = measure_method(method, settings, device, workers_sweep, rounds, steps, clock)
        print(method, result["methods"][method]["images_per_s"], flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    with common.clock_for_run(args.clock, device) as clock:
        result = run(args, device, clock)
    path = common.write_result("throughput", device, result, args.results_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
