"""Pretraining views of a chip dataset: random crop + flips in the workers, the rest per batch.

Every random choice for sample ``i`` in epoch ``e`` is a hash of ``(seed, e, i)``
(:func:`rsgeo.train.seeds.sample_seed`): the crop, the flips and the ``seed`` handed to
the method for its masks. Samples are thus identical whichever DataLoader worker, DDP rank
or resumed run draws them.

Workers do only what costs next to nothing: cut the crop out of the memory-mapped chip
and flip it by numpy slicing (one copy), in the stored dtypes. :meth:`PretrainView.on_device`
then turns the batch into model inputs on the training device (the engine calls it after
the host-to-device copy): images float32, normalised with their source's statistics;
height modalities (1 band) float32 metres with NaN (nodata) set to 0 and
``<modality>_valid [B, 1, H, W]`` (0 where NaN).

Crops start on the HOG patch grid (16 px), so the dataset's stored per-patch HOG scores
(``hog [L]``, row-major) are cropped and flipped with the image and stay exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from rsgeo.data.batch import IMAGES, SourceNorm, heights
from rsgeo.data.dataset import cut
from rsgeo.train.seeds import draw, sample_seed


class PretrainView(Dataset):
    """Wraps a dataset of dict samples (``ChipDataset`` or any with the same keys).

    A sample: each modality cropped to ``crop`` px and flipped, in its stored dtype
    (``rgb`` uint8 ``[3, c, c]``, heights float ``[1, c, c]`` with NaN), ``hog`` float32
    ``[(c/16)^2]`` when the base has it, ``seed`` (int, 62-bit) and ``source_id`` (int, -1
    when the base has no sources). After collation and :meth:`on_device`: see the module
    docstring.
    """

    def __init__(self, base: Dataset, modalities: tuple[str, ...], crop: int | None = None,
                 seed: int = 0, hog_patch: int = 16, flips: bool = True):
        self.base, self.modalities, self.crop = base, tuple(modalities), crop
        self.seed, self.hog_patch, self.flips, self.epoch = seed, hog_patch, flips, 0
        self.fast = hasattr(base, "read") and hasattr(base, "source_ids")
        self.with_hog = self.fast and "hog" in getattr(base, "modalities", ())
        self.norm = base.source_norm() if hasattr(base, "source_norm") else SourceNorm({})

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        s = sample_seed(self.seed, self.epoch, i)
        sample = None
        if self.fast:
            H, W = self.base.chip_shape(i)
        else:
            sample = self.base[i]
            H, W = sample[self.modalities[0]].shape[-2:]
        c = self.crop or min(H, W)
        p = self.hog_patch
        oy = draw(s, 0, (H - c) // p + 1) * p
        ox = draw(s, 1, (W - c) // p + 1) * p
        hflip = self.flips and draw(s, 2, 2) == 1
        vflip = self.flips and draw(s, 3, 2) == 1
        win = (oy, ox, c, c)
        out = {}
        if self.fast:
            for m in self.modalities:
                out[m] = torch.from_numpy(self.base.read(i, m, win, hflip, vflip))
            hog = self.base.read(i, "hog") if self.with_hog else None
            out["source_id"] = int(self.base.source_ids[i])
        else:
            for m in self.modalities:
                out[m] = torch.from_numpy(cut(sample[m], win, hflip, vflip))
            hog = sample.get("hog")
            out["source_id"] = int(sample.get("source_id", -1))
        if hog is not None and H % p == 0 and W % p == 0 and c % p == 0:
            grid = (hog.numpy() if isinstance(hog, torch.Tensor) else np.asarray(hog))
            grid = grid.reshape(H // p, W // p)
            g = cut(grid, (oy // p, ox // p, c // p, c // p), hflip, vflip)
            out["hog"] = torch.from_numpy(g.reshape(-1).astype(np.float32, copy=False))
        out["seed"] = s
        return out

    def on_device(self, batch: dict) -> dict:
        """The collated batch (on the training device) -> model inputs (see module doc)."""
        sid = batch.get("source_id")
        for m in self.modalities:
            x = batch[m]
            if m in IMAGES:
                batch[m] = self.norm(x, m, sid)
            elif x.shape[1] == 1:
                batch[m], batch[f"{m}_valid"] = heights(x)
            else:
                batch[m] = x.float()
        if "hog" in batch:
            batch["hog"] = batch["hog"].float()
        return batch
