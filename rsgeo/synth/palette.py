"""Colour families for domain randomisation of ``rsgeo synth`` (8-bit RGB triples).

Roofs come from a per-scene mix of material families; the ground classes (land cover ids
of :data:`rsgeo.synth.surface.LANDCOVER`) are drawn between two end members each, e.g.
vegetation from dry (``w = 0``) to lush (``w = 1``), roads from dark fresh asphalt to light
worn concrete or dust.
"""

from __future__ import annotations

import numpy as np

# roof material families: a few typical colours each
ROOF_FAMILIES = {
    "terracotta": [(172, 88, 64), (150, 76, 58), (186, 104, 72), (136, 70, 52)],
    "grey_concrete": [(118, 118, 124), (150, 150, 148), (176, 174, 168), (96, 98, 102)],
    "metal_blue": [(70, 104, 150), (96, 132, 170), (60, 86, 120), (130, 156, 180)],
    "metal_rust": [(140, 82, 54), (118, 72, 52), (160, 104, 70), (104, 80, 66)],
    "asphalt_shingle": [(64, 62, 64), (82, 78, 76), (56, 58, 66), (96, 88, 82)],
    "light_sand": [(206, 196, 172), (224, 214, 190), (190, 176, 146), (236, 232, 220)],
}

# ground classes: (end member at t = 0, end member at t = 1)
GROUND_RANGES = {
    1: ((196, 178, 140), (150, 92, 62)),     # bareland: pale sand .. red laterite
    2: ((176, 156, 104), (84, 130, 58)),     # rangeland: dry grass .. lush lawn
    3: ((176, 170, 158), (104, 104, 104)),   # developed: light paving .. dark concrete
    4: ((58, 60, 64), (158, 150, 136)),      # road: dark asphalt .. light concrete / dust
    5: ((104, 100, 64), (36, 78, 36)),       # trees: dry scrub .. lush canopy
    6: ((30, 62, 92), (74, 84, 62)),         # water: clear blue .. murky green-brown
    7: ((192, 170, 112), (104, 148, 58)),    # agriculture: stubble .. green crops
}
VEGETATION = (2, 5, 7)   # classes that follow the vegetation (dry .. lush) draw


def lerp(a, b, t: float) -> tuple[int, int, int]:
    """Colour between ``a`` (t = 0) and ``b`` (t = 1), rounded to ints."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def draw_roof_palette(rng: np.random.Generator, n: int = 10, concentration: float = 0.6,
                      jitter: float = 10.0) -> tuple[dict[str, float], list[tuple[int, int, int]]]:
    """Family weights (Dirichlet, so one or two families dominate a scene) and ``n`` roof
    colours drawn from them, each jittered by a normal of ``jitter`` grey levels."""
    names = list(ROOF_FAMILIES)
    w = rng.dirichlet(np.full(len(names), concentration))
    weights = {k: round(float(v), 4) for k, v in zip(names, w)}
    colors = []
    for _ in range(n):
        fam = ROOF_FAMILIES[names[rng.choice(len(names), p=w)]]
        base = np.array(fam[rng.integers(len(fam))], np.float64)
        colors.append(tuple(int(c) for c in np.clip(np.round(base + rng.normal(0, jitter, 3)), 0, 255)))
    return weights, colors


def ground_colors(draws: dict[int, float]) -> dict[int, tuple[int, int, int]]:
    """Base colour per land-cover class from its position ``t`` in [0, 1] between end members."""
    return {cls: lerp(*GROUND_RANGES[cls], t) for cls, t in draws.items()}
