"""Height rasters in metres, and the plausibility rules ``damage-map`` and ``evaluate`` apply.

A height raster stores, per pixel, ``raw * scale + offset`` in the band's unit (GDAL band
scale/offset and unit metadata); :func:`units_of` turns that into one factor and one offset
in metres, so int16 centimetres with scale 0.01 (or unit ``cm``) read as metres. A unit
rsgeo does not know is refused rather than guessed.

Before a raster is used as heights above ground, :func:`check_heights` refuses the three
silent wrong answers seen in practice (each with a way through):

- no valid pixel at all (all nodata or NaN): an error, never "0 damaged regions";
- absolute elevations (a DSM or DTM): the 2nd percentile of the valid heights is above
  ``ABSOLUTE_P2_M`` (5 m) while heights above ground start near 0 (streets, gardens); refused
  unless the caller subtracts a terrain model (``--dtm``) or accepts them (``--absolute``).
  A DSM of terrain lower than 5 m (coastal plains) is not detected; a scene of roofs only
  (no ground in 98% of it) is refused too. Height maps written by ``predict-height``
  (:func:`predicted_by_rsgeo`) are exempt;
- heights above ``--max-height`` (default 1,000 m): centimetres or millimetres without
  metadata, or an elevation model of high ground.

The statistics come from every pixel of rasters up to ``SAMPLE_PIXELS`` (4 Mpx), else from
whole blocks (or full-width bands) spread evenly over the raster, about 4 Mpx decoded
(:func:`sample_plan`: a few percent of a large raster, not a second pass); "no valid
pixel" is confirmed by a full scan when the sample has none.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling

from rsgeo.errors import InputError
from rsgeo.io.raster import valid_mask
from rsgeo.io.reader import read_strips

log = logging.getLogger("rsgeo.io")

ABSOLUTE_P2_M = 5.0
MAX_HEIGHT_M = 1000.0
SAMPLE_PIXELS = 4_000_000      # pixels read for the checks (damage-map) at most
STREAM_SAMPLE = 1_000_000      # pixels kept while streaming (evaluate) at most, about
PERCENTILE_VALUES = 250_000    # values the 2nd percentile is taken from at most
FOOT = 0.3048
UNIT_FACTORS = {
    **dict.fromkeys(("m", "metre", "meter", "metres", "meters"), 1.0),
    **dict.fromkeys(("dm", "decimetre", "decimeter", "decimetres", "decimeters"), 0.1),
    **dict.fromkeys(("cm", "centimetre", "centimeter", "centimetres", "centimeters"), 0.01),
    **dict.fromkeys(("mm", "millimetre", "millimeter", "millimetres", "millimeters"), 0.001),
    **dict.fromkeys(("ft", "foot", "feet", "international foot"), FOOT),
    **dict.fromkeys(("us-ft", "ftus", "us survey foot", "us survey feet", "us_survey_foot"),
                    1200 / 3937),
}


@dataclass(frozen=True)
class HeightUnits:
    """``metres = raw * scale + offset`` for one band.

    Attributes:
        scale: metres per stored value (GDAL scale times the unit's length in metres).
        offset: metres added after scaling (GDAL offset in the band's unit, in metres).
        note: how it was derived, e.g. ``"int16 x 0.01 (unit cm)"``, for summaries.
    """

    scale: float = 1.0
    offset: float = 0.0
    note: str = "metres"

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def to_metres(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` (any numeric dtype, any shape) in metres: float32, or ``raw`` itself when it
        is already float metres (float64 stays float64)."""
        if self.identity:
            return raw if raw.dtype.kind == "f" else raw.astype(np.float32)
        a = raw.astype(np.float32, copy=False)
        return (a * np.float32(self.scale) + np.float32(self.offset)).astype(np.float32,
                                                                             copy=False)


def vertical_unit(crs) -> str | None:
    """The unit of ``crs``'s vertical axis (lower case), None without one: a compound CRS
    (horizontal + vertical, ``EPSG:2154+5720``, a WKT ``COMPD_CS``) or a vertical one."""
    wkt = crs.to_wkt() if crs is not None else ""
    if "VERT" not in wkt.upper():  # VERT_CS (WKT1), VERTCRS (WKT2): most rasters stop here
        return None
    import pyproj  # lazy: only compound CRSs need it (installed with geopandas)

    try:
        c = pyproj.CRS.from_wkt(wkt)
    except pyproj.exceptions.CRSError:
        return None
    for sub in c.sub_crs_list or [c]:
        if sub.is_vertical and sub.axis_info:
            return sub.axis_info[0].unit_name.strip().lower()
    return None


def band_unit(ds, band: int = 1) -> tuple[str, bool]:
    """``(unit, own)``: band ``band``'s unit as GDAL reports it (lower case, "" for none) and
    whether it is the band's own. GDAL reports a band without a unit in the unit of a
    compound CRS's vertical axis (a uint8 class raster in EPSG:2154+5720 reads as
    ``metre``), so a unit equal to that one counts as the CRS's, not the band's: it may
    convert heights (elevations in that vertical CRS are in its unit) but never makes a
    raster a height raster (:func:`declares_heights`). A band whose own unit is spelt
    exactly as the vertical axis's (``metre``) is taken for the CRS's too; ``m`` is not."""
    unit = ((ds.units[band - 1] if ds.units else None) or "").strip().lower()
    return unit, not unit or unit != vertical_unit(ds.crs)


def units_of(ds, path: str | os.PathLike | None = None, band: int = 1) -> HeightUnits:
    """The metre conversion of band ``band`` of an open rasterio dataset.

    Raises:
        InputError: the band's unit is set but is not a length unit listed in
            ``UNIT_FACTORS`` (e.g. ``"pixels"``), or the scale is zero or not finite.
    """
    i = band - 1
    scale = float(ds.scales[i]) if ds.scales and ds.scales[i] is not None else 1.0
    offset = float(ds.offsets[i]) if ds.offsets and ds.offsets[i] is not None else 0.0
    unit, own = band_unit(ds, band)
    if not np.isfinite(scale) or scale == 0 or not np.isfinite(offset):
        raise InputError(f"band scale {scale:g} / offset {offset:g} cannot give heights", path)
    if unit and unit not in UNIT_FACTORS:
        raise InputError(f"band unit {unit!r} is not a length unit rsgeo knows (m, dm, cm, mm, "
                         "ft, us-ft); fix it, e.g. gdal_edit.py -units m FILE", path)
    feet = "" if unit else _feet_crs(ds)
    if feet and not predicted_by_rsgeo(ds):
        log.warning("%s: band %d has no unit and its CRS is in %s: its heights are read as "
                    "metres; if they are feet, say so (gdal_edit.py -units %s FILE)",
                    path or ds.name, band, *feet)
    factor = UNIT_FACTORS.get(unit, 1.0)
    parts = [np.dtype(ds.dtypes[i]).name]
    if scale != 1.0:
        parts.append(f"x {scale:g}")
    if offset != 0.0:
        parts.append(f"+ {offset:g}")
    if unit:
        parts.append(f"(unit {unit})" if own else f"(unit {unit} of the vertical CRS)")
    return HeightUnits(scale * factor, offset * factor, " ".join(parts))


def _feet_crs(ds) -> tuple[str, str] | tuple[()]:
    """``("feet", "ft")`` or ``("US survey feet", "us-ft")`` when ``ds``'s projected CRS
    measures in feet, else ``()``. US elevation rasters in a State Plane CRS in feet often
    store feet with no band unit, which nothing in the file tells from metres: a 30 ft
    house would read as a 30 m one."""
    crs = ds.crs
    if crs is None or not crs.is_projected:
        return ()
    try:
        factor = crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 - a CRS without one linear unit: not feet
        return ()
    if abs(factor - FOOT) < 1e-9:
        return ("feet", "ft")
    return ("US survey feet", "us-ft") if abs(factor - 1200 / 3937) < 1e-9 else ()


def declares_heights(ds) -> bool:
    """Whether band 1 carries height metadata: a length unit of its own (not the one GDAL
    lends it from a compound CRS's vertical axis, :func:`band_unit`), or a scale/offset."""
    unit, own = band_unit(ds)
    scaled = bool(ds.scales and ds.scales[0] not in (None, 1.0)) or \
        bool(ds.offsets and ds.offsets[0] not in (None, 0.0))
    return (own and unit in UNIT_FACTORS) or scaled


def warn_integer_heights(ds, path) -> bool:
    """Log a warning (and return True) when band 1 of ``ds``, given as heights, is integer
    without a length unit or scale of its own (:func:`declares_heights`): class ids, counts
    or centimetres without metadata would be measured as metres. ``damage-map`` refuses
    such rasters unless ``--heights``; commands whose input can only be heights warn."""
    if np.dtype(ds.dtypes[0]).kind == "f" or declares_heights(ds):
        return False
    log.warning("%s: integer heights without a length unit or scale of their own are read "
                "as whole metres (class ids or counts would be measured as heights); declare "
                "them with gdal_edit.py -units m (or -units cm, or -scale 0.01)", path)
    return True


def predicted_by_rsgeo(ds) -> bool:
    """Whether ``ds`` is a height map written by ``rsgeo predict-height`` (its ``task`` and
    ``model`` tags): heights above ground by construction, so the DSM test does not apply."""
    tags = ds.tags()
    return tags.get("task") == "height" and bool(tags.get("model"))


def sample_plan(ds, limit: int = SAMPLE_PIXELS) -> list | None:
    """Where to sample band 1 of ``ds``: ``None`` (read it all; at most ``limit`` pixels) or
    a list of ``(window, out_shape)`` spread evenly over the raster, at most about ``limit``
    pixels decoded: a grid of whole blocks for tiled rasters, full-width bands of at least
    32 rows for striped ones (columns decimated when even one band is over ``limit``).

    Datasets on one grid sampled with the same plan give pixels at the same places.
    """
    from rasterio.windows import Window

    h, w = ds.height, ds.width
    if h * w <= limit:
        return None
    bh, bw = ds.block_shapes[0] if ds.block_shapes else (1, w)
    bh, bw = max(1, bh), max(1, bw)
    wh = min(h, -(-32 // bh) * bh)                       # >= 32 rows, whole blocks
    ww = w if bw >= w else min(w, -(-32 // bw) * bw)
    n = max(1, limit // (wh * ww))
    nr = max(1, min(h // wh, round((n * h * ww / (w * wh)) ** 0.5)))
    nc = max(1, min(w // ww, n // nr))
    rows = sorted({int(r) // bh * bh for r in np.linspace(0, h - wh, nr)})
    cols = sorted({int(c) // bw * bw for c in np.linspace(0, w - ww, nc)})
    keep_w = int(max(1, min(ww, limit // (len(rows) * len(cols) * wh))))
    return [(Window(c, r, ww, wh), (wh, keep_w)) for r in rows for c in cols]


def sample(ds, nodata, plan: list | None, path=None) -> tuple[np.ndarray, np.ndarray]:
    """Band 1 of ``ds`` read as :func:`sample_plan` says: ``(raw array, valid mask)``
    (2-D for a full read, 1-D for a plan).

    A full read goes through parallel strips; a read failure is one ``InputError`` naming
    ``path`` either way.
    """
    if plan is None:
        if ds.height == 0 or ds.width == 0:
            a = np.zeros((ds.height, ds.width), ds.dtypes[0])
        else:
            a = np.concatenate([s[0] for _, s in read_strips([ds], 1024)])
        return a, valid_mask(a, nodata)
    try:
        a = np.concatenate([ds.read(1, window=win, out_shape=shape,
                                    resampling=Resampling.nearest).reshape(-1)
                            for win, shape in plan])
    except Exception as e:  # noqa: BLE001 - GDAL/rasterio errors become one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"read failed ({msg})", path or ds.name) from None
    return a, valid_mask(a, nodata)


def any_valid(ds, nodata, rows: int = 512) -> bool:
    """Whether band 1 of ``ds`` holds any pixel that is not nodata and finite (full scan)."""

    for _, (a,) in read_strips([ds], rows):
        if valid_mask(a, nodata).any():
            return True
    return False


def require_valid(ds, nodata, path, sample_ok: np.ndarray | None = None,
                  where: str = "") -> None:
    """Raise ``InputError`` naming ``path`` when ``ds`` has no valid pixel.

    ``sample_ok`` (a valid mask of a sample) skips the full scan when it holds a valid pixel.
    """
    if sample_ok is not None and sample_ok.any():
        return
    if not any_valid(ds, nodata):
        raise InputError(f"no valid pixel{where} (all nodata or NaN): nothing to measure", path)


def check_heights(values: np.ndarray, path, *, absolute: bool = False,
                  max_height: float = MAX_HEIGHT_M, way_through: str = "--absolute") -> dict:
    """Refuse implausible heights above ground (1-D float metres, valid values only).

    Args:
        values: valid heights in metres (a sample is enough).
        absolute: accept absolute elevations (skip the DSM/DTM test).
        max_height: largest plausible height in metres.
        way_through: the options the DSM/DTM hint offers, e.g. ``"--dtm DTM.tif or --absolute"``.

    Returns:
        ``{"p2_m": ..., "max_m": ...}`` of the values.
    """
    if values.size == 0:
        raise InputError("no valid pixel (all nodata or NaN): nothing to measure", path)
    step = -(-values.size // PERCENTILE_VALUES)
    p2, top = float(np.percentile(values[::step], 2)), float(values.max())
    if not absolute and p2 > ABSOLUTE_P2_M:
        raise InputError(f"looks like absolute elevations (DSM/DTM), not heights above ground: "
                         f"98% of values are above {p2:.1f} m; give {way_through} to use them "
                         "as they are", path)
    if top > max_height:
        raise InputError(f"heights up to {top:.0f} m exceed --max-height {max_height:g} m; "
                         "centimetres or millimetres? set the band's scale or unit (gdal_edit.py "
                         "-scale 0.01 or -units cm), or raise --max-height", path)
    return {"p2_m": round(p2, 3), "max_m": round(top, 3)}


def check_max_height(max_height: float) -> float:
    if not (max_height > 0 and np.isfinite(max_height)):
        raise InputError(f"--max-height must be a positive number of metres, got {max_height}")
    return float(max_height)
