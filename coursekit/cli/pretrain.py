"""``coursekit pretrain``: self-supervised pretraining from the command line, on one or many processes.

    python -m coursekit pretrain --method simclr --dataset shapes --epochs 5 --checkpoint-dir runs/simclr
    torchrun --nproc_per_node=2 -m coursekit pretrain --method simclr --dataset shapes --epochs 5 \\
        --checkpoint-dir runs/simclr --resume

Sizes not given on the command line come from the run profile (``--profile`` or
``COURSEKIT_PROFILE``). Under ``torchrun`` every process trains on its share of the images with
PyTorch DDP (gloo on the CPU, NCCL on CUDA; ``--batch-size`` is per process); rank 0 writes the
checkpoint and ``history.json`` and prints. At the end rank 0 prints the weighted kNN accuracy
(k=200, temperature 0.1) of the backbone on the dataset's test split.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from coursekit.engine import distributed
from coursekit.data import DATASET_NAMES, load_images
from coursekit.evaluate import extract_features, knn_accuracy
from coursekit.methods import METHODS, build_method
from coursekit.models import BACKBONES, build_backbone
from coursekit.profile import PROFILE_NAMES, get_profile
from coursekit.engine import PRECISIONS, TrainConfig, fit

VIT_METHODS = ("mae",)  # methods that need a ViT backbone (the profile's ``vit`` is their default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``coursekit pretrain``; sizes default to the run profile's."""
    parser.add_argument("--method", required=True, choices=sorted(METHODS), help="self-supervised method")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="dataset (default: the profile's)")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default: the profile's)")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="folder for checkpoint.pt and history.json (default: no checkpoints)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --checkpoint-dir (a finished one is just evaluated)")
    parser.add_argument("--batch-size", type=int, help="images per step and per process (default: the profile's)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup-epochs", type=float, default=0.0)
    parser.add_argument("--backbone", choices=sorted(BACKBONES),
                        help="backbone (default: the profile's ResNet, or its ViT for MAE)")
    parser.add_argument("--width", type=int, help="ResNet width (default: the profile's)")
    parser.add_argument("--patch-size", type=int, help="ViT patch size (default: the profile's)")
    parser.add_argument("--num-images", type=int, help="training images (default: the profile's)")
    parser.add_argument("--num-test", type=int, help="labeled test images for the kNN accuracy (default: the profile's)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default: the profile's)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, help="run profile (default: COURSEKIT_PROFILE or by hardware)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cpu, cuda, mps (default: the profile's; under torchrun cuda:LOCAL_RANK)")


def init_distributed(device: str) -> torch.device:
    """Join the torchrun process group if this process was started by torchrun; -> this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return torch.device(device)
    if device.startswith("cuda"):
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return torch.device(device)


def backbone_settings(args: argparse.Namespace, profile) -> tuple[str, dict]:
    """(backbone name, constructor kwargs) from the arguments and the profile."""
    name = args.backbone or (profile.vit if args.method in VIT_METHODS else profile.backbone)
    if name.startswith("vit"):
        return name, {"img_size": args.image_size or profile.image_size,
                      "patch_size": args.patch_size or profile.patch_size}
    return name, {"width": args.width or profile.width}


def run(args: argparse.Namespace) -> int:
    """Pretrain, checkpoint, print the kNN accuracy. Returns the exit status (0)."""
    profile = get_profile(args.profile)
    device = init_distributed(args.device or profile.device)
    is_main = distributed.rank() == 0
    dataset = args.dataset or profile.dataset
    image_size = args.image_size or profile.image_size
    backbone_name, backbone_kwargs = backbone_settings(args, profile)
    if is_main:
        print(profile.banner())
        print(f"pretrain {args.method} on {dataset} with {backbone_name} {backbone_kwargs}, "
              f"{distributed.world_size()} process(es) on {device}")

    train_set = load_images(dataset, "train", n=args.num_images or profile.num_train, image_size=image_size, seed=args.seed)
    backbone = build_backbone(backbone_name, **backbone_kwargs)
    method = build_method(args.method, backbone, image_size=image_size)
    config = TrainConfig(
        epochs=args.epochs or profile.epochs, batch_size=args.batch_size or profile.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, precision=args.precision,
        channels_last=device.type == "cuda" and not backbone_name.startswith("vit"), seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    settings = {"dataset": dataset, "backbone": backbone_name, "backbone_kwargs": backbone_kwargs}
    history = fit(method, train_set.images, config, args.checkpoint_dir, resume=args.resume, device=device,
                  settings=settings)

    if is_main:
        if args.checkpoint_dir is not None:
            (args.checkpoint_dir / "history.json").write_text(json.dumps(history.to_dict()))
        test_set = load_images(dataset, "test", n=args.num_test or profile.num_test, image_size=image_size,
                               seed=args.seed)
        train_features = extract_features(method.backbone, train_set.images, device=device)
        test_features = extract_features(method.backbone, test_set.images, device=device)
        accuracy = knn_accuracy(train_features, train_set.labels, test_features, test_set.labels,
                                num_classes=train_set.num_classes, k=200, temperature=0.1)
        print(f"final loss {history.loss[-1]:.4f}" if history.loss else "no training steps")
        print(f"kNN accuracy (k=200, temperature=0.1) on {dataset} test ({len(test_set)} images): {accuracy:.2%}")
    if distributed.is_distributed():
        dist.barrier()
        dist.destroy_process_group()
    return 0
