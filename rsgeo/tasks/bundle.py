"""Task models (encoder + head) rebuilt from a small config, and the checkpoint bundle.

A task checkpoint (``best.ckpt``) is one ``torch.save`` file::

    {"format": "rsgeo-task", "version": 1,
     "config": {"task": "height", "backbone": "vit-tiny-4", "in_chans": 3, "img_size": 64,
                "head": "dpt", "head_features": 64, "out_channels": 1},
     "meta": {"task", "bands", "mean", "std", "input_range", "gsd", "tile", "overlap",
              "units", "nodata", ...},
     "state_dict": {...}}

``config`` rebuilds the network (:func:`build_task_model`: the task's spec in
:mod:`rsgeo.tasks` puts its head on a :mod:`rsgeo.models.networks` encoder); ``meta`` says
how to feed it and read its output (normalisation on the stored scale, training GSD in metres,
recommended tile/overlap in pixels, output units). ``rsgeo export`` copies ``meta`` into
the ONNX model's metadata, so either file is a self-describing model bundle.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rsgeo.errors import InputError
from rsgeo.io.atomic import atomic_path
from rsgeo.models.backbones import build_encoder
from rsgeo.models.networks import FeatureEncoder
from rsgeo.tasks import get_task
from rsgeo.tasks.files import resolve_model_path
from rsgeo.train.checkpoint import loadable, safe_load

FORMAT = "rsgeo-task"


def build_task_model(config: dict, encoders: list[nn.Module] | None = None) -> nn.Module:
    """Build the network described by ``config`` (optionally around given encoders).

    Config keys: ``task`` (a registered task, :mod:`rsgeo.tasks`), ``backbone``,
    ``in_chans``, ``img_size``, ``head`` (one of the task's heads; default its first),
    ``head_features``, ``num_classes`` (segmentation/classification), ``split`` (bands of
    the first encoder when two encoders are used: RGB+DSM), ``aux_classes`` (height:
    land-cover classes of the auxiliary head, None for none), ``feature_norm`` (ViT feature
    levels through the encoder's final LayerNorm; off when absent, as in checkpoints from
    before it). The task's spec builds the
    head around the :class:`~rsgeo.models.networks.FeatureEncoder`.
    """
    spec = get_task(config.get("task", "height"))
    head = config.get("head")
    if head is not None and head not in spec.legacy_heads:
        spec.check_head(head)
    in_chans, size = int(config.get("in_chans", 3)), int(config.get("img_size", 224))
    split = config.get("split")
    if encoders is None:
        chans = [in_chans] if not split else [int(split), in_chans - int(split)]
        encoders = [build_encoder(config["backbone"], c, size) for c in chans]
    norm = bool(config.get("feature_norm"))
    return spec.build(FeatureEncoder(encoders, split, norm), config)


def save_task_model(model: nn.Module, config: dict, meta: dict, path: str | os.PathLike,
                    extra: dict | None = None) -> Path:
    """Write a task checkpoint atomically (see the module docstring)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bundle = {"format": FORMAT, "version": 1, "config": dict(config), "meta": dict(meta),
              "state_dict": state, **(extra or {})}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(loadable(bundle), tmp)
    return Path(path)


def _not_a_task_model(bundle, p: Path) -> InputError:
    """The error for a file that is not a task checkpoint; a training state (what
    ``--resume`` reads, ``RUN/checkpoints/*.pt``) names the run's best.ckpt instead."""
    if isinstance(bundle, dict) and {"model", "optimizer", "step"} <= bundle.keys():
        best = p.parent.parent / "best.ckpt" if p.parent.name == "checkpoints" else None
        use = (f"use {best}" if best is not None and best.is_file()
               else "use the best.ckpt of a `rsgeo finetune` run folder")
        return InputError(f"a training state (what --resume reads), not a task model: {use}", p)
    return InputError("not an rsgeo task checkpoint (from `rsgeo finetune`)", p)


def load_task_model(path: str | os.PathLike) -> tuple[nn.Module, dict, dict]:
    """``(model in eval mode, config, meta)`` from a task checkpoint (or a run folder, see
    :func:`resolve_model_path`); one-line errors."""
    p = resolve_model_path(path)
    bundle = safe_load(p, "rsgeo checkpoint")
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise _not_a_task_model(bundle, p)
    model = build_task_model(bundle["config"])
    model.load_state_dict(bundle["state_dict"])
    return model.eval(), bundle["config"], bundle["meta"]
