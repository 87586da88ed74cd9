"""Parallel raster reads: a small thread pool, each thread with its own dataset handle.

GDAL dataset handles are not thread-safe, but rasterio releases the GIL while GDAL decodes,
so N handles decode N windows at once. :class:`ParallelReader` reopens the dataset it is
given once per worker thread (a file from its path, a WarpedVRT from its source's path and
the same warp parameters); the caller's own handle is never touched from another thread.

- :meth:`ParallelReader.read_into` reads rows ``[r0, r1)`` x cols ``[c0, c1)`` as several
  block-aligned column pieces at once, straight into one array (native dtype).
- :func:`read_strips` streams full-width strips of one or several rasters on the same grid
  in order, a few strips ahead of the consumer (evaluate, damage-map).

Threads: ``threads=None`` uses :func:`default_threads` (``RSGEO_IO_THREADS`` or
``min(8, cpu count)``). A read that fails (corrupt block, vanished file) raises
:class:`~rsgeo.errors.InputError` naming the file and the window, one line.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import rasterio
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from rsgeo.errors import InputError, RsgeoError, first_line
from rsgeo.io.buffers import ArrayPool


def default_threads() -> int:
    """Reader threads: ``RSGEO_IO_THREADS`` if set, else ``min(8, os.cpu_count())``."""
    env = os.environ.get("RSGEO_IO_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise InputError(f"RSGEO_IO_THREADS must be an integer, got {env!r}") from None
        return max(1, n)
    return max(1, min(8, os.cpu_count() or 1))


def source_path(ds) -> str:
    """The file behind ``ds`` (the source file of a WarpedVRT), for messages and reopening."""
    if isinstance(ds, WarpedVRT):
        return ds.src_dataset.name
    return ds.name


def block_shape(ds) -> tuple[int, int]:
    """(rows, cols) of the storage blocks that decide how reads should be cut.

    For a WarpedVRT the *source* layout matters (that is what gets decoded): a striped source
    behind a tiled VRT still decodes whole rows.
    """
    bh, bw = ds.block_shapes[0]
    if isinstance(ds, WarpedVRT):
        sh, sw = ds.src_dataset.block_shapes[0]
        if sw >= ds.src_dataset.width:
            bw = ds.width
        bh = max(bh, 1)
    return max(1, int(bh)), max(1, int(bw))


def _reopen(ds):
    """A new handle on the same pixels as ``ds`` (a DatasetReader or WarpedVRT)."""
    if isinstance(ds, WarpedVRT):
        src = rasterio.open(ds.src_dataset.name)
        kw = dict(crs=ds.dst_crs, transform=ds.dst_transform, width=ds.dst_width,
                  height=ds.dst_height, resampling=ds.resampling, tolerance=ds.tolerance,
                  warp_extras=dict(ds.warp_extras or {}))
        if ds.dst_nodata is not None:
            kw["nodata"] = ds.dst_nodata
        if ds.src_nodata is not None:
            kw["src_nodata"] = ds.src_nodata
        if ds.working_dtype is not None:
            kw["dtype"] = ds.working_dtype
        try:
            return WarpedVRT(src, **kw), src
        except Exception:
            src.close()
            raise
    return rasterio.open(ds.name), None


class ParallelReader:
    """Decode windows of ``ds`` on ``threads`` threads, each with its own handle.

    Use as a context manager (closes the handles). ``ds`` stays usable by the caller; it is
    only read for its path and parameters. ``pool``: the executor whose threads decode
    (each opens a handle of this reader's dataset), by default this process's kept
    ``threads`` threads (:func:`read_pool`), shared with other readers and later files;
    :meth:`close` cancels this reader's queued reads, waits for its running ones and closes
    its handles, leaving the pool running.
    """

    def __init__(self, ds, threads: int | None = None, pool: ThreadPoolExecutor | None = None,
                 split: int | None = None):
        self.ds = ds
        self.split = split
        self.path = source_path(ds)
        self.threads = threads or default_threads()
        self.block = block_shape(ds)
        self._local = threading.local()
        self._handles: list = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when the last read ends
        self._reading = 0                               # reads under way
        self._closed = False
        self._pool = pool or read_pool(self.threads)
        self._futures: list[Future] = []  # this reader's reads not yet done

    def _handle(self):
        h = getattr(self._local, "ds", None)
        if h is None:
            try:
                h, extra = _reopen(self.ds)
            except Exception as e:  # noqa: BLE001 - reported as one line
                raise InputError(f"cannot reopen for reading ({first_line(e)})", self.path) from None
            with self._lock:
                self._handles.extend(x for x in (h, extra) if x is not None)
            self._local.ds = h
        return h

    def pieces(self, c0: int, c1: int) -> list[tuple[int, int]]:
        """Split columns ``[c0, c1)`` into block-aligned pieces: ``split`` of them, or about
        one per thread when ``split`` is None."""
        bw = self.block[1]
        n = self.split or self.threads
        if bw >= self.ds.width or n <= 1:
            return [(c0, c1)]
        per = -(-(c1 - c0) // n)
        per = max(bw, -(-per // bw) * bw)
        cuts = list(range((c0 // per + 1) * per, c1, per))
        edges = [c0, *cuts, c1]
        return list(zip(edges[:-1], edges[1:]))

    def _read(self, out: np.ndarray, indexes, r0: int, r1: int, c0: int, c1: int) -> None:
        with self._lock:
            if self._closed:  # a read close() did not know of: its handles are gone
                raise RsgeoError("read after the reader was closed", self.path)
            self._reading += 1
        try:
            self._handle().read(indexes, window=Window(c0, r0, c1 - c0, r1 - r0), out=out)
        except RsgeoError:
            raise
        except Exception as e:  # noqa: BLE001 - GDAL/rasterio errors become one line
            raise InputError(f"read failed at rows {r0}-{r1}, columns {c0}-{c1} ({first_line(e)})",
                             self.path) from None
        finally:
            with self._lock:
                self._reading -= 1
                self._idle.notify_all()

    def read_into(self, out: np.ndarray, r0: int, r1: int, c0: int, c1: int,
                  indexes=None) -> list[Future]:
        """Start reading rows ``[r0, r1)`` x cols ``[c0, c1)`` into ``out`` ``(bands, r1-r0, c1-c0)``.

        Returns the futures of the pieces (all must complete before ``out`` is used).
        """
        idx = list(range(1, self.ds.count + 1)) if indexes is None else (
            [indexes] if isinstance(indexes, int) else list(indexes))
        futs = []
        for a, b in self.pieces(c0, c1):
            futs.append(self._pool.submit(self._read, out[:, :, a - c0:b - c0], idx,
                                          r0, r1, a, b))
        self._futures = [f for f in self._futures if not f.done()] + futs
        return futs

    def close(self) -> None:
        # nothing of ours may run on a handle once it is closed: queued reads are cancelled
        # or, should one have escaped self._futures (a stop raised in read_into between the
        # pool's submit and the bookkeeping), refused when they start; running ones are
        # waited for (counted by _read itself). Closing a handle that a read was decoding
        # crashed the process ("CPLAcquireMutex: Error = 22", then a segmentation fault).
        with self._lock:
            self._closed = True
        for f in self._futures:
            f.cancel()
        self._futures = []
        with self._lock:
            while self._reading:
                self._idle.wait()
            for h in reversed(self._handles):
                try:
                    h.close()
                except Exception:  # noqa: BLE001
                    pass
            self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def wait_all(futs: Sequence[Future]) -> None:
    """Wait for every future, then raise the first error (no piece is left running)."""
    err = None
    for f in futs:
        try:
            f.result()
        except BaseException as e:  # noqa: BLE001
            err = err or e
    if err is not None:
        raise err


_READ_POOLS: dict[int, ThreadPoolExecutor] = {}
_READ_POOLS_LOCK = threading.Lock()


def read_pool(threads: int) -> ThreadPoolExecutor:
    """This process's ``threads`` decoding threads, started once and kept for later runs.

    Every new thread pays GDAL's and PROJ's set-up on the first georeferenced file it opens
    (PROJ opens its database: 15-20 ms of CPU on 2 cores), so a loop of one-file runs
    (``predict_height_file`` per file, evaluate over a folder of pairs) pays it once per
    process, not once per call. A run leaves nothing on them: its readers
    (:class:`ParallelReader` on this pool) cancel their queued reads and wait for their
    running ones as they close. A forked child starts afresh.
    """
    with _READ_POOLS_LOCK:
        pool = _READ_POOLS.get(threads)
        if pool is None:
            pool = _READ_POOLS[threads] = ThreadPoolExecutor(
                threads, thread_name_prefix="rsgeo-read", initializer=gdal_env)
        return pool


def _forget_read_pools() -> None:
    """After ``fork``: the parent's threads do not exist in the child."""
    global _READ_POOLS_LOCK
    _READ_POOLS.clear()
    _READ_POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_read_pools)


