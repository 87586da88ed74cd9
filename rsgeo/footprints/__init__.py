"""Building footprints (vector polygons) from a building probability, class or mask raster.

:func:`footprints` streams the raster in strips (:mod:`rsgeo.footprints.trace`), keeps
components of at least ``min_area`` m², regularises outlines to right angles
(:mod:`rsgeo.footprints.regularise`) and writes one polygon per building with ``id``,
``area_m2``, ``pixels``, ``score`` (mean building probability; 1.0 for class and mask
rasters) and, with a heights raster, ``height_m`` (95th percentile of the roof's heights: a
robust maximum), ``height_median_m``, ``height_mean_m`` and ``volume_m3`` (as
:mod:`rsgeo.footprints.heights` gives for footprints a user has). The probability raster
can come from anywhere (a segmentation model's building band, a thresholded nDSM, a
land-cover map): the tracing never needs the model.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import ExitStack

import numpy as np

from rsgeo.errors import InputError
from rsgeo.footprints.ground import area_m2, pixel_size_m, scale, to_crs
from rsgeo.footprints.regularise import orthogonalise_all
from rsgeo.footprints.rules import rule_for
from rsgeo.footprints.trace import Component, trace
from rsgeo.io.atomic import check_output
from rsgeo.io.heights import units_of, warn_integer_heights
from rsgeo.io.raster import Grid, align_to, check_overlap, open_raster
from rsgeo.io.vector import driver_for, write_vector
from rsgeo.progress import progress

log = logging.getLogger("rsgeo.footprints")

PURPOSE = "building probability/mask raster"
TOLERANCE_PX = 1.0      # default regularisation tolerance: one pixel's ground size


def footprints(raster: str | os.PathLike, out: str | os.PathLike, *, threshold: float = 0.5,
               classes=(), band: int | None = None, min_area: float = 0.0,
               fill_holes: bool = False, regularise: bool = True,
               tolerance: float | None = None, heights: str | os.PathLike | None = None,
               overwrite: bool = False, strip_rows: int = 1024, workers: int = 0,
               source: str | os.PathLike | None = None) -> dict:
    """Trace building polygons of ``raster`` into the vector file ``out`` (format by extension).

    Args:
        raster: one band of building probability (float 0..1, building where >=
            ``threshold``), class values (``classes``, e.g. ``(8,)``), or a 0/1 mask.
        band: the band to read (required when the raster has several).
        min_area: drop buildings smaller than this many m² (counted in pixels).
        fill_holes: drop courtyards (inner rings); kept by default.
        regularise: right-angled outlines; ``tolerance`` (m, default one pixel) is the
            largest deviation from the traced outline that is smoothed away.
        heights: nDSM in metres (resampled onto the raster's grid when needed).
        workers: processes for regularising (0: this process; pays off from a few
            thousand buildings).
        source: the file to name in messages and the summary's ``input`` when ``raster``
            is an intermediate (the user's image whose probabilities a model predicted
            into a temporary file); default ``raster``.

    Returns:
        A JSON-able summary (counts, areas, options, timings).

    Raises:
        InputError: unreadable raster, no CRS, wrong band, no valid pixel, values that fit
            neither probabilities nor the mask, unknown output extension, existing output.
    """
    t0 = time.perf_counter()
    driver_for(out)
    check_output(out, overwrite, inputs=[raster] + ([heights] if heights else []))
    if not 0 <= min_area < math.inf:
        raise InputError(f"--min-area must be a number of m² >= 0, got {min_area:g}")
    if tolerance is not None and not 0 < tolerance < math.inf:
        raise InputError(f"--tolerance must be a number of metres > 0, got {tolerance:g}")
    if strip_rows < 1:
        raise InputError(f"strip_rows must be at least 1, got {strip_rows}")
    shown = raster if source is None else source
    with ExitStack() as es:
        ds = es.enter_context(open_raster(raster, purpose=PURPOSE))
        band = _band(ds, band, shown)
        rule = rule_for(ds.dtypes[band - 1], threshold, classes)
        grid = Grid.of(ds)
        datasets, units = [ds], None
        if heights is not None:
            hds = es.enter_context(open_raster(heights, bands=1, purpose="height raster"))
            check_overlap(grid, Grid.of(hds), str(shown), str(heights))
            units = units_of(hds, heights)
            warn_integer_heights(hds, heights)
            if not Grid.of(hds).same_as(grid):
                log.warning("%s: resampled (bilinear) onto the grid of %s", heights, shown)
            datasets.append(es.enter_context(align_to(hds, grid, "bilinear")))
        sx, sy = pixel_size_m(grid)
        min_px = int(math.ceil(min_area / (sx * sy))) if min_area > 0 else 0
        n = -(-grid.height // strip_rows)
        with progress(2 * n, "footprints", unit="strips") as bar:
            comps, counts = trace(datasets, rule, shown, rows=strip_rows, min_px=min_px,
                                  fill_holes=fill_holes, heights_units=units, band=band,
                                  advance=bar.advance)
    t_trace = time.perf_counter() - t0
    tol = tolerance if tolerance is not None else TOLERANCE_PX * max(sx, sy)
    gdf = frame(comps, grid, (sx, sy), tol if regularise else None, heights is not None,
                workers)
    if not len(gdf):
        log.warning("%s: no building found (%s); the output holds no polygon", shown,
                    rule.describe())
    write_vector(gdf, out, overwrite=overwrite)
    seconds = time.perf_counter() - t0
    return {"input": str(shown), "band": band, "rule": rule.describe(), "output": str(out),
            "features": int(len(gdf)), "building_area_m2": round(float(gdf["area_m2"].sum()), 2),
            "dropped_small": counts["dropped_small"], "min_area_m2": min_area,
            "regularised": bool(regularise), "tolerance_m": round(tol, 4) if regularise else None,
            "holes": "filled" if fill_holes else "kept",
            "heights": str(heights) if heights is not None else None,
            "pixel_size_m": [round(sx, 6), round(sy, 6)], "megapixels": grid.width * grid.height / 1e6,
            "valid_px": counts["valid_px"], "building_px": counts["building_px"],
            "seconds": round(seconds, 3), "trace_seconds": round(t_trace, 3)}


def _band(ds, band: int | None, path) -> int:
    if band is None:
        if ds.count != 1:
            raise InputError(f"{PURPOSE} has {ds.count} bands; choose the building band with "
                             "--band N", path)
        return 1
    if not 1 <= band <= ds.count:
        raise InputError(f"--band {band} does not exist (the raster has {ds.count} band(s))",
                         path)
    return band


def frame(comps: list[Component], grid: Grid, px_m: tuple[float, float],
          tolerance: float | None, with_heights: bool, workers: int = 0):
    """The output GeoDataFrame of traced components (map coordinates of ``grid``).

    ``tolerance`` (m) regularises outlines in the metric frame (on ``workers`` processes
    when > 0); None keeps pixel outlines.
    """
    import geopandas as gpd

    sx, sy = px_m
    geoms = np.array([c.polygon for c in comps], dtype=object)
    if tolerance is not None and len(geoms):
        metric = scale(geoms, sx, sy)
        size = (grid.width * sx, grid.height * sy)
        geoms = scale(orthogonalise_all(metric, tolerance, size, workers), 1 / sx, 1 / sy)
        geoms = _inside(geoms, grid)
    geoms = to_crs(geoms, grid) if len(geoms) else geoms
    pixels = np.array([c.pixels for c in comps], np.int64)
    cols = {"id": np.arange(1, len(comps) + 1, dtype=np.int64),
            "area_m2": np.round(area_m2(geoms, grid.crs), 2) if len(geoms) else np.zeros(0),
            "pixels": pixels,
            "score": np.round(np.array([c.score_sum for c in comps], float)
                              / np.maximum(pixels, 1), 4)}
    if with_heights:  # the columns of rsgeo.footprints.heights, for traced buildings
        p95, med = (np.array([_pct(c.heights, q) for c in comps], float) for q in (95, 50))
        total = np.array([float(np.sum(c.heights, dtype=np.float64)) for c in comps], float)
        n = np.array([c.heights.size for c in comps], float)
        mean = np.divide(total, n, out=np.full_like(total, np.nan), where=n > 0)
        cols.update(height_m=np.round(p95, 2), height_median_m=np.round(med, 2),
                    height_mean_m=np.round(mean, 2),
                    volume_m3=np.round(np.where(n > 0, total * sx * sy, np.nan), 2))
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=grid.crs)


def _inside(geoms: np.ndarray, grid: Grid) -> np.ndarray:
    """Pixel-coordinate polygons clipped to the raster (a building cut by the raster's edge
    stays cut there; regularising must not square it off beyond the data)."""
    import shapely

    box = shapely.box(0, 0, grid.width, grid.height)
    out = geoms.copy()
    over = ~shapely.within(geoms, box)
    if over.any():
        cut = shapely.intersection(geoms[over], box)
        out[over] = [g if g.geom_type == "Polygon" else
                     max(getattr(g, "geoms", []), key=lambda p: p.area, default=g) for g in cut]
    return out


def _pct(values: np.ndarray, q: float) -> float:
    """Percentile ``q`` of ``values`` (linear interpolation); NaN when there are none."""
    return float(np.percentile(values, q)) if values is not None and values.size else math.nan


__all__ = ["footprints", "frame"]
