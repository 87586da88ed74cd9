"""A PNG contact sheet of a scene: pre RGB, post RGB, nDSM colour-mapped, land cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsgeo.io.atomic import atomic_path
from rsgeo.viz import colorize_classes, colorize_heights

# colorize_* are re-exported for callers that still import them from here
__all__ = ["colorize_classes", "colorize_heights", "save_preview"]


def save_preview(scene, path: Path, overwrite: bool = False, max_side: int = 512) -> Path:
    from PIL import Image

    vmax = max(float(scene.pre_ndsm.max()), 1.0)
    tiles = [scene.pre_rgb.transpose(1, 2, 0), scene.post_rgb.transpose(1, 2, 0),
             colorize_heights(scene.pre_ndsm, vmax), colorize_heights(scene.post_ndsm, vmax),
             colorize_classes(scene.landcover),
             np.repeat((scene.change * 255)[..., None], 3, axis=2).astype(np.uint8)]
    h, w = tiles[0].shape[:2]
    step = max(1, int(np.ceil(max(h, w) / max_side)))
    tiles = [t[::step, ::step] for t in tiles]
    th, tw = tiles[0].shape[:2]
    sheet = np.full((2 * th + 6, 3 * tw + 12, 3), 255, np.uint8)
    order = [0, 2, 4, 1, 3, 5]  # top: pre RGB, pre nDSM, land cover; bottom: post RGB, post nDSM, change
    for k, idx in enumerate(order):
        r, c = divmod(k, 3)
        sheet[r * (th + 6):r * (th + 6) + th, c * (tw + 6):c * (tw + 6) + tw] = tiles[idx]
    with atomic_path(path, overwrite) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return Path(path)
