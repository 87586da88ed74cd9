"""Generate a georeferenced pre/post-event city (in memory) in the spirit of SynRS3D.

Recipe (SynRS3D Algorithm 1, simplified): terrain -> road grid and blocks -> parcels with
buildings (flat/gable/hip roofs), parks, farmland, water and trees -> land cover and
nDSM -> RGB rendering with sun shading and cast shadows -> a post-event copy where a share
of buildings is destroyed or damaged. With ``randomize``, a per-seed domain draw
(:mod:`rsgeo.synth.domain`) varies the look, adds terrain relief and degrades each image
like a real acquisition (:mod:`rsgeo.synth.sensor`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine

from rsgeo.errors import InputError
from rsgeo.io.raster import Grid
from rsgeo.synth.domain import Domain, draw_domain, sensor_rng
from rsgeo.synth.event import assign_grades, post_heights
from rsgeo.synth.layout import STYLES, make_layout, rotated_coords, to_pixels
from rsgeo.synth.render import render
from rsgeo.synth.sensor import apply_sensor
from rsgeo.synth.surface import LANDCOVER, rasterize, relief, terrain
from rsgeo.synth.trees import randomize_trees

CRS_EPSG = 32631  # UTM 31N (southern France), metres
MAX_GSD = 10.0    # m/px; beyond this the smallest buildings are under a pixel
MIN_GSD = 0.05    # m/px; finer, a 1024 px scene is smaller than one house
MAX_SIZE = 8192   # px; a scene's arrays are held in memory (about 2.5 GB at 8192²)
DEFAULT_GSD = 0.5
DEFAULT_STYLE = "mid"


@dataclass
class Scene:
    """A synthetic scene. Arrays are ``[H, W]`` (RGB ``[3, H, W]``); heights in metres."""

    pre_rgb: np.ndarray
    post_rgb: np.ndarray
    dsm: np.ndarray
    dtm: np.ndarray
    pre_ndsm: np.ndarray
    post_ndsm: np.ndarray
    landcover: np.ndarray
    change: np.ndarray
    building_ids: np.ndarray
    footprints: object  # geopandas.GeoDataFrame: id, height_m, roof, damage, geometry
    grid: Grid
    meta: dict = field(default_factory=dict)


def check_options(size: int, gsd: float | None, style: str | None, destroyed: float,
                  seed: int = 0) -> None:
    """Refuse bad options (``gsd`` / ``style`` None: default or drawn, nothing to check)."""
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    if not 64 <= size <= MAX_SIZE:
        raise InputError(f"--size must be in [64, {MAX_SIZE}] px (a scene is held in memory; "
                         f"use --scenes for more area), got {size}")
    if gsd is not None and not MIN_GSD <= gsd <= MAX_GSD:
        raise InputError(f"--gsd must be in [{MIN_GSD:g}, {MAX_GSD:g}] m/px (coarser, houses "
                         f"vanish under a pixel), got {gsd}")
    if style is not None and style not in STYLES:
        raise InputError(f"--style must be one of {', '.join(STYLES)}, got {style!r}")
    if not 0 <= destroyed <= 1:
        raise InputError(f"--destroyed must be in [0, 1], got {destroyed}")


def resolve(gsd: float | None, style: str | None, seed: int,
            randomize: bool) -> tuple[float, str, Domain | None]:
    """The scene's GSD and style, and its drawn domain (None unless ``randomize``): a given
    GSD / style is kept, a missing one is drawn (randomize) or the default (0.5 m, mid)."""
    if randomize:
        dom = draw_domain(seed, gsd, style)
        return dom.gsd, dom.style, dom
    return (DEFAULT_GSD if gsd is None else gsd), (DEFAULT_STYLE if style is None else style), None


def generate_scene(size: int = 1024, gsd: float | None = None, style: str | None = None,
                   destroyed: float = 0.3, seed: int = 0, randomize: bool = False) -> Scene:
    """Generate one scene; deterministic for ``seed`` (arrays are byte-identical).

    ``gsd`` (m/px) and ``style`` default to 0.5 and ``"mid"``. ``randomize`` draws the
    scene's appearance and geometry from the seed (:mod:`rsgeo.synth.domain`: sun, palettes,
    textures, terrain relief, trees, haze, blur, noise, JPEG, and GSD / style when not given) and
    records the draw in ``meta["randomize"]``; without it the output is what it always was.
    """
    check_options(size, gsd, style, destroyed, seed)
    gsd, style, dom = resolve(gsd, style, seed, randomize)
    rng = np.random.default_rng(seed)
    lay = make_layout(size, gsd, style, rng, palette=None if dom is None else dom.roof_palette)
    if dom is not None:
        lay.trees = randomize_trees(lay, dom.trees, sensor_rng(seed, "trees"))
    U, V = rotated_coords(size, lay.angle)
    dtm = terrain(size, gsd, rng)
    if dom is not None:
        dtm = dtm + relief(size, gsd, dom.relief)
    lc, ndsm, bid, _ = rasterize(lay, U, V, style, rng)
    bid, buildings = keep_visible(lc, bid, lay.buildings)
    roof_colors = np.array([(0, 0, 0)] + [b.color for b in buildings], np.float32)
    n = len(buildings)
    heights = ndimage_max(ndsm, bid, n)

    grades = assign_grades(n, destroyed, rng)
    post_ndsm, rubble, tarps, change = post_heights(ndsm, bid, grades, U, V, buildings, rng)
    dsm = dtm + ndsm
    if dom is None:
        sun_pre = (float(rng.uniform(120, 160)), float(rng.uniform(40, 60)))
        sun_post = (sun_pre[0] + float(rng.uniform(-15, 15)), sun_pre[1] + float(rng.uniform(-8, 8)))
        look = {}
    else:
        sun_pre, sun_post = dom.sun_pre, dom.sun_post
        look = dict(colors=dom.ground_colors, gains=(dom.texture_gain, dom.grain_gain))
    pre_rgb = render(lc, dsm, ndsm, bid, roof_colors, gsd, rng, sun=sun_pre, **look)
    post_lc = lc.copy()
    post_lc[rubble] = 1
    post_rgb = render(post_lc, dtm + post_ndsm, post_ndsm, np.where(rubble, 0, bid), roof_colors,
                      gsd, rng, sun=sun_post, rubble=rubble, tarps=tarps, **look)
    if dom is not None:
        pre_rgb = apply_sensor(pre_rgb, dom.sensor_pre, sensor_rng(seed, "pre"))
        post_rgb = apply_sensor(post_rgb, dom.sensor_post, sensor_rng(seed, "post"))

    grid = scene_grid(size, gsd, seed)
    footprints = footprint_table(buildings, lay.angle, size, grid, heights, grades,
                                 ndimage_max(post_ndsm, bid, n))
    meta = {
        "generator": "rsgeo synth", "seed": seed, "size": size, "gsd": gsd, "style": style,
        "destroyed_share": destroyed, "crs": f"EPSG:{CRS_EPSG}",
        "transform": list(grid.transform)[:6],
        "grid_angle_deg": round(float(np.degrees(lay.angle)), 2),
        "sun_pre": {"azimuth": sun_pre[0], "elevation": sun_pre[1]},
        "sun_post": {"azimuth": sun_post[0], "elevation": sun_post[1]},
        "n_buildings": n, "n_trees": int(len(lay.trees)),
        "damage_counts": {g: int((grades == g).sum()) for g in ("none", "minor", "major", "destroyed")},
        "landcover_classes": {str(k): v for k, v in LANDCOVER.items()},
        "landcover_fractions": {str(k): round(float((lc == k).mean()), 4) for k in LANDCOVER},
        "units": "metres", "height_nodata": None,
    }
    if dom is not None:
        meta["randomize"] = dom.to_meta()
    return Scene(pre_rgb, post_rgb, dsm.astype(np.float32), dtm, ndsm, post_ndsm, lc, change,
                 bid, footprints, grid, meta)


def keep_visible(lc: np.ndarray, bid: np.ndarray, buildings: list) -> tuple[np.ndarray, list]:
    """Keep buildings that really show in the scene (4 px or more), renumbered 1..n; pixels
    of dropped buildings become ``developed`` in ``lc`` (in place). Returns (ids, buildings)."""
    counts = np.bincount(bid.ravel(), minlength=len(buildings) + 1)
    keep = [i for i in range(1, len(buildings) + 1) if counts[i] >= 4]
    remap = np.zeros(len(buildings) + 1, np.int32)
    remap[keep] = np.arange(1, len(keep) + 1)
    bid = remap[bid]
    lc[(bid == 0) & (lc == 8)] = 3
    return bid, [buildings[i - 1] for i in keep]


def scene_grid(size: int, gsd: float, seed: int) -> Grid:
    """The scene's north-up grid in UTM 31N; scenes of different seeds sit side by side."""
    x0 = 560000.0 + (seed % 64) * size * gsd
    y0 = 4830000.0
    return Grid(_crs(), Affine(gsd, 0, x0, 0, -gsd, y0), size, size)


