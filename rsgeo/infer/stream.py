"""Many rasters through one model in one pipeline: reads, batches, model, blend, write.

Four stages run at once, so the model never waits on the host:

- **readers** (a pool of ``workers`` threads, each with its own dataset handles, GDAL
  releasing the GIL): chunks of consecutive windows are read in the raster's own dtype
  (uint8 stays uint8) up to ``ahead`` chunks in front of the model, across file
  boundaries: the next file's reads start while the current one is still being written.
- **main thread**: groups chunks into batches of ``batch_size`` tiles (a batch may hold
  tiles of several small files when they share a :class:`~rsgeo.infer.session.Norm`) and
  submits them to the runner; CUDA runners return at once (see ``session.CudaStreams``).
- **sink thread**: takes each batch's result, blends its tiles into that file's
  :class:`~rsgeo.io.writer.BlendedWriter` (opened at the file's first tile), which writes
  finished strips; the runner's buffers are released right after.
- **finisher thread**: when a file's last tile is blended, writes its last strips, closes
  (and renames) the output and runs the job's ``finish`` (warp back, statistics) while
  the sink goes on with the next file.

Failure anywhere stops every stage; files not finished are discarded (their outputs are
atomic), files already finished stay, and the first error is raised.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from rsgeo.infer.session import Norm, as_runner
from rsgeo.io.windows import TileGrid, read_window


@dataclass(eq=False)
class Job:
    """One raster to process, prepared by the caller.

    Attributes:
        tiles: windows over the raster the model sees (row-major order).
        norm: how raw tiles become model input.
        open_reader: ``open_reader(stack) -> dataset``; called once per reader thread, the
            handle is closed with ``stack``.
        open_writer: ``open_writer(stack) -> writer`` with ``add(window, pred (K, t, t),
            valid (t, t))``; called in the sink thread at the file's first tile; ``stack``
            is closed (writing the last strips and the file) when the last tile is in.
        finish: ``finish() -> dict`` after the output is closed (finisher thread).
        stack: what the job holds open (input, temporary folder), closed after ``finish``.
        nodata: input nodata for the valid masks (None: the dataset's own).
    """

    tiles: TileGrid
    norm: Norm
    open_reader: Callable[[ExitStack], object]
    open_writer: Callable[[ExitStack], object]
    finish: Callable[[], dict]
    stack: ExitStack = field(default_factory=ExitStack)
    nodata: float | None = None
    pad: str = "reflect"
    index: int = -1


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def default_workers() -> int:
    """Reader threads: the CPU count, between 2 and 12."""
    return max(2, min(12, os.cpu_count() or 2))


def chunk_size(tile: int) -> int:
    """Windows per read task: about 0.5 Mpx (8 tiles of 256 px, 2 of 512), at least 1."""
    return max(1, min(8, 2 ** 19 // (tile * tile)))


class Pipeline:
    """Run :class:`Job` s through one runner; see the module docstring.

    Args:
        runner: a runner (``submit``), a plain callable on normalised batches, or a
            ``Future`` of either (model loading overlapped with the first reads).
        batch_size: tiles per model call; ``None``: chosen when the runner is ready
            (:func:`rsgeo.infer.batching.auto_batch_size`).
        workers: reader threads (default :func:`default_workers`).
        depth: batches submitted ahead of the blending.
        on_tiles: called with a tile count as tiles are blended (progress bars).
        on_job: called with each job once it is prepared (its tile count is known).
    """

    def __init__(self, runner, *, batch_size: int | None = None, workers: int | None = None,
                 depth: int = 2, on_tiles: Callable[[int], None] | None = None,
                 on_job: Callable[[Job], None] | None = None):
        self._runner_src = runner
        self.runner = None
        self.batch_size = batch_size
        self.workers = workers or default_workers()
        self.depth = depth
        self.on_tiles, self.on_job = on_tiles, on_job
        self._local = threading.local()
        self._handles: dict[int, list[ExitStack]] = {}
        self._lock = threading.Lock()
        self._jobs: list[Job] = []

    # -- runner -------------------------------------------------------------------------
    def _ready(self, job: Job) -> None:
        if self.runner is None:
            r = self._runner_src
            self.runner = as_runner(r.result() if isinstance(r, Future) else r)
        if self.batch_size is None:
            from rsgeo.infer.batching import auto_batch_size

            self.batch_size = auto_batch_size(self.runner, job.tiles.tile,
                                              len(job.norm.mean))

    # -- readers ------------------------------------------------------------------------
    def _handle(self, job: Job):
        cache = self._local.__dict__.setdefault("ds", {})
        ds = cache.get(job.index)
        if ds is None:
            for old in [k for k in cache if k < job.index]:
                del cache[old]
            stack = ExitStack()
            with self._lock:
                self._handles.setdefault(job.index, []).append(stack)
            ds = cache[job.index] = job.open_reader(stack)
        return ds

    def _read(self, job: Job, windows: list):
        ds = self._handle(job)
        reads = [read_window(ds, w, pad=job.pad, nodata=job.nodata) for w in windows]
        return np.stack([d for d, _ in reads]), np.stack([v for _, v in reads])

    def _close_handles(self, index: int) -> None:
        with self._lock:
            stacks = self._handles.pop(index, [])
        for s in stacks:
            s.close()

    def _tasks(self, preparers: Iterable[Callable[[], Job]]):
        """``(job, windows)`` read tasks in order; a failed preparation ends the stream."""
        for i, prepare in enumerate(preparers):
            try:
                job = prepare()
            except BaseException as e:  # raised in order, after earlier files are done
                yield _Failed(e)
                return
            job.index = i
            self._jobs.append(job)
            if self.on_job:
                self.on_job(job)
            windows = list(job.tiles)
            n = chunk_size(job.tiles.tile)
            for k in range(0, len(windows), n):
                yield job, windows[k:k + n]

    def _chunks(self, preparers, pool: ThreadPoolExecutor):
        """Read chunks ``(job, windows, data, valid)`` in order, reading ``ahead`` in front."""
        tasks = self._tasks(preparers)
        inflight: deque = deque()
        left: dict[int, int] = {}
        done = False
        while True:
            bs = self.batch_size or 64
            ahead = max(2 * self.workers, (self.depth + 2) * -(-bs // 8))
            while not done and len(inflight) < ahead:
                t = next(tasks, None)
                if t is None or isinstance(t, _Failed):
                    done = True
                    if t is not None:
                        inflight.append((t, None, None))
                    break
                job, wins = t
                left[job.index] = left.get(job.index, len(job.tiles))
                inflight.append((job, wins, pool.submit(self._read, job, wins)))
            if not inflight:
                return
            job, wins, fut = inflight.popleft()
            if isinstance(job, _Failed):
                yield job, None, None, None
                return
            data, valid = fut.result()
            left[job.index] -= len(wins)
            if left[job.index] == 0:
                self._close_handles(job.index)
            yield job, wins, data, valid

    # -- main loop ----------------------------------------------------------------------
    def run(self, preparers: Iterable[Callable[[], Job]]) -> list[dict]:
        """Process every job; returns their ``finish()`` dicts in order."""
        import rasterio

        with rasterio.Env():  # datasets may be closed by another stage's thread (see gdal_env)
            return self._run(preparers)

    def _run(self, preparers) -> list[dict]:
        sinkq: queue.Queue = queue.Queue(maxsize=self.depth + 1)
        finisher = ThreadPoolExecutor(1, thread_name_prefix="rsgeo-finish",
                                      initializer=gdal_env)
        state = {"error": None, "results": []}
        sink = threading.Thread(target=self._sink, args=(sinkq, finisher, state),
                                name="rsgeo-sink", daemon=True)
        sink.start()
        error = None
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rsgeo-read",
                                  initializer=gdal_env)
        try:
            parts: list = []
            n = 0
            for job, wins, data, valid in self._chunks(preparers, pool):
                if isinstance(job, _Failed):  # earlier files are complete: finish them first
                    if parts:
                        self._submit(parts, sinkq, state)
                        parts = []
                    raise job.error
                self._ready(job)
                if parts and (job.norm != parts[0][0].norm
                              or data.shape[1:] != parts[0][2].shape[1:]):
                    self._submit(parts, sinkq, state)
                    parts, n = [], 0
                i = 0
                while i < len(wins):
                    take = min(self.batch_size - n, len(wins) - i)
                    parts.append((job, wins[i:i + take], data[i:i + take], valid[i:i + take]))
                    n, i = n + take, i + take
                    if n == self.batch_size:
                        self._submit(parts, sinkq, state)
                        parts, n = [], 0
            if parts:
                self._submit(parts, sinkq, state)
        except BaseException as e:
            error = e
        finally:
            _put(sinkq, ("end", error), sink)
            sink.join()
            pool.shutdown(wait=True, cancel_futures=True)
            finisher.shutdown(wait=True)
            for index in list(self._handles):
                self._close_handles(index)
        error = error or state["error"]
        results = []
        for fut in state["results"]:
            try:
                results.append(fut.result())
            except BaseException as e:
                error = error or e
        for job in self._jobs:  # prepared but never reached the sink
            job.stack.close()
        if error is not None:
            raise error
        return results

    def _submit(self, parts: list, sinkq: queue.Queue, state: dict) -> None:
        if state["error"] is not None:
            raise state["error"]
        raw = [p[2] for p in parts]
        pending = self.runner.submit(raw if len(raw) > 1 else raw[0], parts[0][0].norm)
        try:
            _put(sinkq, (parts, pending), None, state)
        except BaseException:
            pending.release()
            raise

    # -- sink and finisher --------------------------------------------------------------
    def _sink(self, sinkq: queue.Queue, finisher: ThreadPoolExecutor, state: dict) -> None:
        gdal_env()
        open_jobs: dict[int, list] = {}  # index -> [job, out stack, writer, tiles done]
        error = None
        while True:
            item = sinkq.get()
            if item[0] == "end":
                error = error or item[1]
                break
            parts, pending = item
            if error is not None:
                pending.release()
                continue
            try:
                out = pending.result()
                k = 0
                for job, wins, _, valid in parts:
                    st = open_jobs.get(job.index)
                    if st is None:
                        out_stack = ExitStack()
                        st = open_jobs[job.index] = [job, out_stack, None, 0]
                        st[2] = job.open_writer(out_stack)
                    for w, v in zip(wins, valid):
                        st[2].add(w, out[k], v)
                        k += 1
                    st[3] += len(wins)
                    if st[3] == len(job.tiles):
                        del open_jobs[job.index]
                        state["results"].append(finisher.submit(_complete, job, st[1]))
                if self.on_tiles:
                    self.on_tiles(k)
            except BaseException as e:
                error = state["error"] = e
            finally:
                pending.release()
        for job, out_stack, _, _ in open_jobs.values():  # unfinished: discard
            exc = error or RuntimeError("pipeline stopped")
            _abort(out_stack, exc)
            _abort(job.stack, exc)


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


def _complete(job: Job, out_stack: ExitStack) -> dict:
    try:
        out_stack.close()
        result = job.finish()
    except BaseException as e:
        _abort(job.stack, e)
        raise
    job.stack.close()
    return result


def _abort(stack: ExitStack, error: BaseException) -> None:
    try:
        stack.__exit__(type(error), error, error.__traceback__)
    except BaseException:
        pass


def _put(q: queue.Queue, item, thread: threading.Thread | None = None,
         state: dict | None = None) -> None:
    """``q.put(item)`` that gives up when the consumer died (no deadlock on errors)."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            if state is not None and state["error"] is not None:
                raise state["error"] from None
            if thread is not None and not thread.is_alive():
                return
