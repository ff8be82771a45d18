"""Where ``fit``'s batches come from: uint8 images in memory, or a Dataset streamed by a DataLoader.

Either way the images of a step are the same: the epoch's order is a permutation seeded by
``(seed, epoch)`` (the same on every process), of which process r takes positions r, r + W, ...
(``DistributedSampler`` semantics), and step s of the run takes the s-th batch of that sequence.
So a run on a Dataset trains exactly as a run on the same images in memory, and a run resumed at
step s starts at the batch of step s, even in the middle of an epoch.

- A uint8 tensor ``[N, C, H, W]`` is moved to the device once; a batch is an index into it.
- A ``torch.utils.data.Dataset`` whose items are uint8 tensors ``[C, H, W]`` (all the same size)
  is read by a ``DataLoader`` whose batch sampler yields this process's index batches from the
  resumed step on: ``num_workers`` processes decode images while the device trains (the workers
  live for the whole run: one loader iterates over every remaining epoch), batches land in pinned
  memory on CUDA and are copied with ``non_blocking=True``. A Dataset may have a
  ``fingerprint() -> dict`` (e.g. its file list and sizes) that checkpoints record instead of a
  hash of sample images.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from coursekit.engine.seeding import derived_seed, epoch_permutation

Data = Tensor | Dataset
FINGERPRINT_SAMPLES = 16  # images hashed to recognize a data set


def epoch_indices(num_images: int, seed: int, epoch: int, rank: int, world: int, steps: int,
                  batch_size: int) -> Tensor:
    """This process's image indices for an epoch, long [steps * batch_size]: a permutation seeded
    by (seed, epoch), the same on every process, of which rank r takes positions r, r + W, ..."""
    return epoch_permutation(num_images, seed, epoch)[rank::world][:steps * batch_size]


def check_data(data: Data) -> tuple[int, list[int]]:
    """(number of images, [C, H, W]) of a uint8 tensor [N, C, H, W] or a Dataset of uint8 [C, H, W]
    items (the first item is read); ValueError for anything else."""
    if isinstance(data, Tensor):
        if data.dtype != torch.uint8 or data.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W]; got {data.dtype} {list(data.shape)}")
        return len(data), list(data.shape[1:])
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise ValueError(f"data must be a uint8 tensor [N, C, H, W] or a Dataset of uint8 [C, H, W] images "
                         f"with len(); got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError(f"the dataset {type(data).__name__} is empty")
    _check_item(data[0], 0)
    return len(data), list(data[0].shape)


def _check_item(item, index: int) -> None:
    if not isinstance(item, Tensor) or item.dtype != torch.uint8 or item.dim() != 3:
        got = f"{item.dtype} {list(item.shape)}" if isinstance(item, Tensor) else type(item).__name__
        raise ValueError(f"dataset item {index} must be a uint8 tensor [C, H, W]; got {got}")


def data_fingerprint(data: Data) -> dict:
    """Number and shape of the images, and the Dataset's ``fingerprint()`` if it has one, else a
    hash of 16 images spread over the set (the same hash for a tensor and a Dataset of its images)."""
    num_images, shape = check_data(data)
    fingerprint = {"num_images": num_images, "shape": shape}
    if callable(getattr(data, "fingerprint", None)):
        return {**fingerprint, "fingerprint": data.fingerprint()}
    picks = range(0, num_images, max(1, num_images // FINGERPRINT_SAMPLES))[:FINGERPRINT_SAMPLES]
    sample = data[list(picks)] if isinstance(data, Tensor) else torch.stack([data[i] for i in picks])
    digest = hashlib.sha256(sample.cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return {**fingerprint, "sample_sha256": digest}


class StepIndexBatches:
    """Batch sampler: this process's index batches of steps ``start_step`` .. ``total_steps - 1``,
    each a list of ``batch_size`` image indices (``epoch_indices`` cut into steps)."""

    def __init__(self, num_images: int, seed: int, batch_size: int, rank: int, world: int,
                 steps_per_epoch: int, start_step: int, total_steps: int):
        self.num_images, self.seed, self.batch_size = num_images, seed, batch_size
        self.rank, self.world, self.steps_per_epoch = rank, world, steps_per_epoch
        self.start_step, self.total_steps = start_step, total_steps

    def __len__(self) -> int:
        return self.total_steps - self.start_step

    def __iter__(self) -> Iterator[list[int]]:
        """Lists of indices, as a DataLoader's batch sampler gives them to the Dataset."""
        for indices in self.on_device(torch.device("cpu")):
            yield indices.tolist()

    def on_device(self, device: torch.device) -> Iterator[Tensor]:
        """The same batches as long tensors on ``device`` (copied there once per epoch)."""
        indices, indices_epoch = None, None
        for step in range(self.start_step, self.total_steps):
            epoch, i = divmod(step, self.steps_per_epoch)
            if epoch != indices_epoch:
                indices = epoch_indices(self.num_images, self.seed, epoch, self.rank, self.world,
                                        self.steps_per_epoch, self.batch_size).to(device)
                indices_epoch = epoch
            yield indices[i * self.batch_size:(i + 1) * self.batch_size]


def stack_images(items: list[Tensor]) -> Tensor:
    """DataLoader collate: uint8 [C, H, W] items -> uint8 [B, C, H, W]; a clear error for others."""
    for index, item in enumerate(items):
        _check_item(item, index)
    if any(item.shape != items[0].shape for item in items):
        raise ValueError(f"dataset items must all have the same size; got {sorted({tuple(i.shape) for i in items})}")
    return torch.stack(items)


def step_batches(data: Data, sampler: StepIndexBatches, device: torch.device,
                 num_workers: int = 0) -> Iterator[Tensor]:
    """The uint8 batches [B, C, H, W] on ``device`` of the sampler's steps, in order."""
    if isinstance(data, Tensor):
        images = data.to(device)  # once: every batch is then an index into device memory
        for batch_indices in sampler.on_device(device):
            yield images[batch_indices]
        return
    # The loader's own generator: without one, starting its iterator draws a seed from the global
    # RNG and shifts what dropout (and anything else global) draws next.
    generator = torch.Generator().manual_seed(derived_seed(sampler.seed, "loader", sampler.start_step, sampler.rank))
    loader = DataLoader(data, batch_sampler=sampler, num_workers=num_workers, collate_fn=stack_images,
                        pin_memory=device.type == "cuda", generator=generator)
    for batch in loader:
        yield batch.to(device, non_blocking=True)


def shuffled_batches(num_items: int, batch_size: int, epochs: int, seed: int,
                     device: torch.device | str = "cpu") -> Iterator[tuple[int, int, Tensor]]:
    """The batches of the supervised loops (probe, fine-tuning, transfer): every item once per
    epoch in the order ``epoch_permutation(num_items, seed, epoch)`` (the last batch of an epoch
    may be smaller) -> (step, epoch, indices long [B] on ``device``)."""
    steps_per_epoch = -(-num_items // batch_size)
    for epoch in range(epochs):
        order = epoch_permutation(num_items, seed, epoch).to(device)
        for i in range(steps_per_epoch):
            yield epoch * steps_per_epoch + i, epoch, order[i * batch_size:(i + 1) * batch_size]
