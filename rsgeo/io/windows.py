"""Window grids over rasters and padded window reads.

A *tile grid* covers a raster of ``height x width`` pixels with square ``tile x tile``
windows that overlap by at least ``overlap`` pixels. Offsets step by
``stride = tile - overlap`` and the last row/column of windows is snapped to end exactly
at the raster edge, so every pixel is covered, none is lost, and windows never extend
past the raster -- except when the raster is smaller than one tile, where the single
window starts at 0 and the read pads the missing part.

Every window is read as a full ``tile x tile`` array (``read_window``) with reflect or
constant padding outside the raster, plus a boolean mask of the pixels that are both
inside the raster and not nodata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from rsgeo.errors import InputError
from rsgeo.io.raster import valid_mask


def offsets(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets along one axis: 0, stride, 2*stride, ..., snapped to end at ``size``."""
    if size <= tile:
        return [0]
    offs = list(range(0, size - tile, stride))
    offs.append(size - tile)
    return offs


@dataclass(frozen=True)
class TileGrid:
    """Overlapping square windows over a ``height x width`` raster (row-major order)."""

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self):
        if self.tile <= 0:
            raise InputError(f"tile size must be positive, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise InputError(f"overlap must be in [0, tile), got {self.overlap} for tile {self.tile}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def row_offsets(self) -> list[int]:
        return offsets(self.height, self.tile, self.stride)

    @property
    def col_offsets(self) -> list[int]:
        return offsets(self.width, self.tile, self.stride)

    def __len__(self) -> int:
        return len(self.row_offsets) * len(self.col_offsets)

    def __iter__(self):
        """Windows in row-major order, each ``tile x tile`` (may extend past a small raster)."""
        for r in self.row_offsets:
            for c in self.col_offsets:
                yield Window(c, r, self.tile, self.tile)


def strips(height: int, width: int, rows: int):
    """Non-overlapping full-width row strips of at most ``rows`` rows (for streaming reductions)."""
    for r in range(0, height, rows):
        yield Window(0, r, width, min(rows, height - r))


def read_window(ds, window: Window, *, pad: str = "reflect", fill: float = 0,
                nodata: float | None = None, indexes=None, out_dtype=None):
    """Read ``window`` (which may extend past the raster) as a full-size array.

    Args:
        ds: an open rasterio dataset or WarpedVRT.
        window: integer window; parts outside the raster are padded.
        pad: ``"reflect"`` (mirror the image content, no edge artefacts for models) or
            ``"constant"`` (``fill``).
        nodata: nodata value to mask (defaults to ``ds.nodata``).
        indexes: band indexes to read (1-based), all by default.

    Returns:
        ``(data, valid)``: data ``(bands, h, w)`` in the dataset dtype (or ``out_dtype``),
        valid ``(h, w)`` bool, False outside the raster and on nodata/NaN pixels.
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    rr0, cc0 = max(r0, 0), max(c0, 0)
    rr1, cc1 = min(r0 + h, ds.height), min(c0 + w, ds.width)
    if rr1 <= rr0 or cc1 <= cc0:
        raise ValueError(f"window {window} does not intersect the raster")
    inner = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
    data = ds.read(indexes, window=inner)
    if out_dtype is not None:
        data = data.astype(out_dtype, copy=False)
    nd = ds.nodata if nodata is None else nodata
    valid = valid_mask(data, nd)
    pads = ((rr0 - r0, r0 + h - rr1), (cc0 - c0, c0 + w - cc1))
    if any(p for pair in pads for p in pair):
        data = pad_array(data, pads, pad, fill)
        valid = np.pad(valid, pads, mode="constant", constant_values=False)
    return data, valid


def pad_array(data: np.ndarray, pads, mode: str = "reflect", fill: float = 0) -> np.ndarray:
    """Pad the two trailing axes of ``data`` by ``pads = ((top, bottom), (left, right))``."""
    full = ((0, 0),) * (data.ndim - 2) + tuple(pads)
    if mode == "constant":
        return np.pad(data, full, mode="constant", constant_values=fill)
    if mode != "reflect":
        raise ValueError(f"unknown pad mode {mode!r}")
    # numpy reflects repeatedly for pads larger than the axis, but needs >= 2 pixels
    if min(data.shape[-2:]) < 2:
        return np.pad(data, full, mode="edge")
    return np.pad(data, full, mode="reflect")
