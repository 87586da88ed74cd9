"""How image values become the 0-255 scale models are trained on (one rule for prepare and
prediction, so training and inference agree).

A :class:`Stretch` maps raw values ``x`` to ``x * scale - offset`` (then 0-255; prepare
clips into uint8 chips). Modes (``--scale``):

- ``percentile`` (default): the 2nd and 98th percentiles of the valid values of all bands
  together (one stretch for all bands keeps colours balanced) become 0 and 255. Applied to
  integer images wider than 8 bits and to float images; uint8 (and wider integers holding
  only 0-255) stay as they are. An 11-bit satellite tile whose values sit in 0-600 of 2047
  thus fills the range instead of turning nearly black.
- ``bitdepth``: divide by the bit depth (the smallest ``2**k - 1`` above the maximum, so
  11- or 12-bit data fills 0-255); floats in [0, 1] are multiplied by 255.
- ``none``: values used as they are.
- ``MIN,MAX``: those raw values become 0 and 255.

The percentiles come from a decimated read (at most about 1024 px on the long side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rsgeo.errors import InputError

MODES = ("percentile", "bitdepth", "none")
PERCENTILES = (2.0, 98.0)


@dataclass(frozen=True)
class Stretch:
    """Raw value ``x`` -> ``x * scale - offset`` on the 0-255 scale."""

    mode: str
    scale: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def as_dict(self) -> dict:
        return {"mode": self.mode, "scale": self.scale, "offset": self.offset}

    def apply_uint8(self, a: np.ndarray) -> np.ndarray:
        """``a`` on the 0-255 scale, clipped into uint8 (chips)."""
        if self.identity and a.dtype == np.uint8:
            return a
        x = a.astype(np.float32) * np.float32(self.scale) - np.float32(self.offset)
        np.nan_to_num(x, copy=False, nan=0.0)  # nodata pixels: 0, not a cast warning
        return np.clip(np.rint(x) if self.mode != "none" else x, 0, 255).astype(np.uint8)


def parse_scale(text: str | None) -> str | tuple[float, float]:
    """``--scale`` text -> a mode name or ``(min, max)``; InputError when malformed."""
    text = (text or "percentile").strip().lower()
    if text in MODES:
        return text
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--scale must be one of {', '.join(MODES)} or MIN,MAX, got {text!r}") \
            from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"--scale MIN,MAX needs finite MIN < MAX, got {text!r}")
    return lo, hi


def image_sample(ds) -> np.ma.MaskedArray:
    """The decimated read the percentiles come from: all bands, at most about 1024 px on the
    long side (nearest), masked where the dataset's mask or a non-finite value says.
    ``.data`` holds the raw values, so a caller may test its own nodata on the same pixels."""
    step = max(1, int(math.ceil(max(ds.width, ds.height) / 1024)))
    shape = (ds.count, max(1, ds.height // step), max(1, ds.width // step))
    a = ds.read(out_shape=shape, masked=True)
    if a.dtype.kind == "f":
        a = np.ma.masked_invalid(a)
    return a


def needs_sample(ds, scale: str | tuple[float, float] | None = "percentile") -> bool:
    """Whether :func:`image_stretch` of ``ds`` under ``scale`` reads :func:`image_sample`
    (it does not for uint8 images, ``none`` and ``MIN,MAX``)."""
    mode = parse_scale(scale) if isinstance(scale, (str, type(None))) else tuple(scale)
    return not isinstance(mode, tuple) and mode != "none" and ds.dtypes[0] != "uint8"


def image_stretch(ds, scale: str | tuple[float, float] | None = "percentile",
                  sample: np.ma.MaskedArray | None = None) -> Stretch:
    """The :class:`Stretch` for the open image ``ds`` under ``scale`` (see the module doc).

    ``sample``: :func:`image_sample` of ``ds`` when the caller has read it already (used only
    where :func:`needs_sample`)."""
    mode = parse_scale(scale) if isinstance(scale, (str, type(None))) else tuple(scale)
    if isinstance(mode, tuple):
        lo, hi = mode
        k = 255.0 / (hi - lo)
        return Stretch(f"{lo:g},{hi:g}", k, lo * k)
    if not needs_sample(ds, mode):
        return Stretch("none")
    sample = image_sample(ds) if sample is None else sample
    values = sample.compressed()
    if values.size == 0:
        return Stretch("none")
    kind = np.dtype(ds.dtypes[0]).kind
    top = float(values.max())
    if kind in "iu" and top <= 255 and float(values.min()) >= 0:
        return Stretch("none")  # 8-bit data in a wider container
    if mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
        if hi > lo:
            k = 255.0 / (hi - lo)
            return Stretch("percentile", k, lo * k)
    if kind in "iu":  # bitdepth (or a constant image)
        return Stretch("bitdepth", 255.0 / (2 ** math.ceil(math.log2(top + 1)) - 1))
    return Stretch("bitdepth", 255.0) if top <= 1.0 else Stretch("bitdepth")
