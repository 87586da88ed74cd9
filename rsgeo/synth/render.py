"""RGB rendering of a synthetic scene: class colours with texture, roof colours, sun shading
(Lambertian on the DSM's normals) and cast shadows.

Cast shadows march along the sun's azimuth: a pixel is shadowed when some pixel ``k`` steps
towards the sun stands higher than the sun ray through it (``dsm[p + k*s] - k*step*tan(elev)
> dsm[p]``); one shifted comparison per step, vectorised over the whole image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BASE = {1: (150, 128, 100), 2: (96, 124, 66), 3: (138, 136, 130), 4: (78, 80, 84),
        5: (48, 84, 42), 6: (38, 66, 84), 7: (120, 140, 70), 8: (150, 150, 150)}


def texture(shape, rng: np.random.Generator, scales=(1.0, 3.0, 9.0), amps=(6.0, 6.0, 8.0)):
    """Multi-scale smooth noise, zero mean, ``shape`` float32 (grey levels)."""
    out = np.zeros(shape, np.float32)
    for s, a in zip(scales, amps):
        out += ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), s) * (a * s ** 0.5)
    return out


def hillshade(dsm: np.ndarray, gsd: float, azimuth: float, elevation: float) -> np.ndarray:
    """Lambertian illumination in [0, 1] from the DSM's surface normals (angles in degrees)."""
    gy, gx = np.gradient(dsm.astype(np.float32), gsd)
    az, el = np.radians(azimuth), np.radians(elevation)
    # sun vector in (x east, y south = row down, z up); azimuth clockwise from north
    sx, sy, sz = np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)
    norm = np.sqrt(gx * gx + gy * gy + 1)
    return np.clip((-gx * sx - gy * sy + sz) / norm, 0, 1)


def cast_shadows(dsm: np.ndarray, gsd: float, azimuth: float, elevation: float,
                 max_height: float | None = None) -> np.ndarray:
    """Boolean shadow mask ``[H, W]``: pixels whose line to the sun is blocked."""
    h, w = dsm.shape
    az = np.radians(azimuth)
    dx, dy = np.sin(az), -np.cos(az)                  # one pixel step towards the sun
    step = max(abs(dx), abs(dy))
    dx, dy = dx / step, dy / step
    rise = np.tan(np.radians(elevation)) * gsd * np.hypot(dx, dy)  # metres per step
    top = float(max_height if max_height is not None else dsm.max() - dsm.min())
    n = int(min(np.ceil(top / max(rise, 1e-6)), max(h, w)))
    shadow = np.zeros((h, w), bool)
    for k in range(1, n + 1):
        oy, ox = int(round(k * dy)), int(round(k * dx))
        if abs(oy) >= h or abs(ox) >= w:
            break
        src = dsm[max(oy, 0):h + min(oy, 0), max(ox, 0):w + min(ox, 0)]
        dst = (slice(max(-oy, 0), h + min(-oy, 0)), slice(max(-ox, 0), w + min(-ox, 0)))
        shadow[dst] |= src - np.float32(k * rise) > dsm[dst] + np.float32(0.05)
    return shadow


def render(lc: np.ndarray, dsm: np.ndarray, ndsm: np.ndarray, bid: np.ndarray,
           roof_colors: np.ndarray, gsd: float, rng: np.random.Generator,
           sun=(135.0, 50.0), rubble: np.ndarray | None = None, tarps: np.ndarray | None = None,
           colors: dict[int, tuple[int, int, int]] | None = None,
           gains: tuple[float, float] | None = None) -> np.ndarray:
    """RGB uint8 ``[3, H, W]``.

    Args:
        lc: land cover ids; dsm/ndsm: metres; bid: building ids (0 none) indexing
        ``roof_colors`` ``[n+1, 3]``; sun: (azimuth, elevation) degrees;
        rubble: bool mask of debris (post-event); tarps: bool mask of blue roof tarps;
        colors: base colour per land-cover id replacing those of :data:`BASE`;
        gains: (texture, grain) amplitude factors (None: 1, 1).
    """
    H, W = lc.shape
    base = np.zeros((3, H, W), np.float32)
    for cls, col in (BASE if colors is None else {**BASE, **colors}).items():
        m = lc == cls
        for c in range(3):
            base[c][m] = col[c]
    roof = bid > 0
    for c in range(3):
        base[c][roof] = roof_colors[bid[roof], c]
    tex = texture((H, W), rng)
    grain = texture((H, W), rng, scales=(0.6,), amps=(10.0,))
    if gains is not None:
        tex, grain = tex * np.float32(gains[0]), grain * np.float32(gains[1])
    field_stripes = (np.sin(np.arange(W, dtype=np.float32) / 3.0)[None, :] * 10).repeat(H, 0)
    base += tex[None] * np.where(lc == 5, 1.6, np.where(lc == 6, 0.3, 1.0))[None]
    base += grain[None] * np.where(roof, 0.5, 1.0)[None]
    base[1] += np.where(lc == 7, field_stripes, 0)
    if rubble is not None and rubble.any():
        deb = 120 + texture((H, W), rng, scales=(0.7, 2.0), amps=(30.0, 20.0))
        for c, tint in enumerate((1.05, 0.98, 0.9)):
            base[c] = np.where(rubble, deb * tint, base[c])
    if tarps is not None and tarps.any():
        for c, col in enumerate((40, 90, 200)):
            base[c] = np.where(tarps, col, base[c])
    shade = hillshade(dsm, gsd, *sun)
    flat = np.sin(np.radians(sun[1]))
    light = 0.62 + 0.38 * shade / max(flat, 1e-3)
    shadow = cast_shadows(dsm, gsd, *sun, max_height=float(ndsm.max()) + 1)
    light = np.where(shadow, light * 0.5, light)
    rgb = base * light[None]
    return np.clip(rgb, 0, 255).astype(np.uint8)
