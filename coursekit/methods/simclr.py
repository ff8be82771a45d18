"""SimCLR: two augmented views of every image, pulled together against all other views (NT-Xent).

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", 2020.

    images -> views v1, v2 -> backbone -> projection head -> z1, z2 -> nt_xent(z1, z2, temperature)

The negatives are the other 2N - 2 views of the batch; under DDP the views of all processes
(``gathered_nt_xent``), so the number of negatives grows with the global batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.engine import distributed
from coursekit.augment import SimCLRViews, Views
from coursekit.methods.base import TEMPERATURE, Method
from coursekit.models import ProjectionHead


def _nt_xent_against(z1: Tensor, z2: Tensor, all_z1: Tensor, all_z2: Tensor, offset: int, temperature: float) -> Tensor:
    """NT-Xent of the local anchors z1, z2 [n, D] against the candidate views all_z1, all_z2 [M, D].

    Rows offset ... offset + n of all_z1 / all_z2 are z1 / z2 themselves (the anchors' own and
    positive views). Returns the mean over the 2n local anchors.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be [N, D] with the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n, m = z1.shape[0], all_z1.shape[0]
    anchors = F.normalize(torch.cat([z1, z2]), dim=1)  # [2n, D]
    candidates = F.normalize(torch.cat([all_z1, all_z2]), dim=1)  # [2M, D]
    logits = anchors @ candidates.T / temperature  # [2n, 2M] cosine similarity / temperature

    local = torch.arange(n, device=z1.device) + offset  # global index of each local image
    self_index = torch.cat([local, local + m])  # [2n] where each anchor sits among the candidates
    positive_index = torch.cat([local + m, local])  # [2n] the other view of the same image
    rows = torch.arange(2 * n, device=z1.device)
    logits = logits.clone()
    logits[rows, self_index] = float("-inf")  # a view is not its own negative
    return F.cross_entropy(logits, positive_index)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent (normalized temperature-scaled cross-entropy) over the 2N views of one batch.

    z1, z2: [N, D] embeddings of the two views of the same N images (not assumed normalized).
    Every one of the 2N views is an anchor: its positive is the other view of its image, its
    negatives the remaining 2N - 2 views; logits are cosine similarities / temperature.
    Returns the scalar mean over the 2N anchors; gradients flow into z1 and z2.
    """
    return _nt_xent_against(z1, z2, z1, z2, 0, temperature)


def gathered_nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """NT-Xent of this process's 2N anchors against the views of all processes (DDP).

    The negatives come from ``distributed.gather_with_grad``; the gradient of every term reaches
    the process that made the embedding, so mean-over-processes of this loss (what DDP optimizes)
    has exactly the gradient of ``nt_xent`` on the global batch. Equals ``nt_xent`` without DDP.
    """
    all_z1 = distributed.gather_with_grad(z1)  # [W * N, D]
    all_z2 = distributed.gather_with_grad(z2)  # [W * N, D]
    return _nt_xent_against(z1, z2, all_z1, all_z2, distributed.rank() * z1.shape[0], temperature)


class SimCLR(Method):
    """SimCLR on a backbone: projection head (hidden 4 * feature_dim, BN, ReLU) and NT-Xent.

    Both views go through the network as one batch of 2N; under DDP the negatives come from all
    processes. Nothing to update after a step: SimCLR has no teacher. ``views``: the recipe
    (default ``SimCLRViews(image_size)``).
    """

    command_line = (TEMPERATURE,)

    def __init__(self, backbone: nn.Module, image_size: int = 32, temperature: float = 0.5,
                 hidden_dim: int | None = None, out_dim: int = 128, views: Views | None = None):
        super().__init__()
        self.backbone = backbone
        self.projection_head = ProjectionHead(backbone.feature_dim, hidden_dim or 4 * backbone.feature_dim, out_dim)
        self.views = views if views is not None else SimCLRViews(image_size)
        self.image_size, self.temperature, self.hidden_dim, self.out_dim = image_size, temperature, hidden_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] views -> projections z [N, out_dim]."""
        return self.projection_head(self.backbone(x))

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] -> NT-Xent of the two views' projections."""
        view1, view2 = self.views(images, generator)  # 2 x [N, C, S, S]
        z1, z2 = self(torch.cat([view1, view2])).chunk(2)  # 2 x [N, out_dim]
        self.record(z1)
        return gathered_nt_xent(z1, z2, self.temperature)
