"""GeoTIFF output: creation options, atomic open, COG copy, and the blended tile writer.

Outputs are tiled GeoTIFFs (256 px blocks, DEFLATE with a predictor -- float rasters such as
heights use :data:`HEIGHT_CODEC`, or ``--compress deflate|zstd|lerc_zstd`` through
:func:`height_co` --, ``BIGTIFF=IF_SAFER``, ``NUM_THREADS=ALL_CPUS`` so GDAL compresses on
every core; ``--co`` always wins) written under a temporary name and renamed when complete. A
Cloud Optimized GeoTIFF is made by *copying* the finished GeoTIFF with the COG driver
(writing COG directly would hold the whole raster in memory).

:class:`BlendedWriter` accumulates overlapping tile predictions with a separable weight
window and hands block rows to a writer thread as soon as no later tile can touch them;
with vertical panels its memory is bounded by the panel width, not the raster's size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from rsgeo import __version__
from rsgeo.errors import InputError, OutputWriteError, first_line
from rsgeo.io.atomic import atomic_path, remove, temp_name, write_problem
from rsgeo.io.buffers import ArrayPool
from rsgeo.io.raster import Grid
from rsgeo.io.windows import TileGrid, plan_panels

HEIGHT_NODATA = -9999.0
GEOTIFF_SUFFIXES = (".tif", ".tiff")  # every raster rsgeo writes is a GeoTIFF (or COG)
BLOCK = 256
CHUNK_ROWS = 512  # most rows in one blend buffer chunk (a multiple of the block height)


def check_raster_output(path: str | os.PathLike) -> Path:
    """``path`` if it names a GeoTIFF (:data:`GEOTIFF_SUFFIXES`), else InputError: a GeoTIFF
    written as ``out.png`` (or without an extension) is misread by whatever goes by the
    name. Commands call it on their raster outputs before any work; :func:`open_output`
    checks again."""
    p = Path(path)
    if p.suffix.lower() not in GEOTIFF_SUFFIXES:
        raise InputError("raster outputs are GeoTIFF: give a name ending in "
                         + " or ".join(GEOTIFF_SUFFIXES), p)
    return p


def parse_co(items: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Parse repeatable ``--co KEY=VALUE`` creation options into a dict (keys upper-cased)."""
    out: dict[str, str] = {}
    for item in items or ():
        if "=" not in item:
            raise InputError(f"creation option {item!r} is not KEY=VALUE")
        k, v = item.split("=", 1)
        if not k.strip():
            raise InputError(f"creation option {item!r} has no key")
        out[k.strip().upper()] = v.strip()
    return out


CODECS = ("deflate", "zstd", "lerc_zstd")
HEIGHT_CODEC = "zstd"       # default for height outputs: see README, "Output formats"
MAX_Z_ERROR = 0.01          # LERC_ZSTD default: 1 cm


def codec_co(codec: str | None, max_z_error: float | None = None) -> dict[str, str]:
    """GDAL creation options for a height output compressed with ``codec``.

    - ``deflate``: lossless, DEFLATE level 1 + floating-point predictor (the most portable).
    - ``zstd``: lossless, ZSTD level 1 + floating-point predictor (GDAL >= 2.3 reads it).
    - ``lerc_zstd``: lossy, every value within ``max_z_error`` (metres, default 0.01) of the
      prediction, nodata kept exact; several times smaller than lossless for heights.

    ``None`` means :data:`HEIGHT_CODEC`. User ``--co`` options are applied on top.
    """
    name = (codec or HEIGHT_CODEC).lower()
    if name not in CODECS:
        raise InputError(f"--compress must be one of {', '.join(CODECS)}, got {codec!r}")
    if max_z_error is not None and name != "lerc_zstd":
        raise InputError("--max-z-error applies to --compress lerc_zstd only")
    if name == "deflate":
        return {"COMPRESS": "DEFLATE", "PREDICTOR": "3", "ZLEVEL": "1"}
    if name == "zstd":
        return {"COMPRESS": "ZSTD", "PREDICTOR": "3", "ZSTD_LEVEL": "1"}
    err = MAX_Z_ERROR if max_z_error is None else float(max_z_error)
    if not (err >= 0 and math.isfinite(err)):
        raise InputError(f"--max-z-error must be >= 0 metres, got {max_z_error}")
    return {"COMPRESS": "LERC_ZSTD", "MAX_Z_ERROR": repr(err)}


