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

Large rasters are swept in vertical *panels* (:func:`plan_panels`): groups of tile columns
processed top to bottom one after another, so the buffers of the blended sweep grow with the
panel width (a few thousand pixels), not with the raster width.
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


@dataclass(frozen=True)
class Panel:
    """Tile columns ``[j0, j1)`` of a :class:`TileGrid`, swept top to bottom as one unit.

    ``x0, x1``: output columns the panel finishes (block-aligned, ``x1 == width`` for the
    last); ``c0, c1``: columns its tiles cover (``c1`` may pass ``x1``: the overlap with the
    next panel, carried over to it).
    """

    j0: int
    j1: int
    x0: int
    x1: int
    c0: int
    c1: int


def plan_panels(tiles: TileGrid, block_width: int, panel_width: int | None = 4096
                ) -> list[Panel]:
    """Cut the tile columns of ``tiles`` into panels at most ``panel_width`` pixels wide.

    Panel edges fall on multiples of ``block_width`` (the output's block width, so every
    output block is written once, whole) at the tile column that leaves the least overlap to
    carry. One panel spanning the width is returned when ``panel_width`` is None or not
    smaller than the raster, when blocks span the width (striped files), or when panels
    would be too narrow for their overlap to reach only the next panel.
    """
    W, t = tiles.width, tiles.tile
    cols = tiles.col_offsets
    one = [Panel(0, len(cols), 0, W, 0, min(cols[-1] + t, W) if W >= t else W)]
    bw = int(block_width)
    if (panel_width is None or panel_width >= W or bw >= W or len(cols) < 4
            or panel_width < 2 * (t + bw)):
        return one
    panels: list[Panel] = []
    j0, x0 = 0, 0
    while W - x0 > panel_width:
        # the panel's buffer spans [x0, cols[j - 1] + t): keep it within panel_width
        fits = [j for j in range(j0 + 2, len(cols)) if cols[j - 1] + t - x0 <= panel_width]
        if not fits:
            break
        last = fits[-1]

        def carry(j):
            return cols[j - 1] + t - (cols[j] // bw) * bw

        j = min(range(max(j0 + 2, last - 7), last + 1), key=lambda k: (carry(k), -k))
        x1 = (cols[j] // bw) * bw
        if x1 <= x0:
            break
        panels.append(Panel(j0, j, x0, x1, cols[j0], cols[j - 1] + t))
        j0, x0 = j, x1
    if not panels:
        return one
    panels.append(Panel(j0, len(cols), x0, W, cols[j0], W))
    for a, b in zip(panels, panels[1:]):  # carried overlap must land inside the next panel
        if not (a.x1 <= b.c0 and a.c1 <= b.x1 and a.x0 < a.x1):
            return one
    return panels


def tile_order(tiles: TileGrid, panels: list[Panel]):
    """Windows in sweep order: panel by panel, row-major inside each panel."""
    cols = tiles.col_offsets
    for p in panels:
        for r in tiles.row_offsets:
            for c in cols[p.j0:p.j1]:
                yield Window(c, r, tiles.tile, tiles.tile)
