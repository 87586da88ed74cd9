"""How tall is each building: per-footprint statistics of a height raster.

:func:`building_heights` takes building polygons a user already has (cadastre,
OpenStreetMap, ``rsgeo footprints``) and a raster of heights above ground (a LiDAR nDSM, the
output of ``rsgeo predict-height``, or a DSM with its DTM) and writes the polygons back with,
per building, over the valid pixels whose centres fall inside it:

- ``height_m``: the 95th percentile (a robust maximum: ridge or parapet, not a chimney), as
  ``rsgeo footprints --heights`` gives for traced buildings;
- ``height_median_m``, ``height_mean_m``;
- ``volume_m3``: the sum of the heights times the pixel area (the volume above ground);
- ``measured_px``: the pixels measured; ``coverage``: ``inside``, ``partly outside`` (measured
  on the part inside), ``outside`` the raster or ``no valid pixel`` (no statistics: NaN).

The raster is streamed in strips; a building's pixels are held only until the sweep passes
its last row, so memory is bounded by the buildings that cross a strip. Percentiles are
exact (one sort per strip of finished buildings, :mod:`rsgeo.metrics.grouped`).
"""

from __future__ import annotations

import os
import time
from contextlib import ExitStack

import numpy as np
from rasterio.windows import transform as window_transform

from rsgeo.errors import InputError
from rsgeo.io.atomic import check_output
from rsgeo.io.buildings import COVERAGE, load_buildings
from rsgeo.io.heights import (MAX_HEIGHT_M, check_heights, check_max_height, predicted_by_rsgeo,
                              require_valid, sample, sample_plan, units_of,
                              warn_integer_heights)
from rsgeo.io.raster import Grid, align_to, check_overlap, open_raster, pixel_area_m2, valid_mask
from rsgeo.io.reader import read_strips
from rsgeo.io.vector import driver_for, write_vector
from rsgeo.metrics.grouped import ObjectSweep, grouped_median, grouped_percentile
from rsgeo.progress import progress

COLUMNS = ("height_m", "height_median_m", "height_mean_m", "volume_m3", "measured_px",
           "coverage")


def building_heights(heights: str | os.PathLike, buildings: str | os.PathLike,
                     out: str | os.PathLike, *, dtm: str | os.PathLike | None = None,
                     prefix: str = "", compare: str | None = None, crs: str = "buildings",
                     max_height: float = MAX_HEIGHT_M, overwrite: bool = False,
                     strip_rows: int = 1024) -> dict:
    """Write ``buildings`` with their heights measured on ``heights`` to ``out``.

    Args:
        heights: one band of heights above ground (metres, or a length unit / scale the
            band declares); with ``dtm`` a surface model (DSM) from which the DTM
            (resampled bilinear onto its grid when needed) is subtracted.
        buildings: polygons in any OGR format or GeoParquet, with a CRS (measured
            reprojected onto the raster's CRS).
        out: vector file, format by extension (:data:`rsgeo.io.vector.DRIVERS`).
        prefix: prepended to the new column names (for files that already hold a
            ``height_m``, e.g. reference heights to compare with).
        compare: a numeric column of ``buildings`` holding reference heights in metres
            (cadastre, OSM ``height``, a survey): the summary adds how the measured
            heights agree with it (:func:`agreement`).
        crs: the output's CRS: ``"buildings"`` (the footprints' own, as a GIS layer gains
            columns) or ``"raster"`` (the heights raster's, as ``damage-map`` writes).

    Returns:
        A JSON-able summary: counts by coverage, median building height, units, timings.

    Raises:
        InputError: unreadable inputs, no CRS, no overlap, no valid height, absolute
            elevations without ``dtm`` (a DSM), implausible heights, column names taken.
    """
    t0 = time.perf_counter()
    if crs not in ("buildings", "raster"):
        raise InputError(f"--crs must be buildings or raster, got {crs!r}")
    max_height = check_max_height(max_height)  # nan would turn the check off
    driver_for(out)
    check_output(out, overwrite, inputs=[p for p in (heights, buildings, dtm) if p])
    with ExitStack() as es:
        datasets, units, checks = _open_heights(es, heights, dtm, max_height)
        grid = Grid.of(datasets[0])
        bld = load_buildings(buildings, grid, "they get no heights")
        taken = [prefix + c for c in COLUMNS if prefix + c in bld.gdf.columns]
        if taken:
            raise InputError(f"the footprints already have a column {taken[0]}; pass --prefix "
                             f"(e.g. --prefix pred_ gives pred_{taken[0][len(prefix):]})",
                             buildings)
        if compare is not None:
            _check_reference(bld.gdf, compare, buildings)
        table = _sweep(datasets, units, bld, strip_rows)
    px_area = pixel_area_m2(grid)
    table["volume_m3"] = table.pop("_sum") * px_area
    stats = {"id": table["id"],
             **{prefix + k: np.round(table[k], 2) for k in COLUMNS[:4]},
             prefix + "measured_px": table["measured_px"]}
    gdf = bld.with_stats(stats, coverage_column=prefix + "coverage")
    gdf[prefix + "measured_px"] = gdf[prefix + "measured_px"].fillna(0).astype(np.int64)
    if crs == "buildings" and bld.source_crs is not None and gdf.crs != bld.source_crs:
        gdf = gdf.to_crs(bld.source_crs)
    write_vector(gdf, out, overwrite=overwrite)
    cov = gdf[prefix + "coverage"].value_counts()
    measured = gdf[prefix + "height_m"].dropna()
    return {"heights": str(heights), "dtm": str(dtm) if dtm else None,
            "buildings": str(buildings), "output": str(out), "features": int(len(gdf)),
            "measured": int(len(measured)),
            **{k.replace(" ", "_"): int(cov.get(k, 0))
               for k in COVERAGE},
            "median_height_m": round(float(measured.median()), 2) if len(measured) else None,
            "units": checks, "pixel_area_m2": px_area, "crs": gdf.crs.to_string(),
            **({"compare": {"column": compare,
                            **{stat: agreement(gdf[prefix + col], gdf[compare])
                               for stat, col in (("median", "height_median_m"),
                                                 ("p95", "height_m"))}}}
               if compare is not None else {}),
            "seconds": round(time.perf_counter() - t0, 3)}


