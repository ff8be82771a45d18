"""ResNet-18 with a CIFAR stem: a 3x3 stride-1 first convolution and no max-pool.

On 32 px images the ImageNet stem (7x7 stride-2 conv + max-pool) throws away three quarters of the
pixels before the first block; the CIFAR stem keeps them, as in SimCLR's CIFAR-10 experiments.
A 32 px image ends as a 4x4 grid of `feature_dim` = 8 * width channels.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from coursekit.data.images import check_images

__all__ = ["BasicBlock", "ResNet", "resnet18"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; `stride` 2 halves the resolution."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet of BasicBlocks with the CIFAR stem.

    Args:
        layers: blocks per stage; (2, 2, 2, 2) is ResNet-18.
        width: channels of the first stage (64 is the standard ResNet; 8 makes a tiny smoke model).
            The stages have width, 2 width, 4 width, 8 width channels.
        in_chans: image channels.

    `forward(x)` returns the globally average-pooled feature [N, feature_dim];
    `forward_features(x)` also returns the last feature map as tokens (see its docstring).
    """

    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), width: int = 64, in_chans: int = 3):
        super().__init__()
        if width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.in_chans = in_chans
        self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_channels = [], width
        for i, num_blocks in enumerate(layers):
            channels, stride = width * 2**i, 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels, channels, stride)]
            blocks += [BasicBlock(channels, channels) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = self.num_features = in_channels
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] float -> last feature map [N, feature_dim, H/8, W/8]."""
        check_images(x, "x", channels=self.in_chans, float_only=True)
        x = F.relu(self.bn1(self.conv1(x)))  # [N, width, H, W]
        x = self.layer1(x)  # [N, width, H, W]
        x = self.layer2(x)  # [N, 2 width, H/2, W/2]
        x = self.layer3(x)  # [N, 4 width, H/4, W/4]
        return self.layer4(x)  # [N, 8 width, H/8, W/8]

    def forward_features(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """x: [N, C, H, W] -> {"global": pooled [N, D], "grid": (h, w) = (H/8, W/8),
        "patch": the last feature map as tokens [N, h*w, D], row-major}."""
        if return_attention:
            raise ValueError("return_attention=True needs a ViT; a ResNet has no attention")
        fmap = self.feature_map(x)  # [N, D, h, w]
        h, w = fmap.shape[-2:]
        return {
            "global": fmap.mean(dim=(2, 3)),  # [N, D]
            "patch": fmap.flatten(2).transpose(1, 2),  # [N, h*w, D]
            "grid": (h, w),
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> pooled feature [N, feature_dim]."""
        return self.feature_map(x).mean(dim=(2, 3))


def resnet18(width: int = 64, **kwargs) -> ResNet:
    """ResNet-18 (2, 2, 2, 2 BasicBlocks) with the CIFAR stem; width 64: about 11.2M parameters."""
    return ResNet(layers=(2, 2, 2, 2), width=width, **kwargs)
