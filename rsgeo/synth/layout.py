"""City layout: a (rotated) road grid, blocks, parcels, buildings, trees and water.

Everything is in *pixel* coordinates of the scene (x = column, y = row, float). The
road grid is axis-aligned in a frame rotated by ``angle`` about the scene centre; a
building is a rectangle in that frame (``u0, u1, v0, v1``), so its roof is a simple
function of the rotated coordinates. Densities follow SynRS3D's three styles:
``low`` (suburban houses, farmland), ``mid`` (mixed city blocks), ``high`` (downtown),
and three from other parts of the world: ``informal`` (dense low-rise settlements: small
flat roofs, alleys of a few metres, many rows of houses per block), ``industrial`` (large
flat or shed-roofed halls on paved lots) and ``courtyard`` (European perimeter blocks:
a ring of joined buildings of similar height around an inner yard) and ``terraced``
(Mediterranean / European terraced rows: narrow houses joined wall to wall along the
street, one to three storeys, low-pitched tile roofs whose ridge runs along the row, back
gardens between the rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# per style: block size (m), road width (m), building footprint range (m),
# wall (eave) height range (m), share of blocks that are parks, farmland at the edges,
# setback from the parcel edge (m), roof shares (flat, gable, hip), yard land cover around
# buildings (None: grass or paving at random). Optional: sidewalk (m, default 2),
# dense (as many parcel rows as fit a block), courtyard (perimeter blocks), terraced (rows
# of joined houses: side = frontage, depth, storeys (min, max), storey height (m), roof
# pitch (deg)).
STYLES = {
    "low": dict(block=(70, 110), road=(7, 10), side=(8, 16), eave=(3.0, 7.0),
                park=0.15, farm=0.35, setback=(3, 6), roofs=(0.2, 0.45, 0.35), yard=2),
    "mid": dict(block=(60, 95), road=(9, 14), side=(10, 28), eave=(6.0, 22.0),
                park=0.12, farm=0.0, setback=(1.5, 4), roofs=(0.5, 0.25, 0.25), yard=None),
    "high": dict(block=(70, 120), road=(12, 18), side=(18, 45), eave=(15.0, 70.0),
                 park=0.08, farm=0.0, setback=(1, 3), roofs=(0.85, 0.05, 0.1), yard=3),
    "informal": dict(block=(30, 60), road=(2.5, 5), side=(4, 9), eave=(2.5, 6.0),
                     park=0.03, farm=0.0, setback=(0.2, 0.8), roofs=(0.9, 0.1, 0.0), yard=1,
                     sidewalk=0.5, dense=True),
    "industrial": dict(block=(120, 220), road=(12, 20), side=(30, 90), eave=(6.0, 14.0),
                       park=0.05, farm=0.0, setback=(4, 12), roofs=(0.8, 0.2, 0.0), yard=3),
    "courtyard": dict(block=(60, 110), road=(8, 14), side=(10, 16), eave=(12.0, 22.0),
                      park=0.08, farm=0.0, setback=(0, 0), roofs=(0.35, 0.45, 0.2), yard=None,
                      courtyard=True),
    "terraced": dict(block=(50, 100), road=(6, 12), side=(5, 10), eave=(2.9, 9.9),
                     park=0.05, farm=0.0, setback=(0, 4), roofs=(0.1, 0.9, 0.0), yard=2,
                     terraced=True, depth=(8, 15), storeys=(1, 3), storey_m=(2.7, 3.1),
                     pitch=(15, 30)),
}
ROOFS = ("flat", "gable", "hip")


@dataclass
class Building:
    """A rectangular building in the rotated frame (pixels) with its roof and heights (m)."""

    u0: float
    u1: float
    v0: float
    v1: float
    roof: str
    eave: float   # wall height, metres
    height: float  # highest roof point above ground, metres
    color: tuple[int, int, int]
    ridge: str | None = None  # pitched roofs: "u" / "v" axis of the ridge (None: the long side)


@dataclass
class Layout:
    size: int
    gsd: float
    angle: float                     # radians, rotation of the road grid
    roads_u: list[tuple[float, float]]   # road bands (start, end) along u, pixels
    roads_v: list[tuple[float, float]]
    buildings: list[Building] = field(default_factory=list)
    parks: list[tuple[float, float, float, float]] = field(default_factory=list)  # u0,u1,v0,v1
    farms: list[tuple[float, float, float, float]] = field(default_factory=list)
    paved: list[tuple[float, float, float, float]] = field(default_factory=list)
    bare: list[tuple[float, float, float, float]] = field(default_factory=list)
    trees: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # x, y, radius px, height m
    water: np.ndarray | None = None  # (cx, cy, rx, ry) ellipse in pixels, or None
    palette: list[tuple[int, int, int]] | None = None  # roof colours (None: ROOF_COLORS)


ROOF_COLORS = [(172, 88, 64), (150, 76, 58), (118, 118, 124), (86, 86, 92), (196, 196, 188),
               (160, 140, 110), (104, 96, 90), (182, 170, 150)]


def rotated_coords(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel rotated coordinates (u, v) of pixel centres, ``[size, size]`` float32 each."""
    c = (size - 1) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    x -= c
    y -= c
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return x * ca + y * sa + c, -x * sa + y * ca + c


