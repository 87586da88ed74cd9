"""``--preview PNG``: a mosaic of random kept chips, RGB above its nDSM (or DSM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rsgeo.data.folder import kept_rows
from rsgeo.io.atomic import atomic_path
from rsgeo.viz import colorize_heights


def _chip(root: Path, source: str, modality: str, row: int) -> np.ndarray:
    """One stored chip (``[C, H, W]``, its stored dtype) from its memory-mapped shard."""
    return np.array(np.load(root / "shards" / source / f"{modality}.npy", mmap_mode="r")[row])


def save_mosaic(root: Path, path: Path, n: int = 8, seed: int = 0, overwrite: bool = False) -> Path:
    from PIL import Image

    mods = json.loads((root / "dataset.json").read_text())["modalities"]
    height = "ndsm" if "ndsm" in mods else ("dsm" if "dsm" in mods else None)
    rows, _ = kept_rows(root, ("rgb",) + ((height,) if height else ()))
    chips = list(zip(rows["source"].astype(str), rows["index"].astype(int)))
    pick = np.random.default_rng(seed).permutation(len(chips))[:n]
    cols = []
    for i in pick:
        source, row = chips[int(i)]
        rgb = _chip(root, source, "rgb", row).astype(np.uint8).transpose(1, 2, 0)
        if height:
            h = _chip(root, source, height, row)[0].astype(np.float32)
            rgb = np.concatenate([rgb, colorize_heights(h - np.nanmin(h) if height == "dsm" else h)], 0)
        cols.append(rgb)
    sheet = np.concatenate(cols, 1) if cols else np.zeros((8, 8, 3), np.uint8)
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path
