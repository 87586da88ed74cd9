"""Checkpoints: everything a killed run needs to continue as if it never stopped.

``RUN/checkpoints/last.pt`` holds the model, optimiser, schedule and gradient-scaler
states, the RNG states (python, numpy, torch CPU and CUDA), the step, the epoch, the
number of samples this rank already drew in that epoch, and the resolved config. Written
atomically (temporary name, then rename), so a kill while saving leaves the previous one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from rsgeo.errors import InputError


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """Write ``state`` (tensors, state dicts, plain values) to ``path`` atomically."""
    from rsgeo.io.atomic import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError("no checkpoint to resume from", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise InputError(f"unreadable checkpoint ({type(e).__name__})", path) from None
