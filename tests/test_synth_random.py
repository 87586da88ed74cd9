"""``rsgeo synth --randomize``: domain randomisation is seeded, in range, recorded, and off by
default (then the output is what explicit defaults give)."""

import json

import numpy as np
import pytest

from rsgeo.synth import generate_scene
from rsgeo.synth.domain import RANGES, RELIEF_WAVES, draw_domain
from rsgeo.synth.layout import STYLES, make_layout
from rsgeo.synth.palette import ROOF_FAMILIES
from rsgeo.synth.sensor import Sensor, apply_sensor, blur, haze, jpeg, tone

ARRAYS = ("pre_rgb", "post_rgb", "dsm", "dtm", "pre_ndsm", "post_ndsm", "landcover", "change",
          "building_ids")


@pytest.fixture(scope="module")
def rscene():
    return generate_scene(160, seed=5, randomize=True)


def test_same_seed_same_bytes_and_meta(rscene):
    again = generate_scene(160, seed=5, randomize=True)
    for name in ARRAYS:
        assert getattr(rscene, name).tobytes() == getattr(again, name).tobytes(), name
    assert rscene.footprints.equals(again.footprints)
    assert json.dumps(rscene.meta, sort_keys=True) == json.dumps(again.meta, sort_keys=True)


def test_off_is_the_explicit_default_and_draws_nothing():
    a = generate_scene(128, seed=2)
    b = generate_scene(128, 0.5, "mid", 0.3, seed=2, randomize=False)
    for name in ARRAYS:
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert "randomize" not in a.meta and a.meta["gsd"] == 0.5 and a.meta["style"] == "mid"
    on = generate_scene(128, 0.5, "mid", 0.3, seed=2, randomize=True)
    assert on.pre_rgb.tobytes() != a.pre_rgb.tobytes()


def _inside(v, key):
    lo, hi = RANGES[key]
    return lo <= v <= hi


def test_draws_differ_between_seeds_and_stay_in_range():
    doms = [draw_domain(s) for s in range(40)]
    assert len({d.sun_pre for d in doms}) == 40 and len({d.gsd for d in doms}) > 15
    assert len({d.style for d in doms}) == len(STYLES)          # every style comes up
    for d in doms:
        assert _inside(d.gsd, "gsd") and d.style in STYLES
        assert _inside(d.sun_pre[0], "sun_azimuth") and _inside(d.sun_pre[1], "sun_elevation")
        assert _inside(d.sun_post[1], "sun_post_elevation") and 0 <= d.sun_post[0] < 360
        assert abs(sum(d.roof_families.values()) - 1) < 1e-3 and set(d.roof_families) == set(ROOF_FAMILIES)
        assert len(d.roof_palette) == 10 and all(0 <= c <= 255 for col in d.roof_palette for c in col)
        assert 0 <= d.vegetation <= 1 and d.ground_t[2] == d.ground_t[5] == d.ground_t[7] == d.vegetation
        assert _inside(d.texture_gain, "texture_gain") and _inside(d.grain_gain, "grain_gain")
        assert _inside(d.relief_slope, "relief_slope") and len(d.relief) == RELIEF_WAVES
        slope = sum(2 * np.pi * w["amplitude_m"] / w["wavelength_m"] for w in d.relief)
        assert slope <= d.relief_slope + 1e-3
        for s in (d.sensor_pre, d.sensor_post):
            assert _inside(s.haze, "haze") and _inside(s.blur_sigma, "blur_sigma")
            assert all(_inside(g, "gain") for g in s.gain) and all(_inside(o, "offset") for o in s.offset)
            assert _inside(s.noise_sigma, "noise_sigma")
            assert s.jpeg_quality is None or _inside(s.jpeg_quality, "jpeg_quality")
            assert _inside(s.contrast, "contrast") and _inside(s.saturation, "saturation")
    assert any(d.sensor_pre.jpeg_quality is None for d in doms)
    assert any(d.sensor_pre.jpeg_quality is not None for d in doms)
    # vegetation runs from dry to lush across seeds
    vegs = [d.vegetation for d in doms]
    assert min(vegs) < 0.2 and max(vegs) > 0.8


