"""From a layout to rasters: terrain (DTM), heights above ground (nDSM), land cover, building ids.

Land cover uses SynRS3D's eight classes (ids 1..8, see :data:`LANDCOVER`); heights are
metres. Roofs are analytic in the rotated frame of the layout: ``flat`` (constant),
``gable`` (ridge along the long axis, or along the building's ``ridge`` axis when set),
``hip`` (four planes of equal slope).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from rsgeo.synth.layout import STYLES, Building, Layout, to_pixels

LANDCOVER = {1: "bareland", 2: "rangeland", 3: "developed", 4: "road", 5: "trees", 6: "water",
             7: "agriculture", 8: "buildings"}


def terrain(size: int, gsd: float, rng: np.random.Generator) -> np.ndarray:
    """Gentle terrain in metres ``[size, size]`` float32: base level + smooth hills (a few m)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * np.float32(gsd)
    z = np.full((size, size), rng.uniform(20, 120), np.float32)
    for _ in range(3):
        k = rng.uniform(1 / 900, 1 / 250, 2)
        z += np.float32(rng.uniform(0.5, 3.0)) * np.sin(
            np.float32(2 * np.pi) * (x * np.float32(k[0]) + y * np.float32(k[1]))
            + np.float32(rng.uniform(0, 2 * np.pi)))
    noise = ndimage.gaussian_filter(rng.standard_normal((size // 8 + 1,) * 2).astype(np.float32), 3)
    z += ndimage.zoom(noise, 8, order=1)[:size, :size] * np.float32(4.0)
    return z


def relief(size: int, gsd: float, waves: list[dict]) -> np.ndarray:
    """Low-frequency terrain relief (m) ``[size, size]`` float32: a sum of plane waves
    ``amplitude_m * sin(2 pi (x cos d + y sin d) / wavelength_m + phase_rad)`` with x east and
    y south in metres from the top-left pixel centre, d = ``direction_deg``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) * np.float32(gsd)
    z = np.zeros((size, size), np.float32)
    for w in waves:
        d = np.radians(w["direction_deg"])
        k = np.float32(2 * np.pi / w["wavelength_m"])
        z += np.float32(w["amplitude_m"]) * np.sin(
            k * (x * np.float32(np.cos(d)) + y * np.float32(np.sin(d))) + np.float32(w["phase_rad"]))
    return z


def window(lay: Layout, U, V, u0, u1, v0, v1, pad: float = 1.0):
    """(slices, mask) of the pixels whose rotated coords fall in [u0,u1) x [v0,v1)."""
    x, y = to_pixels(np.array([u0, u1, u0, u1]), np.array([v0, v0, v1, v1]), lay.size, lay.angle)
    r0, r1 = int(max(np.floor(y.min() - pad), 0)), int(min(np.ceil(y.max() + pad) + 1, lay.size))
    c0, c1 = int(max(np.floor(x.min() - pad), 0)), int(min(np.ceil(x.max() + pad) + 1, lay.size))
    if r1 <= r0 or c1 <= c0:
        return None, None
    sl = (slice(r0, r1), slice(c0, c1))
    u, v = U[sl], V[sl]
    return sl, (u >= u0) & (u < u1) & (v >= v0) & (v < v1)


def roof_height(b: Building, u: np.ndarray, v: np.ndarray, gsd: float) -> np.ndarray:
    """Roof height above ground (m) at rotated coords (u, v) inside building ``b``."""
    if b.roof == "flat" or b.height <= b.eave:
        return np.full(u.shape, b.height, np.float32)
    long_u = (b.u1 - b.u0) >= (b.v1 - b.v0) if b.ridge is None else b.ridge == "u"
    across = min(b.u1 - b.u0, b.v1 - b.v0) if b.ridge is None else \
        (b.v1 - b.v0 if long_u else b.u1 - b.u0)
    half = (across / 2) * gsd
    slope = (b.height - b.eave) / max(half, 1e-6)
    if b.roof == "gable":
        d = (np.minimum(v - b.v0, b.v1 - v) if long_u else np.minimum(u - b.u0, b.u1 - u)) * gsd
    else:  # hip
        d = np.minimum(np.minimum(u - b.u0, b.u1 - u), np.minimum(v - b.v0, b.v1 - v)) * gsd
    return np.minimum(b.eave + slope * np.maximum(d, 0), b.height).astype(np.float32)


def rasterize(lay: Layout, U, V, style: str, rng: np.random.Generator):
    """Land cover uint8, nDSM float32 (m), building ids int32 (0 = none), tree mask bool."""
    n = lay.size
    lc = np.full((n, n), 4, np.uint8)                     # roads everywhere between blocks
    for box in lay.paved:
        sl, m = window(lay, U, V, *box)
        if sl is not None:
            lc[sl][m] = 3
    yard = STYLES[style]["yard"]
    for b in lay.buildings:  # yards around buildings: grass in suburbs, mixed in mid style
        pad = 6 / lay.gsd
        sl, m = window(lay, U, V, b.u0 - pad, b.u1 + pad, b.v0 - pad, b.v1 + pad)
        if sl is not None:
            cls = yard if yard is not None else (2 if rng.random() < 0.45 else 3)
            lc[sl][m & (lc[sl] == 3)] = cls
    for boxes, cls in ((lay.parks, 2), (lay.farms, 7), (lay.bare, 1)):
        for box in boxes:
            sl, m = window(lay, U, V, *box)
            if sl is not None:
                lc[sl][m] = cls
    ndsm = np.zeros((n, n), np.float32)
    bid = np.zeros((n, n), np.int32)
    for i, b in enumerate(lay.buildings, start=1):
        sl, m = window(lay, U, V, b.u0, b.u1, b.v0, b.v1)
        if sl is None or not m.any():
            continue
        h = roof_height(b, U[sl], V[sl], lay.gsd)
        ndsm[sl] = np.where(m, np.maximum(ndsm[sl], h), ndsm[sl])
        bid[sl][m] = i
        lc[sl][m] = 8
    if lay.water is not None:
        lc[pond(lay.water, n, rng) & (bid == 0)] = 6
    trees = tree_heights(lay, bid == 0)
    tree_mask = trees > 0.5
    lc[tree_mask & (lc != 6)] = 5
    ndsm = np.where(tree_mask & (lc == 5), np.maximum(ndsm, trees), ndsm)
    return lc, ndsm, bid, tree_mask & (lc == 5)


def pond(ellipse: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Water mask ``[n, n]`` bool: an irregular pond inside the ellipse (cx, cy, rx, ry) px.

    The shoreline is the ellipse pulled in by a few random low harmonics of the polar angle,
    between 65 % and 100 % of its radius, so it looks natural and stays clear of the trees
    planted around the ellipse.
    """
    cx, cy, rx, ry = ellipse
    yy, xx = np.ogrid[0:n, 0:n]
    dx, dy = (xx - cx) / rx, (yy - cy) / ry
    theta = np.arctan2(dy, dx)
    wobble = sum(rng.uniform(0.3, 1.0) / k * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
                 for k in (2, 3, 5))
    span = float(np.abs(wobble).max()) or 1.0
    radius = 0.825 + 0.175 * wobble / span          # in [0.65, 1.0]
    return dx * dx + dy * dy <= radius * radius


def tree_heights(lay: Layout, allowed: np.ndarray) -> np.ndarray:
    """Canopy heights (m): a dome per tree, ``[size, size]`` float32, 0 where no tree."""
    n = lay.size
    out = np.zeros((n, n), np.float32)
    for x, y, r, h in lay.trees:
        r0, r1 = int(max(y - r, 0)), int(min(y + r + 1, n))
        c0, c1 = int(max(x - r, 0)), int(min(x + r + 1, n))
        if r1 <= r0 or c1 <= c0:
            continue
        yy, xx = np.ogrid[r0:r1, c0:c1]
        d2 = ((xx - x) ** 2 + (yy - y) ** 2) / (r * r)
        dome = np.where(d2 < 1, h * np.sqrt(np.clip(1 - d2, 0, 1)) ** 0.5, 0).astype(np.float32)
        out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], dome)
    return np.where(allowed, out, 0)
