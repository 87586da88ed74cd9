"""``damage-map``: pre/post height loss -> damage raster and damaged-building footprints.

SynRS3D (appendix A.9) maps disaster damage as pre-event minus post-event height,
thresholded (3 m for earthquakes, 1 m for wildfires), restricted to where a structure
stood. Here, in one strip-wise sweep (memory bounded by the raster width):

- Heights are read in metres: GDAL band scale/offset and units (cm, mm, ft, ...) are
  applied, so int16 centimetres work (:mod:`rsgeo.io.heights`).
- POST (and ``dtm``) are resampled onto PRE's grid (bilinear) when the grids differ; no
  overlap is an error. With ``dtm``, PRE and POST are surface models (DSMs) and the terrain
  is subtracted from both dates before anything else.
- Refused before any output is written (exit 2, naming the file): an input without a valid
  pixel; absolute elevations (2nd percentile of the heights > 5 m: give ``dtm``, or
  ``absolute`` to accept them); heights above ``max_height`` (1,000 m). Predicted heights
  skip the elevation test. Footprints must be polygons.
- A *structure* is inside ``buildings`` footprints when given, else pre height > ``min_height``.
- Per pixel: ``loss = pre - post`` (m); *damaged* where ``loss > threshold`` in a structure.
- Grades (``--grades``): thresholds on the loss, in metres or as a share of the pre height
  (``%``), default ``minor:10%,major:35%,destroyed:70%``. A pixel's grade compares its own
  loss; a building's or region's grade compares its *mean* loss (lost volume / area) with
  its mean pre height, so a half-collapsed building is ``major``, a flattened one
  ``destroyed``, whatever its height.

Outputs:

- ``OUT.tif``: uint8 classes 0 no structure, 1 intact, 2 minor, 3 major, 4 destroyed, 255
  nodata, with a colour table and the class names as tags (``class_<i>``, ``classes``, as
  ``predict`` writes them); GDAL's side file ``OUT.tif.aux.xml`` adds what a GeoTIFF
  cannot hold: the category names and the colour table's alpha (no structure and nodata
  transparent, so the imagery beneath shows). GeoTIFF bands share one data type, so the
  float32 height loss (m, nodata -9999) goes to a sibling ``OUT_loss.tif`` instead of a
  second band: classes stay compact and exact, the loss stays float.
- Vectors (format by extension): with ``buildings``, one record per input building (its
  attributes kept) with pre/post median heights, height loss, lost volume, damaged
  fraction, ``grade`` and ``coverage`` (``inside``, ``partly outside`` -- graded on the
  pixels inside --, ``outside`` the raster or ``no valid pixel``: these two have an empty
  grade and empty statistics, and are counted in the summary); without, one polygon per
  damaged region (speckle below ``min_area`` removed), merged across strips so results
  equal a one-shot polygonisation.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

from rsgeo.damage.buildings import predicted_footprints
from rsgeo.damage.inputs import kind_of, resolve_heights
from rsgeo.damage.stats import parse_grades
from rsgeo.damage.sweep import CLASS_NAMES as CLASS_NAMES  # the classes of OUT.tif
from rsgeo.damage.sweep import loss_path, run
from rsgeo.errors import InputError
from rsgeo.io.atomic import check_output
from rsgeo.io.buildings import require_overlap
from rsgeo.io.heights import check_max_height
from rsgeo.io.vector import driver_for
from rsgeo.io.writer import check_raster_output, height_co
from rsgeo.viz import DAMAGE_COLORS

EVENTS = {"earthquake": 3.0, "wildfire": 1.0}
DEFAULT_GRADES = "minor:10%,major:35%,destroyed:70%"
CLASS_COLORS = DAMAGE_COLORS  # the colour table of OUT.tif (rsgeo.viz)
log = logging.getLogger("rsgeo.damage")


def default_outputs(pre: str | os.PathLike, out=None, footprints_out=None) -> tuple[Path, Path]:
    """``<PRE stem>_damage.tif`` and ``<PRE stem>_damage.gpkg`` in the current folder by default
    (an ``out`` not named .tif/.tiff, a folder such as ``.`` included, is an InputError)."""
    stem = Path(pre).stem
    out = check_raster_output(out if out else f"{stem}_damage.tif")  # `-o .`: no name to
    fp = Path(footprints_out) if footprints_out else out.with_suffix(".gpkg")  # suffix
    return out, fp


def damage_map(pre, post, out=None, footprints_out=None, *, buildings=None,
               event: str = "earthquake", threshold: float | None = None,
               min_height: float = 2.5, min_area: float = 10.0, grades: str = DEFAULT_GRADES,
               model=None, heights: bool = False, overwrite: bool = False,
               dtm=None, absolute: bool = False, max_height: float = 1000.0,
               strip_rows: int = 512, co: dict | None = None, compress: str | None = None,
               max_z_error: float | None = None, buildings_model=None, **predict_kw) -> dict:
    """Map damage from PRE and POST (height rasters, or images with ``model``).

    Args:
        pre, post: rasters; single-band float = heights (nDSM, m); others are images.
        model: the height model that turns images into heights (a list of several: their
            ensemble, as ``predict-height -m A -m B``); default env ``RSGEO_MODEL``.
        out, footprints_out: raster and vector outputs (defaults: see :func:`default_outputs`).
        buildings: pre-event footprints (any OGR format / GeoParquet) with a CRS.
        event: ``earthquake`` (3 m), ``wildfire`` (1 m) or ``custom`` (needs ``threshold``).
        threshold: height loss (m) above which a pixel is damaged (overrides the event).
        min_height: pre height (m) that counts as a structure when no footprints are given.
        min_area: damaged regions smaller than this (m²) are dropped before polygonising.
        dtm: terrain model (m) subtracted from PRE and POST, which are then DSMs.
        absolute: accept heights that look like absolute elevations as they are.
        max_height: largest plausible height above ground (m).
        co: GDAL creation options for both rasters; compress, max_z_error: codec of the
            float height-loss raster (see :func:`rsgeo.io.writer.codec_co`).
        buildings_model: a segmentation model: the buildings it finds on the PRE image
            (:func:`rsgeo.damage.buildings.predicted_footprints`) are graded, as ``buildings``.

    Returns:
        The summary dict (also what ``--json`` prints).
    """
    loss_co = height_co(compress, max_z_error, co)
    thr = _threshold(event, threshold)
    grade_table = parse_grades(grades)
    if not (min_area >= 0 and math.isfinite(min_area)):
        raise InputError(f"--min-area must be a number >= 0, got {min_area}")
    if not (min_height >= 0 and math.isfinite(min_height)):  # < 0: the ground a building
        raise InputError(f"--min-height must be a number of metres >= 0, got {min_height:g}")
    max_height = check_max_height(max_height)
    if absolute and dtm is not None:
        raise InputError("--absolute and --dtm exclude each other: --dtm turns surface models "
                         "into heights above ground")
    if absolute and any(rel for _, rel in grade_table.values()):
        log.warning("--absolute: grades in %% compare the loss with the elevation, not the "
                    "building height; give --grades in metres (e.g. minor:1,major:3,destroyed:6)")
    if absolute and buildings is None:
        log.warning("--absolute without --buildings: every pixel higher than --min-height "
                    "%g m counts as a structure", min_height)
    out, fp_out = default_outputs(pre, out, footprints_out)
    check_raster_output(out)  # OUT_loss gets its suffix
    for p in (out, loss_path(out), fp_out):
        check_output(p, overwrite, inputs=(pre, post, buildings, dtm, buildings_model,
                                           *(model if isinstance(model, (list, tuple))
                                             else [model])))
    driver_for(fp_out)
    if buildings_model is not None and buildings is not None:
        raise InputError("--buildings and --buildings-model exclude each other", buildings_model)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rsgeo-damage-")))
        found = None
        if buildings_model is not None:
            buildings, found = _model_buildings(pre, buildings_model, work, min_area, predict_kw)
        pre_h, post_h, source = resolve_heights(
            Path(pre), Path(post), model, heights, work, stack,
            # footprints all off PRE are refused before the prediction, not minutes after
            before_predict=(lambda: require_overlap(buildings, pre)) if buildings is not None
            else None, **predict_kw)
        summary = run(pre_h, post_h, out, fp_out, buildings=buildings, threshold=thr,
                      min_height=min_height, min_area=min_area, grades=grade_table,
                      overwrite=overwrite, strip_rows=strip_rows, co=co, loss_co=loss_co,
                      names=(str(pre), str(post)),
                      dtm=Path(dtm) if dtm is not None else None, absolute=absolute,
                      max_height=max_height, predicted=source == "predicted")
        if source == "predicted":  # how the images fed the model (predict-height's tags)
            summary["inputs"] = [_input_tags(p) for p in (pre_h, post_h)]
    summary.update(event=event, threshold_m=thr, grades=grades, heights_from=source,
                   buildings_from=found or ({"file": str(buildings)} if buildings is not None
                                            else {"pre_height_above_m": min_height}),
                   outputs={"classes": str(out), "loss": str(loss_path(out)),
                            "footprints": str(fp_out)})
    return summary


def _input_tags(path) -> dict:
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
    return {k: tags.get(k) for k in ("input_bands", "input_stretch")}


def _model_buildings(pre, model, work: Path, min_area: float, predict_kw: dict):
    """``(footprints file, where they came from)``: buildings the segmentation ``model``
    finds on the PRE image, traced into ``work``."""
    if kind_of(pre) != "image":
        raise InputError("--buildings-model finds buildings on the PRE image, but PRE holds "
                         "heights", pre)
    out = work / "buildings.gpkg"
    kw = {k: predict_kw[k] for k in ("device", "precision", "backend", "bands", "scale")
          if k in predict_kw}
    s = predicted_footprints(pre, model, out, min_area=min_area, predict_kw=kw)
    if not s["features"]:  # an empty layer is no footprints file to grade: say why, and ways on
        raise InputError(f"found no building on {pre} (class {s['buildings_from']['class']!r}, "
                         f"probability >= 0.5, at least --min-area {min_area:g} m²); give "
                         "--buildings FILE, or neither option to grade every pixel higher than "
                         "--min-height", model)
    return out, {**s["buildings_from"], "buildings": s["features"]}


def _threshold(event: str, threshold: float | None) -> float:
    if event not in (*EVENTS, "custom"):
        raise InputError(f"--event must be earthquake, wildfire or custom, got {event!r}")
    if threshold is None:
        if event == "custom":
            raise InputError("--event custom needs --threshold METRES")
        return EVENTS[event]
    if not (threshold > 0 and math.isfinite(threshold)):
        raise InputError(f"--threshold must be a positive height loss in metres, got {threshold}")
    return float(threshold)
