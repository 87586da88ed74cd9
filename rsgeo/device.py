"""Where models run: one rule for ``--device auto|cpu|cuda`` (training and inference)."""

from __future__ import annotations

import os

from rsgeo.errors import InputError


def resolve_device(name: str = "auto", *, local_rank: bool = True):
    """The ``torch.device`` for ``name``.

    ``auto`` -> CUDA when torch sees a device, else CPU; ``cuda`` without CUDA is an
    :class:`~rsgeo.errors.InputError`. With ``local_rank``, ``cuda`` becomes
    ``cuda:LOCAL_RANK`` (one GPU per torchrun process); without, plain ``cuda`` (the
    current device).
    """
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    if name == "cuda" and local_rank:
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return torch.device(name)