def height_co(compress: str | None = None, max_z_error: float | None = None,
              co: dict[str, str] | None = None) -> dict[str, str]:
    """Creation options for a height output: ``--compress``/``--max-z-error``, then ``--co``."""
    return {**codec_co(compress, max_z_error), **(co or {})}


def gtiff_profile(grid: Grid, count: int, dtype: str, nodata: float | None,
                  co: dict[str, str] | None = None) -> dict:
    """A rasterio profile for a tiled, compressed GeoTIFF on ``grid``; ``co`` overrides.

    Defaults: 256 px tiles, DEFLATE level 1 with a predictor (float rasters:
    :data:`HEIGHT_CODEC`, see :func:`codec_co`), ``NUM_THREADS=ALL_CPUS`` (GDAL compresses
    blocks on all cores). Options that do not apply to the chosen
    ``COMPRESS`` (predictor for LERC, level of another codec) are dropped unless given.
    """
    kind = np.dtype(dtype).kind
    profile = dict(
        driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
        crs=grid.crs, transform=grid.transform, nodata=nodata,
        tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
        predictor=3 if kind == "f" else 2, zlevel=1, bigtiff="IF_SAFER", num_threads="ALL_CPUS",
        interleave="band" if count > 1 else "pixel",
    )
    if kind == "f":  # heights and other float outputs: the height codec
        profile.update({k.lower(): v for k, v in codec_co(HEIGHT_CODEC).items()})
    if min(grid.width, grid.height) < BLOCK:  # tiny rasters: striped is smaller and valid
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    given = {k.lower() for k in (co or {})}
    for k, v in (co or {}).items():
        profile[k.lower()] = v
    method = str(profile.get("compress", "")).lower()
    if method != "deflate" and "zlevel" not in given:
        profile.pop("zlevel", None)
    if (method.startswith("lerc") or method in ("none", "jpeg", "webp")) \
            and "predictor" not in given:
        profile.pop("predictor", None)
    return profile


@contextmanager
def open_output(path: str | os.PathLike, grid: Grid, *, count: int = 1, dtype: str = "float32",
                nodata: float | None = HEIGHT_NODATA, co: dict[str, str] | None = None,
                overwrite: bool = False, cog: bool = False, tags: dict | None = None,
                band_descriptions: list[str] | None = None, units: str | None = None
                ) -> Iterator[rasterio.io.DatasetWriter]:
    """Open a GeoTIFF for windowed writing; it appears at ``path`` only if the block succeeds.

    Args:
        grid: CRS, transform and shape of the output (usually the input's).
        nodata: declared nodata (heights use -9999, never 0).
        co: GDAL creation options overriding the defaults (see :func:`gtiff_profile`).
        cog: copy the finished GeoTIFF to a Cloud Optimized GeoTIFF with overviews.
        tags, band_descriptions, units: metadata written into the file. Give every output
            a user sees its ``units`` (``metre``, ``class``, ``probability``): GDAL reports
            a band without one in the vertical unit of a compound CRS (EPSG:2154+5720:
            ``metre``), which would make a class raster read as heights.
    """
    check_raster_output(path)
    work_co = co
    if cog and str((co or {}).get("COMPRESS", "")).upper().startswith("LERC"):
        # lossy once: the intermediate GeoTIFF is lossless, the COG copy applies LERC
        work_co = {k: v for k, v in co.items() if k.upper() not in ("COMPRESS", "MAX_Z_ERROR")}
        work_co["COMPRESS"] = "ZSTD"
    profile = gtiff_profile(grid, count, dtype, nodata, work_co)
    quiet_libtiff()
    with atomic_path(path, overwrite) as tmp:
        gtiff = temp_name(Path(path)) if cog else tmp
        try:
            with create_gtiff(gtiff, profile, co) as dst:
                # the TIFF Software tag (gdalinfo and QGIS show it): which rsgeo made the file
                dst.update_tags(TIFFTAG_SOFTWARE=f"rsgeo {__version__}")
                if tags:
                    dst.update_tags(**{k: str(v) for k, v in tags.items()})
                for i, d in enumerate(band_descriptions or (), start=1):
                    dst.set_band_description(i, d)
                if units:
                    dst.units = (units,) * count
                yield dst
            sparse = str(profile.get("sparse_ok", "")).upper() in ("TRUE", "YES", "ON", "1")
            check_complete(gtiff, path, sparse=sparse)
            if cog:
                copy_to_cog(gtiff, tmp, co)
                check_complete(tmp, path, sparse=sparse)
        finally:
            if cog:
                remove(gtiff)


