"""``rsgeo synth --randomize`` trees: redrawn sizes, thinning, garden and street trees."""

import numpy as np

from rsgeo.synth import generate_scene
from rsgeo.synth.domain import draw_domain
from rsgeo.synth.layout import make_layout, rotated_coords
from rsgeo.synth.trees import (GARDEN_PAD_M, TREE_RANGES, WALL_GAP_M, draw_trees, garden_trees,
                               randomize_trees, street_trees)

NONE = {"radius_m": [2.0, 4.0], "height_m": [5.0, 12.0], "keep": 1.0, "gardens": 0.0,
        "garden_density": 1.0, "street": 0.0, "street_spacing_m": 8.0}


def _layout(style="mid", seed=0):
    return make_layout(256, 0.5, style, np.random.default_rng(seed))


def test_draws_stay_in_range_and_are_recorded():
    for seed in range(20):
        t = draw_trees(np.random.default_rng(seed))
        lo, hi = TREE_RANGES["radius_lo"], TREE_RANGES["radius_hi"]
        assert lo[0] <= t["radius_m"][0] <= lo[1] < hi[0] <= t["radius_m"][1] <= hi[1]
        assert TREE_RANGES["height_hi"][0] <= t["height_m"][1] <= TREE_RANGES["height_hi"][1]
        assert TREE_RANGES["keep"][0] <= t["keep"] <= 1
    assert generate_scene(96, 0.5, "low", seed=4, randomize=True).meta["randomize"]["trees"] \
        == draw_domain(4).trees


def test_keep_all_redraws_sizes_only():
    lay = _layout()
    trees = randomize_trees(lay, NONE, np.random.default_rng(0))
    assert len(lay.trees) > 5 and np.array_equal(trees[:, :2], lay.trees[:, :2])
    r_m = trees[:, 2] * lay.gsd
    assert (r_m >= 2.0).all() and (r_m <= 4.0).all()
    assert (trees[:, 3] >= 2.0).all() and (trees[:, 3] <= 12.0).all()
    thinned = randomize_trees(lay, {**NONE, "keep": 0.5}, np.random.default_rng(0))
    assert 0.2 * len(lay.trees) < len(thinned) < 0.8 * len(lay.trees)


def test_garden_trees_ring_their_building_and_miss_its_roof():
    lay = _layout("low", 1)
    xy = garden_trees(lay, {**NONE, "gardens": 1.0, "garden_density": 2.0}, np.random.default_rng(0))
    assert len(xy) > 10
    U, V = rotated_coords(lay.size, lay.angle)
    c = (lay.size - 1) / 2
    ca, sa = np.cos(lay.angle), np.sin(lay.angle)
    u = (xy[:, 0] - c) * ca + (xy[:, 1] - c) * sa + c
    v = -(xy[:, 0] - c) * sa + (xy[:, 1] - c) * ca + c
    pad, gap = GARDEN_PAD_M / lay.gsd, WALL_GAP_M / lay.gsd
    near = np.zeros(len(xy), bool)
    for b in lay.buildings:
        inside = (u > b.u0 - gap) & (u < b.u1 + gap) & (v > b.v0 - gap) & (v < b.v1 + gap)
        assert not inside.any()                      # no trunk on (or against) a wall
        near |= (u > b.u0 - pad) & (u < b.u1 + pad) & (v > b.v0 - pad) & (v < b.v1 + pad)
    assert near.all()


def test_street_trees_line_the_roads():
    lay = _layout("mid", 2)
    xy = street_trees(lay, {**NONE, "street": 1.0, "street_spacing_m": 8.0}, np.random.default_rng(0))
    assert len(xy) > 20
    c = (lay.size - 1) / 2
    ca, sa = np.cos(lay.angle), np.sin(lay.angle)
    u = (xy[:, 0] - c) * ca + (xy[:, 1] - c) * sa + c
    v = -(xy[:, 0] - c) * sa + (xy[:, 1] - c) * ca + c
    on_road = np.zeros(len(xy), bool)
    for bands, coord in ((lay.roads_u, u), (lay.roads_v, v)):
        for a, b in bands:
            on_road |= (coord >= a) & (coord <= b)
    assert on_road.all()


def test_randomised_scene_grows_taller_trees_than_the_plain_one():
    t = [draw_domain(s).trees for s in range(80)]
    seed = next(s for s in range(80) if t[s]["height_m"][1] > 19 and t[s]["gardens"] > 0.5
                and t[s]["street"] > 0.3)
    on = generate_scene(192, 0.5, "mid", seed=seed, randomize=True)
    off = generate_scene(192, 0.5, "mid", seed=seed)
    assert np.max(off.pre_ndsm[off.landcover == 5], initial=0) <= 16.0 + 1e-3  # plain: 5-16 m
    assert np.max(on.pre_ndsm[on.landcover == 5], initial=0) > 16.0
    assert on.meta["n_trees"] > off.meta["n_trees"] and (on.landcover == 5).sum() > (off.landcover == 5).sum()
