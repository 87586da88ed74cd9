"""SimMIM (Xie et al. 2022): mask token in place of masked patches, light pixel decoder.

As microsoft/SimMIM: masks drawn on a coarse grid (32-px units, ``ceil(U * 0.6)`` of the
``U`` units masked per image), a learned mask token replacing the masked patch tokens
right after the patch embedding, a 1x1 conv + PixelShuffle decoder from the final feature
map, and L1 over masked pixels normalised by masked pixels x bands. Unlike the original,
the decoder outputs as many channels as the input has bands (1 for a DSM). ViT or Swin.
"""

from __future__ import annotations

import torch
from torch import nn

from rsgeo.errors import InputError
from rsgeo.methods.base import PretrainMethod, masked_l1, valid_weight
from rsgeo.methods.decoders import PixelShuffleDecoder
from rsgeo.methods.masking import block_mask, masked_units, uniform, upsample_mask
from rsgeo.methods.tokens import encode_masked
from rsgeo.models.backbones import encoder_stride, out_channels, patch_size


class MaskedBranch(nn.Module):
    """One encoder + mask token + pixel decoder: the SimMIM unit, reused by CtxMIM/FusedMIM."""

    def __init__(self, encoder, in_chans: int, mask_ratio: float, mask_unit: int,
                 decoder_in: int | None = None):
        super().__init__()
        self.encoder, self.in_chans = encoder, in_chans
        self.mask_ratio, self.mask_unit = mask_ratio, mask_unit
        self.patch, self.stride = patch_size(encoder), encoder_stride(encoder)
        if mask_unit % self.patch:
            raise InputError(f"--mask-unit {mask_unit} must be a multiple of the patch size "
                             f"{self.patch}")
        self.mask_token = nn.Parameter(torch.zeros(1, 1, encoder.patch_embed.proj.out_channels))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.feat_dim = out_channels(encoder)[-1]
        self.decoder = PixelShuffleDecoder(decoder_in or self.feat_dim, self.stride, in_chans)

    def mask_counts(self, crop: int, ratio: float) -> tuple[int, int, str]:
        """``(masked, total, noun)`` mask units of a ``crop``-px crop (``check_crop``)."""
        units = (crop // self.mask_unit) ** 2
        return masked_units(units, ratio), units, f"mask unit ({self.mask_unit} px)"

    def draw_mask(self, batch: dict, x: torch.Tensor, stream: int) -> torch.Tensor:
        """``[B, h, w]`` bool patch-grid mask, ``ceil(U * ratio)`` units of ``mask_unit`` px."""
        H, W = x.shape[-2:]
        if H % self.mask_unit or W % self.mask_unit:
            raise InputError(f"image {H}x{W} px is not a multiple of the {self.mask_unit}-px "
                             "mask unit (use --crop)")
        units = (H // self.mask_unit, W // self.mask_unit)
        noise = uniform(batch, units[0] * units[1], stream, x)
        return block_mask(noise, units, self.mask_ratio, self.mask_unit // self.patch)

    def features(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return encode_masked(self.encoder, x, mask, self.mask_token)

    def pixel_mask(self, mask: torch.Tensor) -> torch.Tensor:
        return upsample_mask(mask, self.patch)


class SimMIM(PretrainMethod):
    name = "simmim"

    def __init__(self, encoder, in_chans: int, modality: str = "rgb", *, mask_ratio: float,
                 mask_unit: int):
        """Options (defaults in :mod:`rsgeo.methods.catalog`): see ``SimMIMOptions``."""
        super().__init__()
        self.modalities = (modality,)
        self.branch = MaskedBranch(encoder, in_chans, mask_ratio, mask_unit)

    @property
    def encoder(self):
        return self.branch.encoder

    def run(self, batch: dict):
        x = batch[self.modalities[0]]
        mask = self.branch.draw_mask(batch, x, 0)
        rec = self.branch.decoder(self.branch.features(x, mask))
        return x, rec, self.branch.pixel_mask(mask)

    def forward(self, batch: dict):
        x, rec, mask_px = self.run(batch)
        total, count = masked_l1(rec, x, mask_px * valid_weight(batch, self.modalities[0], x))
        return total / (count + 1e-5), {"masked_fraction": mask_px.mean().detach()}

    def preview(self, batch: dict) -> dict:
        one = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
        x, rec, m = self.run(one)
        return {self.modalities[0]: {"input": x[0], "masked": (x * (1 - m))[0],
                                     "reconstruction": (x * (1 - m) + rec * m)[0]}}
