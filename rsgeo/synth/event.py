"""The post-event scene: damage grades per building and the heights they leave.

Grades follow the xBD joint damage scale: ``none``, ``minor`` (roof holes and tarps, the
structure stands: a tarp-covered patch loses 0.5-1.5 m), ``major`` (part of the building
collapsed: rubble on 40-70 % of the footprint, and the part still standing lost its upper
storeys, keeping 40-70 % of the height), ``destroyed`` (the whole footprint is rubble
0.2-2 m high). The building-change mask marks ``major`` and ``destroyed``
footprints (what a 3 m earthquake threshold is meant to find).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GRADES = ("none", "minor", "major", "destroyed")


def assign_grades(n: int, destroyed: float, rng: np.random.Generator) -> np.ndarray:
    """Damage grade per building (strings); exactly round(destroyed * n) are destroyed."""
    grades = np.array(["none"] * n, dtype=object)
    order = rng.permutation(n)
    k = int(round(destroyed * n))
    grades[order[:k]] = "destroyed"
    rest = order[k:]
    share = min(0.15, (1 - destroyed) / 3) if destroyed > 0 else 0.0
    m = int(round(share * n))
    grades[rest[:m]] = "major"
    grades[rest[m:2 * m]] = "minor"
    return grades


def post_heights(ndsm: np.ndarray, bid: np.ndarray, grades: np.ndarray, U: np.ndarray,
                 V: np.ndarray, buildings, rng: np.random.Generator):
    """Post-event nDSM (m), rubble mask, tarp mask and change mask (uint8) ``[H, W]``."""
    post = ndsm.copy()
    rubble = np.zeros(ndsm.shape, bool)
    tarps = np.zeros(ndsm.shape, bool)
    change = np.zeros(ndsm.shape, np.uint8)
    if len(grades) == 0:
        return post, rubble, tarps, change
    ids = np.arange(1, len(grades) + 1)
    grade_of = np.concatenate([["none"], grades]).astype(object)
    pix_grade = grade_of[bid]
    noise = rng.uniform(0.2, 2.0, ndsm.shape).astype(np.float32)
    gone = pix_grade == "destroyed"
    post[gone] = noise[gone]
    rubble |= gone
    boxes = ndimage.find_objects(bid, max_label=len(grades))  # work inside each footprint's box
    for i in ids[grades == "major"]:
        b, sl = buildings[i - 1], boxes[i - 1]
        m = bid[sl] == i
        long_u = (b.u1 - b.u0) >= (b.v1 - b.v0)
        frac = rng.uniform(0.4, 0.7)
        cut = (b.u0 + frac * (b.u1 - b.u0)) if long_u else (b.v0 + frac * (b.v1 - b.v0))
        side = (U[sl] < cut) if long_u else (V[sl] < cut)
        if rng.random() < 0.5:
            side = ~side
        part = m & side
        standing = m & ~side
        p = post[sl]  # a view: writes land in ``post``
        if standing.any():  # upper storeys gone: a flat broken top at 40-70 % of the height
            top = np.float32(rng.uniform(0.4, 0.7) * ndsm[sl][m].max())
            p[standing] = np.minimum(p[standing], top)
        p[part] = noise[sl][part]
        rubble[sl] |= part
    for i in ids[grades == "minor"]:  # a rectangular tarp over a roof hole
        b, sl = buildings[i - 1], boxes[i - 1]
        m = bid[sl] == i
        su, sv = (b.u1 - b.u0) * rng.uniform(0.15, 0.35), (b.v1 - b.v0) * rng.uniform(0.15, 0.35)
        cu = rng.uniform(b.u0 + su, b.u1 - su)
        cv = rng.uniform(b.v0 + sv, b.v1 - sv)
        hole = m & (np.abs(U[sl] - cu) < su) & (np.abs(V[sl] - cv) < sv)
        p = post[sl]
        p[hole] = np.maximum(p[hole] - rng.uniform(0.5, 1.5), 0)
        tarps[sl] |= hole
    damaged = (pix_grade == "destroyed") | (pix_grade == "major")
    change[damaged] = 1
    return post, rubble, tarps, change
