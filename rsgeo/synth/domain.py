"""Domain randomisation for ``rsgeo synth --randomize``: what is drawn, and from which range.

Everything is drawn from its own generator seeded by the scene seed (so the same seed gives
the same draw, and the city layout's random stream is not disturbed), rounded, and recorded
in the scene's ``meta["randomize"]``. Ranges (:data:`RANGES`):

- GSD uniform in 0.2..1.0 m (0.01 steps) unless given; building style uniform over
  :data:`rsgeo.synth.layout.STYLES` unless given.
- Sun azimuth 0..360 deg, elevation 25..75 deg; the post-event image's sun moves by up to
  ±20 deg azimuth and ±10 deg elevation (kept in 20..80).
- Roofs: a Dirichlet(0.6) mix of the families in :data:`rsgeo.synth.palette.ROOF_FAMILIES`
  and 10 colours drawn from it; ground classes between their end members
  (:data:`rsgeo.synth.palette.GROUND_RANGES`), vegetation (rangeland, trees, crops) by one
  shared dry..lush draw; texture and grain amplitudes × 0.4..2.
- Terrain relief: 3 plane waves (wavelength 200..1500 m, any direction), together no steeper
  than a slope drawn in 0..0.15; added to the DTM and DSM, the nDSM is unchanged.
- Trees (:mod:`rsgeo.synth.trees`): crown radius and height ranges, share of the layout's
  trees kept, garden trees around a share of buildings, street-tree rows along a share of
  the roads; drawn last, so every draw above is what it was without them.
- Per image (pre and post separately): haze 0..0.4 toward an airlight of 170..235 grey
  levels (blue × 1..1.1), Gaussian blur sigma 0..1.5 px, per-band gain 0.85..1.15 and
  offset -10..10, noise sd 0.5..5 grey levels, JPEG quality 30..95 (or none, 20 %), and
  the ortho's tone curve: contrast x 0.8..2 and saturation x 0.8..1.6 (orthophotos are
  delivered stretched, often with twice the grey-level spread of an unstretched render);
  drawn after the trees, so every draw above is what it was.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np

from rsgeo.synth.layout import STYLES
from rsgeo.synth.palette import GROUND_RANGES, VEGETATION, draw_roof_palette, ground_colors
from rsgeo.synth.sensor import Sensor
from rsgeo.synth.trees import draw_trees

DOMAIN_TAG = 0x5D0A1  # mixed with the seed: the domain draw's own random stream
RANGES = {
    "gsd": (0.2, 1.0), "sun_azimuth": (0.0, 360.0), "sun_elevation": (25.0, 75.0),
    "sun_post_shift": (20.0, 10.0), "sun_post_elevation": (20.0, 80.0),
    "texture_gain": (0.4, 2.0), "grain_gain": (0.4, 2.0),
    "relief_slope": (0.0, 0.15), "relief_wavelength_m": (200.0, 1500.0),
    "haze": (0.0, 0.4), "airlight": (170.0, 235.0), "airlight_blue": (1.0, 1.1),
    "blur_sigma": (0.0, 1.5), "gain": (0.85, 1.15), "offset": (-10.0, 10.0),
    "noise_sigma": (0.5, 5.0), "jpeg_quality": (30, 95), "jpeg_none_share": 0.2,
    "contrast": (0.8, 2.0), "saturation": (0.8, 1.6),
}
RELIEF_WAVES = 3


@dataclass
class Domain:
    """One scene's drawn appearance and geometry parameters (see the module docstring)."""

    gsd: float
    style: str
    sun_pre: tuple[float, float]        # (azimuth, elevation), degrees
    sun_post: tuple[float, float]
    roof_families: dict[str, float]     # family -> weight (sums to 1)
    roof_palette: list[tuple[int, int, int]]
    vegetation: float                   # 0 dry .. 1 lush
    ground_t: dict[int, float]          # land-cover class -> position between end members
    ground_colors: dict[int, tuple[int, int, int]]
    texture_gain: float
    grain_gain: float
    relief_slope: float                 # steepest possible slope of the relief (m/m)
    relief: list[dict]                  # plane waves: amplitude_m, wavelength_m, direction_deg, phase_rad
    sensor_pre: Sensor
    sensor_post: Sensor
    trees: dict                         # rsgeo.synth.trees.draw_trees

    def to_meta(self) -> dict:
        """Every drawn value as it reads back from JSON (tuples as lists, class ids as
        strings), so a scene's in-memory meta equals its ``_scene.json``."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _u(rng: np.random.Generator, key: str, nd: int = 3) -> float:
    lo, hi = RANGES[key]
    return round(float(rng.uniform(lo, hi)), nd)


def draw_sensor(rng: np.random.Generator) -> Sensor:
    """One image's haze, blur, gain/offset, noise and JPEG quality."""
    grey = rng.uniform(*RANGES["airlight"])
    blue = rng.uniform(*RANGES["airlight_blue"])
    airlight = (int(round(grey)), int(round(grey * (1 + blue) / 2)), int(round(min(grey * blue, 255))))
    lo_q, hi_q = RANGES["jpeg_quality"]
    quality = int(rng.integers(lo_q, hi_q + 1))
    return Sensor(
        haze=_u(rng, "haze"), airlight=airlight, blur_sigma=_u(rng, "blur_sigma"),
        gain=tuple(round(float(g), 3) for g in rng.uniform(*RANGES["gain"], 3)),
        offset=tuple(round(float(o), 2) for o in rng.uniform(*RANGES["offset"], 3)),
        noise_sigma=_u(rng, "noise_sigma"),
        jpeg_quality=None if rng.random() < RANGES["jpeg_none_share"] else quality)


