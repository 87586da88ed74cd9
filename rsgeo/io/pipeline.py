"""The one streaming raster path: read windows -> batch -> model -> blend -> write rows.

``run_tiled`` is shared by every command that turns a raster into a per-pixel output
(predict-height, damage-map with images, the benchmark). The model is any callable
``fn(batch) -> out`` on numpy arrays ``(B, bands, tile, tile) -> (B, out_bands, tile, tile)``;
reading the next batch overlaps with the model on the current one (GDAL releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from rasterio.windows import Window

from rsgeo.io.windows import TileGrid, read_window
from rsgeo.io.writer import HEIGHT_NODATA, BlendedWriter


@dataclass
class Batch:
    """A batch of tiles: data ``(B, bands, t, t)``, valid ``(B, t, t)`` and their windows."""

    windows: list[Window]
    data: np.ndarray
    valid: np.ndarray


def iter_batches(ds, tiles: TileGrid, batch_size: int, *, pad: str = "reflect",
                 nodata: float | None = None, indexes=None, dtype="float32",
                 prefetch: bool = True) -> Iterator[Batch]:
    """Yield batches of padded tile reads in row-major order, reading one batch ahead."""
    windows = list(tiles)
    groups = [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]

    def load(group: list[Window]) -> Batch:
        reads = [read_window(ds, w, pad=pad, nodata=nodata, indexes=indexes, out_dtype=dtype)
                 for w in group]
        return Batch(group, np.stack([d for d, _ in reads]), np.stack([v for _, v in reads]))

    if not prefetch or len(groups) < 2:
        for g in groups:
            yield load(g)
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(load, groups[0])
        for nxt in groups[1:]:
            batch = future.result()
            future = pool.submit(load, nxt)
            yield batch
        yield future.result()


def run_tiled(ds, dst, fn: Callable[[np.ndarray], np.ndarray], *, tile: int, overlap: int,
              batch_size: int = 8, out_bands: int = 1, nodata: float = HEIGHT_NODATA,
              pad: str = "reflect", in_nodata: float | None = None, indexes=None,
              on_batch: Callable[[int], None] | None = None) -> TileGrid:
    """Apply ``fn`` over ``ds`` in overlapping tiles and write the blended result to ``dst``.

    Args:
        ds: open input dataset (or WarpedVRT); ``dst``: open output with the same shape.
        fn: ``(B, bands, tile, tile) float32 -> (B, out_bands, tile, tile)``.
        tile, overlap: window size and minimum overlap in pixels.
        nodata: output value where the input is nodata (or never covered).
        on_batch: called with the number of tiles done after each batch (progress bars).

    Returns:
        The tile grid used.
    """
    tiles = TileGrid(ds.height, ds.width, tile, overlap)
    with BlendedWriter(dst, tiles, bands=out_bands, nodata=nodata, dtype=dst.dtypes[0]) as bw:
        for batch in iter_batches(ds, tiles, batch_size, pad=pad, nodata=in_nodata,
                                  indexes=indexes):
            out = np.asarray(fn(batch.data), dtype=np.float32)
            if out.shape[0] != len(batch.windows) or out.shape[-2:] != batch.data.shape[-2:]:
                raise ValueError(f"model returned shape {out.shape} for input {batch.data.shape}")
            for w, pred, valid in zip(batch.windows, out, batch.valid):
                bw.add(w, pred, valid)
            if on_batch:
                on_batch(len(batch.windows))
    return tiles


def chunked(seq: Iterable, n: int):
    """Split an iterable into lists of ``n`` items (the last may be shorter)."""
    buf = []
    for x in seq:
        buf.append(x)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf
