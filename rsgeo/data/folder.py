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


def dataset_classes(folders, modality: str | None) -> tuple[int | None, int | None]:
    """``(declared, found)`` over chip folders: the most classes their ``dataset.json``
    lists (:func:`declared_classes`; None when none lists any), and, over the folders that
    list none, the largest id in their ``modality`` chips + 1 (:func:`label_classes`; None
    when ``modality`` is None or no chip holds an id)."""
    declared, found = [], []
    for folder in folders:
        n = declared_classes(folder)
        if n:
            declared.append(n)
        elif modality is not None:
            found.append(label_classes(folder, modality) or 0)
    return max(declared, default=None), (max(found, default=0) or None)


#: elements of a label shard scanned per step by :func:`label_classes` (16 MB of uint8)
SCAN_ELEMENTS = 1 << 24


def label_classes(path: str | os.PathLike, modality: str = "labels") -> int | None:
    """The largest class id in a chip dataset's ``modality`` chips + 1 (255, ignore, aside),
    None when it has none. A dataset whose ``dataset.json`` lists no classes says nothing
    else about them; ``prepare`` records each source's ids in ``stats.json``
    (``{"labels": {"ids": [...], "pixels": [...]}}``), and a source without that record
    (written before it, or by other code) has its uint8 shard scanned (memory-mapped, in
    16 MB steps: about 0.1 s per 100 MB)."""
    root = require_chip_dataset(path)
    try:
        stats = json.loads((root / "stats.json").read_text()).get("sources") or {}
    except (OSError, ValueError, AttributeError):
        stats = {}
    top = -1
    for shard in sorted((root / "shards").glob(f"*/{modality}.npy")):
        rec = (stats.get(shard.parent.name) or {}).get(modality) or {}
        if isinstance(rec.get("ids"), list):
            top = max([top, *(int(i) for i in rec["ids"])])
        else:
            top = max(top, _scan_top_id(shard))
    return top + 1 if top >= 0 else None


def _scan_top_id(shard: Path) -> int:
    """The largest value below 255 in a uint8 shard (-1: none; other dtypes: -1)."""
    import numpy as np  # lazy: kept off the module's import (the CLI's preflight imports it)

    try:
        a = np.load(shard, mmap_mode="r")
    except (OSError, ValueError):
        return -1
    if a.dtype != np.uint8:
        return -1
    flat, top = a.reshape(-1), -1
    for i in range(0, flat.size, SCAN_ELEMENTS):
        # 255 + 1 wraps to 0, so the largest id + 1 is the top of the shifted values
        top = max(top, int((flat[i:i + SCAN_ELEMENTS] + np.uint8(1)).max(initial=0)) - 1)
    return top


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
