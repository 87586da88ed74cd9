"""Checkpoints: everything a killed run needs to continue as if it never stopped.

``RUN/checkpoints/last.pt`` holds the model, optimiser, schedule and gradient-scaler
states, the RNG states (python, numpy, torch CPU and CUDA), the step, the epoch, the
number of samples this rank already drew in that epoch, and the resolved config. Written
atomically (temporary name, then rename), so a kill while saving leaves the previous one;
the temporary file a SIGKILL leaves behind is removed when the run is resumed.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from rsgeo.errors import InputError, first_line
from rsgeo.io.atomic import atomic_path


def rng_state() -> dict:
    """RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss)),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos,
                         has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loadable(obj):
    """``obj`` with numpy values and paths made plain, so ``weights_only`` loads accept it.

    Tensors, containers, numbers (NaN included), strings and None pass unchanged.
    """
    if isinstance(obj, dict):
        return {k: loadable(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(loadable(v) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(loadable(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_checkpoint(path: str | os.PathLike, **state) -> Path:
    """Write ``state`` (tensors, state dicts, plain values) to ``path`` atomically."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(loadable(state), tmp)
    return path


def safe_load(path: Path, what: str) -> object:
    """``torch.load`` that never runs code: tensors, containers and plain values only.

    A file whose unpickling would call anything else (a crafted or foreign pickle) is
    refused with a one-line :class:`InputError`, before any of it is executed.
    """
    import pickle

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # no callable asked for: not a pickle (e.g. .onnx)
            raise InputError(f"not a readable {what} (not a torch checkpoint file)", path) \
                from None
        raise InputError(f"refusing to load: not a {what} made of tensors and plain values "
                         "(unpickling it could run code)", path) from None
    except Exception as e:  # truncated zip, not a torch file
        raise InputError(f"unreadable {what}, damaged or truncated? ({first_line(e, 80)})",
                         path) from None


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError("no checkpoint to resume from", path)
    return safe_load(path, "checkpoint")
