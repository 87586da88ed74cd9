"""Per-band mean and standard deviation over valid pixels, mergeable across workers.

Each :class:`BandStats` holds (count, mean, M2) per band; two are merged with Chan et al.'s
parallel-variance formula, so chips processed in any order by any number of workers give
the statistics of the concatenated valid pixels.
"""

from __future__ import annotations

import numpy as np


class BandStats:
    def __init__(self, bands: int):
        self.n = np.zeros(bands, np.float64)
        self.mean = np.zeros(bands, np.float64)
        self.m2 = np.zeros(bands, np.float64)

    def add(self, data: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add ``data`` ``[bands, H, W]`` over pixels where ``valid`` ``[H, W]`` (and finite)."""
        for b in range(data.shape[0]):
            v = data[b].astype(np.float64)
            ok = np.isfinite(v) if valid is None else (valid & np.isfinite(v))
            x = v[ok]
            if x.size:
                other = BandStats(1)
                other.n[0], other.mean[0] = x.size, x.mean()
                other.m2[0] = ((x - other.mean[0]) ** 2).sum()
                self._merge_band(b, other.n[0], other.mean[0], other.m2[0])

    def _merge_band(self, b, n, mean, m2) -> None:
        tot = self.n[b] + n
        if tot == 0:
            return
        delta = mean - self.mean[b]
        self.mean[b] += delta * n / tot
        self.m2[b] += m2 + delta ** 2 * self.n[b] * n / tot
        self.n[b] = tot

    def merge(self, other: "BandStats") -> "BandStats":
        for b in range(len(self.n)):
            self._merge_band(b, other.n[b], other.mean[b], other.m2[b])
        return self

    def result(self) -> dict:
        """``{"mean": [...], "std": [...], "count": N}`` (population std)."""
        std = np.sqrt(np.divide(self.m2, self.n, out=np.zeros_like(self.m2), where=self.n > 0))
        return {"mean": self.mean.tolist(), "std": std.tolist(), "count": int(self.n.min())}


class LabelCounts:
    """Pixels per class id of label chips (uint8, 255 = ignore, left out), for
    ``stats.json``: ``finetune`` reads the ids present to check ``--num-classes`` when the
    dataset lists no classes."""

    def __init__(self):
        self.counts = np.zeros(256, np.int64)

    def add(self, data: np.ndarray) -> None:
        self.counts += np.bincount(np.asarray(data, np.uint8).ravel(), minlength=256)

    def result(self) -> dict:
        """``{"ids": [...], "pixels": [...]}``: the ids present (255 aside), ascending."""
        ids = np.flatnonzero(self.counts[:255])
        return {"ids": ids.tolist(), "pixels": self.counts[ids].tolist()}