def gdal_env() -> None:
    """Enter a rasterio ``Env`` for the rest of this thread's life.

    A rasterio dataset entered as a context manager in a thread without an ``Env`` makes
    one and ends it when it exits, which fails in any other thread ("No GDAL environment
    exists"). Here one stage opens a file and another closes it, so every stage's thread
    holds an ``Env`` and datasets never make their own.
    """
    import rasterio
    from rasterio.env import local

    if local._env is None:
        rasterio.Env().__enter__()


def read_strips(datasets: Sequence, rows: int, *, threads: int | None = None,
                ahead: int = 2, bands: Sequence[int] | None = None,
                pool: ArrayPool | None = None
                ) -> Iterator[tuple[Window, list[np.ndarray]]]:
    """Yield ``(window, [band array of each dataset])`` for full-width strips, in order.

    All ``datasets`` share one grid (height, width). Strips of ``rows`` rows are read by a
    :class:`ParallelReader` per dataset, ``ahead`` strips ahead of the consumer, on one pool
    of ``threads`` threads shared by the readers (a costly raster -- noisy heights -- beside
    a cheap one -- a mask -- gets every thread rather than its share). A strip is decoded
    whole (one GDAL read: measurably less CPU than column pieces, 10-25% on two cores)
    unless there are fewer strips in flight than threads; then it is cut into block-aligned
    column pieces so that every thread has one. Arrays are ``(h, width)`` in each
    dataset's dtype, fresh for every strip -- or, with ``pool``, taken from it: the consumer
    gives each array back (``pool.give``) once done with it, so a long sweep reuses a few
    buffers instead of faulting in new memory for every strip. ``bands``: the (1-based)
    band to read of each dataset, band 1 of all by default.
    """
    h, w = datasets[0].height, datasets[0].width
    bands = list(bands) if bands is not None else [1] * len(datasets)
    wins = [Window(0, r, w, min(rows, h - r)) for r in range(0, h, rows)]
    threads = threads or default_threads()
    split = -(-threads // (len(datasets) * max(1, ahead)))  # pieces per strip
    readers = [ParallelReader(ds, threads, split=split) for ds in datasets]  # one pool
    pending: deque = deque()

    def submit(win: Window):
        arrs, futs = [], []
        r0, n = int(win.row_off), int(win.height)
        for rd, ds, b in zip(readers, datasets, bands):
            dt = ds.dtypes[b - 1]
            a = np.empty((n, w), dtype=dt) if pool is None else pool.take((n, w), dt)
            futs += rd.read_into(a[None], r0, r0 + n, 0, w, indexes=b)
            arrs.append(a)
        pending.append((win, arrs, futs))

    try:
        nxt = 0
        while nxt < len(wins) and len(pending) < ahead:
            submit(wins[nxt])
            nxt += 1
        while pending:
            win, arrs, futs = pending.popleft()
            wait_all(futs)
            if nxt < len(wins):
                submit(wins[nxt])
                nxt += 1
            yield win, arrs
    finally:
        for rd in readers:  # queued reads cancelled, running ones waited for
            rd.close()