def test_given_gsd_and_style_are_kept():
    d = draw_domain(3, gsd=0.3, style="courtyard")
    assert (d.gsd, d.style) == (0.3, "courtyard")
    free = draw_domain(3)
    assert free.sun_pre == d.sun_pre and free.roof_palette == d.roof_palette  # rest of draw unchanged
    s = generate_scene(96, 0.3, "informal", seed=3, randomize=True)
    assert s.grid.res == (0.3, 0.3) and s.meta["style"] == "informal"


def test_meta_records_every_drawn_value(rscene):
    m = rscene.meta
    r = m["randomize"]
    d = draw_domain(5)
    assert r == d.to_meta() == json.loads(json.dumps(r))     # all of it, as in the JSON
    assert m["gsd"] == r["gsd"] == d.gsd and m["style"] == r["style"]
    assert (m["sun_pre"]["azimuth"], m["sun_pre"]["elevation"]) == d.sun_pre
    assert (m["sun_post"]["azimuth"], m["sun_post"]["elevation"]) == d.sun_post
    assert set(r["sensor_pre"]) == set(Sensor.__dataclass_fields__)
    assert rscene.grid.res == (d.gsd, d.gsd)
    # the recorded palette is the one roofs are drawn from
    lay = make_layout(256, 0.5, "mid", np.random.default_rng(0), palette=d.roof_palette)
    palette = {tuple(c) for c in r["roof_palette"]}
    assert lay.buildings and {b.color for b in lay.buildings} <= palette


def test_relief_changes_dtm_and_dsm_but_not_ndsm():
    seed = next(s for s in range(50) if draw_domain(s).relief_slope > 0.08)
    on = generate_scene(128, 1.0, "mid", seed=seed, randomize=True)
    off = generate_scene(128, 1.0, "mid", seed=seed)
    np.testing.assert_allclose(on.dsm - on.dtm, on.pre_ndsm, atol=1e-3)
    # buildings stand as they did; trees are redrawn (rsgeo.synth.trees), so only they differ
    built = off.building_ids > 0
    assert np.array_equal(on.building_ids, off.building_ids)
    assert np.array_equal(on.pre_ndsm[built], off.pre_ndsm[built])
    assert np.array_equal(on.post_ndsm[built], off.post_ndsm[built])
    extra = on.dtm - off.dtm                                        # the relief alone
    assert np.ptp(extra) > 1.0                                      # metres over 128 m
    gy, gx = np.gradient(extra.astype(np.float64), 1.0)
    assert np.hypot(gx, gy).max() <= draw_domain(seed).relief_slope + 1e-3


def test_haze_lowers_contrast_and_blur_smooths():
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, (3, 64, 64)).astype(np.float32)
    hz = haze(img, 0.3, (200, 205, 215))
    np.testing.assert_allclose(hz.std(axis=(1, 2)), 0.7 * img.std(axis=(1, 2)), rtol=1e-4)
    assert (hz.mean(axis=(1, 2)) > img.mean(axis=(1, 2))).all()     # toward the bright airlight
    assert blur(img, 1.0).std() < 0.5 * img.std() and blur(img, 0) is img


def test_jpeg_changes_the_image_keeps_shape_and_dtype(rscene):
    rgb = rscene.pre_rgb
    low = jpeg(rgb, 30)
    assert low.shape == rgb.shape and low.dtype == np.uint8
    assert not np.array_equal(low, rgb)
    err_low = np.abs(low.astype(int) - rgb).mean()
    err_high = np.abs(jpeg(rgb, 95).astype(int) - rgb).mean()
    assert 0 < err_high < err_low


