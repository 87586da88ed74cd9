"""Backbone adapters over timm: build an encoder by name, read 4 feature maps, save/load.

Encoders are plain timm ``VisionTransformer`` or ``SwinTransformer`` modules without a
classifier (``num_classes=0``), built for any number of input bands (RGB 3, DSM 1) and any
input size that is a multiple of the encoder's stride (``dynamic_img_size``). Weights are
never downloaded: pretraining starts from scratch, fine-tuning starts from our own files.

Names: timm's own (``vit_base_patch16_224``, ``swin_tiny_patch4_window7_224``, ...) or the
tiny configurations below, small enough for CPU tests and demos.

On disk an encoder is ``NAME.safetensors`` (the state dict) plus ``NAME.json`` (how to
rebuild and feed it: backbone, in_chans, img_size, patch_size, bands, normalisation
mean/std, method, ...). ``load_encoder`` needs only those two files.
"""

from __future__ import annotations

import difflib
import json
import os
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import timm
import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from rsgeo.errors import InputError, first_line
from rsgeo.io.atomic import atomic_path

# Tiny named configurations (CPU tests and demos). ``kind`` selects the timm class.
TINY = {
    "vit-tiny-4": dict(kind="vit", patch_size=16, embed_dim=192, depth=4, num_heads=3),
    "vit-tiny-2": dict(kind="vit", patch_size=16, embed_dim=96, depth=2, num_heads=3),
    "swin-tiny-2": dict(kind="swin", patch_size=4, embed_dim=32, depths=(2, 2, 2, 2),
                        num_heads=(1, 2, 4, 8), window_size=4),
}
FAMILIES = ("vit_", "swin")  # timm model-name prefixes the adapters support


def _timm_names() -> list[str]:
    return [n for n in timm.list_models() if n.startswith(FAMILIES)]


def backbone_names() -> list[str]:
    """Every accepted backbone name: the tiny configurations, then timm's ViT/Swin models."""
    return list(TINY) + _timm_names()


def check_backbone(name: str) -> None:
    """InputError (listing close matches) unless ``name`` is a tiny config or a timm ViT/Swin
    (``timm:NAME`` is accepted as NAME)."""
    name = name.removeprefix("timm:")
    if name in TINY:
        return
    if not name.startswith(FAMILIES) or name not in timm.list_models():
        close = difflib.get_close_matches(name, backbone_names(), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else \
            f"; try {', '.join(TINY)} or a timm vit_*/swin* name"
        raise InputError(f"unknown backbone{hint}", name)


def build_encoder(name: str, in_chans: int = 3, img_size: int = 224) -> nn.Module:
    """A randomly initialised ViT or Swin encoder without classifier.

    Args:
        name: a tiny configuration (``vit-tiny-4``, ``vit-tiny-2``, ``swin-tiny-2``) or a
            timm ViT/Swin name (optionally written ``timm:NAME``).
        in_chans: input bands (3 for RGB, 1 for a DSM).
        img_size: reference input size in pixels (position embeddings / attention windows
            are built for it; other multiples of the stride also work).

    Raises:
        InputError: unknown name (the message lists close matches).
    """
    name = name.removeprefix("timm:")
    if name in TINY:
        cfg = dict(TINY[name])
        kind = cfg.pop("kind")
        common = dict(img_size=img_size, in_chans=in_chans, num_classes=0, drop_path_rate=0.0,
                      dynamic_img_size=True)
        if kind == "vit":
            return VisionTransformer(**common, **cfg)
        return SwinTransformer(**common, **cfg)
    check_backbone(name)
    encoder = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans,
                                img_size=img_size, dynamic_img_size=True)
    if not isinstance(encoder, (VisionTransformer, SwinTransformer)):
        raise InputError(f"is a timm {type(encoder).__name__}; rsgeo adapts VisionTransformer "
                         "and SwinTransformer (v1) models", name)
    return encoder


@contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode (``HF_HUB_OFFLINE=1``) for the block, then as it was.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, when it is imported (timm imports it), so
    the variable alone comes too late: its constant is set too. Offline, a file missing
    from the cache fails at once instead of after ~50 s of retries on a machine without
    internet.
    """
    import huggingface_hub.constants as hub

    env, flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = flag
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def _url_cached(url: str) -> bool:
    """Whether torch.hub (timm's loader for weights not on the HF hub) has ``url`` cached."""
    name = os.path.basename(urllib.parse.urlparse(url).path)
    return (Path(torch.hub.get_dir()) / "checkpoints" / name).is_file()


def timm_pretrained(name: str, **kwargs) -> nn.Module:
    """timm's model ``name`` (``timm:NAME`` accepted) with its pretrained weights, from the
    local caches only: rsgeo downloads nothing at run time.

    Raises:
        InputError: unknown name, no pretrained weights in timm, or weights not cached.
    """
    name = name.removeprefix("timm:")
    check_backbone(name)
    where = f"timm:{name}"
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise InputError("timm has no pretrained weights for this model (for a random "
                         "start: --encoder random --backbone NAME)", where)
    missing = (f"pretrained weights not in the local cache (rsgeo downloads nothing at run "
               f"time): cache them where there is internet, e.g. timm.create_model('{name}', "
               "pretrained=True), and copy the cache (HF_HOME), or give a checkpoint file "
               "with --encoder PATH")
    if not cfg.hf_hub_id and not cfg.file and not _url_cached(cfg.url):
        raise InputError(missing, where)
    with hub_offline():
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except FileNotFoundError:   # huggingface_hub's LocalEntryNotFoundError among them
            raise InputError(missing, where) from None
        except Exception as e:
            raise InputError(f"could not load timm's pretrained weights from the local cache "
                             f"({type(e).__name__}: {first_line(e, 100)})", where) from None


def backbone_kind(name: str) -> str | None:
    """``"vit"`` or ``"swin"`` for a backbone name (None if it is neither)."""
    if name in TINY:
        return TINY[name]["kind"]
    return "vit" if name.startswith("vit_") else "swin" if name.startswith("swin") else None


def encoder_kind(encoder: nn.Module) -> str:
    """``"vit"`` or ``"swin"``."""
    if isinstance(encoder, VisionTransformer):
        return "vit"
    if isinstance(encoder, SwinTransformer):
        return "swin"
    raise TypeError(f"unsupported encoder {type(encoder).__name__}")


def patch_size(encoder: nn.Module) -> int:
    """Side of one input patch token in pixels (16 for ViT/16, 4 for Swin)."""
    return int(encoder.patch_embed.patch_size[0])


def encoder_stride(encoder: nn.Module) -> int:
    """Pixels per cell of the final feature map (patch size for ViT, 32 for 4-stage Swin)."""
    if encoder_kind(encoder) == "vit":
        return patch_size(encoder)
    return patch_size(encoder) * 2 ** (len(encoder.layers) - 1)


def out_channels(encoder: nn.Module) -> list[int]:
    """Channels of the 4 maps :func:`encoder_features` returns."""
    if encoder_kind(encoder) == "vit":
        return [encoder.embed_dim] * 4
    return [int(encoder.embed_dim * 2 ** i) for i in range(len(encoder.layers))][-4:]


def encoder_features(encoder: nn.Module, x: torch.Tensor, norm: bool = False) -> list[torch.Tensor]:
    """Four feature maps for dense heads (UperNet, DPT).

    Args:
        x: ``[B, C, H, W]`` normalised input, H and W multiples of :func:`encoder_stride`.
        norm: ViT only: pass each level through the encoder's final LayerNorm (as DINOv2's
            ``get_intermediate_layers(norm=True)``). Pretrained ViTs' residual streams are
            10-30x larger than a random ViT's (vit-tiny-4 after MAE: std 6-19 vs 0.6), which
            a freshly initialised head cannot take; the norm brings every level to unit scale.

    Returns:
        4 tensors ``[B, C_i, H_i, W_i]``: for ViT the last 4 blocks' patch tokens as maps at
        stride ``patch`` (prefix tokens dropped; the final norm only with ``norm``); for Swin
        the 4 stages at strides 4, 8, 16, 32 (x patch/4).
    """
    if encoder_kind(encoder) == "vit":
        n = len(encoder.blocks)
        idx = list(range(max(n - 4, 0), n))
        feats = encoder.forward_intermediates(x, indices=idx, output_fmt="NCHW", norm=norm,
                                              intermediates_only=True)
        while len(feats) < 4:  # fewer than 4 blocks: repeat the first
            feats = [feats[0]] + feats
        return feats
    feats = encoder.forward_intermediates(x, indices=4, output_fmt="NCHW", intermediates_only=True)
    return list(feats)


def resize_encoder(encoder: nn.Module, meta: dict, img_size: int) -> tuple[nn.Module, dict]:
    """``(encoder, meta)`` for ``img_size`` px inputs when ``meta["img_size"]`` differs.

    A ViT is rebuilt for ``img_size`` with its position-embedding grid resampled bicubically
    (timm's ``resample_abs_pos_embed``, class-token entries kept): what ``dynamic_img_size``
    does at every forward, done once, so that a task model saved with ``img_size`` in its
    config rebuilds from it (an encoder pretrained on 128 px crops, fine-tuned on 64 px
    chips). Swin encoders and equal sizes come back unchanged.
    """
    old = int(meta["img_size"])
    if old == int(img_size) or encoder_kind(encoder) != "vit":
        return encoder, meta
    from timm.layers import resample_abs_pos_embed

    new = build_encoder(meta["backbone"], int(meta["in_chans"]), int(img_size))
    state = encoder.state_dict()
    prefix = 0 if encoder.no_embed_class else encoder.num_prefix_tokens
    state["pos_embed"] = resample_abs_pos_embed(
        state["pos_embed"], list(new.patch_embed.grid_size),
        list(encoder.patch_embed.grid_size), num_prefix_tokens=prefix)
    new.load_state_dict(state)
    return new, {**meta, "img_size": int(img_size), "pretrain_img_size": old}


REQUIRED_META = ("backbone", "in_chans", "img_size")


def save_encoder(encoder: nn.Module, path: str | os.PathLike, meta: dict) -> tuple[Path, Path]:
    """Write ``path`` (.safetensors) and its JSON sidecar (same stem, ``.json``), atomically.

    ``meta`` must hold ``backbone``, ``in_chans`` and ``img_size``; ``patch_size`` is added.
    Customary keys: ``bands`` (names), ``mean``/``std`` (per band, stored scale),
    ``method``, ``modality``. Returns the two paths.
    """
    from safetensors.torch import save_file

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"encoder meta lacks {missing}")
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    meta = {**meta, "patch_size": patch_size(encoder), "stride": encoder_stride(encoder),
            "kind": encoder_kind(encoder), "out_channels": out_channels(encoder),
            "format": "rsgeo-encoder", "version": 1}
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    sidecar = path.with_suffix(".json")
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata={"backbone": str(meta["backbone"])})
    with atomic_path(sidecar, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=2))
    return path, sidecar


def load_encoder(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild an encoder written by :func:`save_encoder`: ``(encoder, meta)``.

    Raises:
        InputError: missing files, a sidecar without the required keys, or weights that do
            not fit the described backbone.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    sidecar = path.with_suffix(".json")
    for p in (path, sidecar):
        if not p.is_file():
            raise InputError("encoder file not found (need NAME.safetensors + NAME.json)", p)
    try:
        meta = json.loads(sidecar.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON ({e.msg})", sidecar) from None
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise InputError(f"encoder description lacks {', '.join(missing)}", sidecar)
    encoder = build_encoder(meta["backbone"], int(meta["in_chans"]), int(meta["img_size"]))
    try:
        weights = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError: a damaged file
        raise InputError(f"not a readable safetensors file, damaged or truncated? "
                         f"({first_line(e, 120)})", path) from None
    try:
        encoder.load_state_dict(weights)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise InputError(f"weights do not fit {meta['backbone']}: {first}", path) from None
    return encoder, meta
