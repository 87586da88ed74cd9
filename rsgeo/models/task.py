"""Task models (encoder + head) rebuilt from a small config, and the checkpoint bundle.

A task checkpoint (``best.ckpt``) is one ``torch.save`` file::

    {"format": "rsgeo-task", "version": 1,
     "config": {"task": "height", "backbone": "vit-tiny-4", "in_chans": 3, "img_size": 64,
                "head": "dpt", "head_features": 64, "out_channels": 1},
     "meta": {"task", "bands", "mean", "std", "input_range", "gsd", "tile", "overlap",
              "units", "nodata", ...},
     "state_dict": {...}}

``config`` rebuilds the network (:func:`build_task_model`); ``meta`` says how to feed it
and read its output (normalisation on the stored scale, training GSD in metres,
recommended tile/overlap in pixels, output units). ``rsgeo export`` copies ``meta`` into
the ONNX model's metadata, so either file is a self-describing model bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rsgeo.errors import InputError
from rsgeo.models.backbones import (build_encoder, encoder_features, encoder_kind, out_channels,
                                    patch_size)
from rsgeo.models.heads import DPTHead

FORMAT = "rsgeo-task"


class DenseTaskModel(nn.Module):
    """Encoder + dense head: ``[B, C, H, W]`` normalised input -> ``[B, K, H, W]``.

    For ``task="height"`` the single output channel is the height above ground in metres.
    H and W must be multiples of the encoder stride (16 for ViT/16, 32 for Swin).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(encoder_features(self.encoder, x))


def build_task_model(config: dict, encoder: nn.Module | None = None) -> nn.Module:
    """Build the network described by ``config`` (optionally around a given encoder)."""
    task = config.get("task", "height")
    if task not in ("height", "segmentation"):
        raise InputError(f"unknown dense task {task!r}")
    enc = encoder if encoder is not None else build_encoder(
        config["backbone"], int(config.get("in_chans", 3)), int(config.get("img_size", 224)))
    p = patch_size(enc)
    strides = [p] * 4 if encoder_kind(enc) == "vit" else [p, 2 * p, 4 * p, 8 * p]
    head = DPTHead(out_channels(enc), strides, features=int(config.get("head_features", 64)),
                   out_channels=int(config.get("out_channels", 1)), relu_out=task == "height")
    return DenseTaskModel(enc, head)


def save_task_model(model: nn.Module, config: dict, meta: dict, path: str | os.PathLike,
                    extra: dict | None = None) -> Path:
    """Write a task checkpoint atomically (see the module docstring)."""
    from rsgeo.io.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bundle = {"format": FORMAT, "version": 1, "config": dict(config), "meta": dict(meta),
              "state_dict": state, **(extra or {})}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(bundle, tmp)
    return Path(path)


def load_task_model(path: str | os.PathLike) -> tuple[nn.Module, dict, dict]:
    """``(model in eval mode, config, meta)`` from a task checkpoint; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such model file", p)
    try:
        bundle = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # pickle/zip errors: not a checkpoint
        raise InputError(f"not a readable rsgeo checkpoint ({type(e).__name__})", p) from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise InputError("not an rsgeo task checkpoint (from `rsgeo finetune`)", p)
    model = build_task_model(bundle["config"])
    model.load_state_dict(bundle["state_dict"])
    return model.eval(), bundle["config"], bundle["meta"]
