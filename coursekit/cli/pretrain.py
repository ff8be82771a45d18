"""``coursekit pretrain``: self-supervised pretraining from the command line, on one or many processes.

    python -m coursekit pretrain --method simclr --dataset shapes --epochs 5 --checkpoint-dir runs/simclr
    torchrun --nproc_per_node=2 -m coursekit pretrain --method simclr --dataset shapes --epochs 5 \\
        --checkpoint-dir runs/simclr --resume

Training values not given on the command line come from the method's recipe for the run profile
(``coursekit.recipes``: epochs, batch, learning rate, weight decay, warmup, backbone, method
options), data sizes from the profile (``--profile`` or ``COURSEKIT_PROFILE``); a value given is
used as given (0 is refused, never replaced). The recipe and what the command line changed in it
are printed before training. Under
``torchrun`` every process trains on its share of the images with PyTorch DDP (gloo on the CPU,
NCCL on CUDA; ``--batch-size`` is per process); rank 0 writes the checkpoint and ``history.json``
and prints. At the end rank 0 prints the weighted kNN accuracy (k=200, temperature 0.1) of the
backbone on the dataset's test split (and the linear-probe accuracy when the recipe's protocol
is "linear", as for MAE); ``--report FILE`` also writes them, with the same backbone's accuracies
at its random initialization, as JSON, and a ``"verdict"``: ``"ok"``, or ``"collapsed"`` when the
run ended collapsed (the embeddings' spread near 0, or DINO's teacher output uniform:
``coursekit.engine.collapse``; the signs are under ``"collapse"`` and printed as a warning).

``--seed`` decides the run's randomness: the initial weights (built under ``torch.manual_seed(seed)``),
the images' order and the augmentations. The images picked from a dataset are the profile's, the
same for every seed (drawn with ``DATA_SEED``), as in the lessons (``recipes.load_or_pretrain``) and
``benchmarks/knn_methods.py``: a command with ``--seed S`` and the profile's sizes makes the run of
the README's table for seed S and scores it the same way. The same command gives the same checkpoint,
and a run killed at any moment and started again with ``--resume`` ends with the same checkpoint
as a run never interrupted.

``--data DIR`` trains on a folder of your own images instead (``coursekit.data.folder``): they are
read from disk as training goes by ``--workers`` DataLoader processes per training process, never
held in memory; each process reads its share, in the same order as in-memory data. A folder has
no labels: the run ends without an evaluation unless ``--eval-dataset NAME`` names a labeled
dataset (its train and test splits). ``--backbone yolo11n`` (any YOLO11 or YOLO12 size) trains the
backbone of that ultralytics model with the method's own views (crops on YOLO's stride of 32);
``coursekit export`` writes it back.

Everything the run needs is checked before the first step (values, device, data, checkpoint
folder, the checkpoint to resume); a problem is a ``UsageError`` that ``coursekit`` prints as one
line. For tests, ``COURSEKIT_STOP_AFTER_STEP=k`` makes the process stop itself (SIGSTOP) after
step k and its checkpoint, so that a test can SIGKILL it at a moment it chooses.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from coursekit.cli import UsageError
from coursekit.data import DATASET_NAMES, load_images
from coursekit.engine import PRECISIONS, TrainConfig, distributed, fit
from coursekit.engine.checkpoint import CHECKPOINT_NAME, remove_stale_temporaries
from coursekit.methods import METHODS, build_method, command_line_options
from coursekit.models import BACKBONES, YOLO_BACKBONES, build_backbone
from coursekit.profile import PROFILE_NAMES, get_profile
from coursekit.recipes import VIT_METHODS, Recipe, build_report, get_recipe, protocol_scores

# Smallest batch per process: BatchNorm needs two images; MoCo's shuffled BN needs two groups of two.
MIN_BATCH = {"moco": 4}
DEFAULT_MIN_BATCH = 2
STOP_AFTER_STEP_ENV = "COURSEKIT_STOP_AFTER_STEP"
YOLO_STRIDE = 32  # input sides of YOLO backbones are multiples of it (coursekit.models.yolo)
MAX_DATA_WORKERS = 4
DATA_SEED = 0  # draws a dataset's images: the profile's images, the lessons' and the benchmarks', for every --seed
PROTOCOL_NAMES = {"knn": "kNN accuracy (k=200, temperature=0.1)", "linear": "linear-probe accuracy"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``coursekit pretrain``; sizes default to the run profile's."""
    parser.add_argument("--method", required=True, choices=sorted(METHODS), help="self-supervised method")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help="pretrain on your own images: a folder (nested) of JPEG/PNG/WebP files, read from disk "
                             "as training goes (instead of --dataset)")
    parser.add_argument("--eval-dataset", choices=DATASET_NAMES,
                        help="with --data: a labeled dataset to evaluate on (default: no evaluation)")
    parser.add_argument("--workers", type=int,
                        help="with --data: processes that decode images per training process "
                             f"(default: the CPU cores per training process, at most {MAX_DATA_WORKERS})")
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="dataset (default: the profile's)")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default: the recipe's)")
    parser.add_argument("--checkpoint-dir", type=Path,
                        help="folder for checkpoint.pt and history.json (default: no checkpoints)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in --checkpoint-dir (a finished one is just evaluated)")
    parser.add_argument("--batch-size", type=int, help="images per step and per process (default: the recipe's)")
    parser.add_argument("--lr", type=float,
                        help="peak learning rate (default: the recipe's, scaled linearly with the batch size)")
    parser.add_argument("--weight-decay", type=float, help="weight decay (default: the recipe's)")
    parser.add_argument("--warmup-epochs", type=float, help="linear warmup of the learning rate (default: the recipe's)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES),
                        help="backbone (default: the recipe's: the profile's ResNet, or its ViT for MAE); yolo11n ... "
                             "yolo12x: the backbone of that ultralytics YOLO model (needs the yolo extra; export it "
                             "with coursekit export --format ultralytics)")
    parser.add_argument("--width", type=int, help="ResNet width (default: the recipe's)")
    parser.add_argument("--patch-size", type=int, help="ViT patch size (default: the recipe's)")
    parser.add_argument("--num-images", type=int, help="training images (default: the profile's)")
    parser.add_argument("--num-test", type=int, help="labeled test images for the kNN accuracy (default: the profile's)")
    parser.add_argument("--image-size", type=int, help="image side in pixels (default: the profile's)")
    parser.add_argument("--profile", choices=PROFILE_NAMES, help="run profile (default: COURSEKIT_PROFILE or by hardware)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (0: only at the end)")
    parser.add_argument("--seed", type=int, default=0,
                        help="decides the initial weights, the images' order and the augmentations (the images "
                             "picked are the profile's, the same for every seed)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: the profile's; under torchrun cuda:LOCAL_RANK)")
    methods = parser.add_argument_group("method options (default: the recipe's, else the method's own)")
    for name, per_method in command_line_options().items():  # each method declares its own (Method.command_line)
        meanings: dict[str, list[str]] = {}
        for method, option in per_method.items():
            meanings.setdefault(option.help, []).append(method)
        methods.add_argument(flag(name), type=next(iter(per_method.values())).type,
                             help="; ".join(f"{meaning} ({', '.join(names)})" for meaning, names in meanings.items()))
    parser.add_argument("--report", type=Path, metavar="FILE",
                        help="write a JSON report: recipe, steps, seconds, accuracies at random init and pretrained")


