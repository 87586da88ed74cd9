"""Open, validate and describe rasters; compare and align pixel grids.

Every command opens its rasters through :func:`open_raster`, so a missing file, a
corrupt file, a raster without CRS or geotransform, a wrong band count or an
unsupported dtype gives the same one-line :class:`~rsgeo.errors.InputError`
(``path: problem``) everywhere. Grids are compared with :func:`check_same_grid`
and aligned only on request with :func:`align_to` (a WarpedVRT with an explicit
resampling), never silently. Ground sizes in metres (:func:`ground_gsd`,
:func:`pixel_area_m2`) and resampled grids (:func:`work_grid`) live here too.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT

from rsgeo.errors import GridMismatchError, InputError, first_line
from rsgeo.io.limits import check_pixels

log = logging.getLogger("rsgeo.io")

# metres along one degree of a great circle on a sphere of the WGS84 mean radius
# R1 = (2a + b) / 3 = 6 371 008.8 m: the one estimate for rasters in a geographic CRS
METRES_PER_DEGREE = math.pi * 6_371_008.8 / 180.0   # about 111 195 m

SUPPORTED_DTYPES = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64",
}

RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
    "mode": Resampling.mode,
}


# names a WKT gives a CRS that say nothing of it (GDAL writes "unknown" for a PROJ string)
_VAGUE_CRS_NAMES = {"", "unknown", "unnamed", "undefined", "custom", "user-defined"}


def crs_label(crs) -> str:
    """A CRS as one short phrase for messages, the one every message uses: its authority
    code (``EPSG:32631``; a compound CRS its compound code, ``EPSG:5698``), else the name
    its WKT gives, e.g. ``WKT "EPSG:2154" (no authority code)``, else (a nameless CRS from
    a PROJ string) that string cut to 60 characters. Never the whole WKT: it runs over
    several hundred characters. Takes a rasterio or a pyproj CRS (a GeoDataFrame's)."""
    if not crs:
        return "no CRS"
    try:
        auth = crs.to_authority()
    except Exception:  # a CRS PROJ cannot match against its database
        auth = None
    if auth:
        return ":".join(auth)
    m = re.match(r'\s*[A-Z_0-9]+\["([^"]*)"', crs.to_wkt() or "")
    name = " ".join(m.group(1).split()) if m else ""
    if name.lower() not in _VAGUE_CRS_NAMES:
        return f'WKT "{name[:80]}" (no authority code)'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyproj: PROJ strings lose information
        try:
            proj = " ".join((crs.to_proj4() or "").split())
        except Exception:
            proj = ""
    proj = proj if len(proj) <= 60 else proj[:57] + "..."
    return f'custom CRS "{proj or "unnamed"}" (no authority code)'


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, affine transform (pixel corner -> CRS units) and shape."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, ds) -> "Grid":
        """The grid of an open rasterio dataset (or WarpedVRT)."""
        return cls(ds.crs, ds.transform, ds.width, ds.height)

    @property
    def res(self) -> tuple[float, float]:
        """Pixel size (x, y) in CRS units, both positive."""
        return (math.hypot(self.transform.a, self.transform.d),
                math.hypot(self.transform.b, self.transform.e))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return _bounds(self.transform, self.width, self.height)

    def outline(self):
        """The grid's area as a shapely Polygon through its four corners (a rotated grid's
        true shape, where ``box(*bounds)`` is the larger axis-aligned box around it)."""
        from shapely.geometry import Polygon

        W, H = self.width, self.height
        return Polygon([self.transform * c for c in ((0, 0), (W, 0), (W, H), (0, H))])

    def describe(self) -> str:
        """Shape, pixel size, CRS and origin (the transform's corner) in one phrase, the
        origin to a hundredth of a pixel: two grids a few pixels apart read differently
        (in degrees, three decimals are 100 m: a 5 cm pixel grid shifted by 3 px would
        read the same as the grid it differs from)."""
        crs = crs_label(self.crs)
        rx, ry = self.res
        step = min(rx, ry) / 100
        places = max(3, math.ceil(-math.log10(step))) if step > 0 else 3
        return (f"{self.width}x{self.height} px of {rx:g}x{ry:g}, {crs}, "
                f"origin ({self.transform.c:.{places}f}, {self.transform.f:.{places}f})")

    def same_as(self, other: "Grid", tol: float = 1e-3) -> bool:
        """True when both grids have the same shape and every pixel corner of one lies
        within ``tol`` of a pixel of the other's (checked at the raster's corners: the
        transforms are affine). Absolute, in pixels: two rasters a few pixels apart differ
        however large their coordinates (a UTM northing of 5e6 m is not a tolerance of 5 m),
        while rounding in the transforms different writers store is not a difference.

        CRSs that differ in their definition but not on the ground are the same: the
        corners of ``other`` are carried into this grid's CRS (as a resampling would carry
        its pixels) before they are compared. A WKT named "EPSG:2154" on an unnamed datum
        (as IGN's orthophotos carry it) and EPSG:2154 place a pixel within microns of each
        other, so their rasters on one grid are read pixel for pixel, not refused or
        resampled."""
        if (self.width, self.height) != (other.width, other.height):
            return False
        if (self.crs is None) != (other.crs is None):
            return False
        W, H = self.width, self.height
        corners = ((0, 0), (W, 0), (0, H), (W, H))
        theirs = [other.transform * c for c in corners]
        if self.crs is not None and self.crs != other.crs:
            theirs = _carried(theirs, other.crs, self.crs)
            if theirs is None:
                return False
        limit = tol * min(self.res)
        for corner, (xb, yb) in zip(corners, theirs):
            xa, ya = self.transform * corner
            if not (abs(xa - xb) <= limit and abs(ya - yb) <= limit):  # NaN: not the same
                return False
        return True


def _carried(points, src: CRS, dst: CRS) -> list | None:
    """``points`` (x, y in ``src``) in ``dst``'s coordinates, or None when PROJ cannot
    carry them (CRSs with nothing in common, points outside a projection's domain)."""
    from rasterio.warp import transform

    try:
        xs, ys = transform(src, dst, [p[0] for p in points], [p[1] for p in points])
    except Exception:  # noqa: BLE001 - any failure means "not the same grid"
        return None
    return list(zip(xs, ys))


def _bounds(transform: Affine, width: int, height: int) -> tuple[float, float, float, float]:
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))))
    return min(xs), min(ys), max(xs), max(ys)


