"""Heads that sit on a backbone's global feature: projection (SimCLR, MoCo, BYOL), prediction
(BYOL) and the DINO head with its weight-normalized last layer."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["ProjectionHead", "PredictionHead", "DINOHead"]


def mlp(dims: list[int], batch_norm: bool, activation: type[nn.Module]) -> nn.Sequential:
    """Linear layers through `dims`; every layer but the last is followed by [BN] + activation."""
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        hidden = i < len(dims) - 2
        layers.append(nn.Linear(d_in, d_out, bias=not (hidden and batch_norm)))
        if hidden:
            layers += [nn.BatchNorm1d(d_out)] if batch_norm else []
            layers.append(activation())
    return nn.Sequential(*layers)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class ProjectionHead(nn.Module):
    """MLP projector: in_dim -> hidden_dim (BN, ReLU) ... -> out_dim, `num_layers` linear layers.

    SimCLR: ProjectionHead(D, 2048, 128, 2); BYOL: ProjectionHead(D, 4096, 256, 2).
    forward: [N, in_dim] -> [N, out_dim].
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 batch_norm: bool = True):
        super().__init__()
        _check_positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim,
                        num_layers=num_layers)
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = mlp(dims, batch_norm, nn.ReLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class PredictionHead(ProjectionHead):
    """BYOL's predictor: the online network's guess of the target projection,
    in_dim -> hidden_dim (BN, ReLU) -> out_dim. forward: [N, in_dim] -> [N, out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers=2, batch_norm=batch_norm)


class DINOHead(nn.Module):
    """DINO head: MLP to a bottleneck, L2 normalization, then a weight-normalized linear layer
    to `out_dim` prototypes (the "classes" the softmax is taken over).

    With norm_last_layer=True the norms of the last layer's rows (weight_g) are fixed to 1, so the
    logits are cosine similarities to the prototypes, which stabilizes training (DINO paper).
    forward: [N, in_dim] -> logits [N, out_dim].
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, num_layers: int = 3, batch_norm: bool = False,
                 norm_last_layer: bool = True):
        super().__init__()
        _check_positive(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim,
                        bottleneck_dim=bottleneck_dim, num_layers=num_layers)
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        self.mlp = mlp(dims, batch_norm, nn.GELU)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0  # weight_g, [out_dim, 1]
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_dim] -> the unit-length embedding [N, bottleneck_dim] that the prototypes score."""
        return F.normalize(self.mlp(x), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))  # [N, out_dim]: cosine similarity to each prototype

    def cancel_last_layer_gradients(self) -> None:
        """Drop the last layer's gradients; DINO calls this after backward during the first
        epoch(s) so the prototypes stay fixed while the rest of the network settles."""
        for p in self.last_layer.parameters():
            p.grad = None