def check_complete(written: str | os.PathLike, output: str | os.PathLike, *,
                   sparse: bool = False) -> None:
    """:class:`~rsgeo.errors.OutputWriteError` naming ``output`` unless the closed GeoTIFF
    ``written`` opens and holds every block it lists, each inside the file (``sparse``:
    ``--co SPARSE_OK=TRUE`` was given, blocks never written may be absent).

    A write that fails while GDAL flushes its cache -- a tile compressed on a worker
    thread (``NUM_THREADS``), the blocks still cached at close -- is only logged, never
    raised: with the disk full, rasterio closed a truncated file without a word and it was
    published as finished. Such a file lists blocks at offset 0 or past its end, or its
    directory cannot be read. The block table costs about 20 us a block to read back.
    """
    size = os.path.getsize(written)
    detail = None
    try:
        with rasterio.open(written) as ds:
            for b in ds.indexes:
                for (row, col), _ in ds.block_windows(b):
                    at = ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=b)
                    n = ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=b)
                    at, n = int(at or 0), int(n or 0)
                    if (not (at and n) and not sparse) or at + n > size:
                        detail = f"block {row},{col} of band {b} missing"
                        break
                if detail:
                    break
    except Exception as e:  # noqa: BLE001 - a directory GDAL cannot read: the file is broken
        detail = first_line(e, 100).replace(str(written), "").strip(": ")
    if detail:
        problem = write_problem(Path(written))
        raise OutputWriteError(f"{problem} (write failed)" if problem else
                               f"write failed: GDAL left the file incomplete ({detail})", output)


_LIBTIFF = {"quiet": False}


def quiet_libtiff() -> None:
    """Stop libtiff printing its own lines on stderr (``_tiffWriteProc: No space left on
    device.``) next to rsgeo's one-line error; kept with ``-vv`` (rsgeo at DEBUG).

    GDAL takes libtiff's errors through per-file handlers, but its file I/O layer reports a
    failed write or seek through libtiff's global handler, which prints by default. Linux
    with a shared libtiff only (found among the process's mapped libraries); otherwise a
    no-op. rsgeo names the OS's reason itself (:func:`~rsgeo.io.atomic.write_problem`).
    """
    if _LIBTIFF["quiet"] or logging.getLogger("rsgeo").isEnabledFor(logging.DEBUG):
        return
    _LIBTIFF["quiet"] = True
    try:
        import ctypes

        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "/libtiff" in line}
        for lib in libs:
            ctypes.CDLL(lib).TIFFSetErrorHandler(None)
    except (OSError, AttributeError, IndexError):
        pass


def create_gtiff(path, profile: dict, co: dict | None):
    """``rasterio.open(path, "w", **profile)``, refusing creation options GDAL rejects.

    GDAL only warns about an unknown value (``--co COMPRESS=NOPE``) and writes with its
    default; a user who asked for something should hear that it was not done (InputError).
    """
    class Catch(logging.Handler):
        def __init__(self):
            super().__init__(logging.DEBUG)
            self.records = []

        def emit(self, record):
            self.records.append(record)

    def bad(record) -> bool:
        msg = record.getMessage()
        return record.levelno >= logging.WARNING and (
            "creation option" in msg or "not recognised" in msg)

    catch = Catch()
    logger = logging.getLogger("rasterio")
    propagate, logger.propagate = logger.propagate, False   # held back until judged
    logger.addHandler(catch)
    try:
        dst = rasterio.open(path, "w", **profile)
    finally:
        logger.removeHandler(catch)
        logger.propagate = propagate
    rejected = [r.getMessage() for r in catch.records if bad(r)]
    if rejected:
        dst.close()
        opts = " ".join(f"{k}={v}" for k, v in (co or {}).items())
        raise InputError(f"GDAL does not accept the creation options ({rejected[0]}; "
                         f"options: {opts or '(defaults)'})")
    for record in catch.records:  # anything else GDAL said goes where it would have gone
        if logger.parent is not None and propagate:
            logger.parent.handle(record)
    return dst


