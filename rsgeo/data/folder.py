"""A chip dataset folder, as ``rsgeo prepare`` writes it: the check that a path is one.

Torch-free, so commands can refuse a wrong path before they import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from rsgeo.errors import InputError


def require_chip_dataset(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it holds a chip dataset (its ``dataset.json``), else InputError."""
    root = Path(path)
    if not (root / "dataset.json").is_file():
        raise InputError("not a chip dataset (no dataset.json; make one with rsgeo prepare)", root)
    return root
