"""Pretraining methods, one module each, and the registry that builds them by name.

==============  =====================================================  ===========  =========
name            idea                                                   backbones    needs
==============  =====================================================  ===========  =========
mae             drop 75 % of tokens, transformer decoder, MSE          ViT          one band set
simmim          mask token on 32-px units (60 %), pixel-shuffle, L1   ViT, Swin    one band set
selectivemae    HOG-ranked 15 % encoded, 25 % reconstructed, PSTS      ViT          one band set
ctxmim          simmim + unmasked context branch + consistency        ViT, Swin    one band set
fusedmim        RGB + DSM encoders, fused decoders, L1 + InfoNCE       ViT, Swin    rgb + dsm
==============  =====================================================  ===========  =========

Each is an ``nn.Module`` with ``forward(batch) -> (loss, logs)`` (the engine's contract),
``preview(batch)`` and ``encoders()``; see :mod:`rsgeo.methods.base`.
"""

from __future__ import annotations

import rsgeo.models  # noqa: F401  (timm import repair; decoders use timm layers)

METHODS = ("mae", "simmim", "selectivemae", "ctxmim", "fusedmim")

# Options each method accepts (CLI/YAML names -> constructor keywords).
OPTIONS = {
    "mae": {"mask_ratio", "decoder_dim", "decoder_depth", "decoder_heads", "norm_pix_loss"},
    "simmim": {"mask_ratio", "mask_unit"},
    "selectivemae": {"mask_ratio", "rec_ratio", "selection", "psts_bounds", "sub_steps",
                     "decoder_dim", "decoder_depth", "decoder_heads", "norm_pix_loss"},
    "ctxmim": {"mask_ratio", "mask_unit"},
    "fusedmim": {"mask_ratio", "mask_unit", "alpha", "tau", "proj_dim"},
}


def required_modalities(method: str, modality: str = "rgb", dsm_modality: str = "dsm") -> tuple[str, ...]:
    """Dataset modalities a method reads."""
    return ("rgb", dsm_modality) if method == "fusedmim" else (modality,)


def build_method(method: str, backbone: str, img_size: int, modality: str = "rgb",
                 in_chans: int = 3, dsm_modality: str = "dsm", **options):
    """A fresh method module with newly initialised encoder(s).

    Args:
        method: one of :data:`METHODS`.
        backbone: an encoder name (:func:`rsgeo.models.backbones.build_encoder`).
        img_size: training crop size in pixels.
        modality / in_chans: what a single-encoder method trains on (``rgb`` 3, ``dsm`` 1).
        options: method options (:data:`OPTIONS`); None values are left at the defaults.
    """
    from rsgeo.errors import InputError
    from rsgeo.models.backbones import build_encoder

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(opts) - OPTIONS[method])
    if unknown:
        raise InputError(f"--method {method} does not take {', '.join(unknown)}")
    if method == "fusedmim":
        from rsgeo.methods.fusedmim import FusedMIM

        rgb = build_encoder(backbone, 3, img_size)
        dsm = build_encoder(backbone, 1, img_size)
        return FusedMIM(rgb, dsm, dsm_modality=dsm_modality, **opts)
    encoder = build_encoder(backbone, in_chans, img_size)
    if method == "mae":
        from rsgeo.methods.mae import MAE as cls
    elif method == "simmim":
        from rsgeo.methods.simmim import SimMIM as cls
    elif method == "selectivemae":
        from rsgeo.methods.selectivemae import SelectiveMAE as cls
    else:
        from rsgeo.methods.ctxmim import CtxMIM as cls
    return cls(encoder, in_chans, modality=modality, **opts)
