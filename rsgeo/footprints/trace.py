"""Trace building components of a raster strip by strip into pixel-exact polygons.

Two passes over full-width strips (memory bounded by a strip plus the open components):

1. :class:`~rsgeo.io.components.StripComponents` labels building pixels
   (4-connectivity) and joins labels across strip borders, giving every component its
   size and last row;
2. the strips are read again, relabelled to component roots (components under
   ``min_px`` pixels dropped) and traced with ``rasterio.features.shapes`` in *pixel*
   coordinates (column, row: integers, exact in float64), so the pieces of a component
   that spans strips union without slivers. A component is finished as soon as the sweep
   passes its last row: its pieces are unioned, its collinear vertices removed and the
   polygon normalised, so the outline does not depend on where the strips were cut.

Per component: pixel count, summed score (building probability) and, with a heights
raster, its valid heights in metres (for percentiles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import shapely
from affine import Affine
from rasterio import features
from shapely.geometry import Polygon, shape

from rsgeo.io.components import StripComponents
from rsgeo.errors import InputError
from rsgeo.io.raster import valid_mask
from rsgeo.io.reader import read_strips


@dataclass
class Component:
    """One building: ``polygon`` in pixel coordinates (col, row), ``first`` its first pixel
    in raster order (row * width + col; sorts components the same for any strip size)."""

    polygon: Polygon
    first: int
    pixels: int
    score_sum: float
    heights: np.ndarray | None = None


@dataclass
class _Open:
    pieces: list = field(default_factory=list)
    first: int = -1
    pixels: int = 0
    score_sum: float = 0.0
    heights: list = field(default_factory=list)


def _strips(datasets, rows: int, band: int, rule, path, heights_units) -> Iterator:
    """``(row_off, building, score, heights or None)`` per strip."""
    main = datasets[0]
    for win, arrs in read_strips(datasets, rows, bands=[band] + [1] * (len(datasets) - 1)):
        a = arrs[0]
        ok = valid_mask(a, main.nodatavals[band - 1])
        building, score = rule.apply(a, ok, path)
        h = None
        if len(arrs) > 1:
            hraw = arrs[1]
            h = heights_units.to_metres(hraw).astype(np.float32, copy=True)
            h[~valid_mask(hraw, datasets[1].nodata)] = np.nan
        yield int(win.row_off), building, score, ok, h


def trace(datasets, rule, path, *, rows: int, min_px: int, fill_holes: bool,
          heights_units=None, band: int = 1, advance: Callable[[], None] = lambda: None
          ) -> tuple[list[Component], dict]:
    """All components of the building pixels of ``datasets[0]`` (band ``band``), in raster
    order of their first pixel.

    ``datasets``: the input, and optionally a heights raster on the same grid.
    Returns ``(components, counts)`` with counts ``valid_px``, ``building_px`` and
    ``dropped_small`` (components under ``min_px`` pixels). Raises ``InputError`` naming
    ``path`` when no pixel is valid.
    """
    comps = StripComponents()
    valid_px = building_px = 0
    for row_off, building, _, ok, _ in _strips(datasets[:1], rows, band, rule, path, None):
        comps.add(building, row_off)
        valid_px += int(np.count_nonzero(ok))
        building_px += int(np.count_nonzero(building))
        advance()
    if valid_px == 0:
        raise InputError("no valid pixel (all nodata or NaN): nothing to trace", path)
    comps.finish()
    roots = np.unique(comps.parent[1:])
    n_all = int(np.count_nonzero(comps.root_area[roots] > 0))
    n_kept = int(np.count_nonzero(comps.root_area[roots] >= max(min_px, 1)))
    width = datasets[0].width
    open_: dict[int, _Open] = {}
    done: list[Component] = []
    for row_off, building, score, _, h in _strips(datasets, rows, band, rule, path,
                                                  heights_units):
        lab = comps.relabel(building, min_px)
        _collect(lab, score, h, row_off, width, open_)
        end = row_off + lab.shape[0]
        for r in [r for r in open_ if comps.root_last_row[r] < end]:
            done.append(_finish(open_.pop(r), fill_holes, h is not None))
        advance()
    done.sort(key=lambda c: c.first)
    return done, {"valid_px": valid_px, "building_px": building_px,
                  "dropped_small": n_all - n_kept}


def _collect(lab: np.ndarray, score: np.ndarray, h, row_off: int, width: int,
             open_: dict) -> None:
    """Add one relabelled strip's pixels and traced pieces to the open components."""
    sel = lab > 0
    if not sel.any():
        return
    ids = lab[sel]
    flat = np.flatnonzero(sel) + row_off * width          # raster-order position
    uniq, start, counts = np.unique(ids, return_index=True, return_counts=True)
    sums = np.bincount(np.searchsorted(uniq, ids), weights=score[sel], minlength=len(uniq))
    hs = None
    if h is not None:
        order = np.argsort(ids, kind="stable")
        hs = np.split(h[sel][order], np.cumsum(counts)[:-1])
    for k, r in enumerate(uniq.tolist()):
        c = open_.setdefault(r, _Open())
        if c.first < 0:
            c.first = int(flat[start[k]])
        c.pixels += int(counts[k])
        c.score_sum += float(sums[k])
        if hs is not None:
            c.heights.append(hs[k][np.isfinite(hs[k])])
    shift = Affine.translation(0, row_off)
    for geom, value in features.shapes(lab.astype(np.int32), mask=sel, connectivity=4,
                                       transform=shift):
        open_[int(value)].pieces.append(shape(geom))


def _finish(c: _Open, fill_holes: bool, with_heights: bool) -> Component:
    poly = c.pieces[0] if len(c.pieces) == 1 else shapely.union_all(c.pieces)
    if poly.geom_type != "Polygon":      # pixels touching at a corner only: keep the outline
        poly = max(getattr(poly, "geoms", [poly]), key=lambda g: g.area) if poly.area else poly
    if fill_holes:
        poly = Polygon(poly.exterior)
    poly = shapely.normalize(shapely.simplify(poly, 0, preserve_topology=False))
    heights = (np.concatenate(c.heights) if c.heights else np.zeros(0, np.float32)
               ) if with_heights else None
    return Component(poly, c.first, c.pixels, c.score_sum, heights)
