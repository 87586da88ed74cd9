"""MAE (He et al. 2022): drop 75 % of the patch tokens, encode the rest, reconstruct all.

As facebookresearch/mae ``models_mae.py``: per-sample random masking (argsort of noise),
a fixed sin-cos position embedding, a transformer decoder (visible tokens + mask tokens),
MSE on per-patch-normalised pixels of the masked patches only. Any number of bands.
Needs a ViT (tokens are dropped).
"""

from __future__ import annotations

import torch

from rsgeo.errors import InputError
from rsgeo.methods.base import PretrainMethod, denormalise_patches, normalised_patch_mse
from rsgeo.methods.decoders import MAEDecoder, decoder_size
from rsgeo.methods.masking import gather_tokens, random_masking, uniform, visible_count
from rsgeo.methods.tokens import (freeze_sincos_pos, grid_of, patchify, unpatchify, vit_embed,
                                  vit_encode)
from rsgeo.models.backbones import encoder_kind, patch_size


class MAE(PretrainMethod):
    name = "mae"

    def __init__(self, encoder, in_chans: int, modality: str = "rgb", *, mask_ratio: float,
                 decoder_dim: int | None, decoder_depth: int | None,
                 decoder_heads: int | None, norm_pix_loss: bool):
        """Options (defaults in :mod:`rsgeo.methods.catalog`): see ``MAEOptions``."""
        super().__init__()
        if encoder_kind(encoder) != "vit":
            raise InputError(f"{self.name} drops tokens and needs a ViT backbone (use simmim, "
                             "ctxmim or fusedmim for Swin)")
        self.encoder, self.modalities = encoder, (modality,)
        self.in_chans, self.mask_ratio, self.norm_pix = in_chans, mask_ratio, norm_pix_loss
        self.patch = patch_size(encoder)
        freeze_sincos_pos(encoder)
        self.decoder = MAEDecoder(encoder.embed_dim, self.patch, in_chans,
                                  *decoder_size(encoder, decoder_dim, decoder_depth, decoder_heads))

    def mask_counts(self, crop: int, ratio: float) -> tuple[int, int, str]:
        """``(masked, total, noun)`` patches of a ``crop``-px crop (:meth:`check_crop`)."""
        L = (crop // self.patch) ** 2
        return L - visible_count(L, ratio), L, f"patch ({self.patch} px)"

    def run(self, batch: dict):
        """Returns ``pred [B, L, p*p*C]``, ``mask [B, L]`` (1 = masked), target patches."""
        x = batch[self.modalities[0]]
        tokens, prefix = vit_embed(self.encoder, x)                 # [B, L, D], [B, P, D]
        L = tokens.shape[1]
        keep = visible_count(L, self.mask_ratio)
        ids_keep, mask, ids_restore = random_masking(uniform(batch, L, 0, x), keep)
        latent = vit_encode(self.encoder, prefix, gather_tokens(tokens, ids_keep))
        pred = self.decoder(latent, ids_restore, prefix.shape[1], grid_of(self.encoder, x))
        return pred, mask, patchify(x, self.patch)

    def forward(self, batch: dict):
        pred, mask, target = self.run(batch)
        per_patch = normalised_patch_mse(pred, target, self.norm_pix)   # [B, L]
        loss = (per_patch * mask).sum() / mask.sum()
        return loss, {"masked_fraction": mask.mean().detach()}

    def preview(self, batch: dict) -> dict:
        one = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
        x = one[self.modalities[0]]
        pred, mask, target = self.run(one)
        if self.norm_pix:
            pred = denormalise_patches(pred.float(), target.float())
        m = mask[..., None]
        grid = grid_of(self.encoder, x)
        recon = unpatchify(target * (1 - m) + pred * m, self.patch, self.in_chans, grid)
        masked = unpatchify(target * (1 - m), self.patch, self.in_chans, grid)
        return {self.modalities[0]: {"input": x[0], "masked": masked[0], "reconstruction": recon[0]}}
