"""Many rasters through one model in one pipeline: reads, batches, model, blend, write.

Built on the streaming engine (:mod:`rsgeo.io.pipeline`): its parallel strip reader cuts
tiles in the raster's own dtype (uint8 stays uint8), its blend thread and writer thread
(:class:`~rsgeo.io.pipeline.TiledRun`) accumulate and write finished block rows. This
module adds what a model on an accelerator needs around them, so it never waits on the host:

- **readers**: files are opened and checked in a thread of their own, and each file's
  reader starts as soon as the previous file's reader does, so the next file's tiles are
  decoded while the current one is still being read, blended and written (bounded: a few
  batches per file).
- **main thread**: groups tiles into batches of ``batch_size`` (a batch may hold tiles of
  several small files when they share a :class:`~rsgeo.infer.session.Norm`) and submits
  them to the runner; CUDA runners return at once (see ``session.CudaStreams``), so the
  next batch is copied in while the current one computes.
- **sink thread**: waits for each batch's result and blends its tiles straight from the
  runner's buffer into that file's ``TiledRun`` (finished block rows go to the engine's
  writer thread); the buffer is released right after, and a reader batch's arrays go back
  to its reader's pool once every slice of it is blended (:class:`_Hold`).
- **finisher threads** (``FINISHERS``): once a file's last tile is handed over, wait for
  its last rows, close the output and run the job's ``finish`` (warp back, statistics,
  side files) while the next files go on. A file's outputs (raster, sibling rasters, the
  side files ``finish`` writes) are published together once ``finish`` returns, or none
  of them (:func:`rsgeo.io.atomic.all_or_nothing`). ``on_result`` then gets the file's
  result, in input order, as soon as it and every earlier file are published (a
  ``--json`` line per file reaches a pipe while the run goes on).

Failure anywhere stops every stage: files not finished are discarded (outputs are atomic),
files already finished stay, and the first error is raised.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Iterable

from rsgeo.infer.batching import auto_batch_size
from rsgeo.infer.session import Norm, as_runner
from rsgeo.io.atomic import all_or_nothing
from rsgeo.io.pipeline import TiledRun, iter_batches
from rsgeo.io.reader import gdal_env
from rsgeo.io.windows import TileGrid
from rsgeo.io.writer import BlendedWriter, HEIGHT_NODATA

FINISHERS = 4  # files closed (last rows, rename, statistics) at once


@dataclass(eq=False)
class Job:
    """One raster to process, prepared (inputs and output open) by the caller.

    Attributes:
        ds: the dataset the model reads (a file or a WarpedVRT); readers reopen it per thread.
        tiles, panels: the windows and their sweep order (:func:`rsgeo.io.windows.plan_panels`).
        norm: how raw tiles become model input.
        dst: the open output (same shape as ``ds``), closed with ``out_stack``.
        finish: ``finish() -> dict`` after the output is closed (finisher thread); what
            it writes through :func:`rsgeo.io.atomic.atomic_path` is published together
            with the outputs, once it returns.
        stack: what else the job holds open (inputs, a temporary folder); closed last.
        nodata: input nodata for the valid masks (None: the dataset's own).
        scores: ``scores(out) -> array`` applied to each batch's model output before it is
            blended (e.g. softmax; None: blended as it is).
        collect: ``collect() -> run`` replacing the blending for outputs that are not maps
            (classification rows): ``run.put(windows, scores, valid)``, ``join()``,
            ``abort()`` as :class:`~rsgeo.io.pipeline.TiledRun`.
    """

    ds: object
    tiles: TileGrid
    panels: list
    norm: Norm
    dst: object
    finish: Callable[[], dict]
    stack: ExitStack = field(default_factory=ExitStack)
    out_stack: ExitStack = field(default_factory=ExitStack)
    nodata: float | None = None
    pad: str = "reflect"
    out_nodata: float = HEIGHT_NODATA
    scores: Callable | None = None
    collect: Callable | None = None
    index: int = -1
    run: TiledRun | None = None


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class _Hold:
    """Hands a reader batch's arrays back (``release``) once nothing reads them any more.

    One count for the main thread while it cuts the batch into slices (:meth:`drop` when
    done), one per slice in flight (:meth:`take`, dropped by the sink after the blend):
    a slice's ``valid`` rows are read by the blend, after the runner has its own copy.
    """

    def __init__(self, release: Callable[[], None]):
        self._release, self._count, self._lock = release, 1, threading.Lock()

    def take(self) -> "_Hold":
        with self._lock:
            self._count += 1
        return self

    def drop(self) -> None:
        with self._lock:
            self._count -= 1
            last = self._count == 0
        if last:
            self._release()


class _Ahead:
    """Iterate ``make()`` in a thread of its own, ``depth`` items ahead of the consumer."""

    _END = object()

    def __init__(self, make: Callable[[], Iterable], depth: int):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make,), daemon=True,
                                        name="rsgeo-tiles")
        self._thread.start()

    def _run(self, make) -> None:
        gdal_env()
        it = None
        try:
            it = iter(make())
            for item in it:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Failed(e))
        finally:
            close = getattr(it, "close", None)
            if close:
                close()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item

    def stop(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


class Pipeline:
    """Run :class:`Job` s through one runner; see the module docstring.

    Args:
        runner: a runner (``submit``), a plain callable on normalised batches, or a
            ``Future`` of either (model loading overlapped with the first reads).
        batch_size: tiles per model call; ``None``: chosen when the runner is ready
            (:func:`rsgeo.infer.batching.auto_batch_size`).
        threads: reader threads per file (default: the engine's).
        depth: batches submitted ahead of the blending.
        on_tiles: called with a tile count as tiles are handed to the blending.
        on_job: called with each job once it is prepared (its tile count is known).
        on_result: called with each file's ``finish()`` dict once its outputs are published,
            in input order (a finisher thread, one call at a time); an error it raises stops
            the run and is raised by :meth:`run`.
    """

    def __init__(self, runner, *, batch_size: int | None = None, threads: int | None = None,
                 depth: int = 2, on_tiles: Callable[[int], None] | None = None,
                 on_job: Callable[[Job], None] | None = None,
                 on_result: Callable[[dict], None] | None = None):
        self._runner_src = runner
        self.runner = None
        self.batch_size = batch_size
        self.threads = threads
        self.depth = depth
        self.on_tiles, self.on_job, self.on_result = on_tiles, on_job, on_result
        self._jobs: list[Job] = []
        self._readers: list[_Ahead] = []

    def _ready(self, job: Job) -> None:
        if self.runner is None:
            r = self._runner_src
            self.runner = as_runner(r.result() if isinstance(r, Future) else r)
        if self.batch_size is None:
            self.batch_size = auto_batch_size(self.runner, job.tiles.tile, len(job.norm.mean))

    # -- reads ------------------------------------------------------------------------
    def _start(self, job: Job) -> _Ahead:
        bs = self.batch_size or 64
        reader = _Ahead(lambda: iter_batches(job.ds, job.tiles, bs, pad=job.pad,
                                             nodata=job.nodata, dtype=None,
                                             threads=self.threads, panels=job.panels),
                        depth=self.depth + 1)
        self._readers.append(reader)
        return reader

    def _prepare_next(self, pending) -> tuple | _Failed | None:
        """Prepare the next ``(index, preparer)`` of ``pending`` and start its reads: ``(job,
        reader)``, a :class:`_Failed` (raised in order, after earlier files) or None."""
        nxt = next(pending, None)
        if nxt is None:
            return None
        i, prepare = nxt
        try:
            job = prepare()
        except BaseException as e:
            return _Failed(e)
        job.index = i
        self._jobs.append(job)
        if self.on_job:
            self.on_job(job)
        return job, self._start(job)

    def _chunks(self, cur, pending):
        """``(job, windows, data, valid, hold)`` in order from ``cur`` (the first prepared
        file) on; the next file is read while this one is consumed; a failed preparation
        yields a :class:`_Failed` after earlier files."""
        while cur is not None:
            if isinstance(cur, _Failed):
                yield cur, None, None, None, None
                return
            job, reader = cur
            nxt = self._prepare_next(pending)  # its reads overlap this file's
            try:
                for b in reader:
                    # maps skip the mask of tiles known valid (tile tables use it as is)
                    valid = ([None] * len(b.windows) if b.all_valid and job.collect is None
                             else b.valid)
                    yield job, b.windows, b.data, valid, _Hold(b.release)
            except Exception as e:  # a read failed: earlier files still finish
                yield _Failed(e), None, None, None, None
                return
            cur = nxt

    # -- main loop ----------------------------------------------------------------------
    def run(self, preparers: Iterable[Callable[[], Job]]) -> list[dict]:
        """Process every job; returns their ``finish()`` dicts in order."""
        import rasterio

        with rasterio.Env():  # datasets may be closed by another stage's thread (see gdal_env)
            return self._run(preparers)

    def _run(self, preparers) -> list[dict]:
        sinkq: queue.Queue = queue.Queue(maxsize=self.depth + 1)
        finisher = ThreadPoolExecutor(FINISHERS, thread_name_prefix="rsgeo-finish",
                                      initializer=gdal_env)
        state = {"error": None, "results": []}
        state["emit"] = _InOrder(self.on_result, state) if self.on_result else None
        sink = threading.Thread(target=self._sink, args=(sinkq, finisher, state),
                                name="rsgeo-sink", daemon=True)
        sink.start()
        error = None
        chunks = None
        try:
            parts: list = []
            n = 0
            # the first file is opened in this thread, whose GDAL and PROJ are set up (a
            # new thread's first CRS costs 15-20 ms: on the path of every one-file call)
            pending = iter(enumerate(preparers))
            first = self._prepare_next(pending)
            chunks = _Ahead(lambda: self._chunks(first, pending), depth=self.depth)
            for job, wins, data, valid, hold in chunks:
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
                    parts.append((job, wins[i:i + take], data[i:i + take], valid[i:i + take],
                                  hold.take()))
                    n, i = n + take, i + take
                    if n == self.batch_size:
                        self._submit(parts, sinkq, state)
                        parts, n = [], 0
                hold.drop()
            if parts:
                self._submit(parts, sinkq, state)
        except BaseException as e:
            error = e
        finally:
            if chunks is not None:
                chunks.stop()  # no new files after this
            for r in list(self._readers):
                r.stop()  # closes its reader: queued reads cancelled, running ones waited for
            _put(sinkq, ("end", error), sink)
            sink.join()
            finisher.shutdown(wait=True)
        error = error or state["error"]
        results = []
        for fut in state["results"]:
            try:
                results.append(fut.result())
            except BaseException as e:
                error = error or e
        for job in self._jobs:  # prepared but never finished: discard
            if job.run is None or error is not None:
                _abort(job.out_stack, error or RuntimeError("not processed"))
                _abort(job.stack, error or RuntimeError("not processed"))
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

    def _blend(self, parts: list, out, done: dict, finisher, state: dict) -> int:
        """Blend one batch's predictions ``out`` into the files of ``parts``; returns tiles."""
        k = 0
        for job, wins, _, valid, _ in parts:
            if job.run is None and job.collect is not None:
                job.run = job.collect()
            elif job.run is None:  # blends in this thread, straight from the runner's buffer
                writer = BlendedWriter(job.dst, job.tiles, bands=out.shape[1],
                                       nodata=job.out_nodata, dtype=job.dst.dtypes[0],
                                       panels=job.panels)
                job.run = TiledRun(job.tiles, writer, threaded=False)
            mine = out[k:k + len(wins)]
            job.run.put(wins, job.scores(mine) if job.scores else mine, valid)
            k += len(wins)
            done[job.index] = done.get(job.index, 0) + len(wins)
            if done[job.index] == len(job.tiles):
                state["results"].append(finisher.submit(
                    _complete, job, len(state["results"]), state["emit"]))
        return k

    # -- sink and finisher --------------------------------------------------------------
    def _sink(self, sinkq: queue.Queue, finisher: ThreadPoolExecutor, state: dict) -> None:
        gdal_env()
        done: dict[int, int] = {}
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
                try:
                    k = self._blend(parts, pending.result(), done, finisher, state)
                finally:
                    pending.release()
                for part in parts:  # blended: the reader may reuse its arrays
                    part[4].drop()
                if self.on_tiles:
                    self.on_tiles(k)
            except BaseException as e:
                error = state["error"] = e
        for job in self._jobs:  # unfinished: stop their blending
            if job.run is not None and done.get(job.index, 0) < len(job.tiles):
                job.run.abort()


class _InOrder:
    """``(position, result)`` of finished files -> ``callback(result)`` in position order,
    each as soon as every earlier file's is in; one call at a time (finisher threads).
    The callback's error goes to ``state["error"]`` (the run stops) and ends the calls."""

    def __init__(self, callback: Callable[[dict], None], state: dict):
        self._callback, self._state = callback, state
        self._next, self._ready, self._failed = 0, {}, False
        self._lock = threading.Lock()

    def __call__(self, position: int, result: dict) -> None:
        with self._lock:
            self._ready[position] = result
            while not self._failed and self._next in self._ready:
                item = self._ready.pop(self._next)
                self._next += 1
                try:
                    self._callback(item)
                except BaseException as e:  # noqa: BLE001 - raised by Pipeline.run
                    self._failed = True
                    self._state["error"] = e


def _complete(job: Job, position: int = 0, emit: _InOrder | None = None) -> dict:
    try:
        job.run.join()
        with all_or_nothing():   # the file's outputs and side files: all of them or none
            job.out_stack.close()
            result = job.finish()
    except BaseException as e:
        _abort(job.out_stack, e)
        _abort(job.stack, e)
        raise
    job.stack.close()
    if emit is not None:  # published: its result may be told
        emit(position, result)
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
