"""MoCo v2: a momentum key encoder and a queue of negatives (InfoNCE).

He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", 2020;
Chen et al., "Improved Baselines with Momentum Contrastive Learning" (v2), 2020.

    query view -> backbone -> projection head -> q
    key view   -> momentum copies of both     -> k (no gradient)
    loss = infonce(q, k, queue, temperature); then the keys k enter the queue, the oldest leave.

The queue holds keys from past batches, so the number of negatives no longer depends on the batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.engine import distributed
from coursekit.augment import SimCLRViews, Views
from coursekit.methods.base import MOMENTUM, TEMPERATURE, CommandLineOption, Method
from coursekit.methods.ema import make_target, momentum_update  # momentum_update: the homework's reference
from coursekit.models import ProjectionHead

__all__ = ["MoCo", "infonce", "momentum_update"]


def infonce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE with one positive key per query and a queue of negatives.

    q: [N, D] queries, k: [N, D] their positive keys, queue: [K, D] negative keys, all
    L2-normalized by the caller. Logits per query: [q.k, q.queue_1, ..., q.queue_K] / temperature,
    cross-entropy with the positive at index 0, mean over N. k and the queue are targets:
    no gradient flows into them.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"q and k must both be [N, D] with the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"queue must be [K, D] with D = {q.shape[1]}, got {tuple(queue.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    k, queue = k.detach(), queue.detach()
    positive = (q * k).sum(dim=1, keepdim=True)  # [N, 1]
    negatives = q @ queue.T  # [N, K]
    logits = torch.cat([positive, negatives], dim=1) / temperature  # [N, 1 + K]
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is class 0
    return F.cross_entropy(logits, labels)


def _shuffled_group_forward(encoder: nn.Module, x: Tensor, groups: int, generator: torch.Generator) -> Tensor:
    """encoder(x) with BatchNorm statistics taken over ``groups`` random sub-batches; rows unshuffled.

    x: [N, C, H, W] -> [N, out_dim], row i still belongs to image i.
    """
    order = torch.randperm(x.shape[0], generator=generator, device=generator.device).to(x.device)
    out = torch.cat([encoder(chunk) for chunk in x[order].chunk(groups)])  # rows in shuffled order
    return out[torch.argsort(order)]


class MoCo(Method):
    """MoCo v2: query encoder (backbone + MLP head of hidden width feature_dim), its momentum copy
    as key encoder, and a queue of keys.

    The queue ``queue`` [queue_size, out_dim] holds the keys of the last batches (initialized to
    random unit vectors); ``queue_ptr`` is where the next keys go. Under DDP the keys of all
    processes are enqueued. The key encoder's momentum follows a cosine from ``momentum`` to 1.

    BatchNorm leak: with BN, a query and its positive key computed from the same batch share batch
    statistics, and the network can find the positive from those instead of learning features.
    MoCo's answer is shuffling BN: the key batch is permuted across GPUs, so a key's BN statistics
    come from other samples than its query's. We do the same within each process, which works on a
    single CPU as well as under DDP: queries go through BN in ``bn_groups`` sub-batches of
    consecutive images, keys in ``bn_groups`` sub-batches of a random permutation of the batch.
    With a ViT backbone (LayerNorm, no BN) the grouping changes nothing but the batch shapes.
    ``views``: the recipe (default ``SimCLRViews(image_size)``, MoCo v2's augmentations).
    """

    command_line = (TEMPERATURE, MOMENTUM,
                    CommandLineOption("queue_size", "queue_size", int, "negatives kept in the queue", lambda v: v >= 1,
                                      "at least 1"))

    def __init__(self, backbone: nn.Module, image_size: int = 32, temperature: float = 0.2,
                 queue_size: int = 4096, momentum: float = 0.99, bn_groups: int = 2,
                 hidden_dim: int | None = None, out_dim: int = 128, views: Views | None = None):
        super().__init__()
        if queue_size < 1 or bn_groups < 1:
            raise ValueError(f"queue_size and bn_groups must be positive, got {queue_size} and {bn_groups}")
        self.backbone = backbone
        self.projection_head = ProjectionHead(backbone.feature_dim, hidden_dim or backbone.feature_dim, out_dim,
                                              batch_norm=False)  # MoCo v2's MLP: fc, ReLU, fc
        self.key_backbone = make_target(backbone)
        self.key_projection_head = make_target(self.projection_head)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.views = views if views is not None else SimCLRViews(image_size)
        self.image_size, self.temperature, self.queue_size, self.momentum = image_size, temperature, queue_size, momentum
        self.bn_groups, self.hidden_dim, self.out_dim = bn_groups, hidden_dim, out_dim

    def query(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> L2-normalized queries [N, out_dim]."""
        return F.normalize(self.projection_head(self.backbone(x)), dim=1)

    @torch.no_grad()
    def key(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> L2-normalized keys [N, out_dim] from the momentum encoder, no gradient."""
        return F.normalize(self.key_projection_head(self.key_backbone(x)), dim=1)

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] -> InfoNCE of the queries against their keys and the queue;
        then this batch's keys are enqueued."""
        if images.shape[0] < 2 * self.bn_groups:
            raise ValueError(f"a batch of {images.shape[0]} images is too small for {self.bn_groups} BN groups of 2+")
        view_q, view_k = self.views(images, generator)  # 2 x [N, C, S, S]
        q = torch.cat([self.query(chunk) for chunk in view_q.chunk(self.bn_groups)])  # [N, out_dim]
        k = _shuffled_group_forward(self.key, view_k, self.bn_groups, generator)  # [N, out_dim]
        loss = infonce(q, k, self.queue.clone(), self.temperature)
        self.record(q)
        if self.training:
            self._enqueue(k)
        return loss

    @torch.no_grad()
    def _enqueue(self, keys: Tensor) -> None:
        """Write this batch's keys [N, out_dim] of all processes (B = W * N rows, in rank order)
        over the oldest entries of the queue, wrapping around."""
        keys = distributed.concat_all_gather(keys)  # [B, out_dim]
        queue_size = self.queue.shape[0]
        if keys.shape[0] > queue_size:
            raise ValueError(f"{keys.shape[0]} keys per step do not fit a queue of {queue_size}")
        slots = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % queue_size
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % queue_size)

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The key encoder (backbone and projector) trails the query encoder, its momentum rising from
        ``momentum`` to 1 (MoCo v3's schedule; MoCo v1 and v2 keep it fixed at 0.999)."""
        return [(self.backbone, self.key_backbone), (self.projection_head, self.key_projection_head)]
