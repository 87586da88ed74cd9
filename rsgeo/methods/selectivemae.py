"""SelectiveMAE (Wang et al., OpticalRS-13M): encode ~15 %, reconstruct ~25 % of patches.

Per image, with ``L`` patches:

1. Score patches by HOG energy (``batch["hog"]`` from the chip dataset, or
   :func:`rsgeo.data.hog.hog_energy` on the fly). ``selection="random"`` scores by uniform
   noise instead, which is what the authors' public code does in effect (their score is
   the mean of a z-scored vector, ~0 everywhere).
2. Visible set: the ``int(L*(1-mask_ratio))//2`` highest-scoring patches, grown by PSTS
   (:mod:`rsgeo.methods.psts`) to ``int(L*(1-mask_ratio))`` tokens.
3. Targets: the ``int(L*rec_ratio)`` highest-scoring patches among the rest.
4. The ViT encodes ``[cls] + visible``; a cross-attention decoder (queries only at the
   targets, keys/values the encoded tokens) predicts their pixels; loss = MSE on
   per-patch-normalised target pixels.

Only ~40 % of the patches enter the computation, hence the >2x speed-up over MAE.
"""

from __future__ import annotations

import torch

from rsgeo.data.hog import hog_energy
from rsgeo.errors import InputError
from rsgeo.methods import psts
from rsgeo.methods.base import PretrainMethod, denormalise_patches, normalised_patch_mse
from rsgeo.methods.decoders import CrossDecoder, decoder_size
from rsgeo.methods.masking import gather_tokens, index_mask, top_k, uniform, visible_count
from rsgeo.methods.tokens import (freeze_sincos_pos, grid_of, patchify, unpatchify, vit_embed,
                                  vit_encode)
from rsgeo.models.backbones import encoder_kind, patch_size


class SelectiveMAE(PretrainMethod):
    name = "selectivemae"

    def __init__(self, encoder, in_chans: int, modality: str = "rgb", *, mask_ratio: float,
                 rec_ratio: float, selection: str, psts_bounds: tuple[float, ...],
                 sub_steps: int, decoder_dim: int | None, decoder_depth: int | None,
                 decoder_heads: int | None, norm_pix_loss: bool):
        """Options (defaults in :mod:`rsgeo.methods.catalog`): see ``SelectiveMAEOptions``."""
        super().__init__()
        if encoder_kind(encoder) != "vit":
            raise InputError("selectivemae drops tokens and needs a ViT backbone")
        if (1 - mask_ratio) + rec_ratio > 1:
            raise InputError(f"visible share {1 - mask_ratio:g} + reconstructed share "
                             f"{rec_ratio:g} exceed all patches")
        self.encoder, self.modalities = encoder, (modality,)
        self.in_chans, self.mask_ratio, self.rec_ratio = in_chans, mask_ratio, rec_ratio
        self.selection, self.bounds, self.sub_steps = selection, tuple(psts_bounds), sub_steps
        self.norm_pix, self.patch, self.progress = norm_pix_loss, patch_size(encoder), 0.0
        freeze_sincos_pos(encoder)
        self.decoder = CrossDecoder(encoder.embed_dim, self.patch, in_chans,
                                    *decoder_size(encoder, decoder_dim, decoder_depth, decoder_heads))

    def counts(self, L: int) -> tuple[int, int, int]:
        """``(initial, visible, reconstructed)`` token counts for ``L`` patches."""
        keep = max(visible_count(L, self.mask_ratio), 1)
        return max(keep // 2, 1), keep, max(int(L * self.rec_ratio), 1)

    def mask_counts(self, crop: int, ratio: float) -> tuple[int, int, str]:
        """``(masked, total, noun)`` patches of a ``crop``-px crop (:meth:`check_crop`)."""
        L = (crop // self.patch) ** 2
        return L - max(visible_count(L, ratio), 1), L, f"patch ({self.patch} px)"

    def scores(self, batch: dict, x: torch.Tensor, L: int) -> torch.Tensor:
        """``[B, L]`` patch richness used for the initial set and the targets."""
        if self.selection == "random":
            return uniform(batch, L, 1, x)
        hog = batch.get("hog")
        if hog is not None and hog.shape[1] == L:
            return hog.float()
        return hog_energy(x.detach().float(), patch=self.patch)

    def select(self, batch: dict, x: torch.Tensor, tokens: torch.Tensor):
        """``visible [B, K]`` and ``targets [B, T]`` token indices (disjoint)."""
        L = tokens.shape[1]
        n_init, n_keep, n_rec = self.counts(L)
        scores = self.scores(batch, x, L)
        init = top_k(scores, n_init)
        noise = uniform(batch, self.sub_steps * L, 2, x)
        mix = psts.stage_mix(self.progress, self.bounds)
        visible = psts.expand(tokens, init, n_keep - n_init, mix, noise, self.sub_steps)
        rest = scores if self.selection == "hog" else uniform(batch, L, 3, x)
        targets = top_k(rest, n_rec, exclude=index_mask(visible, L))
        return visible, targets

    def run(self, batch: dict):
        x = batch[self.modalities[0]]
        tokens, prefix = vit_embed(self.encoder, x)
        visible, targets = self.select(batch, x, tokens)
        latent = vit_encode(self.encoder, prefix, gather_tokens(tokens, visible))
        pred = self.decoder(latent, targets, grid_of(self.encoder, x))         # [B, T, ppC]
        target = gather_tokens(patchify(x, self.patch), targets)
        return pred, target, visible, targets

    def forward(self, batch: dict):
        pred, target, visible, targets = self.run(batch)
        loss = normalised_patch_mse(pred, target, self.norm_pix).mean()
        return loss, {"psts_stage": float(psts.stage_mix(self.progress, self.bounds).stage)}

    def preview(self, batch: dict) -> dict:
        one = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
        x = one[self.modalities[0]]
        pred, target, visible, targets = self.run(one)
        if self.norm_pix:
            pred = denormalise_patches(pred.float(), target.float())
        patches = patchify(x, self.patch)
        shown = torch.zeros_like(patches)
        shown.scatter_(1, visible[..., None].expand(-1, -1, patches.shape[-1]),
                       gather_tokens(patches, visible))
        recon = shown.clone().scatter_(1, targets[..., None].expand(-1, -1, patches.shape[-1]),
                                       pred.to(shown.dtype))
        grid = grid_of(self.encoder, x)
        return {self.modalities[0]: {
            "input": x[0], "masked": unpatchify(shown, self.patch, self.in_chans, grid)[0],
            "reconstruction": unpatchify(recon, self.patch, self.in_chans, grid)[0]}}
