"""Near-duplicate chips: a 64-bit difference hash (dHash) and a Hamming-distance index.

dHash: the RGB chip as grey, resized (area average) to 9 x 8, one bit per horizontal
neighbour comparison. :class:`HashIndex` finds a kept hash within ``distance`` bits by
multi-index hashing: the 64 bits are cut into ``distance + 1`` blocks, and by the
pigeonhole principle two hashes within ``distance`` bits agree exactly on at least one
block, so only hashes sharing a block are compared (no O(n^2) scan).
"""

from __future__ import annotations

import numpy as np


def dhash(rgb: np.ndarray) -> int:
    """64-bit dHash of an RGB chip ``[3, H, W]`` (any dtype) as a Python int."""
    grey = rgb[:3].astype(np.float32).mean(0) if rgb.ndim == 3 else rgb.astype(np.float32)
    H, W = grey.shape
    ys = np.linspace(0, H, 9, dtype=int)
    xs = np.linspace(0, W, 10, dtype=int)
    small = np.add.reduceat(np.add.reduceat(grey, ys[:-1], axis=0), xs[:-1], axis=1)
    small /= np.outer(np.diff(ys), np.diff(xs))
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


class HashIndex:
    """Kept hashes; :meth:`near` tells whether a hash is within ``distance`` bits of one."""

    def __init__(self, distance: int = 4):
        self.distance = distance
        k = distance + 1
        edges = np.linspace(0, 64, k + 1, dtype=int)
        self.blocks = [(int(a), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]
        self.tables: list[dict[int, list[int]]] = [dict() for _ in self.blocks]
        self.hashes: list[int] = []

    def _keys(self, h: int):
        return [(h >> shift) & ((1 << width) - 1) for shift, width in self.blocks]

    def near(self, h: int) -> bool:
        if self.distance <= 0:
            return False
        for table, key in zip(self.tables, self._keys(h)):
            for j in table.get(key, ()):
                if bin(h ^ self.hashes[j]).count("1") <= self.distance:
                    return True
        return False

    def add(self, h: int) -> None:
        j = len(self.hashes)
        self.hashes.append(h)
        for table, key in zip(self.tables, self._keys(h)):
            table.setdefault(key, []).append(j)
