"""A chip dataset folder, as ``rsgeo prepare`` writes it: the check that a path is one, and
its manifest's kept chips.

Torch-free, so commands can refuse a wrong path before they import torch, and ``prepare``'s
preview reads chips without it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rsgeo.errors import InputError


def require_chip_dataset(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it holds a chip dataset (its ``dataset.json``), else InputError."""
    root = Path(path)
    if not (root / "dataset.json").is_file():
        raise InputError("not a chip dataset (no dataset.json; make one with rsgeo prepare)", root)
    return root


def declared_classes(path: str | os.PathLike) -> int | None:
    """The classes a chip dataset declares: its largest class id in ``dataset.json`` + 1,
    None when it lists none. ``prepare`` refuses labels outside the class list, so no
    label chip holds a larger id (255, ignore, aside)."""
    root = require_chip_dataset(path)
    try:
        classes = json.loads((root / "dataset.json").read_text()).get("classes") or {}
        return max(int(k) for k in classes) + 1 if classes else None
    except (ValueError, TypeError, AttributeError):
        raise InputError("dataset.json is damaged (not JSON, or its classes are not a "
                         "table of class id: name)", root) from None


def kept_rows(root: Path, modalities, split: str | None = None,
              columns=("source", "index", "status")):
    """``(rows, lacking)``: the manifest's kept chips (of ``split``; None: every split) whose
    source holds a shard of every one of ``modalities``, in manifest order, and the sources
    left out for lacking one."""
    import pandas as pd  # lazy: pandas is a second's import, needed by few commands

    m = pd.read_parquet(Path(root) / "manifest.parquet",
                        columns=list(dict.fromkeys([*columns, "status", "split"])))
    m = m[m["status"] == "kept"]
    if split is not None:
        m = m[m["split"] == split]
    names = m["source"].astype(str)
    lacking = sorted(s for s in set(names) if not all(
        (Path(root) / "shards" / s / f"{x}.npy").is_file() for x in modalities))
    return m[~names.isin(lacking)], lacking
