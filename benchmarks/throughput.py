"""Training throughput: coursekit vs lightly's standard pipeline vs the model-only ceiling.

For each method (SimCLR, BYOL, DINO, MoCo) three pipelines train the same backbone (ResNet-18,
CIFAR stem) at the same batch size, image size and precision, measured in one run, in alternation
after a warm-up (see ``common.time_alternating``):

- ``coursekit``: uint8 images held on the device, the method's batched device-side views and its
  ``training_step``, then the optimizer step with ``coursekit.engine``'s precision handling;
- ``lightly``: lightly's transform (SimCLRTransform, BYOLTransform, DINOTransform) on PIL images in a
  torch DataLoader with worker processes, lightly's heads and loss on the same backbone, the
  views copied to the device every step;
- ``ceiling``: coursekit's model, loss and optimizer step on views already on the device (made once,
  same number and sizes as coursekit's): no augmentation, no data loading.

MAE is left out: it needs a ViT and this benchmark compares pipelines on one ResNet-18.
Images are random uint8 pixels (the cost of the ops does not depend on them).
Writes benchmarks/results/throughput_<device>.json.

    python benchmarks/throughput.py [--methods simclr byol dino moco] [--width 64] [--batch-size 512]
"""
from __future__ import annotations

import argparse
import copy
import os
from dataclasses import asdict, dataclass

import torch
import torchvision.transforms.functional as TF
from lightly.loss import DINOLoss, NegativeCosineSimilarity, NTXentLoss
from lightly.models.modules import (BYOLPredictionHead, BYOLProjectionHead, DINOProjectionHead,
                                    MoCoProjectionHead, SimCLRProjectionHead)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, DINOTransform, SimCLRTransform
from lightly.transforms.byol_transform import BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

import common
from coursekit.methods import build_method
from coursekit.methods.dino import multicrop_forward, teacher_temperature
from coursekit.models import build_backbone
from coursekit.engine import TrainConfig, autocast, build_optimizer, make_grad_scaler, resolve_precision

METHODS = ("simclr", "byol", "dino", "moco")
NOT_MEASURED = {"mae": "needs a ViT backbone; this benchmark compares pipelines on one ResNet-18"}
BLUR_SIGMA_PER_PIXEL = (0.1 / 224, 2.0 / 224)  # blur sigma range / image size, as coursekit scales it


# ----------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    """What every pipeline shares. CPU defaults are small (a 2-core machine), GPU defaults the
    issue's: ResNet-18 width 64, batch 512, bf16 (precision "auto")."""

    width: int
    batch_size: int
    image_size: int = 32
    precision: str = "auto"
    channels_last: bool = False
    workers: int = 2
    num_images: int = 4096
    lr: float = 1e-3
    seed: int = 0

    @classmethod
    def defaults(cls, device: torch.device) -> "Settings":
        if device.type == "cuda":
            return cls(width=64, batch_size=512, channels_last=True, workers=min(8, os.cpu_count() or 1),
                       num_images=16384)
        return cls(width=8, batch_size=64, workers=os.cpu_count() or 1, num_images=2048)


