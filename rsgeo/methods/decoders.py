"""Pretraining decoders (thrown away after pretraining).

- :class:`MAEDecoder`: MAE's transformer decoder over all tokens (visible + mask tokens).
- :class:`CrossDecoder`: CrossMAE-style, queries only at target positions cross-attending
  to the encoded tokens (SelectiveMAE); no self-attention among queries.
- :class:`PixelShuffleDecoder`: SimMIM's 1x1 conv + PixelShuffle; the output has as many
  channels as the input bands (SimMIM hard-codes 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from rsgeo.methods.tokens import sincos_pos_embed


def decoder_size(encoder: nn.Module, dim: int | None = None, depth: int | None = None,
                 heads: int | None = None) -> tuple[int, int, int]:
    """``(width, blocks, heads)`` of a MAE-style decoder for a ViT ``encoder``; given values win.

    ViTs of 12 or more blocks get MAE's lightweight decoder: 512 wide, 8 blocks. Smaller
    encoders get one as wide as the encoder (at most 512) and half as deep (at least one
    block), so the decoder does not outweigh them (vit-tiny-4: 192 x 2 instead of
    512 x 8, ~13x fewer decoder parameters). Heads: width / 32 (MAE's 32-wide heads),
    lowered to a divisor of the width, at least 1.
    """
    blocks = len(encoder.blocks)
    big = blocks >= 12
    dim = dim or (512 if big else min(512, encoder.embed_dim))
    depth = depth or (8 if big else max(1, blocks // 2))
    if not heads:
        heads = max(1, dim // 32)
        while dim % heads:
            heads -= 1
    return dim, depth, heads


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MAEDecoder(nn.Module):
    """``latent [B, P+N, D_enc]`` + ``ids_restore [B, L]`` -> pixels ``[B, L, p*p*C]``."""

    def __init__(self, enc_dim: int, patch: int, chans: int, dim: int = 512, depth: int = 8,
                 heads: int = 16):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio=4.0, qkv_bias=True)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch * patch * chans)
        _init(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, n_prefix: int,
                grid: tuple[int, int]) -> torch.Tensor:
        x = self.embed(latent)
        B, L = ids_restore.shape
        prefix, vis = x[:, :n_prefix], x[:, n_prefix:]
        masks = self.mask_token.expand(B, L - vis.shape[1], -1).to(x.dtype)
        x = torch.cat([vis, masks], dim=1)                                   # shuffled order
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = x + sincos_pos_embed(x.shape[-1], grid).to(x)[None]              # unshuffled
        x = self.blocks(torch.cat([prefix, x], dim=1))
        return self.pred(self.norm(x))[:, n_prefix:]


class CrossBlock(nn.Module):
    """``x += CrossAttn(LN(x), y); x += MLP(LN(x))``; ``y`` is the (normed) encoder output."""

    def __init__(self, dim: int, kv_dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.heads
        q = self.q(self.norm1(x)).view(B, N, h, C // h).transpose(1, 2)
        k, v = self.kv(y).view(B, y.shape[1], 2, h, C // h).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class CrossDecoder(nn.Module):
    """Reconstruct only target patches: ``latent [B, N, D_enc]``, ``targets [B, T]`` ->
    pixels ``[B, T, p*p*C]``. Queries = mask token + sin-cos position of each target."""

    def __init__(self, enc_dim: int, patch: int, chans: int, dim: int = 512, depth: int = 8,
                 heads: int = 16):
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList([CrossBlock(dim, enc_dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch * patch * chans)
        _init(self)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, targets: torch.Tensor,
                grid: tuple[int, int]) -> torch.Tensor:
        pos = sincos_pos_embed(self.mask_token.shape[-1], grid).to(latent)        # [L, dim]
        x = self.mask_token.to(latent.dtype) + pos[targets]                       # [B, T, dim]
        for blk in self.blocks:
            x = blk(x, latent)
        return self.pred(self.norm(x))


class PixelShuffleDecoder(nn.Module):
    """``[B, D, h, w]`` -> ``[B, chans, h*stride, w*stride]`` (1x1 conv + PixelShuffle)."""

    def __init__(self, in_dim: int, stride: int, chans: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, stride * stride * chans, kernel_size=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(feats))