# ----------------------------------------------------------------------------------------------
# Checks that need nothing but the arguments


def flag(name: str) -> str:
    """The command-line spelling of an argument: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def check_values(args: argparse.Namespace) -> None:
    """Refuse values that make no sense, naming the flag and what it needs."""
    for name in ("epochs", "batch_size", "num_images", "num_test", "image_size", "width", "patch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"{flag(name)} must be at least 1; got {value}")
    if args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every must be 0 (only at the end) or more; got {args.checkpoint_every}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be a positive number; got {args.lr}")
    for name in ("weight_decay", "warmup_epochs"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{flag(name)} must be 0 or more; got {value}")
    given_method_options(args)  # the method options: each as its method declares it
    if args.resume and args.checkpoint_dir is None:
        raise UsageError("--resume needs --checkpoint-dir (the folder of the run to continue)")


def given_method_options(args: argparse.Namespace) -> dict:
    """The method options given on the command line, as the method's constructor arguments.
    A flag the chosen method does not have, or a value it does not accept, is refused."""
    options = {}
    for name, per_method in command_line_options().items():
        value = getattr(args, name)
        if value is None:
            continue
        option = per_method.get(args.method)
        if option is None:
            own = [flag(o.flag) for o in METHODS[args.method].command_line]
            raise UsageError(f"{flag(name)} is not an option of {args.method} (its options: {', '.join(own) or 'none'}); "
                             f"{flag(name)} applies to {', '.join(per_method)}")
        if not option.accepts(value):
            raise UsageError(f"{flag(name)} must be {option.rule}; got {value}")
        options[option.argument] = value
    return options


def backbone_settings(args: argparse.Namespace, recipe: Recipe, profile, image_size: int) -> tuple[str, dict]:
    """(backbone name, constructor kwargs) from the arguments, the recipe and the profile; refuses
    options that do not apply to the backbone and a patch size that does not divide the image."""
    name = args.backbone or recipe.backbone
    is_vit = name.startswith("vit")
    if args.method in VIT_METHODS and not is_vit:
        raise UsageError(f"{args.method} needs a ViT backbone (vit_tiny, vit_small); got --backbone {name}")
    if name in YOLO_BACKBONES:
        if args.width is not None or args.patch_size is not None:
            raise UsageError(f"--width and --patch-size do not apply to {name}: its size is the letter in its name")
        if image_size % YOLO_STRIDE:
            raise UsageError(f"{name} needs --image-size a multiple of {YOLO_STRIDE} (its stride); got {image_size}")
        return name, {}
    if is_vit:
        if args.width is not None:
            raise UsageError(f"--width sets a ResNet's width; {name} is a ViT (its option is --patch-size)")
        patch_size = recipe.backbone_kwargs.get("patch_size", profile.patch_size) if args.patch_size is None \
            else args.patch_size
        if image_size % patch_size:
            raise UsageError(f"--patch-size {patch_size} does not divide the image size {image_size}: "
                             f"choose a divisor of {image_size} (or another --image-size)")
        return name, {"img_size": image_size, "patch_size": patch_size}
    if args.patch_size is not None:
        raise UsageError(f"--patch-size sets a ViT's patches; {name} is a ResNet (its option is --width)")
    return name, {"width": recipe.backbone_kwargs.get("width", profile.width) if args.width is None else args.width}


# ----------------------------------------------------------------------------------------------
# Checks of the machine: device, checkpoint folder


def check_device(name: str) -> torch.device:
    """The torch device called ``name``, refused when this machine does not have it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available on this machine (no NVIDIA GPU, or a "
                             f"CPU-only torch); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {name}: Apple's MPS is not available on this machine; use --device cpu")
    elif device.type != "cpu":
        raise UsageError(f"--device {name}: coursekit trains on cpu, cuda or mps")
    return device


