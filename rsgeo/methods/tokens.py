"""Token plumbing shared by the methods: patchify, sin-cos positions, encoder passes.

References: facebookresearch/mae (``patchify``, ``get_2d_sincos_pos_embed``,
``forward_encoder``) and microsoft/SimMIM (mask token after the patch embedding), rewritten
for any number of bands and for timm's ViT and Swin modules.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from rsgeo.models.backbones import encoder_kind


def patchify(imgs: torch.Tensor, p: int) -> torch.Tensor:
    """``imgs [B, C, H, W]`` -> ``[B, L, p*p*C]`` (row-major patches, pixel-major inside)."""
    B, C, H, W = imgs.shape
    x = imgs.reshape(B, C, H // p, p, W // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, (H // p) * (W // p), p * p * C)


def unpatchify(x: torch.Tensor, p: int, chans: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p*p*C]`` -> ``[B, C, h*p, w*p]``."""
    B = x.shape[0]
    h, w = grid
    x = x.reshape(B, h, w, p, p, chans).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(B, chans, h * p, w * p)


@functools.lru_cache(maxsize=32)
def _sincos(dim: int, h: int, w: int) -> torch.Tensor:
    def one_d(d: int, pos: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2.0))
        out = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([out.sin(), out.cos()], dim=1)

    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    emb = torch.cat([one_d(dim // 2, gy), one_d(dim // 2, gx)], dim=1)
    return emb.float()


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding ``[h*w, dim]`` (MAE's, ``dim`` % 4 == 0)."""
    return _sincos(dim, int(grid[0]), int(grid[1]))


def freeze_sincos_pos(encoder: nn.Module) -> None:
    """Give a ViT MAE's fixed sin-cos position embedding (no gradient), cls position 0."""
    if encoder_kind(encoder) != "vit" or encoder.pos_embed is None:
        return
    grid = encoder.patch_embed.grid_size
    pe = sincos_pos_embed(encoder.embed_dim, grid)
    n_prefix = encoder.pos_embed.shape[1] - pe.shape[0]
    with torch.no_grad():
        encoder.pos_embed.zero_()
        encoder.pos_embed[0, n_prefix:] = pe
    encoder.pos_embed.requires_grad_(False)


def grid_of(encoder: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    p = encoder.patch_embed.patch_size
    return x.shape[-2] // p[0], x.shape[-1] // p[1]


def vit_embed(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch tokens with positions and the prefix tokens of a timm ViT.

    Returns:
        ``tokens [B, L, D]`` (row-major patch order) and ``prefix [B, P, D]`` (cls and
        register tokens with their positions; P may be 0).
    """
    t = encoder._pos_embed(encoder.patch_embed(x))
    P = encoder.num_prefix_tokens
    return t[:, P:], t[:, :P]


def vit_encode(encoder: nn.Module, prefix: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Run the ViT blocks on ``[prefix, tokens]``: ``[B, P+N, D]`` after the final norm."""
    x = encoder.norm_pre(torch.cat([prefix, tokens], dim=1))
    return encoder.norm(encoder.blocks(x))


def encode_masked(encoder: nn.Module, x: torch.Tensor, mask: torch.Tensor | None,
                  mask_token: torch.Tensor | None) -> torch.Tensor:
    """Encode with masked patch tokens replaced by ``mask_token`` (SimMIM).

    Args:
        x: ``[B, C, H, W]``.
        mask: ``[B, h, w]`` bool on the patch grid (True = masked), or None (no masking).
        mask_token: ``[1, 1, D]`` learned token (patch-embedding width).

    Returns:
        The final feature map ``[B, C_out, H/stride, W/stride]`` (normed).
    """
    t = encoder.patch_embed(x)                                      # [B, h, w, D]
    if mask is not None:
        w = mask.unsqueeze(-1).to(t.dtype)
        t = t * (1 - w) + mask_token.to(t.dtype).view(1, 1, 1, -1) * w
    if encoder_kind(encoder) == "swin":
        return encoder.norm(encoder.layers(t)).permute(0, 3, 1, 2)
    B, h, w_, D = t.shape
    t = encoder._pos_embed(t)
    out = encoder.norm(encoder.blocks(encoder.norm_pre(t)))
    out = out[:, encoder.num_prefix_tokens:]
    return out.transpose(1, 2).reshape(B, D, h, w_)
