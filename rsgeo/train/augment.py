"""Pretraining views of a chip dataset: random crop + flips in the workers, the rest per batch.

Every random choice for sample ``i`` in epoch ``e`` is a hash of ``(seed, e, i)``
(:func:`rsgeo.train.seeds.sample_seed`): the crop, the flips and the ``seed`` handed to
the method for its masks. Samples are thus identical whichever DataLoader worker, DDP rank
or resumed run draws them.

Workers do only what costs next to nothing: cut the crop out of the memory-mapped chip
and flip it by numpy slicing (one copy), in the stored dtypes, a whole batch at a time
into a reused shared-memory buffer (:meth:`PretrainView.get_batch`,
:mod:`rsgeo.data.pool`). :meth:`PretrainView.on_device`
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
from torch.utils.data import Dataset, default_collate

from rsgeo.data.batch import IMAGES, SourceNorm, heights
from rsgeo.data.dataset import cut, window_view
from rsgeo.data.pool import BatchPool
from rsgeo.train.seeds import draw, draws, sample_seed, sample_seeds


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
        self.batched = self.fast and all(hasattr(base, a) for a in (
            "read_into", "sample_shape", "stored_dtype", "chip_shape"))
        self.pool = BatchPool() if self.batched else None

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self, i: int, H: int, W: int) -> tuple[int, tuple[int, int, int, int], bool, bool]:
        """Sample ``i``'s ``(seed, window (row, col, h, w), hflip, vflip)`` for an ``H x W``
        chip: a function of ``(seed, epoch, i)`` only."""
        s = sample_seed(self.seed, self.epoch, i)
        c = self.crop or min(H, W)
        p = self.hog_patch
        oy = draw(s, 0, (H - c) // p + 1) * p
        ox = draw(s, 1, (W - c) // p + 1) * p
        return s, (oy, ox, c, c), self.flips and draw(s, 2, 2) == 1, \
            self.flips and draw(s, 3, 2) == 1

    def _hog_window(self, H: int, W: int, win) -> tuple[int, int, int, int] | None:
        """The crop on the HOG patch grid, None when the chip or crop is off that grid."""
        p, (oy, ox, c, _) = self.hog_patch, win
        if H % p or W % p or c % p:
            return None
        return oy // p, ox // p, c // p, c // p

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        sample = None
        if self.fast:
            H, W = self.base.chip_shape(i)
        else:
            sample = self.base[i]
            H, W = sample[self.modalities[0]].shape[-2:]
        s, win, hflip, vflip = self._plan(i, H, W)
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
        hwin = self._hog_window(H, W, win)
        if hog is not None and hwin is not None:
            grid = (hog.numpy() if isinstance(hog, torch.Tensor) else np.asarray(hog))
            g = cut(grid.reshape(H // self.hog_patch, W // self.hog_patch), hwin, hflip, vflip)
            out["hog"] = torch.from_numpy(g.reshape(-1).astype(np.float32, copy=False))
        out["seed"] = s
        return out

    def get_batch(self, indices) -> dict:
        """The collated batch of samples ``indices``: equal to
        ``default_collate([self[i] for i in indices])``, but built in place.

        Over a :class:`~rsgeo.data.dataset.ChipDataset` the batch is one buffer of
        :attr:`pool` (:mod:`rsgeo.data.pool`: reused, in shared memory inside a DataLoader
        worker) and every crop is copied straight from the memory-mapped shard into its
        row, flipped on the way: one copy of the pixels, no per-sample tensors, no
        collation, no fresh memory. The engine's DataLoader asks for whole batches this
        way (one call per batch in a worker).
        """
        plan = self._batch_plan(indices) if self.batched else None
        if plan is None:
            return default_collate([self[i] for i in indices])
        idx, seeds, H, W, oy, ox, hf, vf, c = plan
        B, base, p = len(idx), self.base, self.hog_patch
        g = c // p
        with_hog = self.with_hog and not (H % p).any() and not (W % p).any() and c % p == 0
        arrays = {m: ((B, *base.sample_shape(m, c)), base.stored_dtype(m))
                  for m in self.modalities}
        if with_hog:
            arrays["hog"] = ((B, g * g), np.float32)
        arrays.update(source_id=((B,), np.int64), seed=((B,), np.int64))
        out = self.pool.batch(arrays)
        rows = {m: out[m].numpy() for m in self.modalities}
        hog = out["hog"].numpy().reshape(B, g, g) if with_hog else None
        for k, i in enumerate(idx.tolist()):
            win, h, v = (int(oy[k]), int(ox[k]), c, c), bool(hf[k]), bool(vf[k])
            for m in self.modalities:
                base.read_into(rows[m][k], i, m, win, h, v)
            if with_hog:
                grid = base.read(i, "hog").reshape(int(H[k]) // p, int(W[k]) // p)
                hog[k] = window_view(grid, (win[0] // p, win[1] // p, g, g), h, v)
        out["source_id"].numpy()[:] = base.source_ids[idx]
        out["seed"].numpy()[:] = seeds
        return out

    def _batch_plan(self, indices):
        """:meth:`_plan` for a whole batch at once (numpy, the same numbers): ``(indices,
        seeds, H, W, row, col, hflip, vflip, crop)``, arrays of ``[B]``; None when the
        chips do not share one crop size that fits them all (the per-sample path then
        behaves as it always did)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        sids = self.base.source_ids[idx]
        first = dict(zip(*np.unique(sids, return_index=True)))
        shape = {s: self.base.chip_shape(int(idx[k])) for s, k in first.items()}
        H = np.array([shape[s][0] for s in sids], np.int64)
        W = np.array([shape[s][1] for s in sids], np.int64)
        sizes = {self.crop or int(min(h, w)) for h, w in zip(H, W)}
        if len(idx) == 0 or len(sizes) != 1 or (H < min(sizes)).any() or (W < min(sizes)).any():
            return None
        c, p = sizes.pop(), self.hog_patch
        seeds = sample_seeds(self.seed, self.epoch, idx)
        oy = draws(seeds, 0, (H - c) // p + 1) * p
        ox = draws(seeds, 1, (W - c) // p + 1) * p
        hf = self.flips & (draws(seeds, 2, 2) == 1)
        vf = self.flips & (draws(seeds, 3, 2) == 1)
        return idx, seeds, H, W, oy, ox, hf, vf, c

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
