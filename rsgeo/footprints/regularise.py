"""Right-angled building outlines from pixel staircases (orthogonalisation by dominant direction).

A footprint traced from a mask follows pixel edges: a staircase wherever a wall is not
parallel to the pixel grid. :func:`orthogonalise` turns it into the outline a mapper draws:

1. Douglas-Peucker (``tolerance``) removes most of the stairs;
2. two candidate wall directions: the length-weighted circular mean (angles times four,
   so walls at right angles vote together) of lines fitted to the traced corners each edge
   of a coarser (2 x ``tolerance``) simplification replaced, and the direction of the
   minimum rotated rectangle;
3. for each, in a frame rotated to that direction, each simplified edge becomes horizontal
   or vertical (whichever is nearer) at the mean cross coordinate of the traced corners it
   replaced (a staircase's inner and outer corners straddle the true wall); runs of the
   same orientation merge, and edges shorter than ``tolerance`` are dropped (their
   neighbours merge) while more than four remain; edges along the raster's border are
   kept where they are (the building goes on beyond the data);
4. consecutive lines intersect in the new corners; the frame is rotated back, and the
   candidate closer to the simplified outline (IoU) is kept.

Holes get the same treatment with the outer ring's direction. When the result is not a
valid polygon or strays from the traced shape (IoU < ``min_iou``), the minimum rotated
rectangle is used if it fits the shape as well, else the simplified outline: a footprint is
never lost or turned into something unrelated.

Coordinates must be in a frame with square units (metres on the ground); callers convert
pixel coordinates by the ground size of a pixel first (:mod:`rsgeo.footprints.ground`).
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
import shapely
from shapely.geometry import LinearRing, Polygon

MIN_IOU = 0.75
PARALLEL_MIN = 512      # fewer polygons than this are regularised in the calling process


def dominant_angle(ring: np.ndarray) -> float:
    """Dominant wall direction (radians in ``[-pi/4, pi/4)``) of a closed ring ``[n, 2]``."""
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    a = 4 * np.arctan2(d[:, 1], d[:, 0])
    return float(math.atan2((length * np.sin(a)).sum(), (length * np.cos(a)).sum()) / 4)


def _rotate(xy: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return xy @ np.array([[c, s], [-s, c]])      # row vectors rotated by +angle


H, V, FIXED = 0, 1, 2
FIXED_MIN_DEG = 3.0     # a raster-edge cut closer than this to a wall direction is snapped


def _edges(ring: np.ndarray, traced: np.ndarray | None, border: np.ndarray) -> list[list]:
    """Edges ``[kind, offset, length, point, direction]`` of a simplified closed ring (rotated).

    ``kind``: ``H``/``V`` (snapped; ``offset`` is y resp. x) or ``FIXED`` (an edge along the
    raster's border, ``border[k]``, kept where it is: the building goes on beyond the data).
    The offset of a snapped edge is the mean cross coordinate of the *traced* vertices it
    replaced (``traced``: the unsimplified ring, of which ``ring``'s vertices are a subset):
    the inner and outer corners of a pixel staircase straddle the true wall, while the
    corners Douglas-Peucker keeps may all lie on one side of it.
    """
    a, b = ring[:-1], ring[1:]
    d = b - a
    horiz = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    length = np.hypot(d[:, 0], d[:, 1])
    offset = np.where(horiz, (a[:, 1] + b[:, 1]) / 2, (a[:, 0] + b[:, 0]) / 2)
    if traced is not None:
        offset = _traced_offsets(ring, traced, horiz, offset)
    skew = np.degrees(np.arctan2(np.abs(d[:, 1]), np.abs(d[:, 0])))
    skew = np.minimum(skew, 90 - skew)
    out = []
    for k in np.flatnonzero(length > 0):
        if border[k] and skew[k] > FIXED_MIN_DEG:
            out.append([FIXED, 0.0, length[k], a[k], d[k] / length[k]])
        else:
            out.append([H if horiz[k] else V, offset[k], length[k], None, None])
    return out


def _runs(ring: np.ndarray, traced: np.ndarray) -> list[np.ndarray] | None:
    """Per edge of the simplified ``ring``: indices of the ``traced`` vertices it replaced
    (both ends included), or None when ``ring``'s vertices are not all traced vertices."""
    n = len(traced) - 1
    where = {tuple(p): i for i, p in enumerate(traced[:-1].tolist())}
    idx = [where.get(tuple(p)) for p in ring.tolist()]
    if any(i is None for i in idx):
        return None
    return [np.arange(i, j + 1 if j >= i else j + n + 1) % n for i, j in zip(idx, idx[1:])]


def _traced_offsets(ring, traced, horiz, fallback) -> np.ndarray:
    runs = _runs(ring, traced)
    if runs is None:
        return fallback
    lens = np.array([len(r) for r in runs])
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    means = np.add.reduceat(traced[np.concatenate(runs)], starts, axis=0) / lens[:, None]
    return np.where(horiz, means[:, 1], means[:, 0])


def fitted_angle(simple: np.ndarray, traced: np.ndarray) -> float:
    """Dominant wall direction (radians) from lines fitted to the traced vertices each
    simplified edge replaced (a staircase's corners straddle the wall; the corners
    Douglas-Peucker keeps tilt it by up to a pixel over the wall's length)."""
    runs = _runs(simple, traced)
    if runs is None:
        return dominant_angle(simple)
    num = den = 0.0
    for run, (a, b) in zip(runs, zip(simple, simple[1:])):
        length = float(np.hypot(*(b - a)))
        pts = traced[run]
        if len(pts) > 2:
            c = pts - pts.mean(axis=0)
            w, v = np.linalg.eigh(c.T @ c)
            d = v[:, -1]
        else:
            d = b - a
        ang = 4 * math.atan2(d[1], d[0])
        num += length * math.sin(ang)
        den += length * math.cos(ang)
    return math.atan2(num, den) / 4


def _merge_runs(edges: list) -> None:
    """Merge consecutive (cyclically) snapped edges of the same orientation in place."""
    i = 0
    while len(edges) > 1 and i < len(edges):
        j = (i + 1) % len(edges)
        a, b = edges[i], edges[j]
        if a[0] == b[0] != FIXED:
            w = a[2] + b[2]
            a[1] = (a[1] * a[2] + b[1] * b[2]) / w if w > 0 else a[1]
            a[2] = w
            del edges[j]
            if j < i:
                i -= 1
            continue
        i += 1


def _line(e) -> tuple[np.ndarray, np.ndarray]:
    if e[0] == H:
        return np.array([0.0, e[1]]), np.array([1.0, 0.0])
    if e[0] == V:
        return np.array([e[1], 0.0]), np.array([0.0, 1.0])
    return e[3], e[4]


def _corner(e1, e2) -> np.ndarray | None:
    """Where the lines of two consecutive edges meet (None when parallel)."""
    (p, d), (q, f) = _line(e1), _line(e2)
    cross = d[0] * f[1] - d[1] * f[0]
    if abs(cross) < 1e-9:
        return None
    t = ((q[0] - p[0]) * f[1] - (q[1] - p[1]) * f[0]) / cross
    return p + t * d


def snap_ring(ring: np.ndarray, tolerance: float, traced: np.ndarray | None = None,
              border: np.ndarray | None = None) -> np.ndarray | None:
    """An axis-parallel closed ring ``[m, 2]`` from the simplified ``ring`` (already
    rotated; ``traced``: the ring before simplification, same rotation; ``border``: which
    edges lie on the raster's border), or None when too few walls remain."""
    edges = _edges(ring, traced, np.zeros(len(ring) - 1, bool) if border is None else border)
    _merge_runs(edges)
    while len(edges) > 4:
        k = min((i for i, e in enumerate(edges) if e[0] != FIXED), default=None,
                key=lambda i: edges[i][2])
        if k is None or edges[k][2] >= tolerance:
            break
        del edges[k]
        _merge_runs(edges)
    fixed = any(e[0] == FIXED for e in edges)
    if len(edges) < (3 if fixed else 4) or (not fixed and len(edges) % 2):
        return None
    pts = [_corner(edges[i], edges[(i + 1) % len(edges)]) for i in range(len(edges))]
    if any(p is None for p in pts):
        return None
    pts.append(pts[0])
    return np.asarray(pts, float)


def on_border(ring: np.ndarray, size: tuple[float, float] | None) -> np.ndarray:
    """Which edges of a closed ring ``[n, 2]`` lie on the border of the box ``(0, 0) ..
    size`` (all False without ``size``)."""
    if size is None:
        return np.zeros(len(ring) - 1, bool)
    a, b = ring[:-1], ring[1:]
    out = np.zeros(len(a), bool)
    for axis, value in ((0, 0.0), (0, size[0]), (1, 0.0), (1, size[1])):
        out |= (a[:, axis] == value) & (b[:, axis] == value)
    return out


def _holes_of(poly: Polygon, simple: Polygon) -> list:
    """The traced hole each simplified hole came from (None where not found)."""
    out = []
    for r in simple.interiors:
        p = shapely.Point(r.coords[0])
        out.append(next((h for h in poly.interiors if h.distance(p) == 0), None))
    return out


def _iou(a, b) -> float:
    inter = shapely.area(shapely.intersection(a, b))
    union = a.area + b.area - inter
    return float(inter / union) if union > 0 else 0.0


def orthogonalise(poly: Polygon, tolerance: float, min_iou: float = MIN_IOU,
                  size: tuple[float, float] | None = None) -> Polygon:
    """The right-angled version of ``poly`` (square units; ``tolerance`` in those units).

    ``size``: the raster's extent ``(0, 0) .. size`` in the same frame; edges along it are
    where the data ends, not walls, and stay where they are. Two wall directions are
    tried, lines fitted to the staircases of a coarser simplification and the minimum
    rotated rectangle's, and the outline closer to the traced shape (IoU) is kept.
    """
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if simple.is_empty or simple.geom_type != "Polygon":
        return poly
    origin = np.asarray(simple.exterior.coords).mean(axis=0)
    traced = np.asarray(poly.exterior.coords) - origin
    coarse = shapely.simplify(poly, 2 * tolerance, preserve_topology=False)
    angles = [dominant_angle(np.asarray(shapely.minimum_rotated_rectangle(poly).exterior.coords))]
    if coarse.geom_type == "Polygon" and not coarse.is_empty:
        angles.insert(0, fitted_angle(np.asarray(coarse.exterior.coords) - origin, traced))
    best, best_iou = None, -1.0
    for angle in angles:
        out = _snapped(poly, simple, origin, angle, tolerance, size)
        iou = _iou(out, simple) if out is not None else -1.0
        if iou > best_iou:
            best, best_iou = out, iou
    if best is None or best_iou < min_iou:
        return _fallback(poly, simple, min_iou)
    return best


def _snapped(poly, simple, origin, angle, tolerance, size) -> Polygon | None:
    """``simple``'s rings snapped to walls along ``angle`` (None when the shell collapses)."""
    rings = []
    pairs = [(simple.exterior, poly.exterior)] + list(zip(simple.interiors, _holes_of(poly, simple)))
    for k, (ring, traced) in enumerate(pairs):
        ring = np.asarray(ring.coords)
        border = on_border(ring, size)
        ring = ring - origin
        traced = np.asarray(traced.coords) - origin if traced is not None else None
        snapped = snap_ring(_rotate(ring, -angle), tolerance,
                            _rotate(traced, -angle) if traced is not None else None, border)
        if snapped is None:
            if k == 0:
                return None
            continue                                  # a hole too small to keep its walls
        rings.append(_rotate(snapped, angle) + origin)
    out = Polygon(rings[0], [r for r in rings[1:] if LinearRing(r).is_valid])
    if not out.is_valid:
        out = shapely.make_valid(out)
        if out.geom_type != "Polygon":
            return None
    return out


def _fallback(poly: Polygon, simple: Polygon, min_iou: float) -> Polygon:
    rect = shapely.minimum_rotated_rectangle(poly)
    if rect.geom_type == "Polygon" and _iou(rect, poly) >= max(min_iou, _iou(simple, poly)):
        return rect
    return simple


@contextlib.contextmanager
def _signals_blocked():
    """SIGINT and SIGTERM blocked in this thread, so in the processes it starts meanwhile.

    A Ctrl-C or a scheduler's SIGTERM goes to the whole process group: a worker killed by
    it broke the pool under the main process (a traceback from the executor's thread, then
    leaked semaphores reported). Workers that never see the signals leave the stop to the
    main process, which cancels what is queued and shuts them down. (A signal that comes
    while they start is not lost: another thread takes it, or it waits until the unblock.)
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def orthogonalise_all(polys, tolerance: float, size: tuple[float, float] | None = None,
                      workers: int = 0) -> np.ndarray:
    """:func:`orthogonalise` over an array of polygons, in order (object array).

    ``workers > 0`` spreads at least ``PARALLEL_MIN`` polygons over that many processes
    (spawned: safe beside the reader threads); the result is the same as in one process.
    """
    fn = partial(orthogonalise, tolerance=tolerance, size=size)
    if workers > 0 and len(polys) >= PARALLEL_MIN:
        chunk = max(16, len(polys) // (8 * workers))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            with _signals_blocked():  # the workers start (in map) with the signals blocked
                results = ex.map(fn, polys, chunksize=chunk)
            out = list(results)
    else:
        out = [fn(p) for p in polys]
    return np.array(out + [None], dtype=object)[:-1]     # never a 2-D array of coordinates