def random_images(n: int, image_size: int, seed: int) -> Tensor:
    """uint8 [n, 3, S, S] random pixels on the CPU."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=generator)


def seeded_backbone(width: int, seed: int) -> nn.Module:
    """ResNet-18 with the CIFAR stem; the same weights for every pipeline."""
    torch.manual_seed(seed)
    return build_backbone("resnet18", width=width)


def to_device(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """As ``coursekit.engine.prepare_method`` does for one process."""
    model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


# ----------------------------------------------------------------------------------------------
# One optimizer step, shared by every pipeline (and by quality.py)


class Trainer:
    """The optimizer step of ``coursekit.engine.fit`` for any model with ``on_after_step(progress)``:
    the loss under autocast, backward through the gradient scaler (fp16 only), optimizer step,
    then the model's after-step update (EMA teachers). AdamW with fit's parameter groups."""

    def __init__(self, model: nn.Module, settings: Settings, device: torch.device, total_steps: int):
        self.model, self.device, self.total_steps = model, device, total_steps
        self.precision = resolve_precision(settings.precision, device)
        self.optimizer = build_optimizer(model, TrainConfig(batch_size=settings.batch_size, lr=settings.lr))
        self.scaler = make_grad_scaler(self.precision, device)
        self.steps_done = 0

    def step(self, compute_loss, lr: float | None = None) -> Tensor:
        """One step on the loss ``compute_loss()``; returns the loss (detached, not synchronized)."""
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        with autocast(self.precision, self.device):
            loss = compute_loss()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.steps_done += 1
        self.model.on_after_step(min(1.0, self.steps_done / self.total_steps))
        return loss.detach()


# ----------------------------------------------------------------------------------------------
# lightly's reference models: lightly's heads and losses on the same backbone, the same sizes as
# coursekit's methods (hidden 4 * feature_dim, output 128; DINO 1024 prototypes)


class LightlySimCLR(nn.Module):
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

    def on_after_step(self, progress: float) -> None:
        """No state besides the weights."""


class LightlyMoCo(nn.Module):
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


class LightlyBYOL(nn.Module):
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


class LightlyDINO(nn.Module):
    """lightly's DINO example: DINOProjectionHead, EMA teacher, DINOLoss (which keeps the center);
    crops of the same size go through the network together, as coursekit does."""

    def __init__(self, backbone: nn.Module, total_steps: int):
        super().__init__()
        dim = backbone.feature_dim
        self.backbone = backbone
        # lightly's DINO head uses the old weight_norm, which deepcopy refuses: build two, copy the weights
        self.head, self.teacher_head = (DINOProjectionHead(dim, 4 * dim, min(256, dim), 1024) for _ in range(2))
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


def lightly_transform(method: str, image_size: int):
    """lightly's transform with the same ops and sizes as coursekit's views of ``method``
    (blur sigmas scaled to the image size, as coursekit does; SimCLR at <= 64 px: half-strength
    jitter and no blur, SimCLR's CIFAR setup)."""
    sigmas = tuple(s * image_size for s in BLUR_SIGMA_PER_PIXEL)
    if method in ("simclr", "moco"):
        return SimCLRTransform(input_size=image_size, cj_strength=0.5, gaussian_blur=0.0)
    if method == "byol":
        return BYOLTransform(BYOLView1Transform(input_size=image_size, sigmas=sigmas),
                             BYOLView2Transform(input_size=image_size, sigmas=sigmas))
    if method == "dino":
        return DINOTransform(global_crop_size=image_size, local_crop_size=image_size // 2, n_local_views=6,
                             sigmas=sigmas)
    raise ValueError(f"no lightly pipeline for {method!r}; valid: {', '.join(LIGHTLY_MODELS)}")


LIGHTLY_MODELS = {"simclr": LightlySimCLR, "moco": LightlyMoCo, "byol": LightlyBYOL, "dino": LightlyDINO}


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
    processes (kept alive between epochs), pinned memory on CUDA, full batches only."""
    return DataLoader(PILViews(images, transform), batch_size=batch_size, sampler=sampler, shuffle=shuffle,
                      num_workers=workers, persistent_workers=workers > 0, pin_memory=device.type == "cuda",
                      drop_last=True, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------
# The three pipelines


class FixedViews:
    """Stands in for a method's view recipe: returns the same precomputed views every call."""

    def __init__(self, views: list[Tensor]):
        self.views = views

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        return self.views


def coursekit_pipeline(method: str, settings: Settings, device: torch.device, images: Tensor,
                       total_steps: int, ceiling: bool = False) -> common.Timed:
    """coursekit's step on a random batch of the images on the device; with ``ceiling``, the same
    model on views made once (no augmentation, no data movement)."""
    model = to_device(build_method(method, seeded_backbone(settings.width, settings.seed),
                                   image_size=settings.image_size), device, settings.channels_last)
    trainer = Trainer(model, settings, device, total_steps)
    images = images.to(device)

    def batch_of(step: int) -> Tensor:
        """A random batch of the images, indexed on the device."""
        picks = torch.randint(len(images), (settings.batch_size,), device=device, generator=generator_for(device, step))
        return images[picks]

    if ceiling:
        model.views = FixedViews([view.contiguous() for view in model.views(batch_of(0), generator_for(device, 0))])

    def step() -> None:
        n = trainer.steps_done
        batch, generator = batch_of(n), generator_for(device, n + 1)
        trainer.step(lambda: model.training_step(batch, generator))

    return common.Timed(step, settings.batch_size)


def generator_for(device: torch.device, step: int) -> torch.Generator:
    """A generator on the device seeded by the step, as ``coursekit.engine.fit`` makes one per step."""
    return torch.Generator(device).manual_seed(step)


def lightly_pipeline(method: str, settings: Settings, device: torch.device, images: Tensor,
                     total_steps: int) -> common.Timed:
    """lightly's transform in DataLoader workers, views copied to the device, lightly's model."""
    model = to_device(LIGHTLY_MODELS[method](seeded_backbone(settings.width, settings.seed), total_steps),
                      device, settings.channels_last)
    trainer = Trainer(model, settings, device, total_steps)
    sampler = RandomSampler(range(len(images)), replacement=True, num_samples=10**9,
                            generator=torch.Generator().manual_seed(settings.seed))
    loader = lightly_loader(images, lightly_transform(method, settings.image_size), settings.batch_size,
                            settings.workers, device, sampler=sampler)
    batches = iter(loader)

    def step() -> None:
        views = [view.to(device, non_blocking=True) for view in next(batches)]
        trainer.step(lambda: model.training_step(views))

    def drain_prefetched() -> None:
        """Take, untimed, the batches the workers made while other pipelines ran, so that the
        timed steps see the workers' steady rate rather than a full prefetch queue."""
        for _ in range(settings.workers * 2):  # DataLoader's default prefetch_factor is 2
            next(batches)

    return common.Timed(step, settings.batch_size, drain_prefetched if settings.workers > 0 else None)


# ----------------------------------------------------------------------------------------------
# The run


def measure_method(method: str, settings: Settings, device: torch.device, warmup: int, rounds: int,
                   steps: int) -> dict:
    """images/s of the three pipelines for one method, and the ratios."""
    images = random_images(settings.num_images, settings.image_size, settings.seed)
    total = warmup + rounds * steps + rounds * 2 * settings.workers
    pipelines = {
        "coursekit": coursekit_pipeline(method, settings, device, images, total),
        "lightly": lightly_pipeline(method, settings, device, images, total),
        "ceiling": coursekit_pipeline(method, settings, device, images, total, ceiling=True),
    }
    timings = common.time_alternating(pipelines, device, warmup, rounds, steps)
    speed = {name: timing["images_per_s"] for name, timing in timings.items()}
    return {
        "images_per_s": speed,
        "coursekit_over_lightly": round(speed["coursekit"] / speed["lightly"], 2),
        "coursekit_over_ceiling": round(speed["coursekit"] / speed["ceiling"], 2),
        "rounds_images_per_s": {name: timing["rounds_images_per_s"] for name, timing in timings.items()},
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=str(common.default_device()))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--width", type=int, help="ResNet-18 width (default: 64 on CUDA, 8 on the CPU)")
    parser.add_argument("--batch-size", type=int, help="default: 512 on CUDA, 64 on the CPU")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on the CPU), bf16, fp16, fp32")
    parser.add_argument("--workers", type=int, help="DataLoader workers of the lightly pipeline")
    parser.add_argument("--num-images", type=int, help="images to draw batches from")
    parser.add_argument("--warmup", type=int, help="untimed steps per pipeline (default 10 on CUDA, 2 on the CPU)")
    parser.add_argument("--rounds", type=int, help="timed rounds per pipeline (default 5 on CUDA, 3 on the CPU)")
    parser.add_argument("--steps", type=int, help="steps per round (default 20 on CUDA, 2 on the CPU)")
    parser.add_argument("--results-dir", help="where to write the JSON (default benchmarks/results)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, device: torch.device) -> Settings:
    """Defaults for the device, overridden by the arguments given."""
    settings = Settings.defaults(device)
    for name in ("width", "batch_size", "workers", "num_images"):
        if getattr(args, name) is not None:
            setattr(settings, name, getattr(args, name))
    settings.image_size, settings.precision = args.image_size, args.precision
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    settings = settings_from(args, device)
    gpu = device.type == "cuda"
    warmup = args.warmup if args.warmup is not None else (10 if gpu else 2)
    rounds = args.rounds if args.rounds is not None else (5 if gpu else 3)
    steps = args.steps if args.steps is not None else (20 if gpu else 2)
    result = {
        **common.environment(device),
        "settings": {**asdict(settings), "backbone": "resnet18 (CIFAR stem)",
                     "precision_resolved": resolve_precision(settings.precision, device),
                     "warmup_steps": warmup, "rounds": rounds, "steps_per_round": steps,
                     "timing": "pipelines alternate round by round after warm-up; median over rounds "
                               "of source images per second",
                     "data": "random uint8 pixels"},
        "not_measured": NOT_MEASURED,
        "methods": {},
    }
    for method in args.methods:
        result["methods"][method] = measure_method(method, settings, device, warmup, rounds, steps)
        print(method, result["methods"][method]["images_per_s"], flush=True)
    path = common.write_result("throughput", device, result, args.results_dir)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
