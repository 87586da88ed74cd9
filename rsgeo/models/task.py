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
from rsgeo.models.heads import ChangeHead, DPTHead, LinearHead, UperNetHead

FORMAT = "rsgeo-task"


class FeatureEncoder(nn.Module):
    """One encoder, or two (RGB + DSM, HiRes-FusedMIM style) whose maps are concatenated.

    ``features(x)`` -> 4 maps; with two encoders the first ``split`` bands feed the first
    encoder, the rest the second, and each level is concatenated channel-wise.
    """

    def __init__(self, encoders: list[nn.Module], split: int | None = None):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.split = split

    @property
    def channels(self) -> list[int]:
        chans = [out_channels(e) for e in self.encoders]
        return [sum(c[i] for c in chans) for i in range(4)]

    @property
    def strides(self) -> list[int]:
        e = self.encoders[0]
        p = patch_size(e)
        return [p] * 4 if encoder_kind(e) == "vit" else [p, 2 * p, 4 * p, 8 * p]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if len(self.encoders) == 1:
            return encoder_features(self.encoders[0], x)
        a = encoder_features(self.encoders[0], x[:, :self.split])
        b = encoder_features(self.encoders[1], x[:, self.split:])
        return [torch.cat([u, v], 1) for u, v in zip(a, b)]


class DenseTaskModel(nn.Module):
    """Encoder + dense head: ``[B, C, H, W]`` normalised input -> ``[B, K, H, W]``.

    For ``task="height"`` the single output channel is the height above ground in metres;
    for segmentation, K class logits. H and W must be multiples of the encoder stride.
    ``aux`` (height models, RS3DAda's multi-task set-up) is a second DPT head giving
    land-cover logits from the same features: :meth:`forward_all` returns both, while
    ``forward`` (and so export and predict-height) returns the heights only.
    """

    def __init__(self, encoder: FeatureEncoder, head: nn.Module, aux: nn.Module | None = None):
        super().__init__()
        self.encoder, self.head, self.aux = encoder, head, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(main output, auxiliary logits or None)`` from one encoder pass."""
        feats = self.encoder.features(x)
        return self.head(feats), (self.aux(feats) if self.aux is not None else None)


class ChangeModel(nn.Module):
    """Siamese encoder over pre/post images + :class:`ChangeHead`.

    ``forward(pre, post)`` (both ``[B, C, H, W]``, normalised) -> change logits ``[B, 1, H, W]``.
    """

    def __init__(self, encoder: FeatureEncoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(pre), self.encoder.features(post))


class ClassifierModel(nn.Module):
    """Encoder + :class:`LinearHead`: ``[B, C, H, W]`` -> ``[B, K]`` logits."""

    def __init__(self, encoder: FeatureEncoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = LinearHead(encoder.channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x)[3])


TASKS = ("height", "segmentation", "change", "classification")


def build_task_model(config: dict, encoders: list[nn.Module] | None = None) -> nn.Module:
    """Build the network described by ``config`` (optionally around given encoders).

    Config keys: ``task``, ``backbone``, ``in_chans``, ``img_size``, ``head`` (dpt |
    upernet), ``head_features``, ``num_classes`` (segmentation/classification), ``split``
    (bands of the first encoder when two encoders are used: RGB+DSM), ``aux_classes``
    (height: land-cover classes of the auxiliary head, None for none).
    """
    task = config.get("task", "height")
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    in_chans, size = int(config.get("in_chans", 3)), int(config.get("img_size", 224))
    split = config.get("split")
    if encoders is None:
        chans = [in_chans] if not split else [int(split), in_chans - int(split)]
        encoders = [build_encoder(config["backbone"], c, size) for c in chans]
    enc = FeatureEncoder(encoders, split)
    feats = int(config.get("head_features", 64))
    if task == "classification":
        return ClassifierModel(enc, int(config["num_classes"]))
    if task == "change":
        return ChangeModel(enc, ChangeHead(enc.channels, enc.strides, features=feats))
    if task == "segmentation" and config.get("head", "upernet") == "upernet":
        head = UperNetHead(enc.channels, enc.strides, int(config["num_classes"]), feats)
        return DenseTaskModel(enc, head)
    out = 1 if task == "height" else int(config["num_classes"])
    head = DPTHead(enc.channels, enc.strides, features=feats, out_channels=out,
                   relu_out=task == "height")
    aux = None
    if task == "height" and config.get("aux_classes"):
        aux = DPTHead(enc.channels, enc.strides, features=feats,
                      out_channels=int(config["aux_classes"]), relu_out=False)
    return DenseTaskModel(enc, head, aux)


def save_task_model(model: nn.Module, config: dict, meta: dict, path: str | os.PathLike,
                    extra: dict | None = None) -> Path:
    """Write a task checkpoint atomically (see the module docstring)."""
    from rsgeo.io.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bundle = {"format": FORMAT, "version": 1, "config": dict(config), "meta": dict(meta),
              "state_dict": state, **(extra or {})}
    from rsgeo.train.checkpoint import loadable

    with atomic_path(path, overwrite=True) as tmp:
        torch.save(loadable(bundle), tmp)
    return Path(path)


def load_task_model(path: str | os.PathLike) -> tuple[nn.Module, dict, dict]:
    """``(model in eval mode, config, meta)`` from a task checkpoint; one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such model file", p)
    from rsgeo.train.checkpoint import safe_load

    bundle = safe_load(p, "rsgeo checkpoint")
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise InputError("not an rsgeo task checkpoint (from `rsgeo finetune`)", p)
    model = build_task_model(bundle["config"])
    model.load_state_dict(bundle["state_dict"])
    return model.eval(), bundle["config"], bundle["meta"]