def check_writable_folder(folder: Path, option: str) -> None:
    """Create ``folder`` and prove it writable (a probe file written and removed), so that no
    training is lost to a folder that fails when the first file is written into it."""
    advice = f"choose another {option}"
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option}: {folder} is a file, not a folder: {advice}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{option}: the folder {folder} cannot be created ({error.strerror or error}): {advice}") from None
    probe = folder / f".coursekit-write-probe{os.getpid()}"
    try:
        probe.write_bytes(b"probe")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"{option}: the folder {folder} is not writable ({error.strerror or error}): {advice}, "
                         f"or make it writable") from None


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group if this process was started by torchrun; -> this process's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise UsageError(f"torchrun started local rank {local_rank} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s): lower --nproc_per_node")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo")
    return device


def stop_after_step_hook() -> Callable[[int], None] | None:
    """With ``COURSEKIT_STOP_AFTER_STEP=k``: a fit ``on_step`` that stops this process (SIGSTOP)
    after step k and its checkpoint, for tests that kill a run at a chosen moment."""
    value = os.environ.get(STOP_AFTER_STEP_ENV, "").strip()
    if not value:
        return None
    stop_step = int(value)

    def on_step(step: int) -> None:
        if step == stop_step:
            os.kill(os.getpid(), signal.SIGSTOP)

    return on_step


