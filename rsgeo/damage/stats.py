"""Exact per-object statistics (buildings or damaged regions) over a strip-wise sweep.

Pixels of an object are held until the sweep passes the object's last row, then the
object's statistics are computed at once with sort-based grouped medians (no Python loop
per object). Memory is bounded by the pixels of the objects that cross the current strip.
"""

from __future__ import annotations

import numpy as np

from rsgeo.errors import InputError
from rsgeo.metrics.grouped import ObjectSweep, grouped_median

GRADE_NAMES = ("none", "minor", "major", "destroyed")


def parse_grades(text: str) -> dict[str, tuple[float, bool]]:
    """``"minor:10%,major:35%,destroyed:70%"`` or metres ``"minor:1,major:3,destroyed:6"``.

    Returns ``{grade: (threshold, relative)}``; relative thresholds are fractions of the
    pre-event height. Thresholds must increase from minor to destroyed.
    """
    out: dict[str, tuple[float, bool]] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, val = part.partition(":")
        name = name.strip().lower()
        if name not in GRADE_NAMES[1:] or not val:
            raise InputError(f"--grades: {part!r} is not minor|major|destroyed:VALUE[%]")
        rel = val.strip().endswith("%")
        try:
            v = float(val.strip().rstrip("%"))
        except ValueError:
            raise InputError(f"--grades: {val!r} is not a number") from None
        if not (v > 0 and np.isfinite(v)):
            raise InputError(f"--grades: {name} threshold must be a positive number, got {val}")
        out[name] = (v / 100 if rel else v, rel)
    missing = [g for g in GRADE_NAMES[1:] if g not in out]
    if missing:
        raise InputError(f"--grades: missing {', '.join(missing)}")
    kinds = {r for _, r in out.values()}
    if len(kinds) == 1:
        vals = [out[g][0] for g in GRADE_NAMES[1:]]
        if vals != sorted(vals):
            raise InputError("--grades: thresholds must increase from minor to destroyed")
    return out


def grade_index(loss: np.ndarray, pre: np.ndarray, grades: dict) -> np.ndarray:
    """0 none .. 3 destroyed for each value of ``loss`` (m) with pre-event height ``pre`` (m)."""
    rel = np.divide(loss, pre, out=np.zeros(np.shape(loss), np.result_type(loss, np.float32)),
                    where=pre > 0)
    idx = np.zeros(np.shape(loss), np.uint8)
    for k, name in enumerate(GRADE_NAMES[1:], start=1):
        thr, relative = grades[name]
        idx[(rel if relative else loss) >= thr] = k
    return idx


class ObjectStats:
    """Accumulate pixels per object id and emit statistics when objects are complete.

    Args:
        last_row: ``[max_id + 1]`` last raster row of each object (objects finish after it).
        pixel_area: m² per pixel; threshold: damage threshold (m); grades: see parse_grades.
    """

    def __init__(self, last_row: np.ndarray, pixel_area: float, threshold: float, grades: dict):
        self.pixel_area, self.threshold, self.grades = pixel_area, threshold, grades
        self._sweep = ObjectSweep(last_row, {"pre": np.float32, "post": np.float32},
                                  self._stats)

    def add(self, ids: np.ndarray, pre: np.ndarray, post: np.ndarray, strip_end: int) -> None:
        """Add valid object pixels of a strip (1-D arrays) ending before raster row ``strip_end``."""
        self._sweep.add(ids, strip_end, pre=pre, post=post)

    def finish(self) -> dict[str, np.ndarray]:
        """Statistics of every object seen, sorted by id (columns as in :meth:`_stats`)."""
        return self._sweep.finish()

    def _stats(self, px: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = px["id"]
        uniq, pre_med = grouped_median(ids, px["pre"])
        _, post_med = grouped_median(ids, px["post"])
        pre, post = px["pre"].astype(np.float64), px["post"].astype(np.float64)
        loss = pre - post
        inv = np.searchsorted(uniq, ids)
        n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)

        def total(w):
            return np.bincount(inv, weights=w, minlength=len(uniq)).astype(np.float64)

        lost, pre_sum = total(np.maximum(loss, 0)), total(pre)
        damaged = total((loss > self.threshold).astype(np.float64))
        mean_loss = np.divide(lost, n, out=np.zeros_like(lost), where=n > 0)
        mean_pre = np.divide(pre_sum, n, out=np.zeros_like(pre_sum), where=n > 0)
        return {
            "id": uniq, "pixels": n.astype(np.int64), "area_m2": n * self.pixel_area,
            "pre_median_m": pre_med, "post_median_m": post_med,
            "height_loss_m": pre_med - post_med, "mean_loss_m": mean_loss,
            "lost_volume_m3": lost * self.pixel_area,
            "damaged_fraction": np.divide(damaged, n, out=np.zeros_like(damaged), where=n > 0),
            "grade_index": grade_index(mean_loss, mean_pre, self.grades),
        }
