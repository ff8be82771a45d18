"""DINOv2 foundation-model ViTs with the official state-dict keys (lesson 08).

The ViTs here follow Meta's DINOv2 code (``facebookresearch/dinov2``) parameter for parameter, so
the official checkpoints load with ``strict=True`` and no hub code::

    cls_token [1, 1, D]          pos_embed [1, 37*37 + 1, D] (518px)     mask_token [1, D]
    patch_embed.proj.{weight,bias}
    blocks.N.norm1  blocks.N.attn.qkv  blocks.N.attn.proj  blocks.N.ls1.gamma
    blocks.N.norm2  blocks.N.mlp.fc1   blocks.N.mlp.fc2    blocks.N.ls2.gamma   (giant: mlp.w12, mlp.w3)
    norm.{weight,bias}

The attention is the course ViT's (``coursekit.models.vit.Attention``: the same ``qkv`` and
``proj``); the block adds LayerScale on both residual branches.

Images of any size that is a multiple of 14 work: the position embeddings are interpolated
bicubically the way the official code does it (a scale factor of ``(grid + 0.1) / 37`` and no
antialiasing). timm's ``vit_small_patch14_dinov2`` with ``dynamic_img_size=True`` resamples to the
exact grid size *with* antialiasing instead; ``interpolate_antialias=True, interpolate_offset=0.0``
reproduces timm's variant (the tests use it to check the rest of the network against timm).
Pretrained weights: ``coursekit.foundation.load_dinov2``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.models.vit import Attention

__all__ = ["DINOV2_CONFIGS", "PATCH_SIZE", "DinoVisionTransformer", "create_dinov2"]

PATCH_SIZE = 14
PRETRAIN_IMG_SIZE = 518  # the official checkpoints hold a 37 x 37 grid of position embeddings

# Architectures of the official hub models (hubconf.py / dinov2/models/vision_transformer.py).
DINOV2_CONFIGS: dict[str, dict] = {
    "dinov2_vits14": dict(embed_dim=384, depth=12, num_heads=6, ffn="mlp"),
    "dinov2_vitb14": dict(embed_dim=768, depth=12, num_heads=12, ffn="mlp"),
    "dinov2_vitl14": dict(embed_dim=1024, depth=24, num_heads=16, ffn="mlp"),
    "dinov2_vitg14": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}


# --------------------------------------------------------------------------------------------
# Architecture
# --------------------------------------------------------------------------------------------


class Dinov2PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> tokens, by a strided convolution."""

    def __init__(self, patch_size: int = PATCH_SIZE, in_chans: int = 3, embed_dim: int = 384):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, C, H, W] with H, W multiples of the patch size -> [N, h, w, D]."""
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"DINOv2 needs image sizes that are multiples of {p}, got {H}x{W}; resize to e.g. "
                f"{max(p, round(H / p) * p)}x{max(p, round(W / p) * p)} (prepare_images does this)"
            )
        return self.proj(x).permute(0, 2, 3, 1)  # [N, D, h, w] -> [N, h, w, D]


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 (hidden width ``4 * dim``)."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """The giant model's feed-forward: ``w3(silu(a) * b)`` with ``a, b`` from one fused ``w12``."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        hidden_dim = (int(hidden_dim * 2 / 3) + 7) // 8 * 8  # 4096 for dim 1536, as official
        self.w12 = nn.Linear(dim, 2 * hidden_dim)
        self.w3 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    """Per-channel scaling of a residual branch by a learned ``gamma``."""

    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class LayerScaleBlock(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, dim: int, num_heads: int, ffn: str = "mlp", mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn_layer = {"mlp": Mlp, "swiglu": SwiGLUFFN}[ffn]
        self.mlp = ffn_layer(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: [N, L, D] -> [N, L, D]."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """A DINOv2 ViT with the official parameter names, and the coursekit backbone interface.

    Args:
        embed_dim, depth, num_heads: the width, number of blocks and attention heads.
        ffn: ``"mlp"`` (GELU MLP, ratio 4) or ``"swiglu"`` (the giant model).
        img_size: the image size the position embeddings are stored for (518 in the checkpoints).
        patch_size: 14 for all DINOv2 models.
        interpolate_antialias, interpolate_offset: how the position embeddings are resampled for
            other sizes. The defaults (False, 0.1) are those of the official hub models; (True, 0.0)
            is timm's ``dynamic_img_size`` resampling.
        name: the model name (e.g. ``"dinov2_vits14"``), used for messages.

    Attributes set by :func:`load_dinov2`: ``pretrained`` (bool), ``weights_source`` (the file the
    weights came from, or None) and ``weights_hint`` (where the missing weights go); ``banner`` turns
    them into one line for the notebook.
    """

    def __init__(
        self,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        ffn: str = "mlp",
        img_size: int = PRETRAIN_IMG_SIZE,
        patch_size: int = PATCH_SIZE,
        interpolate_antialias: bool = False,
        interpolate_offset: float = 0.1,
        name: str | None = None,
    ):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {patch_size}")
        self.name = name
        self.embed_dim = self.num_features = self.feature_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset
        self.pretrained = False
        self.weights_source: str | None = None
        self.weights_hint = ""

        grid = img_size // patch_size
        self.patch_embed = Dinov2PatchEmbed(patch_size, 3, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim))  # CLS first
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(LayerScaleBlock(embed_dim, num_heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        """timm-style initialization (as the official code): truncated normal, std 0.02."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def banner(self) -> str:
        """One line for the notebook: where the weights came from, or a warning if random."""
        name = self.name or "DINOv2"
        if self.pretrained:
            return f"{name}: pretrained DINOv2 weights from {self.weights_source}"
        return f"WARNING: {name} has RANDOM weights: results are meaningless.{self.weights_hint}"

    def interpolate_pos_encoding(self, h: int, w: int) -> Tensor:
        """Position embeddings for an ``h x w`` patch grid: [1, 1 + h*w, D] (CLS first).

        Bicubic resampling of the stored square grid, as ``DinoVisionTransformer.
        interpolate_pos_encoding`` in the official code: with ``interpolate_offset`` > 0 the scale
        factor ``(h + offset) / M`` is given instead of the output size (a historical fix for
        floating-point rounding that also shifts the sampling positions slightly).
        """
        pos_embed = self.pos_embed
        M = math.isqrt(pos_embed.shape[1] - 1)
        if h == M and w == M:
            return pos_embed
        dim = pos_embed.shape[-1]
        cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:].float()
        patch_pos = patch_pos.reshape(1, M, M, dim).permute(0, 3, 1, 2)  # [1, D, M, M]
        if self.interpolate_offset:
            offset = self.interpolate_offset
            size_kw = dict(scale_factor=((h + offset) / M, (w + offset) / M))
        else:
            size_kw = dict(size=(h, w))
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.interpolate_antialias, **size_kw)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h * w, dim)  # [1, h*w, D]
        return torch.cat([cls_pos, patch_pos.to(pos_embed.dtype)], dim=1)

    def embed(self, x: Tensor, masks: Tensor | None = None) -> Tensor:
        """Images [N, 3, H, W] -> patch tokens plus position embeddings [N, L, D], L = (H/14)(W/14).

        ``masks`` ([N, L] bool, optional): patches to replace by ``mask_token`` (iBOT-style), before
        the position embeddings are added.
        """
        tokens = self.patch_embed(x)  # [N, h, w, D]
        N, h, w, D = tokens.shape
        tokens = tokens.reshape(N, h * w, D)  # [N, L, D], row-major
        if masks is not None:
            tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        return tokens + self.interpolate_pos_encoding(h, w)[:, 1:]

    def _encode(self, tokens: Tensor, return_attention: bool) -> tuple[Tensor, Tensor | None]:
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)  # [N, 1, D]
        x = torch.cat([cls, tokens], dim=1)  # [N, 1 + L, D]
        attention = None
        for i, block in enumerate(self.blocks):
            if return_attention and i == len(self.blocks) - 1:
                _, attention = block.attn(block.norm1(x), return_attention=True)  # [N, heads, 1+L, 1+L]
            x = block(x)
        return self.norm(x), attention

    def encode(self, tokens: Tensor) -> Tensor:
        """Tokens [N, L', D] (from :meth:`embed`, any subset) -> [N, 1 + L', D]: CLS prepended,
        the blocks and the final norm applied."""
        return self._encode(tokens, return_attention=False)[0]

    def forward_features(self, x: Tensor, return_attention: bool = False) -> dict:
        """Images [N, 3, H, W] (H, W multiples of 14, normalized as by :func:`prepare_images`) ->
        ``{"global": [N, D] normed CLS, "patch": [N, L, D] normed patch tokens, "grid": (h, w)}``,
        plus ``"attention"``: [N, heads, 1+L, 1+L] of the last block when asked."""
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        out, attention = self._encode(self.embed(x), return_attention)  # [N, 1 + L, D]
        features = {"global": out[:, 0], "patch": out[:, 1:], "grid": grid}
        if return_attention:
            features["attention"] = attention
        return features

    def forward(self, x: Tensor) -> Tensor:
        """Images [N, 3, H, W] -> the normed CLS token [N, D] (the official model's output)."""
        return self.forward_features(x)["global"]


def create_dinov2(name: str = "dinov2_vits14", **kwargs) -> DinoVisionTransformer:
    """A randomly initialized DINOv2 model of the official architecture ``name``.

    ``kwargs`` go to :class:`DinoVisionTransformer` (e.g. ``img_size``, ``interpolate_antialias``).
    Use :func:`load_dinov2` for pretrained weights.
    """
    if name not in DINOV2_CONFIGS:
        raise ValueError(f"unknown DINOv2 model {name!r}; choose one of {sorted(DINOV2_CONFIGS)}")
    return DinoVisionTransformer(**DINOV2_CONFIGS[name], name=name, **kwargs)