# ----------------------------------------------------------------------------------------------
# The run


def load_split(dataset: str, split: str, n: int, image_size: int):
    """``load_images`` (the images drawn with ``DATA_SEED``) with its complaints about sizes as
    UsageErrors naming the option."""
    try:
        return load_images(dataset, split, n=n, image_size=image_size, seed=DATA_SEED)
    except ValueError as error:
        option = "--num-images" if split == "train" else "--num-test"
        raise UsageError(f"{dataset} {split}: {error} (check {option})") from None


# Flags that change a recipe's value (the method options are command_line_options()).
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "backbone", "width", "patch_size",
                "image_size")


@dataclass
class Plan:
    """What a run will do: the recipe, every value it did not set filled in, every value checked."""

    recipe: Recipe
    dataset: str | None  # the labeled dataset; with --data: --eval-dataset or None
    folder: object  # the ImageFolder of --data, or None
    image_size: int
    num_images: int
    num_test: int
    backbone: str
    backbone_kwargs: dict
    method_options: dict
    config: TrainConfig

    @property
    def recipe_views(self) -> bool:
        """The recipe's views are made for the profile's image size and its backbones; another size,
        or a YOLO backbone (crops on its stride), keeps the method's own."""
        return self.image_size == self.recipe.image_size and self.backbone not in YOLO_BACKBONES

    def describe(self, args: argparse.Namespace) -> str:
        """The recipe, then the values this run uses and the flags that changed them."""
        changed = [flag(name) for name in (*RECIPE_FLAGS, *command_line_options()) if getattr(args, name) is not None]
        if self.recipe_views:
            views = "the recipe's views"
        elif self.backbone in YOLO_BACKBONES:
            views = f"the method's own views at {self.image_size} px (crops on YOLO's stride)"
        else:
            views = f"the method's own views at {self.image_size} px (the recipe's are for {self.recipe.image_size} px)"
        config = self.config
        return (f"{self.recipe.describe()}\n"
                f"this run: {self.backbone} {self.backbone_kwargs}, {config.epochs} epochs, batch {config.batch_size}, "
                f"{config.optimizer} lr {config.lr:.3g}, weight decay {config.weight_decay:g}, warmup "
                f"{config.warmup_epochs:g} epochs, method options {self.method_options}, {views}; "
                f"changed on the command line: {', '.join(changed) or 'nothing'}")


def open_folder(args: argparse.Namespace, image_size: int):
    """``--data DIR`` as an ``ImageFolder`` (scanned once, decoded on demand); refuses mixing it with
    ``--dataset``/``--num-images``, and ``--eval-dataset`` without it."""
    from coursekit.data.folder import ImageFolder

    if args.data is None:
        if args.eval_dataset is not None:
            raise UsageError("--eval-dataset goes with --data (a --dataset run is evaluated on its own test split)")
        return None
    if args.dataset is not None or args.num_images is not None:
        raise UsageError("--data DIR trains on every image in DIR: leave out --dataset and --num-images")
    try:
        return ImageFolder(args.data, image_size)
    except ValueError as error:
        raise UsageError(str(error)) from None


