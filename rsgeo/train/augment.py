"""Pretraining views of a chip dataset: random crop + flips, per-sample seeds, valid masks.

Every random choice for sample ``i`` in epoch ``e`` comes from ``np.random.default_rng(
[seed, e, i])``: the crop, the flips and the ``seed`` handed to the method for its masks.
Samples are thus identical whichever DataLoader worker, DDP rank or resumed run draws them.

Crops start on the HOG patch grid (16 px), so the dataset's stored per-patch HOG scores
(``hog [L]``, row-major) are cropped and flipped with the image and stay exact.
Height modalities (1 band) get ``<modality>_valid [1, H, W]`` (0 where NaN = nodata) and
their NaNs set to 0 (the normalised mean).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class PretrainView(Dataset):
    """Wraps a dataset of dict samples (``ChipDataset`` or any with the same keys)."""

    def __init__(self, base: Dataset, modalities: tuple[str, ...], crop: int | None = None,
                 seed: int = 0, hog_patch: int = 16, flips: bool = True):
        self.base, self.modalities, self.crop = base, tuple(modalities), crop
        self.seed, self.hog_patch, self.flips, self.epoch = seed, hog_patch, flips, 0

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        sample = self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        ref = torch.as_tensor(sample[self.modalities[0]])
        H, W = ref.shape[-2:]
        c = self.crop or min(H, W)
        p = self.hog_patch
        oy = int(rng.integers(0, (H - c) // p + 1)) * p
        ox = int(rng.integers(0, (W - c) // p + 1)) * p
        hflip, vflip = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.flips else (False, False)

        def view(t: torch.Tensor) -> torch.Tensor:
            t = t[..., oy:oy + c, ox:ox + c]
            if hflip:
                t = t.flip(-1)
            if vflip:
                t = t.flip(-2)
            return t.contiguous()

        out = {}
        for m in self.modalities:
            t = view(torch.as_tensor(sample[m]).float())
            if t.shape[0] == 1:
                valid = torch.isfinite(t)
                out[f"{m}_valid"] = valid.float()
                t = torch.where(valid, t, torch.zeros_like(t))
            out[m] = t
        hog = sample.get("hog")
        if hog is not None and H % p == 0 and W % p == 0 and c % p == 0:
            grid = torch.as_tensor(hog).float().view(1, H // p, W // p)
            g = grid[..., oy // p:(oy + c) // p, ox // p:(ox + c) // p]
            g = g.flip(-1) if hflip else g
            g = g.flip(-2) if vflip else g
            out["hog"] = g.reshape(-1).contiguous()
        out["seed"] = torch.tensor(int(rng.integers(0, 2**62)), dtype=torch.int64)
        return out