def to_pixels(u: np.ndarray, v: np.ndarray, size: int, angle: float):
    """Inverse of :func:`rotated_coords`: rotated (u, v) -> pixel (x, y)."""
    c = (size - 1) / 2
    ca, sa = np.cos(angle), np.sin(angle)
    uu, vv = np.asarray(u) - c, np.asarray(v) - c
    return uu * ca - vv * sa + c, uu * sa + vv * ca + c


def _bands(rng, extent: float, block: tuple, road: tuple, px: float) -> list[tuple[float, float]]:
    """Road bands along one axis, in pixels, reaching a whole block beyond
    [-extent/2, 1.5*extent] (the rotated scene), so even a scene smaller than one block
    lies between two roads instead of being all road."""
    margin = block[1] / px
    out, pos = [], -extent * 0.5 - margin + rng.uniform(0, margin)
    while pos < extent * 1.5 + margin:
        w = rng.uniform(*road) / px
        out.append((pos, pos + w))
        pos += w + rng.uniform(*block) / px
    return out


def make_layout(size: int, gsd: float, style: str, rng: np.random.Generator,
                palette: list[tuple[int, int, int]] | None = None) -> Layout:
    """Draw a city layout for a ``size x size`` px scene at ``gsd`` m/px; roof colours are
    drawn uniformly from ``palette`` (default :data:`ROOF_COLORS`)."""
    st = STYLES[style]
    angle = float(rng.uniform(-0.45, 0.45)) if rng.random() < 0.7 else 0.0
    lay = Layout(size, gsd, angle, _bands(rng, size, st["block"], st["road"], gsd),
                 _bands(rng, size, st["block"], st["road"], gsd), palette=palette)
    c = (size - 1) / 2
    blocks = [(a[1], b[0], d[1], e[0]) for a, b in zip(lay.roads_u, lay.roads_u[1:])
              for d, e in zip(lay.roads_v, lay.roads_v[1:])]
    water_block = None
    if rng.random() < 0.6:
        near = [b for b in blocks if _inside(b, size, angle)]
        if near:
            water_block = near[rng.integers(len(near))]
    sidewalk = st.get("sidewalk", 2.0) / gsd
    fill = _perimeter_in if st.get("courtyard") else _terraced_in if st.get("terraced") \
        else _buildings_in
    for blk in blocks:
        u0, u1, v0, v1 = blk[0] + sidewalk, blk[1] - sidewalk, blk[2] + sidewalk, blk[3] - sidewalk
        if u1 - u0 < 4 or v1 - v0 < 4 or not _near_scene((u0, u1, v0, v1), size, angle):
            continue
        lay.paved.append((blk[0], blk[1], blk[2], blk[3]))
        dist = np.hypot((u0 + u1) / 2 - c, (v0 + v1) / 2 - c) / (size / 2)
        if blk is water_block:
            cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
            x, y = to_pixels(cu, cv, size, angle)
            lay.water = np.array([x, y, (u1 - u0) * 0.38, (v1 - v0) * 0.38])
            lay.parks.append((u0, u1, v0, v1))
            _trees_in(lay, rng, (u0, u1, v0, v1), density=0.4, avoid_water=True)
        elif st["farm"] and dist > 0.6 and rng.random() < st["farm"] * 2:
            (lay.farms if rng.random() < 0.7 else lay.bare).append((u0, u1, v0, v1))
        elif rng.random() < st["park"]:
            lay.parks.append((u0, u1, v0, v1))
            _trees_in(lay, rng, (u0, u1, v0, v1), density=1.0)
        else:
            fill(lay, rng, (u0, u1, v0, v1), st)
    return lay


def _inside(b, size, angle) -> bool:
    x, y = to_pixels((b[0] + b[1]) / 2, (b[2] + b[3]) / 2, size, angle)
    return 0.2 * size < x < 0.8 * size and 0.2 * size < y < 0.8 * size


def _near_scene(b, size, angle) -> bool:
    us = np.array([b[0], b[1], b[0], b[1]])
    vs = np.array([b[2], b[2], b[3], b[3]])
    x, y = to_pixels(us, vs, size, angle)
    return x.max() > 0 and x.min() < size and y.max() > 0 and y.min() < size


