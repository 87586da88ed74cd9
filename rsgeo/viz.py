"""Colour maps, one place for every picture rsgeo draws (previews, reports, colour tables).

- :func:`colorize_heights`: metres ``[H, W]`` -> uint8 RGB ``[H, W, 3]`` on a fixed ramp.
- :func:`colorize_classes`: class ids ``[H, W]`` (uint8) -> uint8 RGB through a palette.
- :data:`LANDCOVER_COLORS`: SynRS3D / OpenEarthMap land-cover colours (ids 0..8, RGB).
- :data:`DAMAGE_COLORS`: damage classes (0 no structure .. 4 destroyed, 255 nodata), RGBA,
  also written as the colour table of ``damage-map`` rasters.

Only numpy: any layer may draw.
"""

from __future__ import annotations

import numpy as np

# SynRS3D / OpenEarthMap colours
LANDCOVER_COLORS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 255, 36), 3: (148, 148, 148),
                    4: (255, 255, 255), 5: (34, 97, 38), 6: (0, 69, 255), 7: (75, 181, 73),
                    8: (222, 31, 7)}
DAMAGE_COLORS = {0: (0, 0, 0, 0), 1: (46, 139, 87, 255), 2: (255, 215, 0, 255),
                 3: (255, 140, 0, 255), 4: (200, 0, 0, 255), 255: (0, 0, 0, 0)}

# a perceptual-ish ramp for heights (dark blue -> teal -> yellow -> white)
HEIGHT_RAMP = np.array([[20, 24, 60], [30, 90, 140], [40, 160, 140], [180, 210, 60],
                        [250, 240, 200]], np.float32)


def colorize_heights(h: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """``[H, W]`` metres -> ``[H, W, 3]`` uint8 on :data:`HEIGHT_RAMP` from 0 to ``vmax``
    (default: the 99.5th percentile, at least 1 m); NaN draws as 0 m."""
    vmax = float(vmax or max(np.nanpercentile(h, 99.5), 1.0))
    t = np.clip(np.nan_to_num(h) / vmax, 0, 1) * (len(HEIGHT_RAMP) - 1)
    i = np.minimum(t.astype(int), len(HEIGHT_RAMP) - 2)
    f = (t - i)[..., None]
    return (HEIGHT_RAMP[i] * (1 - f) + HEIGHT_RAMP[i + 1] * f).astype(np.uint8)


def colorize_classes(classes: np.ndarray, palette: dict | None = None) -> np.ndarray:
    """``[H, W]`` class ids 0..255 -> ``[H, W, 3]`` uint8 RGB through ``palette``
    ({id: RGB or RGBA}; default :data:`LANDCOVER_COLORS`); ids not in it draw black."""
    lut = np.zeros((256, 3), np.uint8)
    for k, v in (LANDCOVER_COLORS if palette is None else palette).items():
        lut[k] = v[:3]
    return lut[classes]