def _check_reference(gdf, column: str, path) -> None:
    if column not in gdf.columns:
        raise InputError(f"--compare {column}: no such column (the columns are "
                         f"{', '.join(c for c in gdf.columns if c != 'geometry')})", path)
    try:
        gdf[column].astype(float)
    except (TypeError, ValueError):
        raise InputError(f"--compare {column}: the column is not numeric (heights in "
                         "metres)", path) from None


def agreement(measured, reference) -> dict:
    """How measured heights agree with reference heights (m), over the buildings that have
    both: ``n``, ``bias`` (mean of measured - reference), ``mae``, ``rmse``, ``r``
    (Pearson; None under 3 buildings or without spread), ``within_1m`` / ``within_2m``
    (shares of buildings)."""
    m = np.asarray(measured, float)
    r = np.asarray(reference, float)
    ok = np.isfinite(m) & np.isfinite(r)
    d = m[ok] - r[ok]
    if not d.size:
        return {"n": 0}
    corr = (float(np.corrcoef(m[ok], r[ok])[0, 1])
            if d.size >= 3 and m[ok].std() > 0 and r[ok].std() > 0 else None)
    return {"n": int(d.size), "bias": round(float(d.mean()), 3),
            "mae": round(float(np.abs(d).mean()), 3),
            "rmse": round(float(np.sqrt((d ** 2).mean())), 3),
            "r": None if corr is None else round(corr, 4),
            "within_1m": round(float((np.abs(d) <= 1).mean()), 4),
            "within_2m": round(float((np.abs(d) <= 2).mean()), 4)}


def _open_heights(es: ExitStack, heights, dtm, max_height: float):
    """``([heights, dtm on its grid], [HeightUnits], checks)``, refusing what would give
    silent wrong answers (see :mod:`rsgeo.io.heights`)."""
    hds = es.enter_context(open_raster(heights, purpose="height raster"))
    if hds.count != 1:
        raise InputError(f"has {hds.count} bands: an image, not heights; predict its heights "
                         "with -m MODEL, or give a one-band nDSM", heights)
    grid, datasets, names = Grid.of(hds), [hds], [str(heights)]
    if dtm is not None:
        dds = es.enter_context(open_raster(dtm, bands=1, purpose="terrain model (DTM)"))
        check_overlap(grid, Grid.of(dds), str(heights), str(dtm))
        datasets.append(es.enter_context(align_to(dds, grid, "bilinear")))
        names.append(str(dtm))
    units = [units_of(ds, name) for ds, name in zip(datasets, names)]
    if dtm is None:  # a DSM minus its DTM: elevations, whole metres are plausible there
        warn_integer_heights(hds, heights)
    plan = sample_plan(hds)
    metres, ok = [], None
    for ds, u, name in zip(datasets, units, names):
        a, valid = sample(ds, ds.nodata, plan, name)
        require_valid(ds, ds.nodata, name, valid)
        metres.append(u.to_metres(a))
        ok = valid if ok is None else ok & valid
    above = metres[0] - metres[1] if dtm is not None else metres[0]
    exempt = dtm is None and predicted_by_rsgeo(hds)
    checks = check_heights(above[ok], heights, absolute=exempt, max_height=max_height,
                           way_through="--dtm DTM.tif (the heights are a DSM)")
    return datasets, units, {"heights": units[0].note, **checks}


def _sweep(datasets, units, bld, strip_rows: int) -> dict:
    """Per-building statistics over the strips: ``{"id", "height_m", ..., "_sum"}``."""
    grid = Grid.of(datasets[0])
    stats = ObjectSweep(bld.last_row, {"h": np.float32}, _height_stats)
    n = -(-grid.height // strip_rows)
    with progress(n, "building heights", unit="strips") as bar:
        for win, arrs in read_strips(datasets, strip_rows):
            ok = valid_mask(arrs[0], datasets[0].nodata)
            h = units[0].to_metres(arrs[0]).astype(np.float32, copy=False)
            if len(arrs) == 2:
                ok &= valid_mask(arrs[1], datasets[1].nodata)
                h = h - units[1].to_metres(arrs[1]).astype(np.float32, copy=False)
            ids = bld.rasterize(win, window_transform(win, grid.transform))  # [layers, h, w]
            sel = ok & (ids > 0)
            stats.add(ids[sel], int(win.row_off + win.height),
                      h=np.broadcast_to(h, ids.shape)[sel])
            bar.advance()
    return stats.finish()


def _height_stats(px: dict) -> dict:
    """Per-building statistics of the pixels of finished buildings (an ``ObjectSweep``)."""
    ids, values = px["id"], px["h"]
    uniq, p95 = grouped_percentile(ids, values, 95)
    _, median = grouped_median(ids, values)
    inv = np.searchsorted(uniq, ids)
    n = np.bincount(inv, minlength=len(uniq)).astype(np.float64)
    total = np.bincount(inv, weights=values.astype(np.float64), minlength=len(uniq))
    return {"id": uniq, "height_m": p95, "height_median_m": median,
            "height_mean_m": total / np.maximum(n, 1), "measured_px": n, "_sum": total}
