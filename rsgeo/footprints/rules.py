"""Which pixels are building: a probability above a threshold, listed class values, or a 0/1 mask.

A rule maps one strip of the input band (``[h, W]``, the file's dtype) and its valid mask to
``(building [h, W] bool, score [h, W] float32)``, where the score is the building
probability (1.0 for class and mask rasters). Values that do not fit the rule (a
"probability" of 3, a mask holding 7) raise :class:`~rsgeo.errors.InputError` naming the
file: they mean the wrong raster or the wrong option, never a silent guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsgeo.errors import InputError
from rsgeo.io.labels import stray_values

TOLERANCE = 1e-3    # probabilities may overshoot [0, 1] by rounding (e.g. after resampling)


@dataclass(frozen=True)
class Rule:
    """``mode``: ``"probability"`` (float band in 0..1, building where >= ``threshold``),
    ``"classes"`` (building where the value is one of ``classes``) or ``"mask"`` (0/1 or
    0/255 band, building where non-zero)."""

    mode: str
    threshold: float = 0.5
    classes: tuple[float, ...] = ()

    def describe(self) -> str:
        if self.mode == "probability":
            return f"probability >= {self.threshold:g}"
        if self.mode == "classes":
            return "class " + ", ".join(f"{c:g}" for c in self.classes)
        return "mask (non-zero)"

    def apply(self, a: np.ndarray, ok: np.ndarray, path) -> tuple[np.ndarray, np.ndarray]:
        """``(building, score)`` of one strip; ``ok`` marks valid (not nodata) pixels."""
        if self.mode == "classes":
            hit = ok & np.isin(a, np.asarray(self.classes, dtype=a.dtype))
            return hit, hit.astype(np.float32)
        v = a[ok]
        if self.mode == "probability":
            if v.size and (v.min() < -TOLERANCE or v.max() > 1 + TOLERANCE):
                raise InputError(f"values from {float(v.min()):g} to {float(v.max()):g} are not "
                                 "building probabilities in 0..1; for a class raster give "
                                 "--class N", path)
            p = a.astype(np.float32, copy=False)
            hit = ok & (p >= self.threshold)
            return hit, np.where(ok, np.clip(p, 0, 1), 0).astype(np.float32, copy=False)
        bad = stray_values(v, (0, 1, 255))
        if bad.size:
            raise InputError(f"holds the value {bad[0].item():g}: not a 0/1 building mask; for a class "
                             "raster give --class N (e.g. --class 8 for rsgeo synth's buildings)",
                             path)
        hit = ok & (a != 0)
        return hit, hit.astype(np.float32)


def rule_for(dtype: str, threshold: float, classes) -> Rule:
    """The rule for a band of ``dtype``: classes when given, a probability for floats, a mask
    otherwise."""
    if not 0 < threshold <= 1:
        raise InputError(f"--threshold must be in (0, 1], got {threshold:g}")
    if classes:
        return Rule("classes", classes=tuple(float(c) for c in classes))
    if np.dtype(dtype).kind == "f":
        return Rule("probability", threshold=float(threshold))
    return Rule("mask")