def copy_to_cog(src: str | os.PathLike, dst: str | os.PathLike, co: dict | None = None) -> None:
    """Copy a finished GeoTIFF to a Cloud Optimized GeoTIFF (internal overviews, 512 blocks)."""
    with rasterio.open(src) as ds:
        kind = np.dtype(ds.dtypes[0]).kind
        resampling = "NEAREST" if kind in "iu" else "AVERAGE"
    opts = dict(compress="DEFLATE", predictor="YES", blocksize=512, bigtiff="IF_SAFER",
                num_threads="ALL_CPUS", overview_resampling=resampling)
    gtiff_only = {"TILED", "BLOCKXSIZE", "BLOCKYSIZE", "INTERLEAVE", "PHOTOMETRIC"}
    for k, v in (co or {}).items():
        if k.upper() in ("ZLEVEL", "ZSTD_LEVEL"):  # the COG driver calls both LEVEL
            opts["level"] = v
        elif k.upper() not in gtiff_only:
            opts[k.lower()] = v
    if str(opts.get("compress", "")).upper().startswith("LERC"):
        opts.pop("predictor", None)
    rasterio.shutil.copy(src, dst, driver="COG", **opts)


def write_array(path: str | os.PathLike, array: np.ndarray, grid: Grid, *,
                nodata: float | None = None, overwrite: bool = False, cog: bool = False,
                co: dict | None = None, colormap: dict | None = None, **meta) -> Path:
    """Write a whole (bands, h, w) or (h, w) array atomically (small rasters only);
    ``colormap`` (``{id: RGB(A)}``) becomes band 1's colour table before it is published."""
    arr = array if array.ndim == 3 else array[None]
    if arr.shape[1:] != (grid.height, grid.width):
        raise ValueError(f"array shape {arr.shape} does not match grid {grid.height}x{grid.width}")
    with open_output(path, grid, count=arr.shape[0], dtype=str(arr.dtype), nodata=nodata,
                     overwrite=overwrite, cog=cog, co=co, **meta) as dst:
        dst.write(arr)
        if colormap:
            dst.write_colormap(1, colormap)
    return Path(path)


def class_tags(names: dict[int, str]) -> dict[str, str]:
    """A class raster's tags naming its classes: ``class_<id>`` each and ``classes`` (JSON
    ``{"id": name}``), with ``units=class`` (GDAL keeps category names only in the side
    file of :func:`write_categories`; tags travel with the .tif)."""
    return {"units": "class", "classes": json.dumps({str(k): v for k, v in names.items()}),
            **{f"class_{k}": v for k, v in names.items()}}


def write_categories(path: str | os.PathLike, names: dict[int, str],
                     colors: dict[int, tuple[int, ...]]) -> Path:
    """GDAL's side file ``PATH.aux.xml`` (PAM) for the class raster ``path``: band 1's
    category names and its colour table with alpha. Returns the side file's path.

    A GeoTIFF keeps neither: its palette is RGB only (a transparent background class comes
    back opaque) and GDAL stores category names in this side file alone. GDAL (gdalinfo,
    QGIS, rasterio) reads it with the raster and prefers its colour table; without it the
    raster still carries its RGB palette and the names as tags.
    """
    import xml.etree.ElementTree as ET

    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    cats = ET.SubElement(band, "CategoryNames")
    for i in range(max(names) + 1):
        ET.SubElement(cats, "Category").text = names.get(i, "")
    table = ET.SubElement(band, "ColorTable")
    for i in range(256):
        rgba = (*colors.get(i, (0, 0, 0, 0)), 255)[:4]
        ET.SubElement(table, "Entry", {f"c{k + 1}": str(int(v)) for k, v in enumerate(rgba)})
    ET.indent(root)
    side = Path(f"{os.fspath(path)}.aux.xml")
    with atomic_path(side, overwrite=True) as tmp:   # it belongs to path: always replaced
        tmp.write_text(ET.tostring(root, encoding="unicode") + "\n")
    return side