def test_sensor_chain_noise_and_gain():
    flat = np.full((3, 32, 32), 100, np.uint8)
    s = Sensor(haze=0.0, airlight=(0, 0, 0), blur_sigma=0.0, gain=(1.1, 1.0, 0.9),
               offset=(0.0, 5.0, 0.0), noise_sigma=3.0, jpeg_quality=None)
    out = apply_sensor(flat, s, np.random.default_rng(0))
    assert out.dtype == np.uint8 and out.shape == flat.shape
    np.testing.assert_allclose(out.mean(axis=(1, 2)), (110, 105, 90), atol=0.6)
    assert 2.5 < out[1].std() < 3.5


@pytest.mark.parametrize("style", ["informal", "industrial", "courtyard"])
def test_new_styles(style):
    s = generate_scene(192, 0.5, style, seed=1)
    fp = s.footprints
    assert len(fp) >= 2 and {4, 8} <= set(np.unique(s.landcover))
    area = fp.geometry.area
    if style == "informal":      # many small houses, low
        assert len(fp) > 40 and area.median() < 80 and fp["height_m"].median() < 8
    elif style == "industrial":  # few large halls
        assert area.max() > 900 and fp["height_m"].max() < 20
    else:                        # perimeter blocks: joined wings of similar height
        touching = sum(fp.geometry.iloc[i].distance(fp.geometry.iloc[j]) < 0.6
                       for i in range(len(fp)) for j in range(i + 1, len(fp)))
        assert touching >= len(fp) // 2


def test_cli_randomize_writes_the_draw(tmp_path, cli):
    code, out, err = cli("synth", "-o", tmp_path, "--size", 96, "--randomize", "--seed", 2,
                         "--style", "informal")
    assert code == 0, err
    meta = json.loads((tmp_path / "city_002_scene.json").read_text())
    assert meta["style"] == "informal" and meta["randomize"]["style"] == "informal"
    assert _inside(meta["gsd"], "gsd") and meta["gsd"] == meta["randomize"]["gsd"]
    assert {"sensor_pre", "sensor_post", "relief", "roof_palette"} <= set(meta["randomize"])


def test_tone_curve_stretches_grey_and_colour_about_their_centres():
    rng = np.random.default_rng(0)
    img = rng.uniform(40, 200, (3, 32, 32)).astype(np.float32)
    assert tone(img, 1.0, 1.0) is img                        # 1, 1: untouched
    out = tone(img, 1.8, 1.0)
    grey, g2 = img.mean(0), out.mean(0)
    np.testing.assert_allclose(g2.mean(), grey.mean(), rtol=1e-5)   # mean grey kept
    np.testing.assert_allclose(g2.std(), 1.8 * grey.std(), rtol=1e-4)
    np.testing.assert_allclose(out - g2, img - grey, atol=1e-3)      # colour offsets kept
    sat = tone(img, 1.0, 1.5)
    np.testing.assert_allclose(sat.mean(0), grey, atol=1e-3)         # grey kept
    np.testing.assert_allclose(sat - grey, 1.5 * (img - grey), atol=1e-3)


def test_tone_is_drawn_and_applied():
    d = draw_domain(11)
    assert d.sensor_pre.contrast != 1.0 and d.sensor_post.saturation != 1.0
    flat = Sensor(haze=0.0, airlight=(0, 0, 0), blur_sigma=0.0, gain=(1, 1, 1),
                  offset=(0, 0, 0), noise_sigma=0.0, jpeg_quality=None)
    img = np.random.default_rng(1).integers(60, 190, (3, 24, 24)).astype(np.uint8)
    assert np.array_equal(apply_sensor(img, flat, np.random.default_rng(0)), img)
    hard = apply_sensor(img, Sensor(**{**flat.__dict__, "contrast": 1.5}), np.random.default_rng(0))
    assert hard.astype(float).mean(0).std() > 1.4 * img.astype(float).mean(0).std()