def check_exists(path: str | os.PathLike, what: str = "file") -> Path:
    """Raise InputError unless ``path`` exists."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such {what}", p)
    return p


def _is_vector(p: Path) -> bool:
    """Whether OGR opens ``p`` as a vector layer (a footprints file given for a raster)."""
    try:
        import pyogrio

        return bool(len(pyogrio.list_layers(p)))
    except Exception:
        return False


def open_raster(
    path: str | os.PathLike,
    *,
    bands: int | tuple[int, ...] | None = None,
    purpose: str = "raster",
    require_crs: bool = True,
    numeric: bool = True,
):
    """Open ``path`` with rasterio after checking what every command relies on.

    Args:
        path: a file GDAL can open (GeoTIFF, JPEG with world file, VRT, ...).
        bands: the band count the caller needs: an int, or a tuple of allowed counts.
        purpose: words for the error message, e.g. ``"RGB image"`` or ``"height raster"``.
        require_crs: refuse rasters without CRS (needed for any georeferenced output).
        numeric: refuse complex and other non-numeric dtypes.

    Returns:
        An open ``rasterio.DatasetReader`` (use it as a context manager).

    Raises:
        InputError: with ``path: problem`` for every check that fails.
    """
    p = check_exists(path)
    if p.is_dir():
        raise InputError(f"is a folder, expected a {purpose} file", p)
    try:
        with warnings.catch_warnings():  # no geotransform: validate_raster says so in one line
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(p)
    except RasterioIOError as e:
        if "not recognized as being in a supported file format" in str(e) and _is_vector(p):
            raise InputError(f"is a vector file, expected a {purpose}; were the arguments "
                             "given in another order?", p) from None
        raise InputError(f"not a readable {purpose} ({first_line(e)})", p) from None
    try:
        validate_raster(ds, p, bands=bands, purpose=purpose, require_crs=require_crs,
                        numeric=numeric)
    except Exception:
        ds.close()
        raise
    return ds


def validate_raster(ds, path, *, bands=None, purpose="raster", require_crs=True, numeric=True):
    """The checks of :func:`open_raster` on an already open dataset."""
    if ds.width == 0 or ds.height == 0:
        raise InputError(f"empty {purpose} ({ds.width}x{ds.height} px)", path)
    check_pixels(ds.width, ds.height, path, purpose)
    if require_crs and ds.crs is None:
        raise InputError(_no_crs(ds, path, purpose), path)
    t = ds.transform
    if t.is_identity or t.determinant == 0 or not all(map(math.isfinite, t[:6])):
        raise InputError(f"{purpose} has no valid geotransform", path)
    if numeric:
        bad = [d for d in ds.dtypes if d not in SUPPORTED_DTYPES]
        if bad:
            raise InputError(f"unsupported data type {bad[0]} for a {purpose}", path)
    if bands is not None:
        allowed = (bands,) if isinstance(bands, int) else tuple(bands)
        if ds.count not in allowed:
            want = " or ".join(map(str, allowed))
            raise InputError(f"{purpose} has {ds.count} band(s), expected {want}", path)


def _no_crs(ds, path, purpose: str) -> str:
    """Why a raster has no CRS and how to give it one. An image georeferenced by a world
    file (``.pgw``, ``.jgw``, ``.tfw``, ``.wld``, as xBD's tiles come) has its position but
    no CRS: GDAL reads the CRS from the ``.aux.xml`` beside it, never from a ``.prj``."""
    world = [Path(f).name for f in (ds.files or [])[1:]
             if re.fullmatch(r"\.(wld|\w{2,3}w)", Path(f).suffix.lower())]
    if not world:
        return f"{purpose} has no CRS (assign one, e.g. `gdal_edit -a_srs EPSG:32633`)"
    name = Path(path).name
    return (f"{purpose} has no CRS: its world file {world[0]} places it but names no CRS (a "
            f".prj beside it is not read); assign one, e.g. `gdal_edit -a_srs EPSG:4326 {name}` "
            f"(writes {name}.aux.xml)")


def nodata_of(ds, override: float | None = None) -> float | None:
    """The nodata value to honour: the user's ``--nodata`` if given, else the file's."""
    return override if override is not None else ds.nodata


def valid_mask(arr: np.ndarray, nodata: float | None) -> np.ndarray:
    """Boolean mask of valid pixels for a (bands, h, w) or (h, w) array.

    A pixel is invalid when any band equals ``nodata`` or is NaN (float input).
    """
    a = arr if arr.ndim == 3 else arr[None]
    ok = np.ones(a.shape[1:], dtype=bool)
    if nodata is not None and not (isinstance(nodata, float) and math.isnan(nodata)):
        ok &= ~(a == nodata).any(axis=0)
    if a.dtype.kind == "f":
        ok &= np.isfinite(a).all(axis=0)
    return ok


def check_same_grid(a, b, a_path=None, b_path=None) -> None:
    """Raise :class:`GridMismatchError` naming both grids unless ``a`` and ``b`` match.

    ``a`` and ``b`` are open datasets or :class:`Grid` objects.
    """
    ga = a if isinstance(a, Grid) else Grid.of(a)
    gb = b if isinstance(b, Grid) else Grid.of(b)
    if ga.same_as(gb):
        return
    an = a_path or getattr(a, "name", "first raster")
    bn = b_path or getattr(b, "name", "second raster")
    raise GridMismatchError(
        f"grid differs from {an} ({gb.describe()} vs {ga.describe()}{_shift(ga, gb)}); "
        "pass --align bilinear (heights) or --align nearest (classes, masks) to resample it "
        "onto that grid",
        bn,
    )


def _shift(ga: Grid, gb: Grid) -> str:
    """``"; shifted by 3.00 columns, -2.00 rows"``: where ``gb``'s origin falls on ``ga``'s
    pixels, when the two grids differ only by a shift (same CRS, shape and pixels), as
    co-registered tiles of two dates or sensors do; else ``""``."""
    ta, tb = ga.transform, gb.transform
    if ga.crs != gb.crs or (ga.width, ga.height) != (gb.width, gb.height) or \
            max(abs(getattr(ta, k) - getattr(tb, k)) for k in "abde") > 1e-6 * min(ga.res):
        return ""
    col, row = ~ta * (tb.c, tb.f)
    return f"; shifted by {col:.2f} columns, {row:.2f} rows"


def check_overlap(a: Grid, b: Grid, a_path=None, b_path=None) -> None:
    """Raise InputError when the footprints of two grids do not intersect."""
    from rasterio.warp import transform_bounds

    bb = b.bounds
    if a.crs is not None and b.crs is not None and a.crs != b.crs:
        bb = transform_bounds(b.crs, a.crs, *bb)
    ab = a.bounds
    if bb[0] >= ab[2] or bb[2] <= ab[0] or bb[1] >= ab[3] or bb[3] <= ab[1]:
        raise InputError(f"does not overlap {a_path or 'the reference raster'}", b_path)


@contextmanager
def align_to(ds, target: Grid, resampling: str = "bilinear", nodata: float | None = None
             ) -> Iterator:
    """Yield ``ds`` resampled onto ``target``'s grid (a WarpedVRT), or ``ds`` itself if equal.

    Resampling is explicit: ``nearest`` for labels and classes, ``bilinear`` for heights and
    imagery. Pixels outside ``ds`` read as ``nodata`` (the source's nodata by default).
    """
    if Grid.of(ds).same_as(target):
        yield ds
        return
    if resampling not in RESAMPLING:
        raise InputError(f"unknown resampling {resampling!r}; one of {', '.join(RESAMPLING)}")
    nd = nodata if nodata is not None else ds.nodata
    kwargs = dict(crs=target.crs, transform=target.transform, width=target.width,
                  height=target.height, resampling=RESAMPLING[resampling])
    if nd is not None:
        kwargs["nodata"] = nd
    elif np.dtype(ds.dtypes[0]).kind == "f":
        kwargs["nodata"] = float("nan")
    with WarpedVRT(ds, **kwargs) as vrt:
        yield vrt


def _centre_latitude(grid: Grid) -> float:
    return math.radians((grid.bounds[1] + grid.bounds[3]) / 2)


def ground_res(grid: Grid) -> tuple[float, float]:
    """Ground size in metres of a pixel's two sides (along its columns' and rows' axes).

    Projected CRSs use their linear unit; geographic CRSs are estimated at the scene
    centre's latitude (:data:`METRES_PER_DEGREE`, x shrunk by its cosine).
    """
    rx, ry = grid.res
    if grid.crs is not None and grid.crs.is_geographic:
        return rx * math.cos(_centre_latitude(grid)) * METRES_PER_DEGREE, ry * METRES_PER_DEGREE
    factor = grid.crs.linear_units_factor[1] if grid.crs is not None else 1.0
    return rx * factor, ry * factor


def ground_gsd(grid: Grid, hint: str | None = "; pass --gsd to override") -> float:
    """Pixel size in metres: the geometric mean of :func:`ground_res` (with a warning for a
    geographic CRS, where it is an estimate; ``hint`` ends it: the default names prepare's
    ``--gsd``; None: no warning, the caller says it with :func:`estimate_note`)."""
    gx, gy = ground_res(grid)
    gsd = math.sqrt(gx * gy)
    if hint is not None and grid.crs is not None and grid.crs.is_geographic:
        log.warning("geographic CRS: GSD estimated as %.3f m at latitude %.2f%s", gsd,
                    math.degrees(_centre_latitude(grid)), hint)
    return gsd


def estimate_note(grid: Grid) -> str:
    """``" (estimated: geographic CRS, latitude 37.06)"``, or ``""`` for a projected grid,
    whose ground sizes are exact."""
    if grid.crs is None or not grid.crs.is_geographic:
        return ""
    return f" (estimated: geographic CRS, latitude {math.degrees(_centre_latitude(grid)):.2f})"


def pixel_area_m2(grid: Grid) -> float:
    """Ground area of one pixel in m² (geographic CRSs estimated at the scene centre's
    latitude, with a warning)."""
    rx, ry = grid.res
    if grid.crs is not None and grid.crs.is_geographic:
        lat = _centre_latitude(grid)
        log.warning("geographic CRS: pixel area estimated at latitude %.3f", math.degrees(lat))
        return rx * ry * METRES_PER_DEGREE ** 2 * math.cos(lat)
    factor = grid.crs.linear_units_factor[1] if grid.crs is not None else 1.0
    return rx * ry * factor ** 2


def work_grid(grid: Grid, in_gsd: float, target_gsd: float) -> Grid:
    """``grid``'s extent with square ``target_gsd`` pixels on the ground (metres).

    Same CRS, origin and orientation: each pixel axis is scaled on its own (a rotated grid
    stays rotated, a 0.25 x 0.5 m pixel becomes ``target_gsd`` on both sides). ``in_gsd``:
    the input's GSD (the geometric mean of its sides, :func:`ground_gsd`, or the user's own
    figure); the sides keep their ratio from :func:`ground_res`.
    """
    gx, gy = ground_res(grid)
    mean = math.sqrt(gx * gy)
    w = max(1, int(round(grid.width * in_gsd * gx / mean / target_gsd)))
    h = max(1, int(round(grid.height * in_gsd * gy / mean / target_gsd)))
    return Grid(grid.crs, grid.transform * Affine.scale(grid.width / w, grid.height / h), w, h)
