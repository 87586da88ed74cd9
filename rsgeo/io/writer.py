"""GeoTIFF output: creation options, atomic open, COG copy, and the blended tile writer.

Outputs are tiled GeoTIFFs (256 px blocks, DEFLATE with a predictor, ``BIGTIFF=IF_SAFER``,
``NUM_THREADS=ALL_CPUS``) written under a temporary name and renamed when complete. A
Cloud Optimized GeoTIFF is made by *copying* the finished GeoTIFF with the COG driver
(writing COG directly would hold the whole raster in memory).

:class:`BlendedWriter` accumulates overlapping tile predictions with a weight window and
writes rows to disk as soon as no later tile can touch them, so memory grows with the
raster width (``bands x (tile + block) x width``), never with its area.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from rsgeo.errors import InputError
from rsgeo.io.atomic import atomic_path, remove, temp_name
from rsgeo.io.raster import Grid
from rsgeo.io.windows import TileGrid

HEIGHT_NODATA = -9999.0
BLOCK = 256


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


def gtiff_profile(grid: Grid, count: int, dtype: str, nodata: float | None,
                  co: dict[str, str] | None = None) -> dict:
    """A rasterio profile for a tiled, compressed GeoTIFF on ``grid``; ``co`` overrides."""
    kind = np.dtype(dtype).kind
    profile = dict(
        driver="GTiff", width=grid.width, height=grid.height, count=count, dtype=dtype,
        crs=grid.crs, transform=grid.transform, nodata=nodata,
        tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate",
        predictor=3 if kind == "f" else 2, zlevel=1, bigtiff="IF_SAFER", num_threads="ALL_CPUS",
        interleave="band" if count > 1 else "pixel",
    )
    if min(grid.width, grid.height) < BLOCK:  # tiny rasters: striped is smaller and valid
        profile.update(tiled=False)
        profile.pop("blockxsize")
        profile.pop("blockysize")
    for k, v in (co or {}).items():
        profile[k.lower()] = v
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
        tags, band_descriptions, units: metadata written into the file.
    """
    profile = gtiff_profile(grid, count, dtype, nodata, co)
    with atomic_path(path, overwrite) as tmp:
        gtiff = temp_name(Path(path)) if cog else tmp
        try:
            with rasterio.open(gtiff, "w", **profile) as dst:
                if tags:
                    dst.update_tags(**{k: str(v) for k, v in tags.items()})
                for i, d in enumerate(band_descriptions or (), start=1):
                    dst.set_band_description(i, d)
                if units:
                    dst.units = (units,) * count
                yield dst
            if cog:
                copy_to_cog(gtiff, tmp, co)
        finally:
            if cog:
                remove(gtiff)


def copy_to_cog(src: str | os.PathLike, dst: str | os.PathLike, co: dict | None = None) -> None:
    """Copy a finished GeoTIFF to a Cloud Optimized GeoTIFF (internal overviews, 512 blocks)."""
    with rasterio.open(src) as ds:
        kind = np.dtype(ds.dtypes[0]).kind
        resampling = "NEAREST" if kind in "iu" else "AVERAGE"
    opts = dict(compress="DEFLATE", predictor="YES", blocksize=512, bigtiff="IF_SAFER",
                num_threads="ALL_CPUS", overview_resampling=resampling)
    gtiff_only = {"TILED", "BLOCKXSIZE", "BLOCKYSIZE", "INTERLEAVE", "ZLEVEL", "PHOTOMETRIC"}
    for k, v in (co or {}).items():
        if k.upper() not in gtiff_only:
            opts[k.lower()] = v
    rasterio.shutil.copy(src, dst, driver="COG", **opts)


def write_array(path: str | os.PathLike, array: np.ndarray, grid: Grid, *,
                nodata: float | None = None, overwrite: bool = False, cog: bool = False,
                co: dict | None = None, **meta) -> Path:
    """Write a whole (bands, h, w) or (h, w) array atomically (small rasters only)."""
    arr = array if array.ndim == 3 else array[None]
    if arr.shape[1:] != (grid.height, grid.width):
        raise ValueError(f"array shape {arr.shape} does not match grid {grid.height}x{grid.width}")
    with open_output(path, grid, count=arr.shape[0], dtype=str(arr.dtype), nodata=nodata,
                     overwrite=overwrite, cog=cog, co=co, **meta) as dst:
        dst.write(arr)
    return Path(path)


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


class BlendedWriter:
    """Blend overlapping tile predictions and stream finished rows to an open dataset.

    Tiles must arrive in the row-major order of ``tiles`` (a :class:`TileGrid`). Each
    prediction ``(bands, tile, tile)`` is multiplied by a separable weight window (see
    :func:`ramp`) and accumulated; a pixel's output is ``sum(w * p) / sum(w)`` over the
    tiles covering it, or ``nodata`` where no valid tile pixel covered it. Rows above the
    current tile row are final and are flushed in multiples of the block height.
    """

    def __init__(self, dst, tiles: TileGrid, bands: int = 1, nodata: float = HEIGHT_NODATA,
                 dtype: str = "float32"):
        self.dst, self.tiles, self.bands, self.nodata = dst, tiles, bands, nodata
        self.dtype = dtype
        H, W = tiles.height, tiles.width
        self.block = BLOCK
        self.rows = min(H, tiles.tile + self.block)
        self.acc = np.zeros((bands, self.rows, W), dtype=np.float32)
        self.wsum = np.zeros((self.rows, W), dtype=np.float32)
        self.start = 0  # raster row held in buffer row 0
        self.last_row = 0

    def add(self, window: Window, pred: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one tile: ``pred`` (bands, tile, tile), ``valid`` (tile, tile) bool."""
        r, c = int(window.row_off), int(window.col_off)
        if r < self.last_row:
            raise ValueError("tiles must be added in row-major order")
        self.last_row = r
        H, W, t = self.tiles.height, self.tiles.width, self.tiles.tile
        if r > self.start:
            self._flush(min(r - r % self.block, H) if r < H else H)
        h, w = min(t, H - r), min(t, W - c)
        wy = ramp(t, self.tiles.overlap, r > 0, r + t < H)[:h]
        wx = ramp(t, self.tiles.overlap, c > 0, c + t < W)[:w]
        weight = wy[:, None] * wx[None, :]
        if valid is not None:
            weight = weight * valid[:h, :w]
        br = r - self.start
        self.acc[:, br:br + h, c:c + w] += pred[:, :h, :w] * weight
        self.wsum[br:br + h, c:c + w] += weight

    def _flush(self, upto: int) -> None:
        n = upto - self.start
        if n <= 0:
            return
        wsum = self.wsum[:n]
        out = np.full((self.bands, n, self.tiles.width), self.nodata, dtype=np.float32)
        covered = wsum > 0
        np.divide(self.acc[:, :n], wsum, out=out, where=covered[None])
        self.dst.write(out.astype(self.dtype, copy=False),
                       window=Window(0, self.start, self.tiles.width, n))
        keep = self.rows - n
        for i in range(0, keep, n):  # shift up in non-overlapping chunks: no temporary copy
            j = min(i + n, keep)
            self.acc[:, i:j] = self.acc[:, i + n:j + n]
            self.wsum[i:j] = self.wsum[i + n:j + n]
        self.acc[:, keep:] = 0
        self.wsum[keep:] = 0
        self.start = upto

    def close(self) -> None:
        """Write every remaining row (call once, after the last tile)."""
        self._flush(self.tiles.height)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