def _buildings_in(lay: Layout, rng, blk, st) -> None:
    """Split a block into two rows of parcels along its longer side; one building each."""
    u0, u1, v0, v1 = blk
    px = lay.gsd
    long_u = (u1 - u0) >= (v1 - v0)
    a0, a1, b0, b1 = (u0, u1, v0, v1) if long_u else (v0, v1, u0, u1)
    if st.get("dense"):   # as many rows of houses as fit: informal settlements
        rows = max(1, int((b1 - b0) * px // (st["side"][1] + 2 * st["setback"][1])))
    else:
        rows = 2 if (b1 - b0) * px > 2 * st["side"][0] + 4 else 1
    depth = (b1 - b0) / rows
    for r in range(rows):
        rb0, rb1 = b0 + r * depth, b0 + (r + 1) * depth
        pos = a0
        while pos < a1 - st["side"][0] / px:
            width = min(rng.uniform(*st["side"]) / px + 2 * st["setback"][1] / px, a1 - pos)
            sb = rng.uniform(*st["setback"]) / px
            pa0, pa1 = pos + sb, pos + width - sb
            d = min(depth - 2 * sb, rng.uniform(*st["side"]) / px * rng.uniform(0.8, 1.4))
            pb0 = (rb0 + sb) if r == 0 else (rb1 - sb - d)
            pb1 = pb0 + d
            pos += width
            if pa1 - pa0 < 4 / px or pb1 - pb0 < 4 / px:
                continue
            if rng.random() < 0.12:   # empty lot: yard with trees, or a parking lot
                if rng.random() < 0.5:
                    _trees_in(lay, rng, (pa0, pa1, pb0, pb1), density=1.2)
                continue
            bu = (pa0, pa1, pb0, pb1) if long_u else (pb0, pb1, pa0, pa1)
            lay.buildings.append(_building(rng, bu, st, px, lay.palette))
            if st["setback"][0] >= 3 and rng.random() < 0.6:  # garden trees in suburbs
                _trees_in(lay, rng, (pos - width, pos, rb0, rb1) if long_u else (rb0, rb1, pos - width, pos),
                          density=0.5, avoid=bu)


def _building(rng, box, st, px, palette=None) -> Building:
    roof = ROOFS[rng.choice(3, p=st["roofs"])]
    eave = float(rng.uniform(*st["eave"]))
    return _make_building(rng, box, roof, eave, px, palette)


def _make_building(rng, box, roof: str, eave: float, px: float, palette=None,
                   pitch=(25, 45), ridge: str | None = None, color=None) -> Building:
    """Roof height from the roof type (flat: a parapet half the time; pitched: ``pitch``
    degrees, rising over half the side across the ridge) and a roof colour from ``palette``
    (or ``color`` when given)."""
    across = min(box[1] - box[0], box[3] - box[2]) if ridge is None else \
        (box[3] - box[2] if ridge == "u" else box[1] - box[0])
    if roof == "flat":
        height = eave + (float(rng.uniform(0.3, 1.2)) if rng.random() < 0.5 else 0.0)
    else:  # pitched: rise over half the side across the ridge
        short = across * px
        height = eave + 0.5 * short * float(np.tan(np.radians(rng.uniform(*pitch))))
    if color is None:
        colors = ROOF_COLORS if palette is None else palette
        color = colors[rng.integers(len(colors))]
    return Building(*box, roof=roof, eave=eave, height=round(height, 2), color=color, ridge=ridge)


def _perimeter_in(lay: Layout, rng, blk, st) -> None:
    """A perimeter block: wings of one depth along the four edges, split into joined
    buildings of 12-30 m frontage with eaves near one height per block, around an inner
    yard with a few trees. Blocks too small for a yard get ordinary parcels."""
    u0, u1, v0, v1 = blk
    px = lay.gsd
    depth = rng.uniform(*st["side"]) / px
    if min(u1 - u0, v1 - v0) < 3 * depth:
        _buildings_in(lay, rng, blk, st)
        return
    eave = float(rng.uniform(*st["eave"]))
    roof = ROOFS[rng.choice(3, p=st["roofs"])]
    # two wings run the block's full length along u, two fit between them along v
    for w in ((u0, u1, v0, v0 + depth), (u0, u1, v1 - depth, v1),
              (u0, u0 + depth, v0 + depth, v1 - depth), (u1 - depth, u1, v0 + depth, v1 - depth)):
        along_u = (w[1] - w[0]) >= (w[3] - w[2])
        a0, a1 = (w[0], w[1]) if along_u else (w[2], w[3])
        pos = a0
        while pos < a1:
            end = pos + rng.uniform(12, 30) / px
            end = a1 if a1 - end < 8 / px else end
            box = (pos, end, w[2], w[3]) if along_u else (w[0], w[1], pos, end)
            e = max(eave + float(rng.uniform(-1.5, 1.5)), 3.0)
            lay.buildings.append(_make_building(rng, box, roof, e, px, lay.palette))
            pos = end
    _trees_in(lay, rng, (u0 + depth + 1, u1 - depth - 1, v0 + depth + 1, v1 - depth - 1),
              density=0.6)


def _terraced_in(lay: Layout, rng, blk, st) -> None:
    """Two rows of terraced houses back to back along the block's longer side, each row
    facing its street behind a front setback, with lawn gardens (and a few trees) between
    the rows; see :func:`_terraced_row`. Blocks too shallow for two rows get one."""
    u0, u1, v0, v1 = blk
    px = lay.gsd
    long_u = (u1 - u0) >= (v1 - v0)
    a0, a1, b0, b1 = (u0, u1, v0, v1) if long_u else (v0, v1, u0, u1)
    front = rng.uniform(*st["setback"]) / px
    depth = rng.uniform(*st["depth"]) / px
    rows = [(b0 + front, b0 + front + depth)]
    if (b1 - b0) > 2 * (front + depth) + 6 / px:
        rows.append((b1 - front - depth, b1 - front))
    elif (b1 - b0) < front + depth + 2 / px:
        return
    for r0, r1 in rows:
        _terraced_row(lay, rng, (a0, a1, r0, r1), long_u, st)
    garden = (rows[0][1] + 1, rows[-1][0] - 1) if len(rows) > 1 else (rows[0][1] + 1, b1 - 1)
    if garden[1] - garden[0] > 4 / px:
        box = (a0, a1, *garden) if long_u else (*garden, a0, a1)
        lay.parks.append(box)   # lawn (rangeland), not paving
        _trees_in(lay, rng, box, density=0.5)


def _terraced_row(lay: Layout, rng, row, long_u: bool, st) -> None:
    """Joined houses along ``row`` = (a0, a1, b0, b1) in the (along, across) frame: frontage
    ``side`` m each, a gap of 1-4 m now and then, eaves at a whole number of storeys (one
    storey count for most of the row), one roof type and colour family per row, the ridge
    along the row."""
    a0, a1, b0, b1 = row
    px = lay.gsd
    roof = ROOFS[rng.choice(3, p=st["roofs"])]
    storeys = int(rng.integers(st["storeys"][0], st["storeys"][1] + 1))
    storey_m = float(rng.uniform(*st["storey_m"]))
    colors = ROOF_COLORS if lay.palette is None else lay.palette
    base = np.array(colors[rng.integers(len(colors))], np.float64)
    pos = a0 + rng.uniform(0, 3) / px
    while pos < a1 - st["side"][0] / px:
        end = min(pos + rng.uniform(*st["side"]) / px, a1)
        n = int(np.clip(storeys + (rng.integers(-1, 2) if rng.random() < 0.25 else 0),
                        st["storeys"][0], st["storeys"][1]))
        eave = n * storey_m + float(rng.uniform(0.2, 0.6))
        color = tuple(int(c) for c in np.clip(np.round(base + rng.normal(0, 8, 3)), 0, 255))
        box = (pos, end, b0, b1) if long_u else (b0, b1, pos, end)
        lay.buildings.append(_make_building(rng, box, roof, eave, px, pitch=st["pitch"],
                                            ridge="u" if long_u else "v", color=color))
        pos = end + (rng.uniform(1, 4) / px if rng.random() < 0.08 else 0.0)


def _trees_in(lay: Layout, rng, box, density: float, avoid=None, avoid_water=False) -> None:
    u0, u1, v0, v1 = box
    area_m2 = max(u1 - u0, 0) * max(v1 - v0, 0) * lay.gsd ** 2
    n = rng.poisson(area_m2 / 120 * density)
    if n == 0:
        return
    u = rng.uniform(u0, u1, n)
    v = rng.uniform(v0, v1, n)
    if avoid is not None:
        keep = ~((u > avoid[0] - 2) & (u < avoid[1] + 2) & (v > avoid[2] - 2) & (v < avoid[3] + 2))
        u, v = u[keep], v[keep]
    x, y = to_pixels(u, v, lay.size, lay.angle)
    if avoid_water and lay.water is not None:
        cx, cy, rx, ry = lay.water
        keep = ((x - cx) / (rx + 6)) ** 2 + ((y - cy) / (ry + 6)) ** 2 > 1
        x, y = x[keep], y[keep]
    r = rng.uniform(2.0, 5.0, len(x)) / lay.gsd
    h = rng.uniform(5.0, 16.0, len(x))
    lay.trees = np.concatenate([lay.trees, np.stack([x, y, r, h], 1)])
