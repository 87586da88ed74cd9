"""Randomised trees for ``rsgeo synth --randomize``: sizes, density, gardens and street rows.

The plain generator plants trees of 2-5 m crown radius and 5-16 m in parks, on empty lots
and in suburban gardens. Real towns (e.g. Montpellier's 50 m IGN tile) have crowns of 8-15 m
across reaching 18 m, closed canopies over gardens and rows of street trees. With
``--randomize`` each scene draws (:func:`draw_trees`, recorded in ``meta["randomize"]``):

- ``radius_m`` / ``height_m``: the ranges every tree's crown radius and height are redrawn
  from (lower end 1.5-3 m / 3-6 m, upper end 3.5-9 m / 9-22 m);
- ``keep``: the share of the layout's trees kept (the rest are dropped), 0.5-1;
- ``gardens``: the share of buildings with garden trees planted around them (0-0.9),
  ``garden_density`` trees per 120 m² of their surroundings (0.3-2.5);
- ``street``: the share of road bands lined with trees every ``street_spacing_m`` (6-14 m).

Trees are drawn from their own generator (:func:`rsgeo.synth.domain.sensor_rng`-style
seeding), so the layout's and terrain's random streams are those of the plain generator.
"""

from __future__ import annotations

import numpy as np

from rsgeo.synth.layout import Layout, to_pixels

TREE_RANGES = {
    "radius_lo": (1.5, 3.0), "radius_hi": (3.5, 9.0), "height_lo": (3.0, 6.0),
    "height_hi": (9.0, 22.0), "keep": (0.5, 1.0), "gardens": (0.0, 0.9),
    "garden_density": (0.3, 2.5), "street": (0.0, 0.6), "street_spacing_m": (6.0, 14.0),
}
GARDEN_PAD_M = 7.0   # garden trees stand within this distance of their building's walls
WALL_GAP_M = 1.0     # ... and at least this far from them (crowns may overhang the roof edge)


def draw_trees(rng: np.random.Generator) -> dict:
    """One scene's tree parameters (see the module docstring), rounded to 0.01."""
    u = {k: round(float(rng.uniform(*v)), 2) for k, v in TREE_RANGES.items()}
    return {"radius_m": [u["radius_lo"], u["radius_hi"]], "height_m": [u["height_lo"], u["height_hi"]],
            "keep": u["keep"], "gardens": u["gardens"], "garden_density": u["garden_density"],
            "street": u["street"], "street_spacing_m": u["street_spacing_m"]}


def randomize_trees(lay: Layout, p: dict, rng: np.random.Generator) -> np.ndarray:
    """The layout's trees thinned to ``keep``, plus garden and street trees, every tree with
    a radius and height redrawn from ``p``; ``[n, 4]`` float64 rows (x, y, radius px, height m)
    as :attr:`Layout.trees`."""
    xy = lay.trees[rng.random(len(lay.trees)) < p["keep"], :2]
    parts = [xy, garden_trees(lay, p, rng), street_trees(lay, p, rng)]
    xy = np.concatenate([q.reshape(-1, 2) for q in parts])
    radius = rng.uniform(*p["radius_m"], len(xy)) / lay.gsd
    height = rng.uniform(*p["height_m"], len(xy))
    # a small crown is not a tall tree: heights shrink with the radius's draw
    height = np.maximum(height * np.sqrt(radius * lay.gsd / p["radius_m"][1]), 2.0)
    return np.concatenate([xy, radius[:, None], height[:, None]], 1)


def garden_trees(lay: Layout, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Tree centres (x, y) px in a ring of :data:`GARDEN_PAD_M` around a share of buildings."""
    pad, gap = GARDEN_PAD_M / lay.gsd, WALL_GAP_M / lay.gsd
    out = []
    for b in lay.buildings:
        if rng.random() >= p["gardens"]:
            continue
        u0, u1, v0, v1 = b.u0 - pad, b.u1 + pad, b.v0 - pad, b.v1 + pad
        ring_m2 = ((u1 - u0) * (v1 - v0) - (b.u1 - b.u0) * (b.v1 - b.v0)) * lay.gsd ** 2
        n = rng.poisson(ring_m2 / 120 * p["garden_density"])
        u, v = rng.uniform(u0, u1, n), rng.uniform(v0, v1, n)
        off = (u < b.u0 - gap) | (u > b.u1 + gap) | (v < b.v0 - gap) | (v > b.v1 + gap)
        out.append(np.stack(to_pixels(u[off], v[off], lay.size, lay.angle), 1))
    return np.concatenate(out) if out else np.zeros((0, 2))


def street_trees(lay: Layout, p: dict, rng: np.random.Generator) -> np.ndarray:
    """Tree centres (x, y) px in rows along both edges of a share of the road bands."""
    step = p["street_spacing_m"] / lay.gsd
    lo, hi = -0.5 * lay.size, 1.5 * lay.size   # the rotated scene's reach, as the road bands
    out = []
    for axis, bands in ((0, lay.roads_u), (1, lay.roads_v)):
        for a, b in bands:
            if rng.random() >= p["street"]:
                continue
            along = np.arange(lo + rng.uniform(0, step), hi, step)
            for edge in (a + 1.0 / lay.gsd, b - 1.0 / lay.gsd):
                across = np.full(along.shape, edge)
                u, v = (across, along) if axis == 0 else (along, across)
                x, y = to_pixels(u, v, lay.size, lay.angle)
                keep = (x > -step) & (x < lay.size + step) & (y > -step) & (y < lay.size + step)
                out.append(np.stack([x[keep], y[keep]], 1))
    return np.concatenate(out) if out else np.zeros((0, 2))