def footprint_table(buildings: list, angle: float, size: int, grid: Grid, heights, grades,
                    post_heights_m):
    """GeoDataFrame of building footprints (id, height_m, roof, damage, post_height_m),
    each rectangle clipped to the scene."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    transform = grid.transform
    polys = []
    for b in buildings:
        px, py = to_pixels(np.array([b.u0, b.u1, b.u1, b.u0]), np.array([b.v0, b.v0, b.v1, b.v1]),
                           size, angle)
        # pixel centre (x, y) -> map: corner convention adds half a pixel
        polys.append(Polygon([transform @ (x + 0.5, y + 0.5) for x, y in zip(px, py)]))
    scene_box = Polygon([transform @ c for c in ((0, 0), (size, 0), (size, size), (0, size))])
    n = len(buildings)
    return gpd.GeoDataFrame(
        {"id": np.arange(1, n + 1, dtype=np.int32),
         "height_m": np.round(heights, 2),
         "roof": [b.roof for b in buildings],
         "damage": list(grades),
         "post_height_m": np.round(post_heights_m, 2)},
        geometry=[p.intersection(scene_box) for p in polys], crs=grid.crs)


def ndimage_max(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per label 1..n (float64 ``[n]``)."""
    from scipy import ndimage

    if n == 0:
        return np.zeros(0)
    return np.asarray(ndimage.maximum(values, labels, index=np.arange(1, n + 1)), dtype=np.float64)


def _crs():
    from rasterio.crs import CRS

    return CRS.from_epsg(CRS_EPSG)
