"""Reconstruction previews as PNG: one row per modality, columns input | masked | reconstruction.

A method's ``preview(batch)`` returns ``{modality: {"input", "masked", "reconstruction"}}``,
each a ``[C, H, W]`` tensor in normalised units. 3-band modalities are shown as RGB,
1-band ones (DSM, nDSM) as grey. Each row is stretched with the input's 2-98 %
percentiles per band, so the three panels share one scale and are comparable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from rsgeo.io.atomic import atomic_path


def _stretch(img: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> np.ndarray:
    x = (img.float() - lo[:, None, None]) / (hi - lo).clamp_min(1e-6)[:, None, None]
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[:3].permute(1, 2, 0).cpu().numpy()


def preview_image(panels: dict[str, dict[str, torch.Tensor]], gap: int = 4) -> np.ndarray:
    """``[H_total, W_total, 3]`` uint8 grid of the panels (rows: modalities)."""
    rows = []
    for views in panels.values():
        ref = views["input"].float().flatten(1)
        lo = torch.quantile(ref, 0.02, dim=1)
        hi = torch.quantile(ref, 0.98, dim=1)
        tiles = [_stretch(views[k], lo, hi) for k in ("input", "masked", "reconstruction")]
        h = tiles[0].shape[0]
        sep = np.full((h, gap, 3), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], axis=1))
    width = max(r.shape[1] for r in rows)
    out = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)
        out += [np.concatenate([r, pad], axis=1), np.full((gap, width, 3), 255, np.uint8)]
    return np.concatenate(out[:-1], axis=0)


def save_preview(path: str | os.PathLike, panels: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write the preview grid of ``panels`` as a PNG (atomically)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(preview_image(panels)).save(tmp, format="PNG")
    return path