def data_workers(args: argparse.Namespace, folder, world: int) -> int:
    """DataLoader workers of each process: ``--workers``, or the cores per process (1 to 4) for a folder."""
    if args.workers is not None:
        if folder is None or args.workers < 0:
            raise UsageError(f"--workers goes with --data and must be 0 or more; got {args.workers}")
        return args.workers
    return 0 if folder is None else max(1, min(MAX_DATA_WORKERS, (os.cpu_count() or 1) // world))


def plan_run(args: argparse.Namespace, profile, world: int) -> Plan:
    """The run's values: the arguments given, the method's recipe for the profile for the others
    (data sizes: the profile's); refuses sizes that do not fit together (batch against images per
    process, MoCo's queue against a step's keys)."""
    recipe = get_recipe(args.method, profile.name)
    options = {**recipe.method_kwargs, **given_method_options(args)}
    image_size = profile.image_size if args.image_size is None else args.image_size
    folder = open_folder(args, image_size)  # None unless --data
    if folder is not None:
        num_images = len(folder)
    else:
        num_images = profile.num_train if args.num_images is None else args.num_images
    batch_size = recipe.batch_size if args.batch_size is None else args.batch_size
    min_batch = MIN_BATCH.get(args.method, DEFAULT_MIN_BATCH)
    if batch_size < min_batch:
        raise UsageError(f"--batch-size {batch_size} is too small for {args.method}: it needs at least {min_batch}")
    if batch_size > num_images // world:
        more = "add images to --data" if folder is not None else "raise --num-images"
        raise UsageError(f"--batch-size {batch_size} is larger than the {num_images // world} images per process "
                         f"({num_images} images, {world} process(es)): lower --batch-size or {more}")
    if "queue_size" in options and options["queue_size"] < batch_size * world:
        raise UsageError(f"MoCo's queue of {options['queue_size']} cannot hold one step's {batch_size * world} keys: "
                         f"give --queue-size {batch_size * world} or more")
    backbone, backbone_kwargs = backbone_settings(args, recipe, profile, image_size)
    if args.method == "dino" and backbone in YOLO_BACKBONES:
        from coursekit.models.yolo import dino_local_size
        options = {**options, "local_size": dino_local_size(image_size)}  # local crops on YOLO's stride too
    config = TrainConfig(
        epochs=recipe.epochs if args.epochs is None else args.epochs, batch_size=batch_size,
        lr=recipe.lr(batch_size) if args.lr is None else args.lr, optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay if args.weight_decay is None else args.weight_decay,
        warmup_epochs=recipe.warmup_epochs if args.warmup_epochs is None else args.warmup_epochs,
        precision=args.precision, seed=args.seed, checkpoint_every=args.checkpoint_every,
        num_workers=data_workers(args, folder, world),
    )
    dataset = args.eval_dataset if folder is not None else args.dataset or profile.dataset
    return Plan(recipe=recipe, dataset=dataset, folder=folder, image_size=image_size,
                num_images=num_images, num_test=profile.num_test if args.num_test is None else args.num_test,
                backbone=backbone, backbone_kwargs=backbone_kwargs, method_options=options, config=config)


def check_outputs(args: argparse.Namespace) -> None:
    """The checkpoint folder and the report's folder exist and are writable; stale temporary
    checkpoint files of killed runs are removed."""
    if args.checkpoint_dir is not None:
        check_writable_folder(args.checkpoint_dir, "--checkpoint-dir")
        remove_stale_temporaries(args.checkpoint_dir / CHECKPOINT_NAME)
    if args.report is not None:
        if args.report.is_dir():
            raise UsageError(f"--report {args.report} is a folder: give a file name, e.g. {args.report / 'report.json'}")
        check_writable_folder(args.report.parent, "--report")


def build_seeded(args: argparse.Namespace, plan: Plan):
    """(backbone, method) at the initialization decided by ``--seed``; a method that refuses its
    options is a UsageError."""
    torch.manual_seed(args.seed)  # as recipes.load_or_pretrain and benchmarks/knn_methods.py: the same weights
    backbone = build_backbone(plan.backbone, **plan.backbone_kwargs)
    try:
        method = build_method(args.method, backbone, image_size=plan.image_size, **plan.method_options)
    except ValueError as error:
        raise UsageError(f"{args.method} refuses the options {plan.method_options}: {error}") from None
    if plan.recipe_views:
        method.views = plan.recipe.build_views()
    return backbone, method


def run(args: argparse.Namespace) -> int:
    """Check everything, pretrain, checkpoint, print (and report) the kNN accuracy. Returns 0."""
    check_values(args)
    profile = get_profile(args.profile)
    device = init_distributed(check_device(args.device or profile.device))
    is_main, world = distributed.rank() == 0, distributed.world_size()
    plan = plan_run(args, profile, world)
    if is_main:
        check_outputs(args)
        print(profile.banner())
        print(plan.describe(args))
        source = plan.folder.summary() if plan.folder is not None else plan.dataset
        print(f"pretrain {args.method} on {source}, {world} process(es) on {device}, seed {args.seed}")
        if args.resume and not (args.checkpoint_dir / CHECKPOINT_NAME).exists():
            print(f"--resume: no checkpoint in {args.checkpoint_dir} yet, training from the start")

    if plan.folder is None:
        train_set = load_split(plan.dataset, "train", plan.num_images, plan.image_size)
    elif is_main and plan.dataset is not None:  # --eval-dataset: its train split is the labeled train set
        train_set = load_split(plan.dataset, "train", profile.num_train, plan.image_size)
    else:  # --data alone: no labels, no evaluation
        train_set = None
    has_labels = is_main and plan.dataset is not None
    test_set = load_split(plan.dataset, "test", plan.num_test, plan.image_size) if has_labels else None
    backbone, method = build_seeded(args, plan)
    random_init_backbone = copy.deepcopy(backbone) if args.report is not None else None
    settings = {"dataset": "folder" if plan.folder is not None else plan.dataset, "backbone": plan.backbone,
                "backbone_kwargs": plan.backbone_kwargs}
    images = plan.folder if plan.folder is not None else train_set.images  # a folder streams: fit reads it
    start = time.perf_counter()
    history = fit(method, images, plan.config, args.checkpoint_dir, resume=args.resume, device=device,
                  settings=settings, on_step=stop_after_step_hook())
    seconds = time.perf_counter() - start

    if is_main:
        if args.checkpoint_dir is not None:
            (args.checkpoint_dir / "history.json").write_text(json.dumps(history.to_dict()))
        protocol = plan.recipe.protocol
        print(f"final loss {history.loss[-1]:.4f}" if history.loss else "no training steps")
        if test_set is None:
            print("no labels: no evaluation (--eval-dataset NAME evaluates on a labeled dataset)")
            pretrained = {}
        else:
            pretrained = protocol_scores(method.pretrained_backbone, protocol, train_set, test_set, device=device, seed=args.seed)
        for name, accuracy in pretrained.items():
            print(f"{PROTOCOL_NAMES[name]} on {plan.dataset} test ({len(test_set)} images): {accuracy:.2%}")
        if args.report is not None:
            random_init = {} if test_set is None else protocol_scores(
                random_init_backbone.to(device), protocol, train_set, test_set, device=device, seed=args.seed)
            scores = {name: {"random_init": random_init[name], "pretrained": pretrained[name]} for name in pretrained}
            report = build_report(plan.recipe, plan.dataset, args.seed, history.step[-1] if history.step else 0,
                                  seconds, scores, config=plan.config.settings(), method_options=plan.method_options,
                                  num_images=plan.num_images, image_size=plan.image_size, init_seed=args.seed,
                                  data_seed=DATA_SEED, num_test=0 if test_set is None else len(test_set),
                                  processes=world, verdict="collapsed" if history.collapsed else "ok",
                                  collapse=history.collapse)
            args.report.write_text(json.dumps(report, indent=2))
            print(f"report written to {args.report}")
    if distributed.is_distributed():
        dist.barrier()
        dist.destroy_process_group()
    return 0
