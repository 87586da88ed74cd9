"""``ChipDataset``: a torch Dataset over a chip folder written by ``rsgeo prepare``.

Shards are opened with ``np.load(mmap_mode="r")`` lazily in each process (DataLoader
workers and DDP ranks each map the files; nothing is copied up front). See
docs/chip-dataset.md for the format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rsgeo.errors import InputError

HEIGHTS = ("dsm", "ndsm")
IMAGES = ("rgb", "post_rgb")


class ChipDataset(Dataset):
    """Kept chips of one split as dicts of tensors.

    Args:
        root: dataset folder; split: ``train``/``val``/``test`` (None: all kept chips).
        modalities: which to return; ``hog`` may be listed too.
        normalize: images as ``(x - mean) / std`` with their *source's* statistics
            (per-source normalisation, as HiRes-FusedMIM); heights stay in metres.

    A sample: ``rgb``/``post_rgb`` float32 ``[3, H, W]``, ``dsm``/``ndsm`` float32
    ``[1, H, W]`` (NaN = nodata), ``labels``/``change``/``buildings`` int64 ``[H, W]``
    (255 = ignore), ``hog`` float32 ``[L]``, plus ``source`` and ``chip_id`` strings.
    """

    def __init__(self, root: str | os.PathLike, split: str | None = "train",
                 modalities=("rgb",), normalize: bool = True):
        import pandas as pd

        self.root = Path(root)
        info_path = self.root / "dataset.json"
        if not info_path.is_file():
            raise InputError("not a chip dataset (no dataset.json)", self.root)
        self.info = json.loads(info_path.read_text())
        self.modalities = tuple(modalities)
        have = set(self.info.get("modalities", [])) | {"hog"}
        missing = [m for m in self.modalities if m not in have]
        if missing:
            raise InputError(f"has no {', '.join(missing)} chips", self.root)
        m = pd.read_parquet(self.root / "manifest.parquet")
        m = m[m["status"] == "kept"]
        if split is not None:
            m = m[m["split"] == split]
        self.rows = m[["source", "index", "chip_id"]].reset_index(drop=True)
        self.stats = json.loads((self.root / "stats.json").read_text()).get("sources", {})
        self.normalize = normalize
        self.num_classes = (max(int(k) for k in self.info["classes"]) + 1
                            if self.info.get("classes") else None)
        self._maps: dict[tuple[str, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def _shard(self, source: str, modality: str) -> np.ndarray:
        key = (source, modality)
        if key not in self._maps:
            self._maps[key] = np.load(self.root / "shards" / source / f"{modality}.npy",
                                      mmap_mode="r")
        return self._maps[key]

    def __getitem__(self, i: int) -> dict:
        row = self.rows.iloc[int(i)]
        src, idx = row["source"], int(row["index"])
        out = {"source": src, "chip_id": row["chip_id"]}
        for mod in self.modalities:
            a = np.array(self._shard(src, mod)[idx])
            if mod in IMAGES:
                t = torch.from_numpy(a.astype(np.float32))
                st = self.stats.get(src, {}).get(mod)
                if self.normalize and st:
                    mean = torch.tensor(st["mean"], dtype=torch.float32)[:, None, None]
                    std = torch.tensor(st["std"], dtype=torch.float32)[:, None, None]
                    t = (t - mean) / std.clamp_min(1e-6)
                out[mod] = t
            elif mod in HEIGHTS or mod == "hog":
                out[mod] = torch.from_numpy(a.astype(np.float32))
            else:
                out[mod] = torch.from_numpy(a.reshape(a.shape[-2:]).astype(np.int64))
        return out
