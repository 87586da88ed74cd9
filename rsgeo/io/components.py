"""Connected components of a mask streamed strip by strip (4-connectivity), exact.

Pass 1 (:meth:`StripComponents.add`) labels each strip with ``scipy.ndimage.label``,
gives the labels globally unique *provisional* ids, and unions ids that touch across
the border with the previous strip. :meth:`finish` resolves every provisional id to its
root and totals each component's area and last row. Pass 2 relabels the same strips with
:meth:`relabel` (same algorithm, same ids) and maps them to roots, so a component that
spans strips carries one id everywhere -- the result equals labelling the whole raster
at once, with memory bounded by the strip size plus one int per provisional label.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


class StripComponents:
    def __init__(self):
        self.parent = np.zeros(1, np.int64)      # parent[0] = 0 is background
        self.area = np.zeros(1, np.int64)
        self.last_row = np.zeros(1, np.int64)
        self.offsets: list[int] = []
        self._prev_row: np.ndarray | None = None
        self._next = 1

    def _label(self, mask: np.ndarray, offset: int) -> np.ndarray:
        lab, n = ndimage.label(mask, structure=FOUR)
        lab = lab.astype(np.int64)
        lab[lab > 0] += offset - 1
        return lab

    def add(self, mask: np.ndarray, row_off: int) -> None:
        """Label one strip (``[h, W]`` bool) starting at raster row ``row_off`` (in order)."""
        offset = self._next
        self.offsets.append(offset)
        lab = self._label(mask, offset)
        n = int(lab.max() - offset + 1) if lab.max() >= offset else 0
        self._next += n
        grow = self._next - len(self.parent)
        if grow > 0:
            self.parent = np.concatenate([self.parent, np.arange(len(self.parent), self._next)])
            self.area = np.concatenate([self.area, np.zeros(grow, np.int64)])
            self.last_row = np.concatenate([self.last_row, np.zeros(grow, np.int64)])
        if n:
            ids = lab[lab > 0]
            self.area += np.bincount(ids, minlength=len(self.area))[: len(self.area)]
            rows = np.nonzero(lab > 0)[0] + row_off
            np.maximum.at(self.last_row, ids, rows)
        if self._prev_row is not None:
            a, b = self._prev_row, lab[0]
            touch = (a > 0) & (b > 0)
            for x, y in set(zip(a[touch].tolist(), b[touch].tolist())):
                self._union(x, y)
        self._prev_row = lab[-1].copy()

    def _find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return int(root)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def finish(self) -> None:
        """Resolve roots; totals move to the roots (area, last row)."""
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                break
            p = q
        self.parent = p
        self.root_area = np.bincount(p, weights=self.area, minlength=len(p)).astype(np.int64)
        self.root_last_row = np.zeros(len(p), np.int64)
        np.maximum.at(self.root_last_row, p, self.last_row)
        self._strip = 0

    def relabel(self, mask: np.ndarray, min_area: int = 0) -> np.ndarray:
        """Pass 2: root ids (int64, 0 = background) for the next strip, components smaller
        than ``min_area`` pixels removed."""
        lab = self._label(mask, self.offsets[self._strip])
        self._strip += 1
        roots = self.parent[lab]
        if min_area > 1:
            roots[self.root_area[roots] < min_area] = 0
        return roots
