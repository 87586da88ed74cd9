"""Exact per-group order statistics of float32 values (medians, percentiles) in one sort.

Groups are non-negative integer ids (buildings, damaged regions). One sort of an int64 key
``id << 32 | sortable(value)`` orders every group's values at once, several times faster
than a two-key lexsort and without a Python loop per group.
"""

from __future__ import annotations

import numpy as np


def _sortable(values: np.ndarray) -> np.ndarray:
    """float32 -> uint32 whose unsigned order is the float order (finite values)."""
    u = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(u & 0x80000000, ~u, u | 0x80000000).astype(np.uint32)


def sorted_groups(ids: np.ndarray, values: np.ndarray):
    """``(unique ids, start, count, values sorted by id then value)``."""
    key = (ids.astype(np.int64) << 32) | _sortable(values).astype(np.int64)
    key.sort()
    ids_s = key >> 32
    u = (key & 0xFFFFFFFF).astype(np.uint32)
    v_s = np.where(u & 0x80000000, u & 0x7FFFFFFF, ~u).astype(np.uint32).view(np.float32)
    uniq, start, counts = np.unique(ids_s, return_index=True, return_counts=True)
    return uniq, start, counts, v_s


def grouped_median(ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median of float32 ``values`` per non-negative id: (unique ids, float64 medians);
    exact for float32 values."""
    uniq, start, counts, v_s = sorted_groups(ids, values)
    lo, hi = start + (counts - 1) // 2, start + counts // 2
    return uniq, (v_s[lo].astype(np.float64) + v_s[hi]) / 2


def grouped_percentile(ids: np.ndarray, values: np.ndarray, q: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Percentile ``q`` (0-100) of float32 ``values`` per non-negative id: (unique ids,
    float64 percentiles), linear interpolation between the two nearest ranks as
    ``numpy.percentile`` does by default."""
    uniq, start, counts, v_s = sorted_groups(ids, values)
    pos = (counts - 1) * (q / 100.0)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    a = v_s[start + lo].astype(np.float64)
    b = v_s[start + np.minimum(lo + 1, counts - 1)].astype(np.float64)
    return uniq, a + (b - a) * frac


class ObjectSweep:
    """Pixel values of objects (buildings, regions) held while a strip-wise sweep crosses
    them, summarised once the sweep has passed each object's last row.

    Args:
        last_row: ``[max_id + 1]`` last raster row of each object id.
        columns: ``{name: dtype}`` of the values kept per pixel.
        stats: ``stats({"id": ids, name: values, ...}) -> {"id": unique ids, column: ...}``,
            called on the pixels of finished objects (every pixel of an object at once).

    Memory is bounded by the pixels of the objects that cross the current strip.
    """

    def __init__(self, last_row: np.ndarray, columns: dict, stats):
        self.last_row, self.stats = last_row, stats
        self.pending = {"id": np.zeros(0, np.int64),
                        **{k: np.zeros(0, t) for k, t in columns.items()}}
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, ids: np.ndarray, strip_end: int, **values: np.ndarray) -> None:
        """Add the valid object pixels of a strip (1-D arrays) ending before raster row
        ``strip_end``."""
        cur = {k: np.concatenate([self.pending[k], v])
               for k, v in (("id", ids), *values.items())}
        done = self.last_row[cur["id"]] < strip_end
        self.pending = {k: v[~done] for k, v in cur.items()}
        if done.any():
            self.parts.append(self.stats({k: v[done] for k, v in cur.items()}))

    def finish(self) -> dict[str, np.ndarray]:
        """The statistics of every object seen, sorted by id."""
        if len(self.pending["id"]) or not self.parts:
            self.parts.append(self.stats(self.pending))
            self.pending = {k: v[:0] for k, v in self.pending.items()}
        out = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        order = np.argsort(out["id"], kind="stable")
        return {k: v[order] for k, v in out.items()}


def median_inplace(values: np.ndarray) -> float:
    """``np.median(values)`` (float32 or float64, 1-D, not empty) by one partition, 3-5x faster.

    ``np.median`` partitions around both middle ranks and the last element (its NaN check);
    here one ``partition`` puts the upper middle value in place and the lower one is the
    largest of the half before it. The array's order is changed (its values are not). NaN
    anywhere gives NaN, as ``np.median``; an even count averages the two middle values in
    the array's dtype, as ``np.median``.
    """
    n = values.size
    if np.isnan(values).any():
        return float("nan")
    half = n // 2
    values.partition(half)
    upper = values[half]
    if n % 2:
        return float(upper)
    return float(np.mean(np.array([values[:half].max(), upper], values.dtype)))
