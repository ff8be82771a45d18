"""BYOL: predict the momentum target's embedding of the other view; no negatives.

Grill et al., "Bootstrap Your Own Latent", 2020.

    view a -> online backbone -> projector -> predictor -> p_a
    view b -> target backbone -> projector (EMA copies, no gradient) -> z_b
    loss = regression_loss(p_a, z_b) + regression_loss(p_b, z_a)

The predictor and the slowly moving target are what keep the embedding from collapsing.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.augment import BYOLViews, Views
from coursekit.methods.base import MOMENTUM, Method
from coursekit.methods.ema import make_target
from coursekit.models import PredictionHead, ProjectionHead


def regression_loss(p: Tensor, z: Tensor) -> Tensor:
    """Mean over N of 2 - 2 cos(p, z) = ||p/|p| - z/|z| ||^2.

    p: [N, D] online predictions, z: [N, D] target projections (a target: no gradient flows into it).
    """
    if p.ndim != 2 or p.shape != z.shape:
        raise ValueError(f"p and z must both be [N, D] with the same shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    cosine = F.cosine_similarity(p, z.detach(), dim=1)  # [N]
    return (2 - 2 * cosine).mean()


class BYOL(Method):
    """BYOL: online backbone + projector + predictor, EMA target backbone + projector.

    Projector and predictor: MLPs with hidden width 4 * feature_dim (BN, ReLU) and out_dim outputs.
    The loss is the mean of the two directions (view 1 predicts view 2 and back), as in lightly's
    example; the paper sums them, which only doubles the gradient. The target's momentum follows a
    cosine from ``momentum`` (0.99) to 1.

    Ablations (lesson 04's collapse demo): ``predictor=False`` drops the predictor (p = z of the
    online projector); ``ema=False`` makes the target a copy of the online network after every
    step (momentum 0: the target is the online network behind a stop-gradient).
    ``predictor_lr``: the predictor's learning rate as a multiple of the rest's. The predictor
    chases a target that moves; when it learns faster than the encoder it stays near its best
    answer, which is what keeps BYOL from collapsing (Tian et al. 2021, "Understanding
    self-supervised learning dynamics without contrastive pairs"; SimSiam keeps its predictor's
    rate constant for the same reason). On short runs the encoder learns sooner with 10.
    ``views``: the recipe (default ``BYOLViews(image_size)``).
    """

    command_line = (MOMENTUM,)

    def __init__(self, backbone: nn.Module, image_size: int = 32, momentum: float = 0.99,
                 hidden_dim: int | None = None, out_dim: int = 128, predictor: bool = True,
                 ema: bool = True, predictor_lr: float = 1.0, views: Views | None = None):
        super().__init__()
        if not predictor_lr > 0:
            raise ValueError(f"predictor_lr must be > 0 (a multiple of the learning rate), got {predictor_lr!r}")
        width = hidden_dim or 4 * backbone.feature_dim
        self.backbone = backbone
        self.projection_head = ProjectionHead(backbone.feature_dim, width, out_dim)
        self.prediction_head = PredictionHead(out_dim, width, out_dim) if predictor else nn.Identity()
        self.target_backbone = make_target(backbone)
        self.target_projection_head = make_target(self.projection_head)
        self.views = views if views is not None else BYOLViews(image_size)
        self.image_size, self.momentum, self.hidden_dim, self.out_dim = image_size, momentum, hidden_dim, out_dim
        self.predictor, self.ema, self.predictor_lr = predictor, ema, predictor_lr

    def lr_scales(self) -> dict[str, float]:
        """The predictor at ``predictor_lr`` times the learning rate."""
        return {"prediction_head": self.predictor_lr}

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> online predictions p [N, out_dim]."""
        return self.prediction_head(self.projection_head(self.backbone(x)))

    @torch.no_grad()
    def target(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] -> target projections z [N, out_dim], no gradient."""
        return self.target_projection_head(self.target_backbone(x))

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] -> symmetric regression loss between the two views."""
        view1, view2 = self.views(images, generator)  # 2 x [N, C, S, S]
        both = torch.cat([view1, view2])  # [2N, C, S, S]
        online = self.projection_head(self.backbone(both))  # [2N, out_dim]
        p1, p2 = self.prediction_head(online).chunk(2)  # 2 x [N, out_dim]
        z1, z2 = self.target(both).chunk(2)  # 2 x [N, out_dim]
        self.record(online[:len(view1)])
        return (regression_loss(p1, z2) + regression_loss(p2, z1)) / 2

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """The target backbone and projector trail the online ones."""
        return [(self.backbone, self.target_backbone), (self.projection_head, self.target_projection_head)]

    def target_momentum(self, progress: float) -> float:
        """Rising from ``momentum`` to 1; 0 without EMA (the target becomes a copy of the online network)."""
        return super().target_momentum(progress) if self.ema else 0.0
