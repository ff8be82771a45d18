"""MAE: mask most patches of an image, encode only the visible ones, reconstruct the pixels.

He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021.

    images -> patch tokens + pos-embed -> random_masking (keep 25%) -> ViT encoder (visible only)
           -> light decoder (mask tokens put back in place) -> pixels of every patch
    loss = mae_loss(pred, patchify(images), mask, norm_pix): MSE on the removed patches only
"""

import torch
from torch import Tensor, nn

from coursekit.augment import MAEViews, Views, denormalize, normalize, to_float
from coursekit.methods.base import CommandLineOption, Method
from coursekit.models.vit import Block


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """imgs [N, C, H, W] -> patches [N, L, p*p*C], L = (H/p) * (W/p), row-major, each as (p, p, C)."""
    if imgs.ndim != 4:
        raise ValueError(f"imgs must be [N, C, H, W], got shape {tuple(imgs.shape)}")
    n, c, h, w = imgs.shape
    p = patch_size
    if p <= 0 or h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not divisible by patch_size {p}")
    x = imgs.reshape(n, c, h // p, p, w // p, p)  # [N, C, h, p, w, p]
    x = torch.einsum("nchpwq->nhwpqc", x)  # [N, h, w, p, p, C]
    return x.reshape(n, (h // p) * (w // p), p * p * c)  # [N, L, p*p*C]


def unpatchify(x: Tensor, patch_size: int, channels: int = 3) -> Tensor:
    """The inverse of ``patchify`` for square images: patches [N, L, p*p*C] -> imgs [N, C, H, W]."""
    if x.ndim != 3:
        raise ValueError(f"patches must be [N, L, p*p*C], got shape {tuple(x.shape)}")
    n, num_patches, patch_dim = x.shape
    p, c = patch_size, channels
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"{num_patches} patches do not form a square grid")
    if patch_dim != p * p * c:
        raise ValueError(f"patch dimension {patch_dim} != patch_size^2 * channels = {p * p * c}")
    x = x.reshape(n, side, side, p, p, c)  # [N, h, w, p, p, C]
    x = torch.einsum("nhwpqc->nchpwq", x)  # [N, C, h, p, w, p]
    return x.reshape(n, c, side * p, side * p)  # [N, C, H, W]


def random_masking(x: Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random subset of L_keep = int(L * (1 - mask_ratio)) tokens per sample.

    x: [N, L, D]. Returns
      x_visible   [N, L_keep, D]: the kept tokens, in shuffled order;
      mask        [N, L]: 1 = removed, 0 = kept, in the original token order;
      ids_restore [N, L] long: appending L - L_keep mask tokens to x_visible and gathering along
                  dim 1 with ids_restore puts every kept token back at its original position.
    All randomness is drawn from ``generator`` when one is given (on the generator's device).
    """
    if x.ndim != 3:
        raise ValueError(f"x must be [N, L, D], got shape {tuple(x.shape)}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    n, length, dim = x.shape
    len_keep = int(length * (1 - mask_ratio))

    noise_device = generator.device if generator is not None else x.device
    noise = torch.rand(n, length, generator=generator, device=noise_device).to(x.device)  # [N, L]
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: the smallest noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)  # [N, L] position of each token in the shuffle

    ids_keep = ids_shuffle[:, :len_keep]  # [N, L_keep]
    x_visible = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # [N, L_keep, D]

    mask = torch.ones(n, length, device=x.device)
    mask[:, :len_keep] = 0  # in shuffled order: the first L_keep are kept
    mask = torch.gather(mask, 1, ids_restore)  # [N, L] back in the original order
    return x_visible, mask, ids_restore


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool) -> Tensor:
    """Mean squared error per patch, averaged over the removed patches only.

    pred, target: [N, L, P] (target = patchify(images)); mask: [N, L] with 1 = removed.
    With norm_pix each target patch becomes (t - mean) / sqrt(var + 1e-6) over its P values
    (the MAE paper's normalized pixels, which give sharper features).
    """
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be [N, L, P], got {tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"mask must be [N, L] = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # [N, L]
    return (per_patch * mask).sum() / mask.sum()


class MAEDecoder(nn.Module):
    """The light decoder: visible tokens + mask tokens back in place -> pixels of every patch.

    encoded [N, 1 + L_keep, D] (CLS first), ids_restore [N, L] -> pred [N, L, p*p*C].
    """

    def __init__(self, embed_dim: int, num_patches: int, patch_dim: int, decoder_dim: int,
                 depth: int, num_heads: int):
        super().__init__()
        self.embed = nn.Linear(embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + num_patches, decoder_dim))  # CLS + patches
        self.blocks = nn.ModuleList(Block(decoder_dim, num_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.pred = nn.Linear(decoder_dim, patch_dim)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, encoded: Tensor, ids_restore: Tensor) -> Tensor:
        x = self.embed(encoded)  # [N, 1 + L_keep, Dd]
        n, length = ids_restore.shape
        if length + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"the decoder was built for {self.pos_embed.shape[1] - 1} patches, got {length}")
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)  # [N, L - L_keep, Dd]
        patches = torch.cat([x[:, 1:], mask_tokens], dim=1)  # [N, L, Dd] in shuffled order
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # unshuffle
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed  # [N, 1 + L, Dd]
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # [N, L, p*p*C], CLS dropped


class MAE(Method):
    """Masked autoencoder on a ViT backbone (it needs ``embed``, ``encode``, ``patch_size``).

    The encoder sees only the visible patches (1 - mask_ratio of them); the decoder (decoder_depth
    blocks of width decoder_dim, default the backbone's width) predicts the pixels of every patch
    and the loss counts the removed ones. Targets are the normalized view's patches, per-patch
    normalized with norm_pix (the paper's better setting). ``views``: the recipe (default
    ``MAEViews(image_size)``: crop and flip, no color).
    """

    command_line = (CommandLineOption("mask_ratio", "mask_ratio", float, "fraction of the patches removed",
                                      lambda v: 0 < v < 1, "between 0 and 1 (both excluded)"),)

    def __init__(self, backbone: nn.Module, image_size: int = 32, mask_ratio: float = 0.75,
                 norm_pix: bool = True, decoder_dim: int | None = None, decoder_depth: int = 2,
                 decoder_heads: int | None = None, views: Views | None = None):
        super().__init__()
        if not all(hasattr(backbone, name) for name in ("embed", "encode", "patch_size")):
            raise ValueError(f"MAE needs a ViT backbone with embed/encode/patch_size, got {type(backbone).__name__}")
        if image_size % backbone.patch_size:
            raise ValueError(f"image_size {image_size} is not divisible by the patch size {backbone.patch_size}")
        num_patches = (image_size // backbone.patch_size) ** 2
        if int(num_patches * (1 - mask_ratio)) < 1 or not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio {mask_ratio} must keep at least one of {num_patches} patches and remove some")
        self.backbone = backbone
        self.decoder = MAEDecoder(backbone.feature_dim, num_patches, backbone.patch_size**2 * 3,
                                  decoder_dim or backbone.feature_dim, decoder_depth,
                                  decoder_heads or backbone.num_heads)
        self.views = views if views is not None else MAEViews(image_size)
        self.image_size, self.mask_ratio, self.norm_pix = image_size, mask_ratio, norm_pix
        self.decoder_dim, self.decoder_depth, self.decoder_heads = decoder_dim, decoder_depth, decoder_heads

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """x: [N, C, H, W] normalized images -> (pred [N, L, p*p*C], mask [N, L] with 1 = removed)."""
        pred, mask, _ = self._encode_decode(x, generator)
        return pred, mask

    def _encode_decode(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, C, H, W] -> pred [N, L, p*p*C], mask [N, L], CLS token of the visible patches [N, D]."""
        tokens = self.backbone.embed(x)  # [N, L, D]
        visible, mask, ids_restore = random_masking(tokens, self.mask_ratio, generator)  # [N, L_keep, D]
        encoded = self.backbone.encode(visible)  # [N, 1 + L_keep, D]
        return self.decoder(encoded, ids_restore), mask, encoded[:, 0]

    def training_step(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """images: uint8 [N, C, H, W] -> MSE on the removed patches of one random view."""
        (view,) = self.views(images, generator)  # [N, C, S, S]
        pred, mask, _ = self._encode_decode(view, generator)
        # Collapse for MAE is predicting the same pixels for every image: the spread of the per-image
        # mean prediction [N, p*p*C] measures it (the CLS token is no guide: MAE's loss never trains it).
        self.record(pred.mean(dim=1))
        return mae_loss(pred, patchify(view, self.backbone.patch_size), mask, self.norm_pix)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """For pictures: images uint8 or float [N, 3, S, S] (S = image_size) -> float images in [0, 1]:

        masked   [N, 3, S, S]: the input with the removed patches blacked out;
        recon    [N, 3, S, S]: the decoder's prediction of every patch (with norm_pix, each patch
                 is un-normalized with the true patch's mean and std, as in the MAE demo);
        mask     [N, 1, S, S]: 1 where a patch was removed.
        """
        image = to_float(images)  # [N, 3, S, S] in [0, 1]
        x = normalize(image)
        pred, mask = self(x, generator)  # [N, L, P], [N, L]
        p = self.backbone.patch_size
        target = patchify(x, p)  # [N, L, P]
        if self.norm_pix:
            pred = pred * (target.var(dim=-1, keepdim=True) + 1.0e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
        pixel_mask = unpatchify(mask.unsqueeze(-1).expand(-1, -1, p * p), p, channels=1)  # [N, 1, S, S]
        recon = denormalize(unpatchify(pred, p)).clamp(0, 1)
        return image * (1 - pixel_mask), recon, pixel_mask