@lru_cache(maxsize=64)
def ramp(size: int, overlap: int, taper_start: bool, taper_end: bool) -> np.ndarray:
    """1-D blend weights: 1 inside, a raised-cosine rise over ``overlap`` px at tapered sides.

    Weights are strictly positive (the first pixel gets sin^2(pi/4/overlap), not 0), and a
    side at the scene border is not tapered, so border pixels keep full weight.
    """
    w = np.ones(size, dtype=np.float32)
    n = min(overlap, size // 2)
    if n > 0:
        rise = np.sin(0.5 * math.pi * (np.arange(n, dtype=np.float64) + 0.5) / n) ** 2
        if taper_start:
            w[:n] = rise
        if taper_end:
            w[size - n:] = rise[::-1]
    return w


class AsyncWriter:
    """Run write jobs on one background thread, at most ``depth`` waiting.

    ``submit(job)`` queues a callable (it computes and writes a block row); the first error
    is raised by the next ``submit`` or by ``close``. ``abort`` drops what is queued.
    """

    def __init__(self, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._error: BaseException | None = None
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rsgeo-write", daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            job = self._q.get()
            if job is None:
                return
            if self._error is not None or self._abort.is_set():
                continue
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - raised by submit/close
                self._error = e

    def submit(self, job: Callable[[], None]) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if self._abort.is_set():
                raise RuntimeError("writer aborted")
            try:
                self._q.put(job, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait for every queued write; raise the first error."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._abort.set()
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


def weight_sums(size: int, offsets: list[int], tile: int, overlap: int) -> np.ndarray:
    """Sum over tiles of their 1-D :func:`ramp` along one axis: ``(size,)`` float32.

    The 2-D weight of a tile is the outer product of its row and column ramps, so the
    weight sum at a pixel covered by valid tiles is ``rows[y] * cols[x]``: two vectors
    instead of a full-width weight-sum buffer. Sums run in float64 (exact for one tile).
    """
    acc = np.zeros(size, np.float64)
    for o in offsets:
        n = min(tile, size - o)
        acc[o:o + n] += ramp(tile, overlap, o > 0, o + tile < size)[:n]
    return acc.astype(np.float32)


def _ones_span(w: np.ndarray) -> tuple[int, int]:
    """The index range where the 1-D weight ``w`` is exactly 1 (a ramp's flat middle)."""
    idx = np.flatnonzero(w == 1)
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else (0, 0)


def _accumulate(acc: np.ndarray, pred: np.ndarray, weight: np.ndarray, ones_y, ones_x,
                assign: bool = False, scratch: np.ndarray | None = None) -> None:
    """``acc += pred * weight`` (bands, h, w), skipping the multiply where the weight is 1.

    ``assign`` writes ``pred * weight`` instead (pixels no earlier tile touched: no zeroed
    buffer to read). Bit-identical to the plain expression (``x * 1.0 == x``,
    ``0 + x == x``); the flat middle of a tile is most of its pixels. ``scratch``: a flat
    float32 buffer of at least ``acc.size`` for the products (no allocation per call).
    """
    h, w = weight.shape
    if h == 0 or w == 0:
        return
    y0, y1 = max(0, ones_y[0]), min(h, ones_y[1])
    x0, x1 = max(0, ones_x[0]), min(w, ones_x[1])

    def mul(a, p, wt):
        if assign:
            np.multiply(p, wt, out=a)
        elif scratch is None:
            a += p * wt
        else:
            np.add(a, np.multiply(p, wt, out=scratch[:a.size].reshape(a.shape)), out=a)

    if y1 - y0 < 16 or x1 - x0 < 16:
        mul(acc, pred, weight)
        return
    if y0 > 0:
        mul(acc[:, :y0], pred[:, :y0], weight[:y0])
    if y1 < h:
        mul(acc[:, y1:], pred[:, y1:], weight[y1:])
    if x0 > 0:
        mul(acc[:, y0:y1, :x0], pred[:, y0:y1, :x0], weight[y0:y1, :x0])
    if x1 < w:
        mul(acc[:, y0:y1, x1:], pred[:, y0:y1, x1:], weight[y0:y1, x1:])
    if assign:
        acc[:, y0:y1, x0:x1] = pred[:, y0:y1, x0:x1]
    else:
        acc[:, y0:y1, x0:x1] += pred[:, y0:y1, x0:x1]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Start/stop of the runs of True in a 1-D bool array."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _normalise(out: np.ndarray, den_y: np.ndarray, den_x: np.ndarray,
               src: np.ndarray | None = None, scratch: np.ndarray | None = None) -> None:
    """``out = src / (den_y[:, None] * den_x[None, :])``, dividing only where that is not 1.

    ``src`` defaults to ``out`` (in place); another array of the same shape (a strided view
    of the blend buffer) is read once, so ``out`` can be a contiguous buffer for GDAL.
    ``scratch``: a flat float32 buffer of at least ``out[0].size`` for the weight sums of
    the rows that need them (no allocation per call).
    """
    src = out if src is None else src
    rows = _runs(den_y != 1)
    cols = _runs(den_x != 1)
    for a, b in rows:
        den = None if scratch is None else scratch[:(b - a) * den_x.size].reshape(b - a, -1)
        np.divide(src[:, a:b], np.multiply.outer(den_y[a:b], den_x, out=den), out=out[:, a:b])
    edges = [0] + [x for ab in rows for x in ab] + [len(den_y)]
    for a, b in zip(edges[::2], edges[1::2]):  # rows where den_y == 1: den is den_x
        if b > a:
            if src is not out:
                np.copyto(out[:, a:b], src[:, a:b])
            for c, d in cols:
                np.divide(out[:, a:b, c:d], den_x[c:d], out=out[:, a:b, c:d])


class BlendedWriter:
    """Blend overlapping tile predictions and stream finished block rows to an open dataset.

    Tiles arrive in the order of :func:`~rsgeo.io.windows.tile_order` for ``panels``
    (row-major when there is one panel, the default). Each prediction ``(bands, tile,
    tile)`` is multiplied by its separable weight window (see :func:`ramp`) and
    accumulated; a pixel's output is ``sum(w * p) / sum(w)`` over the tiles covering it,
    ``nodata`` where the input pixel is nodata. ``valid`` masks mark the input's nodata
    pixels: a property of the raster pixel, the same in every tile that covers it, so the
    weight sum is ``rows[y] * cols[x]`` (:func:`weight_sums`) where valid.

    Buffers: block rows (the output's block height) of the current panel's width, at most
    ``tile / block + 2`` alive, plus a ``height x overlap`` carry between panels. Finished
    block rows go to an :class:`AsyncWriter` thread that divides and writes them.
    """

    def __init__(self, dst, tiles: TileGrid, bands: int = 1, nodata: float = HEIGHT_NODATA,
                 dtype: str = "float32", panels: list | None = None, write_depth: int = 2):
        self.dst, self.tiles, self.bands, self.nodata = dst, tiles, bands, nodata
        self.dtype = dtype
        self.panels = panels or plan_panels(tiles, tiles.width, None)
        H, W, t, o = tiles.height, tiles.width, tiles.tile, tiles.overlap
        bh = int(dst.block_shapes[0][0]) if hasattr(dst, "block_shapes") else BLOCK
        self.block = bh * max(1, round(BLOCK / bh)) if bh < BLOCK else bh
        # buffered row chunks at least a tile high (up to CHUNK_ROWS): a tile then spans at
        # most two of them, so it is blended in fewer, larger numpy calls
        self.block *= max(1, min(CHUNK_ROWS // self.block, -(-t // self.block)))
        self.wy = weight_sums(H, tiles.row_offsets, t, o)
        self.wx = weight_sums(W, tiles.col_offsets, t, o)
        self._weights: dict = {}
        self._col_panel: dict | None = None
        self._row_index = {o: i for i, o in enumerate(tiles.row_offsets)}
        self._col_index = {o: i for i, o in enumerate(tiles.col_offsets)}
        self._pool = ArrayPool(keep=write_depth + 2)
        self._scratch = np.empty(bands * t * t, np.float32)  # products of add() (one thread)
        self._writer = AsyncWriter(write_depth)
        self._chunks: dict[int, list] = {}
        self._pi = 0
        self._carry_in = self._carry_out = None
        self._start_panel(0)
        self.last = (0, 0)
        self.peak_rows = 0  # most buffer rows alive at once (memory bound check)

    def _start_panel(self, pi: int) -> None:
        H = self.tiles.height
        self._pi = pi
        p = self.panels[pi]
        self._carry_in = self._carry_out
        self._carry_out = None
        if pi + 1 < len(self.panels) and p.c1 > p.x1:
            self._carry_out = [np.zeros((self.bands, H, p.c1 - p.x1), np.float32), None]

    def _panel_of(self, col: int) -> int:
        if self._col_panel is None:
            cols = self.tiles.col_offsets
            self._col_panel = {cols[j]: i for i, p in enumerate(self.panels)
                               for j in range(p.j0, p.j1)}
        try:
            return self._col_panel[col]
        except KeyError:
            raise ValueError(f"column {col} is not a tile column of the grid") from None

    def _weight(self, r: int, c: int, h: int, w: int) -> np.ndarray:
        t, o, H, W = self.tiles.tile, self.tiles.overlap, self.tiles.height, self.tiles.width
        key = (r > 0, r + t < H, c > 0, c + t < W, h, w)
        wt = self._weights.get(key)
        if wt is None:
            wy = ramp(t, o, key[0], key[1])[:h]
            wx = ramp(t, o, key[2], key[3])[:w]
            wt = self._weights[key] = (wy[:, None] * wx[None, :], _ones_span(wy),
                                       _ones_span(wx))
        return wt

    def add(self, window: Window, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one tile: ``pred`` (bands, tile, tile), ``valid`` (tile, tile) bool."""
        r, c = int(window.row_off), int(window.col_off)
        pi = self._panel_of(c) if len(self.panels) > 1 else 0
        if (pi, r) < self.last:
            raise ValueError("tiles must be added in sweep order (panel, then row-major)")
        if pi != self._pi:
            self._flush_below(self.tiles.height)
            self._start_panel(pi)
        self.last = (pi, r)
        self._flush_below(r)
        H, W, t = self.tiles.height, self.tiles.width, self.tiles.tile
        h, w = min(t, H - r), min(t, W - c)
        weight, ones_y, ones_x = self._weight(r, c, h, w)
        bad = None
        if valid is not None:
            v = valid[:h, :w]
            if not v.all():
                weight = weight * v
                bad = ~v
                ones_y = ones_x = (0, 0)
        p = self.panels[pi]
        cs = c - p.x0
        ch = self.block
        # pixels of this tile no earlier tile touched: [fy, h) x [fx, w) (assigned, not added)
        ki, j = self._row_index[r], self._col_index[c]
        rows, cols = self.tiles.row_offsets, self.tiles.col_offsets
        fy = min(h, max(0, rows[ki - 1] + t - r)) if ki > 0 else 0
        fx = min(w, max(0, cols[j - 1] + t - c)) if j > p.j0 else 0
        ow = p.x1 - p.x0  # tile columns from ow - cs on land in the carry buffer
        for k in range(r // ch, (r + h - 1) // ch + 1):
            a, b = max(r, k * ch), min(r + h, (k + 1) * ch)
            chunk = self._chunk(k)
            ta, tb = a - r, b - r           # tile rows of this block row
            for y0, y1, x0, x1, fresh in ((ta, min(tb, fy), 0, w, False),
                                          (max(ta, fy), tb, 0, fx, False),
                                          (max(ta, fy), tb, fx, w, True)):
                span = slice(y0 + r - k * ch, y1 + r - k * ch)  # rows of the chunk
                for acc, u0, u1, at in ((chunk[0], x0, min(x1, ow - cs), cs),
                                        (chunk[2], max(x0, ow - cs), x1, cs - ow)):
                    if y1 > y0 and u1 > u0:
                        _accumulate(acc[:, span, at + u0:at + u1], pred[:, y0:y1, u0:u1],
                                    weight[y0:y1, u0:u1], (ones_y[0] - y0, ones_y[1] - y0),
                                    (ones_x[0] - u0, ones_x[1] - u0), assign=fresh,
                                    scratch=self._scratch)
            ya, yb = a - k * ch, b - k * ch
            if bad is not None:
                if chunk[1] is None:
                    chunk[1] = np.zeros((chunk[0].shape[1], p.c1 - p.x0), bool)
                chunk[1][ya:yb, cs:cs + w] |= bad[a - r:b - r]

    def _chunk(self, k: int) -> list:
        """``[acc, bad, carry]`` of block row ``k``: the panel's own columns ``(bands, rows,
        x1 - x0)`` (contiguous: normalised in place and written as they are), the nodata mask
        over both (None until needed) and the columns its tiles pass ``x1`` by (``(bands,
        rows, c1 - x1)``, None without a next panel), carried over to the next panel."""
        chunk = self._chunks.get(k)
        if chunk is None:
            p = self.panels[self._pi]
            rows = min(self.block, self.tiles.height - k * self.block)
            acc = self._pool.take((self.bands, rows, p.x1 - p.x0), np.float32)
            acc[:, :, :p.c0 - p.x0] = 0  # only the carry lands left of the first tile
            carry = self._pool.take((self.bands, rows, p.c1 - p.x1), np.float32) \
                if p.c1 > p.x1 else None
            chunk = self._chunks[k] = [acc, None, carry]
            self.peak_rows = max(self.peak_rows, sum(c[0].shape[1] for c in self._chunks.values()))
        return chunk

    def _flush_below(self, row: int) -> None:
        """Finish every buffered block row that ends at or above raster row ``row``."""
        for k in sorted(self._chunks):
            if min((k + 1) * self.block, self.tiles.height) > row:
                break
            self._finish(k, *self._chunks.pop(k))

    def _finish(self, k: int, acc: np.ndarray, bad: np.ndarray | None,
                carry: np.ndarray | None) -> None:
        p = self.panels[self._pi]
        y0 = k * self.block
        n = acc.shape[1]
        ow = p.x1 - p.x0
        if self._carry_in is not None:  # the previous panel's share of our first columns
            cin, cbad = self._carry_in
            cw = cin.shape[2]
            acc[:, :, :cw] += cin[:, y0:y0 + n]
            if cbad is not None:
                if bad is None:
                    bad = np.zeros((n, p.c1 - p.x0), bool)
                bad[:, :cw] |= cbad[y0:y0 + n]
        if self._carry_out is not None:  # our share of the next panel's first columns
            cout = self._carry_out
            cout[0][:, y0:y0 + n] = carry
            if bad is not None and bad[:, ow:].any():
                if cout[1] is None:
                    cout[1] = np.zeros(cout[0].shape[1:], bool)
                cout[1][y0:y0 + n] = bad[:, ow:]
        if carry is not None:
            self._pool.give(carry)
        mask = None if bad is None else bad[:, :ow]
        den_y, den_x = self.wy[y0:y0 + n], self.wx[p.x0:p.x1]
        window = Window(p.x0, y0, ow, n)

        def job():  # acc is contiguous: normalised in place, handed to GDAL as it is
            den = self._pool.take((acc[0].size,), np.float32)
            _normalise(acc, den_y, den_x, scratch=den)
            self._pool.give(den)
            if mask is not None:
                acc[:, mask] = self.nodata
            self.dst.write(acc.astype(self.dtype, copy=False), window=window)
            self._pool.give(acc)

        self._writer.submit(job)

    def close(self) -> None:
        """Write every remaining row (call once, after the last tile) and wait for the writes."""
        self._flush_below(self.tiles.height)
        self._writer.close()

    def abort(self) -> None:
        """Drop buffered rows and stop the writer thread (after a failure)."""
        self._chunks.clear()
        self._writer.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()
