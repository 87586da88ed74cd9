"""What every pretraining method shares: the engine contract and encoder bookkeeping.

A method is an ``nn.Module`` whose ``forward(batch) -> (loss, logs)`` turns a batch into
a loss (the engine's contract), ``preview(batch)`` gives panels for PNG previews, and
``encoders()`` names the encoders to keep, with their modality, after pretraining.

Batches are dicts: modality tensors ``rgb [B, 3, H, W]``, ``dsm``/``ndsm [B, 1, H, W]``
(normalised), optional ``<modality>_valid [B, 1, H, W]`` (0 where the source had no
data), optional ``hog [B, L]`` and ``seed [B]`` (per-sample random streams).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rsgeo.errors import InputError
from rsgeo.models.backbones import encoder_stride


class PretrainMethod(nn.Module):
    name = "base"
    modalities: tuple[str, ...] = ("rgb",)

    def set_progress(self, step: int, total: int) -> None:
        """Fraction of the run done (curricula); the engine calls it before each step."""
        self.progress = step / max(total, 1)

    def encoders(self) -> dict[str, tuple[nn.Module, str]]:
        """``{file stem: (encoder, modality)}`` to save after pretraining."""
        return {"encoder": (self.encoder, self.modalities[0])}

    def size_multiple(self) -> int:
        """Training crops must be multiples of this (encoder strides, mask units), in px."""
        m = 1
        for enc, _ in self.encoders().values():
            m = math.lcm(m, encoder_stride(enc))
        for mod in self.modules():
            m = math.lcm(m, getattr(mod, "mask_unit", 1))
        return m


    def check_crop(self, crop: int) -> None:
        """InputError when ``crop``-px training crops at the mask ratio would leave no patch
        masked (no loss) or none visible (nothing to encode), naming the ratios that work.

        Asks every submodule with ``mask_counts(crop, ratio) -> (masked, total, noun)``
        (the modules that draw masks, each with its ``mask_ratio``; ``noun``: what is
        counted, e.g. ``"patch (16 px)"``).
        """
        for mod in self.modules():
            counts = getattr(mod, "mask_counts", None)
            if counts is None:
                continue
            ratio = mod.mask_ratio
            masked, total, noun = counts(crop, ratio)
            if 0 < masked < total:
                continue
            ok = [k / 100 for k in range(1, 100) if 0 < counts(crop, k / 100)[0] < total]
            hint = ("use a larger --crop" if not ok else f"use at most {max(ok):g}" if masked
                    else f"use at least {min(ok):g}")
            word, _, size = noun.partition(" (")
            nouns = f"{word}{'es' if word.endswith('ch') else 's'} ({size}"
            state = (f"masks the only {noun} of a {crop}-px crop" if total == 1 else
                     f"masks all {total} {nouns} of a {crop}-px crop, leaving none visible"
                     if masked else f"masks none of the {total} {nouns} of a {crop}-px crop")
            raise InputError(f"--method {self.name} --mask-ratio {ratio:g} {state}; {hint}")


def valid_weight(batch: dict, modality: str, like: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` 1 where the modality has data (all ones when not given)."""
    v = batch.get(f"{modality}_valid")
    return torch.ones_like(like[:, :1]) if v is None else v.to(like.dtype)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of ``|pred - target|`` over weighted pixels and all bands, and the count.

    ``weight [B, 1, H, W]`` (mask x valid). Loss = sum / count (SimMIM normalisation: by
    masked pixels and bands).
    """
    err = (pred.float() - target.float()).abs() * weight
    return err.sum(), weight.sum() * pred.shape[1]


def normalised_patch_mse(pred: torch.Tensor, target: torch.Tensor, norm_pix: bool = True) -> torch.Tensor:
    """Per-patch MSE ``[B, N]`` between ``pred`` and ``target`` (both ``[B, N, p*p*C]``).

    With ``norm_pix`` the target is normalised per patch (mean, unbiased variance + 1e-6),
    MAE's ``norm_pix_loss``.
    """
    target = target.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6) ** 0.5
    return ((pred.float() - target) ** 2).mean(dim=-1)


def denormalise_patches(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Undo the per-patch normalisation for display, using the target's statistics."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    return pred * (var + 1e-6) ** 0.5 + mean
