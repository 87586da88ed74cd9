"""The one streaming raster path: parallel reads -> batches -> model -> blend -> writer thread.

``run_tiled(ds, dst, fn, tile=, overlap=)`` is shared by every command that turns a raster
into a per-pixel output (predict-height, damage-map with images, the benchmarks). ``fn`` is
any callable on numpy arrays ``(B, bands, tile, tile) -> (B, out_bands, tile, tile)``,
called **in tile order from the calling thread** (so it may own a CUDA context); everything
else runs beside it:

- *read*: a :class:`~rsgeo.io.reader.ParallelReader` (``threads`` handles) decodes
  block-aligned strips of the input a few strips ahead; a batcher thread cuts tiles out of
  them into a bounded queue of ``prefetch`` batches. ``dtype=None`` keeps the input's dtype
  (uint8 stays uint8: normalise on the device); the default ``"float32"`` converts.
- *blend*: a thread accumulates predictions with the separable raised-cosine weight (see
  :class:`~rsgeo.io.writer.BlendedWriter`), *write*: a thread divides finished block rows
  and writes them (GDAL compresses with ``NUM_THREADS``).
- Rasters wider than ``panel_width`` are swept in vertical panels
  (:func:`~rsgeo.io.windows.plan_panels`), so memory does not grow with the width either.

Results do not depend on ``threads``, ``prefetch`` or the panel split (to float32 rounding,
< 1e-6 relative). The array ``fn`` returns is read by the blend thread after ``fn``
returns: while ``fn`` runs, the engine may still hold the two results before it (one
being blended, one queued). Return a fresh array, or reuse output buffers in turn from a
ring of at least three -- never a buffer you overwrite for the next batch.

Overlapping consecutive inputs: ``run_tiled(..., wait=False)`` returns a :class:`TiledRun`
as soon as the last tile has been handed to the blend thread; the remaining rows are blended
and written in the background. Call ``run.join()`` (raises any blend/write error) before
closing ``dst``, e.g. start the next file's ``run_tiled`` first, then join the previous one::

    prev = None
    for src, out in files:
        stack = ExitStack(); ds = stack.enter_context(open_raster(src))
        dst = stack.enter_context(open_output(out, Grid.of(ds)))
        run = run_tiled(ds, dst, fn, tile=256, overlap=32, wait=False)
        if prev: prev[0].join(); prev[1].close()
        prev = (run, stack)
    prev[0].join(); prev[1].close()

If anything fails (a read, ``fn``, a write) the background threads stop, ``run_tiled`` (or
``join``) raises, and ``open_output`` removes the partial file.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
from rasterio.windows import Window

from rsgeo.io.buffers import ArrayPool
from rsgeo.io.raster import valid_mask
from rsgeo.io.reader import ParallelReader, block_shape, default_threads, wait_all
from rsgeo.io.windows import Panel, TileGrid, pad_array, plan_panels, tile_order
from rsgeo.io.writer import HEIGHT_NODATA, BlendedWriter

STRIP_BYTES_MAX = 256 * 2 ** 20  # strips read ahead are capped to this many bytes
BATCHES_KEPT = 8                 # released batch arrays kept for reuse (queued + in use)


@dataclass
class Batch:
    """A batch of tiles: data ``(B, bands, t, t)``, valid ``(B, t, t)`` and their windows.

    ``all_valid``: every pixel of every tile is valid (inside the raster, an integer raster
    without nodata): consumers may skip the mask. :meth:`release` hands ``data`` and
    ``valid`` back to the reader for later batches (optional; only once nothing reads them).
    """

    windows: list[Window]
    data: np.ndarray
    valid: np.ndarray
    all_valid: bool = False
    pool: ArrayPool | None = field(default=None, repr=False)

    def release(self) -> None:
        """Give the arrays back to the reader's pool: later batches reuse them instead of
        faulting in fresh pages (call once the model's output and the masks are blended)."""
        pool, self.pool = self.pool, None
        if pool is not None:
            pool.give(self.data)
            pool.give(self.valid)


class _Done:
    pass


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class TileReader:
    """Cut the tiles of ``tiles`` (in :func:`tile_order` of ``panels``) out of parallel strips.

    Strips of about 256 rows (a multiple of the input's block height) spanning a panel's
    columns are decoded by a :class:`ParallelReader`, ``ahead`` strips ahead; each input
    block is decoded once (apart from the overlap of neighbouring panels). Tiles match
    :func:`rsgeo.io.windows.read_window` exactly (padding only where a tile passes the
    raster, i.e. rasters smaller than a tile).
    """

    def __init__(self, ds, tiles: TileGrid, panels: list[Panel], *, pad="reflect", nodata=None,
                 indexes=None, dtype="float32", threads: int | None = None):
        self.ds, self.tiles, self.panels = ds, tiles, panels
        self.pad = pad
        self.nodata = ds.nodata if nodata is None else nodata
        self.indexes = indexes
        n_bands = ds.count if indexes is None else (1 if isinstance(indexes, int) else len(indexes))
        self.bands = n_bands
        self.native = np.dtype(ds.dtypes[0])
        self.dtype = self.native if dtype is None else np.dtype(dtype)
        # integers without nodata: every pixel inside the raster is valid (no mask to compute)
        self.no_mask = bool(self.native.kind in "iub" and (
            self.nodata is None or (isinstance(self.nodata, float) and np.isnan(self.nodata))))
        self.threads = threads or default_threads()
        bh = block_shape(ds)[0]
        self.rows = bh * max(1, round(256 / bh)) if bh <= 256 else bh
        # strips at least a tile high (up to 512 rows): a tile is cut from at most two
        self.rows *= max(1, min(512 // self.rows, -(-tiles.tile // self.rows)))
        H, W = tiles.height, tiles.width
        self.jobs = [(pi, r, min(r + self.rows, H)) for pi, p in enumerate(panels)
                     for r in range(0, H, self.rows)]
        widest = max(min(p.c1, W) - p.c0 for p in panels)
        strip_bytes = self.rows * widest * self.bands * self.native.itemsize
        self.ahead = max(2, min(self.threads + 1, STRIP_BYTES_MAX // max(strip_bytes, 1)))
        self.batch_pool = ArrayPool(keep=BATCHES_KEPT)  # released batches (Batch.release)

    def windows(self) -> list[Window]:
        return list(tile_order(self.tiles, self.panels))

    def batches(self, batch_size: int, stop: threading.Event | None = None) -> Iterator[Batch]:
        """Yield batches in tile order (runs in the caller's thread; see :func:`iter_batches`)."""
        t, H, W = self.tiles.tile, self.tiles.height, self.tiles.width
        cols = self.tiles.col_offsets
        pool = ArrayPool(keep=self.ahead + 2)
        # whole strips while enough are in flight to keep every thread busy (less CPU than
        # column pieces); pieces only when threads outnumber the strips ahead
        split = -(-self.threads // self.ahead)
        with ParallelReader(self.ds, self.threads, split=split) as reader:
            held: dict[int, tuple] = {}
            submitted = 0

            def submit_upto(k: int):
                nonlocal submitted
                while submitted < min(k, len(self.jobs)):
                    pi, r0, r1 = self.jobs[submitted]
                    p = self.panels[pi]
                    c1 = min(p.c1, W)
                    arr = pool.take((self.bands, r1 - r0, c1 - p.c0), self.native)
                    held[submitted] = (r0, r1, arr,
                                       reader.read_into(arr, r0, r1, p.c0, c1, self.indexes))
                    submitted += 1

            total, done, job = len(self.tiles), 0, 0
            batch = None
            for p in self.panels:
                for r in self.tiles.row_offsets:
                    if stop is not None and stop.is_set():
                        return
                    end = min(r + t, H)
                    while self.jobs[job][2] < end:
                        job += 1
                    submit_upto(job + 1 + self.ahead)
                    live = []
                    for k in sorted(k for k in held if k <= job):
                        r0, r1, arr, futs = held[k]
                        if r1 <= r:
                            wait_all(futs)
                            pool.give(held.pop(k)[2])
                            continue
                        if futs:
                            wait_all(futs)
                            held[k] = (r0, r1, arr, [])
                        live.append((r0, r1, arr))
                    for c in cols[p.j0:p.j1]:
                        if batch is None:
                            n, bp = min(batch_size, total - done), self.batch_pool
                            batch = Batch([], bp.take((n, self.bands, t, t), self.dtype),
                                          bp.take((n, t, t), bool), self.no_mask, bp)
                        i = len(batch.windows)
                        full = self._cut(live, r, c, p.c0, batch.data[i], batch.valid[i])
                        batch.all_valid &= full
                        batch.windows.append(Window(c, r, t, t))
                        if len(batch.windows) == len(batch.data):
                            done += len(batch.windows)
                            yield batch
                            batch = None
                for k in [k for k in held if k <= job]:
                    pool.give(held.pop(k)[2])
                job += 1

    def _cut(self, live, r: int, c: int, c0: int, data: np.ndarray, valid: np.ndarray) -> bool:
        """Fill ``data`` (bands, t, t) and ``valid`` (t, t) with the tile at (r, c).

        Returns whether the tile lies wholly inside the raster (no padding)."""
        t, H, W = self.tiles.tile, self.tiles.height, self.tiles.width
        h, w = min(t, H - r), min(t, W - c)
        inner = data[:, :h, :w]
        for r0, r1, arr in live:
            a, b = max(r, r0), min(r + h, r1)
            if a < b:
                np.copyto(inner[:, a - r:b - r], arr[:, a - r0:b - r0, c - c0:c - c0 + w],
                          casting="unsafe")
        if h == t and w == t:
            if self.no_mask:
                valid.fill(True)
            else:
                valid[...] = valid_mask(data, self.nodata)
                _zero_non_finite(data, valid)
            return True
        pads = ((0, t - h), (0, t - w))
        v = valid_mask(inner, self.nodata)
        data[...] = pad_array(np.ascontiguousarray(inner), pads, self.pad, 0)
        valid[...] = np.pad(v, pads, mode="constant", constant_values=False)
        _zero_non_finite(data, valid)
        return False


def _zero_non_finite(data: np.ndarray, valid: np.ndarray) -> None:
    """NaN and inf pixels (nodata, masked in the output anyway) become 0 in the model's
    input: one NaN would otherwise turn every prediction of its tile into NaN (convolutions
    and attention mix all pixels). Only float tiles with invalid pixels are scanned."""
    if data.dtype.kind == "f" and not valid.all():
        bad = ~np.isfinite(data)
        if bad.any():
            data[bad] = 0


def iter_batches(ds, tiles: TileGrid, batch_size: int, *, pad: str = "reflect",
                 nodata: float | None = None, indexes=None, dtype="float32",
                 prefetch: bool = True, threads: int | None = None,
                 panels: list[Panel] | None = None) -> Iterator[Batch]:
    """Yield batches of padded tile reads (row-major unless ``panels`` are given).

    With ``prefetch`` the batches are assembled in a background thread, up to two ahead.
    Decoding runs on the process's kept ``threads`` threads (see
    :class:`~rsgeo.io.reader.ParallelReader`), shared with other files.
    """
    reader = TileReader(ds, tiles, panels or plan_panels(tiles, tiles.width, None), pad=pad,
                        nodata=nodata, indexes=indexes, dtype=dtype,
                        threads=threads if prefetch else (threads or 1))
    if not prefetch:
        yield from reader.batches(batch_size)
        return
    yield from _background(reader, batch_size, depth=2)


def _background(reader: TileReader, batch_size: int, depth: int) -> Iterator[Batch]:
    """Run ``reader.batches`` in a thread feeding a bounded queue; stop it when abandoned."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for b in reader.batches(batch_size, stop):
                if not put(b):
                    return
            put(_Done())
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failed(e))

    th = threading.Thread(target=produce, name="rsgeo-batcher", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        th.join()


class TiledRun:
    """The blend/write side of a :func:`run_tiled` call still finishing in the background."""

    def __init__(self, tiles: TileGrid, writer: BlendedWriter, threaded: bool = True):
        self.tiles = tiles
        self._writer = writer
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._joined = False
        self._threaded = threaded
        self._thread = threading.Thread(target=self._blend, name="rsgeo-blend", daemon=True)
        if threaded:
            self._thread.start()

    def _blend(self):
        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                windows, preds, valids, done = item
                for w, pred, valid in zip(windows, preds, valids):
                    self._writer.add(w, pred, valid)
                if done is not None:
                    done()
            self._writer.close()
        except BaseException as e:  # noqa: BLE001 - raised by put/join
            self._error = e  # put() sees it instead of waiting on a full queue
            self._writer.abort()

    def put(self, windows, preds, valids, done: Callable[[], None] | None = None) -> None:
        """Blend ``preds`` (B, bands, t, t) of ``windows`` with ``valids`` (B masks, or None
        each: all valid); ``done()`` is called once they are blended (e.g.
        :meth:`Batch.release`)."""
        if self._error is not None:
            raise self._error
        if not self._threaded:  # blend here, while the predictions are still in cache
            for w, pred, valid in zip(windows, preds, valids):
                self._writer.add(w, pred, valid)
            if done is not None:
                done()
            return
        while True:
            try:
                self._q.put((windows, preds, valids, done), timeout=0.1)
                return
            except queue.Full:
                if self._error is not None:
                    raise self._error from None

    def _end(self) -> None:
        while self._thread.is_alive():
            try:
                self._q.put(None, timeout=0.1)
                return
            except queue.Full:
                continue

    def join(self) -> TileGrid:
        """Wait until every row is written; raise the blend/write error if there was one."""
        if not self._threaded and not self._joined:
            self._joined = True
            self._writer.close()
        if not self._joined:
            self._end()
            self._thread.join()
            self._joined = True
        if self._error is not None:
            raise self._error
        return self.tiles

    close = join

    def abort(self) -> None:
        """Stop without writing the remaining rows (after a failure upstream)."""
        self._writer.abort()
        if not self._threaded:
            self._joined = True
            return
        if self._error is None:
            self._error = RuntimeError("aborted")
        self._end()
        self._thread.join()
        self._joined = True


def run_tiled(ds, dst, fn: Callable[[np.ndarray], np.ndarray], *, tile: int, overlap: int,
              batch_size: int = 8, out_bands: int = 1, nodata: float = HEIGHT_NODATA,
              pad: str = "reflect", in_nodata: float | None = None, indexes=None,
              on_batch: Callable[[int], None] | None = None, dtype="float32",
              threads: int | None = None, prefetch: int = 2, panel_width: int | None = 4096,
              wait: bool = True, blend_thread: bool = True):
    """Apply ``fn`` over ``ds`` in overlapping tiles and write the blended result to ``dst``.

    Args:
        ds: open input dataset (or WarpedVRT); ``dst``: open output with the same shape.
        fn: ``(B, bands, tile, tile) -> (B, out_bands, tile, tile)``, called in tile order
            from this thread; its input dtype is ``dtype`` (None: the raster's own).
        tile, overlap: window size and minimum overlap in pixels.
        nodata: output value where the input is nodata (or never covered).
        on_batch: called with the number of tiles done after each batch (progress bars).
        threads: reader threads (default :func:`~rsgeo.io.reader.default_threads`).
        prefetch: batches assembled ahead of ``fn``.
        panel_width: sweep rasters wider than this in vertical panels (None: never).
        wait: False returns a :class:`TiledRun` to ``join()`` once the last batch is blended.
        blend_thread: blend in a thread of its own (default; keeps this thread free for
            ``fn``) or right here after each ``fn`` call (predictions still in cache).

    Returns:
        The tile grid used (``wait=True``), or the :class:`TiledRun`.
    """
    tiles = TileGrid(ds.height, ds.width, tile, overlap)
    out_bh, out_bw = (int(x) for x in dst.block_shapes[0])
    in_bw = block_shape(ds)[1]
    panels = plan_panels(tiles, out_bw, panel_width if in_bw < ds.width else None)
    reader = TileReader(ds, tiles, panels, pad=pad, nodata=in_nodata, indexes=indexes,
                        dtype=dtype, threads=threads)
    writer = BlendedWriter(dst, tiles, bands=out_bands, nodata=nodata, dtype=dst.dtypes[0],
                           panels=panels)
    run = TiledRun(tiles, writer, threaded=blend_thread)
    try:
        for batch in _background(reader, batch_size, depth=prefetch):
            out = np.asarray(fn(batch.data), dtype=np.float32)
            if out.shape[0] != len(batch.windows) or out.shape[-2:] != batch.data.shape[-2:]:
                raise ValueError(f"model returned shape {out.shape} for input {batch.data.shape}")
            # all valid: no mask for the blend to test (the same weights, the same values)
            run.put(batch.windows, out,
                    [None] * len(batch.windows) if batch.all_valid else batch.valid,
                    batch.release)  # its arrays serve a later batch once blended
            if on_batch:
                on_batch(len(batch.windows))
    except BaseException:
        run.abort()
        raise
    if wait:
        return run.join()
    return run


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

