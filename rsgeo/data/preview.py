"""``--preview PNG``: a mosaic of random kept chips, RGB above its nDSM (or DSM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rsgeo.data.dataset import ChipDataset
from rsgeo.io.atomic import atomic_path
from rsgeo.viz import colorize_heights


def save_mosaic(root: Path, path: Path, n: int = 8, seed: int = 0, overwrite: bool = False) -> Path:
    from PIL import Image

    mods = json.loads((root / "dataset.json").read_text())["modalities"]
    height = "ndsm" if "ndsm" in mods else ("dsm" if "dsm" in mods else None)
    ds = ChipDataset(root, split=None, modalities=("rgb",) + ((height,) if height else ()),
                     normalize=False)
    pick = np.random.default_rng(seed).permutation(len(ds))[:n]
    cols = []
    for i in pick:
        s = ds[int(i)]
        rgb = s["rgb"].numpy().astype(np.uint8).transpose(1, 2, 0)
        if height:
            h = s[height].numpy()[0]
            rgb = np.concatenate([rgb, colorize_heights(h - np.nanmin(h) if height == "dsm" else h)], 0)
        cols.append(rgb)
    sheet = np.concatenate(cols, 1) if cols else np.zeros((8, 8, 3), np.uint8)
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path