def draw_relief(rng: np.random.Generator) -> tuple[float, list[dict]]:
    """Steepest slope and the plane waves whose summed slopes stay below it."""
    slope = _u(rng, "relief_slope", 4)
    waves = []
    for _ in range(RELIEF_WAVES):
        lam = _u(rng, "relief_wavelength_m", 1)
        waves.append({"amplitude_m": round(slope * lam / (2 * np.pi * RELIEF_WAVES), 3),
                      "wavelength_m": lam, "direction_deg": round(float(rng.uniform(0, 180)), 2),
                      "phase_rad": round(float(rng.uniform(0, 2 * np.pi)), 4)})
    return slope, waves


def draw_domain(seed: int, gsd: float | None = None, style: str | None = None) -> Domain:
    """Draw a scene's domain from ``seed``; a given ``gsd`` / ``style`` is kept as is."""
    rng = np.random.default_rng([seed, DOMAIN_TAG])
    drawn_gsd = round(float(rng.uniform(*RANGES["gsd"])), 2)
    drawn_style = list(STYLES)[int(rng.integers(len(STYLES)))]
    sun_pre = (_u(rng, "sun_azimuth", 2), _u(rng, "sun_elevation", 2))
    da, de = RANGES["sun_post_shift"]
    sun_post = (round((sun_pre[0] + float(rng.uniform(-da, da))) % 360.0, 2),
                round(float(np.clip(sun_pre[1] + rng.uniform(-de, de), *RANGES["sun_post_elevation"])), 2))
    families, palette = draw_roof_palette(rng)
    veg = round(float(rng.uniform(0, 1)), 3)
    ground_t = {cls: (veg if cls in VEGETATION else round(float(rng.uniform(0, 1)), 3))
                for cls in GROUND_RANGES}
    tex, grain = _u(rng, "texture_gain"), _u(rng, "grain_gain")
    slope, waves = draw_relief(rng)
    pre, post = draw_sensor(rng), draw_sensor(rng)
    trees = draw_trees(rng)
    pre, post = (dataclasses.replace(s, contrast=_u(rng, "contrast"), saturation=_u(rng, "saturation"))
                 for s in (pre, post))
    return Domain(gsd=drawn_gsd if gsd is None else gsd, style=drawn_style if style is None else style,
                  sun_pre=sun_pre, sun_post=sun_post, roof_families=families, roof_palette=palette,
                  vegetation=veg, ground_t=ground_t, ground_colors=ground_colors(ground_t),
                  texture_gain=tex, grain_gain=grain, relief_slope=slope, relief=waves,
                  sensor_pre=pre, sensor_post=post, trees=trees)


def sensor_rng(seed: int, image: str) -> np.random.Generator:
    """The noise generator of one image (``"pre"`` or ``"post"``) of scene ``seed``, or
    (``"trees"``) the one that plants its randomised trees."""
    return np.random.default_rng([seed, DOMAIN_TAG, {"pre": 1, "post": 2, "trees": 3}[image]])
