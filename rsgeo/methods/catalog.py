"""The built-in pretraining methods: options, defaults and one registration line each.

Each method's model lives in its own module (:mod:`rsgeo.methods.mae`, ...); its
declaration lives here, in a module without torch, so ``rsgeo pretrain --help`` can list
every method and option without importing torch and timm. Defaults are written only here
(the model classes take every option explicitly). ``--help`` and the lr rule read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rsgeo.methods.registry import Method, option, register, single_encoder

PSTS_BOUNDS = (0.35, 0.375, 0.725, 0.75)   # rsgeo.methods.psts: SelectiveMAE's stage bounds
# Smallest --mask-ratio / --rec-ratio: 0 would mask (rebuild) nothing, a run without a loss
# (and selectivemae's lr, scaled by rec / mask ratio, would be 0). The largest mask ratio a
# crop allows depends on its patch count: PretrainMethod.check_crop.
MIN_RATIO = 0.01
# None: sized to the encoder (rsgeo.methods.decoders.decoder_size)
DECODER_DIM = "Decoder width (default 512 for ViTs of 12+ blocks, else the encoder's width)."
DECODER_DEPTH = "Decoder blocks (default 8 for ViTs of 12+ blocks, else half the encoder's)."


def rgb_and_height(modality: str, dsm_modality: str) -> tuple[str, ...]:
    """FusedMIM reads RGB and a height modality (``dsm`` or ``ndsm``)."""
    return ("rgb", dsm_modality)


@dataclass
class MAEOptions:
    mask_ratio: float = option(0.75, "Share of patches masked.", min=MIN_RATIO, max=0.99)
    decoder_dim: Optional[int] = option(None, DECODER_DIM, min=1)
    decoder_depth: Optional[int] = option(None, DECODER_DEPTH, min=1)
    decoder_heads: Optional[int] = option(None, "Decoder attention heads (default width / 32).", min=1)
    norm_pix_loss: bool = option(True, "Normalise each target patch (mean, std).")


@dataclass
class SimMIMOptions:
    mask_ratio: float = option(0.6, "Share of patches masked.", min=MIN_RATIO, max=0.99)
    mask_unit: int = option(32, "Mask unit in px (a multiple of the patch size).", min=1)


@dataclass
class SelectiveMAEOptions:   # MAE's decoder options, defaults taken from MAEOptions
    mask_ratio: float = option(0.85, "Share of patches masked.", min=MIN_RATIO, max=0.99)
    rec_ratio: float = option(0.25, "Share of patches reconstructed.", min=MIN_RATIO,
                              max=1.0)
    selection: Literal["hog", "random"] = option(
        "hog", "Rank patches by HOG energy or at random.")
    psts_bounds: tuple[float, ...] = option(
        PSTS_BOUNDS, "PSTS stage bounds, fractions of the run (4 values).", cli=False)
    sub_steps: int = option(2, "PSTS sub-steps growing the visible set.", min=1)
    decoder_dim: Optional[int] = option(MAEOptions.decoder_dim, DECODER_DIM, min=1)
    decoder_depth: Optional[int] = option(MAEOptions.decoder_depth, DECODER_DEPTH, min=1)
    decoder_heads: Optional[int] = option(MAEOptions.decoder_heads,
                                          "Decoder attention heads (default width / 32).", min=1)
    norm_pix_loss: bool = option(MAEOptions.norm_pix_loss,
                                 "Normalise each target patch (mean, std).")


@dataclass
class FusedMIMOptions(SimMIMOptions):
    alpha: float = option(0.05, "InfoNCE weight.", min=0.0, max=1.0)
    tau: float = option(0.07, "InfoNCE temperature.", min=1e-6)
    proj_dim: int = option(128, "InfoNCE projection width.", min=1)


def selective_lr_scale(opts: SelectiveMAEOptions) -> float:
    """SelectiveMAE's lr is MAE's x reconstructed / masked share (its gradient covers fewer patches)."""
    return opts.rec_ratio / opts.mask_ratio


register(Method("mae", "drop 75 % of tokens, transformer decoder, MSE", MAEOptions,
                blr=1.5e-4, backbones=("vit",), build=single_encoder("rsgeo.methods.mae:MAE")))
register(Method("simmim", "mask token on 32-px units (60 %), pixel-shuffle decoder, L1",
                SimMIMOptions, blr=1e-4, build=single_encoder("rsgeo.methods.simmim:SimMIM")))
register(Method("selectivemae", "HOG-ranked 15 % encoded, 25 % reconstructed, PSTS",
                SelectiveMAEOptions, blr=1.5e-4, backbones=("vit",), lr_scale=selective_lr_scale,
                build=single_encoder("rsgeo.methods.selectivemae:SelectiveMAE")))
register(Method("ctxmim", "simmim + unmasked context branch + consistency", SimMIMOptions,
                blr=1e-4, build=single_encoder("rsgeo.methods.ctxmim:CtxMIM")))
register(Method("fusedmim", "RGB + DSM encoders, fused decoders, L1 + InfoNCE", FusedMIMOptions,
                blr=1.25e-4, modalities=rgb_and_height, build="rsgeo.methods.fusedmim:build"))
