"""Small Vision Transformers (ViT-Tiny, ViT-Small) with pre-norm blocks, a CLS token and learned
position embeddings, in the timm / MAE style.

The pieces are exposed so that the methods can use them directly:

- `embed(x)`: image [N, C, H, W] -> patch tokens plus position embeddings [N, L, D];
- `encode(tokens)`: [N, L', D] (all or some of the patch tokens, e.g. MAE's visible 25%) ->
  [N, 1 + L', D] after prepending the CLS token, running the blocks and the final norm;
- `forward_features(x)`: the CLS feature, the patch tokens, the grid and, on request, the last
  block's attention maps (DINO's emergent segmentation).

Images of another size than `img_size` work too: the position embeddings are resized with bicubic
interpolation to the new grid of patches.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from coursekit.data.images import check_images

__all__ = ["PatchEmbed", "Attention", "Block", "VisionTransformer", "vit_tiny", "vit_small"]


class PatchEmbed(nn.Module):
    """Cuts an image into non-overlapping patch_size x patch_size patches and projects each to D."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(f"patch_size {patch_size} must divide img_size {img_size}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] float, H and W multiples of p -> tokens [N, H/p * W/p, D], row-major."""
        check_images(x, "x", channels=self.in_chans, float_only=True)
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(
                f"patch_size {p} must divide the image size, got images of "
                f"{x.shape[-2]}x{x.shape[-1]} pixels"
            )
        return self.proj(x).flatten(2).transpose(1, 2)  # [N, D, h, w] -> [N, h*w, D]


class Attention(nn.Module):
    """Multi-head self-attention; returns the attention weights [N, heads, T, T] on request."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x: [N, T, D] -> [N, T, D], plus the attention [N, heads, T, T] if return_attention."""
        N, T, D = x.shape
        qkv = self.qkv(x).reshape(N, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [N, heads, T, D/heads]
        if return_attention:
            attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # [N, heads, T, T]
            attn = attn.softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)  # fused kernel, same result
        out = self.proj(out.transpose(1, 2).reshape(N, T, D))
        return (out, attn) if return_attention else out


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x: [N, T, D] -> [N, T, D], plus the attention [N, heads, T, T] if return_attention."""
        if return_attention:
            out, attn = self.attn(self.norm1(x), return_attention=True)
            x = x + out
            return x + self.mlp(self.norm2(x)), attn
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a CLS token and learned position embeddings (no classifier head).

    Args:
        img_size: the training image size; the position embeddings are learned for this grid.
        patch_size: side of the square patches; must divide img_size.
        in_chans: image channels.
        embed_dim, depth, num_heads, mlp_ratio: the transformer's width, number of blocks, heads
            and MLP expansion.

    `feature_dim` (= `num_features` = `embed_dim`) is the width of the CLS feature.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth!r}")
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.patch_size = patch_size
        self.num_heads = num_heads
        self.embed_dim = self.num_features = self.feature_dim = embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.patch_embed.num_patches, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer, like MAE
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def patch_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings of the patch tokens for a (h, w) grid -> [1, h*w, D].

        The learned grid is returned as is; any other grid gets a bicubic interpolation of it.
        """
        pos = self.pos_embed[:, 1:]  # [1, L, D]
        if tuple(grid) == self.patch_embed.grid_size:
            return pos
        gh, gw = self.patch_embed.grid_size
        pos = pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)  # [1, D, gh, gw]
        pos = F.interpolate(pos, size=grid, mode="bicubic", align_corners=False)
        return pos.permute(0, 2, 3, 1).flatten(1, 2)  # [1, h*w, D]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> patch tokens plus their position embeddings [N, L, D], L = H*W/p^2."""
        tokens = self.patch_embed(x)  # [N, L, D]
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return tokens + self.patch_pos_embed(grid)

    def encode(self, tokens: torch.Tensor, return_attention: bool = False):
        """tokens: [N, L', D] embedded patch tokens (all of them or a subset) -> [N, 1 + L', D].

        Prepends the CLS token (with its position embedding), runs the blocks and the final norm.
        With return_attention, also returns the last block's attention [N, heads, 1+L', 1+L'].
        """
        if tokens.ndim != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(
                f"tokens must be [N, L, {self.embed_dim}], got shape {tuple(tokens.shape)}"
            )
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        x = torch.cat([cls, tokens], dim=1)  # [N, 1 + L', D]
        *blocks, last = self.blocks
        for block in blocks:
            x = block(x)
        if return_attention:
            x, attn = last(x, return_attention=True)
            return self.norm(x), attn
        return self.norm(last(x))

    def forward_features(self, x: torch.Tensor, return_attention: bool = False) -> dict:
        """x: [N, C, H, W] -> {"global": CLS [N, D], "patch": [N, L, D], "grid": (h, w)}
        plus "attention": the last block's attention [N, heads, 1+L, 1+L] if return_attention."""
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        out = self.encode(self.embed(x), return_attention=return_attention)
        tokens, attn = out if return_attention else (out, None)
        features = {"global": tokens[:, 0], "patch": tokens[:, 1:], "grid": grid}
        if return_attention:
            features["attention"] = attn
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, C, H, W] -> CLS feature [N, feature_dim]."""
        return self.encode(self.embed(x))[:, 0]


def vit_tiny(**kwargs) -> VisionTransformer:
    """ViT-Tiny: dim 192, depth 12, 3 heads (any argument of VisionTransformer overrides these)."""
    return VisionTransformer(**{"embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})


def vit_small(**kwargs) -> VisionTransformer:
    """ViT-Small: dim 384, depth 12, 6 heads (any argument of VisionTransformer overrides these)."""
    return VisionTransformer(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})
