"""``rsgeo synth --style terraced``: rows of joined houses with storeys and ridges along the
row; the other styles' layouts are exactly what they were before the style was added."""

import hashlib

import numpy as np
import pytest

from rsgeo.synth import generate_scene
from rsgeo.synth.layout import STYLES, Building, make_layout
from rsgeo.synth.surface import roof_height

# sha256 (first 16 hex) of each style's layout for 192 px, 0.5 m, rng seed 7, computed
# before the terraced style existed: adding a style must not move another style's draws
LAYOUT_DIGESTS = {"low": "2ced667bf83e9afd", "mid": "c1226c3635a54e14",
                  "high": "69b47d99447987f2", "informal": "edd4af522036e605",
                  "industrial": "f0d684564e4d4414", "courtyard": "88e417bc96aff8e2"}


def _digest(lay) -> str:
    def r(x):
        return x if isinstance(x, (str, tuple)) else round(float(x), 6)
    rows = [tuple(r(x) for x in (b.u0, b.u1, b.v0, b.v1, b.eave, b.height, b.roof, b.color))
            for b in lay.buildings]
    text = repr(rows) + repr(np.round(lay.trees, 6).tolist())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("style", sorted(LAYOUT_DIGESTS))
def test_other_styles_draw_what_they_drew(style):
    assert _digest(make_layout(192, 0.5, style, np.random.default_rng(7))) == LAYOUT_DIGESTS[style]


def _rows(lay):
    """Buildings grouped by row: same across-extent (v for ridge u, u for ridge v)."""
    rows = {}
    for b in lay.buildings:
        key = (b.ridge, round(b.v0, 3), round(b.v1, 3)) if b.ridge == "u" else \
            (b.ridge, round(b.u0, 3), round(b.u1, 3))
        rows.setdefault(key, []).append(b)
    return rows


def test_terraced_rows_are_joined_houses_with_whole_storeys():
    st = STYLES["terraced"]
    for seed in range(3):
        lay = make_layout(256, 0.5, "terraced", np.random.default_rng(seed))
        assert len(lay.buildings) > 15
        assert all(b.ridge in ("u", "v") for b in lay.buildings)
        joined = total = 0
        for row in _rows(lay).values():
            row.sort(key=lambda b: b.u0 if b.ridge == "u" else b.v0)
            for a, b in zip(row, row[1:]):
                total += 1
                ends = (a.u1, b.u0) if a.ridge == "u" else (a.v1, b.v0)
                joined += abs(ends[0] - ends[1]) < 1e-9
            frontage = [(b.u1 - b.u0 if b.ridge == "u" else b.v1 - b.v0) * 0.5 for b in row[:-1]]
            assert all(st["side"][0] - 1e-6 <= f <= st["side"][1] + 1e-6 for f in frontage)
        assert joined > 0.8 * total                    # wall to wall, a gap now and then
        for b in lay.buildings:                        # eave = storeys x 2.7-3.1 m + 0.2-0.6 m
            ok = [n for n in range(1, 4) if n * 2.7 + 0.2 - 1e-6 <= b.eave <= n * 3.1 + 0.6 + 1e-6]
            assert ok, b.eave
            if b.roof == "gable":                      # low tile roofs: 15-30 degrees
                across = (b.v1 - b.v0 if b.ridge == "u" else b.u1 - b.u0) * 0.5
                pitch = np.degrees(np.arctan((b.height - b.eave) / (across / 2)))
                assert 15 - 0.2 <= pitch <= 30 + 0.2


def test_ridge_runs_along_the_given_axis():
    # a house 6 px wide along u and 20 px deep along v, its ridge along u (the row)
    b = Building(0, 6, 0, 20, roof="gable", eave=6.0, height=8.0, color=(1, 2, 3), ridge="u")
    u, v = np.meshgrid(np.arange(0.5, 6), np.arange(0.5, 20), indexing="xy")
    h = roof_height(b, u.astype(np.float32), v.astype(np.float32), 0.5)
    assert np.allclose(h, h[:, :1])                    # constant along u
    assert h[10, 0] > h[1, 0] and h[10, 0] > h[18, 0]  # peaks mid-depth
    assert h.max() == pytest.approx(8.0, abs=0.3) and h.min() >= 6.0
    plain = Building(0, 6, 0, 20, roof="gable", eave=6.0, height=8.0, color=(1, 2, 3))
    hp = roof_height(plain, u.astype(np.float32), v.astype(np.float32), 0.5)
    assert np.allclose(hp, hp[:1, :])                  # default: ridge along the long side (v)


def test_terraced_scene_plain_and_randomised_are_seeded():
    a = generate_scene(128, 0.5, "terraced", seed=2)
    b = generate_scene(128, 0.5, "terraced", seed=2)
    assert a.pre_rgb.tobytes() == b.pre_rgb.tobytes() and a.pre_ndsm.tobytes() == b.pre_ndsm.tobytes()
    assert len(a.footprints) > 5 and 2.9 <= a.footprints["height_m"].min()
    r1 = generate_scene(128, None, "terraced", seed=2, randomize=True)
    r2 = generate_scene(128, None, "terraced", seed=2, randomize=True)
    assert r1.pre_rgb.tobytes() == r2.pre_rgb.tobytes() and r1.meta["style"] == "terraced"
    assert r1.pre_rgb.tobytes() != a.pre_rgb.tobytes()
