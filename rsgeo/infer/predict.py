"""``predict`` and ``predict-height``: any task model over rasters of any size, bounded memory.

Every input streams through one :class:`rsgeo.infer.stream.Pipeline` on the io engine
(overlapping tiles read in parallel in the raster's dtype, reflect padding, raised-cosine
blending that leaves scene edges untapered, block rows written as the sweep moves down,
vertical panels on wide rasters), so seams are invisible and memory is bounded by the tile
and panel sizes. Several inputs share the model load and the pipeline.

How the model is fed comes from its metadata (checkpoint ``meta`` or ONNX
``metadata_props``): band count, per-band mean/std on the 0-255 scale, training GSD,
recommended tile and overlap. Input scaling (``scale``, :mod:`rsgeo.io.stretch`, the same
rule as ``prepare``): uint8 as is; wider integers and floats by a 2-98 % percentile
stretch (default), by their bit depth, not at all, or from given MIN,MAX.
Input at another GSD is resampled to the model's (``gsd="auto"``, tolerance 5 %), and the
heights are resampled back onto the input grid, so the output always shares the input's
CRS, transform and shape. Input nodata becomes -9999 in the output.

What is blended and written follows the model's task (:mod:`rsgeo.infer.writers`):
heights, softmax class probabilities (classes = argmax of the blended probabilities),
the change probability of a PRE/POST pair (:mod:`rsgeo.infer.pairs`), or one row per
tile for classification models. ``predict-height`` is :func:`predict_files` with
``expect="height"``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import tempfile
import threading
import time
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from rsgeo.errors import InputError
from rsgeo.infer.export import read_metadata, stride_of
from rsgeo.infer.ensemble import EnsembleRunner
from rsgeo.infer.session import Norm, OrtRunner, TorchRunner, pair_model
from rsgeo.infer.stream import Job, Pipeline
from rsgeo.infer.pairs import pair_nodata, stack_pair
from rsgeo.infer.surface import height_bands, stack_surface, surfaces_for
from rsgeo.infer.writers import (TABLE_SUFFIXES, OutputContext, height_stats,  # noqa: F401 (height_stats: re-exported)
                                 writer_for)
from rsgeo.io.atomic import InputSet, check_output, make_parents
from rsgeo.io.bands import open_image, parse_bands
from rsgeo.io.heights import require_valid, sample, sample_plan
from rsgeo.io.limits import check_pixels
from rsgeo.io.raster import (Grid, align_to, estimate_note, ground_gsd, open_raster, valid_mask,
                             work_grid)
from rsgeo.io.reader import block_shape
from rsgeo.io.stretch import image_sample, image_stretch, needs_sample, parse_scale
from rsgeo.io.windows import TileGrid, plan_panels, strips
from rsgeo.io.writer import GEOTIFF_SUFFIXES, HEIGHT_NODATA, create_gtiff, gtiff_profile
from rsgeo.progress import progress
from rsgeo.tasks.files import model_label, resolve_model_path

log = logging.getLogger("rsgeo.infer")
PANEL_WIDTH = 4096  # rasters wider than this are swept in vertical panels (memory bound)


def load_model(model_path, backend: str | None = None, device: str = "auto",
               precision: str = "fp32"):
    """``(runner, meta, config)`` for an .onnx file (ORT) or a task checkpoint (torch)."""
    loading = start_loading(model_path, backend, device, precision)
    meta, config = loading.meta()
    return loading.runner.result(), meta, config


class Loading:
    """A model being loaded in a background thread: ``meta()`` as soon as it is known,
    ``runner`` a Future (ORT session, or torch model moved to the device and warmed up)."""

    def __init__(self, meta_future: Future, runner: Future):
        self._meta, self.runner = meta_future, runner

    def meta(self) -> tuple[dict, dict]:
        """``(meta, config)``; raises the loading error if the model could not be read."""
        return self._meta.result()


def start_loading(model_path, backend: str | None = None, device: str = "auto",
                  precision: str = "fp32", warmup=None) -> Loading:
    """Start loading ``model_path``; CUDA start and weight loading overlap the caller's work.

    Args:
        warmup: ``warmup(meta, config) -> (batch, bands, tile, tile)`` or None: one batch
            of that shape runs through a torch model on CUDA right after loading.
    """
    p = resolve_model_path(model_path)  # a run folder: its best.ckpt
    is_onnx = p.suffix.lower() == ".onnx"
    backend = backend or ("onnx" if is_onnx else "torch")
    if backend not in ("onnx", "torch"):
        raise InputError(f"--backend must be onnx or torch, got {backend!r}")
    if backend == "onnx" and not is_onnx:
        raise InputError("the onnx backend needs an .onnx model (make one with `rsgeo export`)", p)
    if backend == "torch" and is_onnx:
        raise InputError("the torch backend needs a task checkpoint (.ckpt), not ONNX", p)
    meta_f: Future = Future()
    runner_f: Future = Future()
    if backend == "onnx":
        if precision != "fp32":
            raise InputError(f"--precision {precision} needs --backend torch (ONNX models run "
                             "in fp32)")
        meta = read_metadata(p)
        if meta.get("format") != "rsgeo-onnx":
            raise InputError("ONNX file has no rsgeo metadata (export it with `rsgeo export`)", p)
        meta_f.set_result((meta, meta["config"]))

        def load():
            return OrtRunner(p, device)
    else:
        def load():
            from rsgeo.tasks.bundle import load_task_model  # lazy: imports torch; ONNX runs without

            try:
                model, config, meta = load_task_model(p)
            except BaseException as e:
                meta_f.set_exception(e)
                raise
            meta_f.set_result((meta, config))
            if config.get("task") == "change":  # one stacked PRE+POST input (rsgeo.infer.pairs)
                model = pair_model(model)
            runner = TorchRunner(model, device, precision)
            shape = warmup(meta, config) if warmup else None
            if shape and runner.device == "cuda":
                runner.warmup(shape)
            return runner

    def target():
        try:
            runner_f.set_result(load())
        except BaseException as e:
            runner_f.set_exception(e)
            if not meta_f.done():
                meta_f.set_exception(e)

    # not a daemon: if the run fails early, interpreter exit waits for the load to finish
    # instead of freezing the thread inside ONNX Runtime or CUDA (std::terminate, exit 134)
    threading.Thread(target=target, name="rsgeo-load-model", daemon=False).start()
    return Loading(meta_f, runner_f)


def input_scale(ds) -> float:
    """The bit-depth factor onto 0-255 (``--scale bitdepth``; see :mod:`rsgeo.io.stretch`)."""

    return image_stretch(ds, "bitdepth").scale


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
#: image files a folder's rasters include when georeferenced beside them (a world file or an
#: .aux.xml): xBD's tiles are PNG + .pgw; a quicklook PNG without either is left out
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _georeferenced_image(f: Path) -> bool:
    """Whether the PNG/JPEG ``f`` has a world file (``.pgw``, ``.pngw``, ``.jgw``, ``.wld``,
    ...) or an ``.aux.xml`` beside it."""
    ext = f.suffix.lower()[1:]
    sidecars = (f"{ext[0]}{ext[-1]}w", f"{ext}w", "wld")
    return any(f.with_suffix(f".{w}").is_file() or f.with_suffix(f".{w.upper()}").is_file()
               for w in sidecars) or Path(f"{f}.aux.xml").is_file()


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their raster files (sorted by name): every
    ``RASTER_SUFFIXES`` file, and the PNG/JPEG files georeferenced beside them."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and (
                f.suffix.lower() in RASTER_SUFFIXES or
                (f.suffix.lower() in IMAGE_SUFFIXES and _georeferenced_image(f))))
            if not found:
                raise InputError(f"folder holds no rasters ({', '.join(RASTER_SUFFIXES)}, or "
                                 "PNG/JPEG with a world file or .aux.xml)", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def plan_outputs(images: list[Path], output: Path, suffix: str = "_height.tif", *,
                 opened: bool = False, folder: bool = False) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs for ``predict IMAGE... -o OUTPUT``, this process's share
    under torchrun (every ``WORLD_SIZE``-th pair from ``RANK``).

    One input file and an OUTPUT that is not a folder (nor meant as one: ``folder``, e.g.
    ``-o out/``): OUTPUT itself. Otherwise OUTPUT is a folder of ``<stem><suffix>`` (made
    by :func:`predict_files`); colliding names are an InputError. Every input is opened
    here (unless the caller has: ``opened``), before the model starts loading, so a missing
    or unreadable one is refused at once (not after torch's import) and leaves nothing.
    """
    images, output = [Path(p) for p in images], Path(output)
    inputs = expand_inputs(images)
    if folder or len(inputs) > 1 or output.is_dir() or any(p.is_dir() for p in images):
        if output.exists() and not output.is_dir():
            raise InputError("is a file, not a folder" if folder else
                             "several inputs need an output folder", output)
        if not folder and not output.exists() and \
                output.suffix.lower() in GEOTIFF_SUFFIXES + TABLE_SUFFIXES:
            n = f"{len(inputs)} input{'s' * (len(inputs) != 1)}"  # it became a folder x.tif
            raise InputError(
                f"is a file name, but {n}{' of a folder' * any(p.is_dir() for p in images)} "
                f"write{'s' * (len(inputs) == 1)} one <stem>{suffix} each: give a folder (-o {output.with_suffix('')}/, "
                f"or -o {output}/ to keep this name)", output)
        targets = [output / f"{p.stem}{suffix}" for p in inputs]
        if len(set(targets)) < len(targets):
            raise InputError("inputs share a file name, so their outputs would collide", output)
    elif output.suffix.lower() not in GEOTIFF_SUFFIXES:  # a GeoTIFF under another name
        raise InputError("one input writes one GeoTIFF: give a name ending in "
                         f"{' or '.join(GEOTIFF_SUFFIXES)}, or an existing folder", output)
    else:
        targets = [output]
    if not opened:
        open_each(inputs)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return list(zip(inputs, targets))[rank::world]


def open_each(images) -> None:
    """Open every input image once (a missing or unreadable one: InputError naming it)."""
    for p in images:
        with open_raster(p, purpose="image"):
            pass


def split_finished(pairs: list[tuple[Path, Path]], model_path, task: str = "height",
                   outputs=lambda out: [Path(out)]
                   ) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """``(to do, finished outputs)`` of ``(input, output)`` pairs for ``--skip-existing``.

    Outputs are published only once complete (:mod:`rsgeo.io.atomic`), so an output whose
    files (``outputs(out)``: e.g. classes and probabilities) all exist, written for ``task``
    by the same model(s) (its ``task`` and ``model`` tags), is finished and an interrupted
    folder run resumes where it stopped. Anything else under an output name (not rsgeo's,
    another task's or model's, some of its files only) is an InputError naming it."""
    import rasterio  # lazy: only when outputs exist

    want = ",".join(model_label(m) for m in _model_list(model_path, None))
    todo, done = [], []
    for src, out in pairs:
        files = outputs(out)
        there = [f for f in files if Path(f).exists()]
        if not there:
            todo.append((src, out))
            continue
        if len(there) < len(files):
            missing = next(f for f in files if not Path(f).exists())
            raise InputError(f"is there without {Path(missing).name}; use --overwrite to redo "
                             "it", there[0])
        try:
            with rasterio.open(out) as ds:
                tags = ds.tags()
        except Exception:  # noqa: BLE001 - any unreadable file is refused the same way
            tags = {}
        if tags.get("task") != task:
            raise InputError(f"exists and is not a {task} output of rsgeo; remove it or use "
                             "--overwrite", out)
        if tags.get("model") != want:
            raise InputError(f"exists, written by model {tags.get('model')}, not {want}; use "
                             "--overwrite to redo it", out)
        done.append(Path(out))
    return todo, done


def nothing_run(skipped: list | None = None) -> dict:
    """The summary of a run with no file left to predict (every output finished)."""
    return {"files": [], "total": {"files": 0, "mpx": 0.0, "seconds": 0.0, "mpx_per_s": 0.0,
                                   "outputs": [], "skipped": [str(p) for p in skipped or []]}}


def predict_height_file(image_path, model_path, out_path, **kw) -> dict:
    """Predict heights (m) for one image into ``out_path``; returns its summary dict.

    Keyword arguments as for :func:`predict_height_files`.
    """
    return predict_height_files([image_path], model_path, [out_path], **kw)["files"][0]


def predict_height_files(images, model_path, outputs, **kw) -> dict:
    """Predict heights (m) for every image into the matching output, in one pipeline:
    :func:`predict_files` for a height model (any other model is an InputError).

    ``co``: creation options of the height rasters (:func:`rsgeo.io.writer.height_co`).
    """
    kw.setdefault("label", "predict-height")
    return predict_files(images, model_path, outputs, expect="height", **kw)


def predict_height_paths(images, model_path, output, *, skip_existing: bool = False,
                         folder: bool = False, **kw) -> dict:
    """``rsgeo predict-height IMAGE... -m MODEL -o OUTPUT``: :func:`plan_outputs` (``folder``:
    OUTPUT is a folder even for one input), then :func:`predict_height_files` on what is
    left to do; with ``skip_existing`` the finished outputs of the same model(s) are left as
    they are (:func:`split_finished`; listed as ``skipped`` in the total)."""
    _check_skip(skip_existing, kw.get("overwrite", False))
    planned, done = plan_outputs(images, output, folder=folder), []
    if skip_existing:
        planned, done = split_finished(planned, model_path)
    r = predict_height_files([i for i, _ in planned], model_path, [o for _, o in planned],
                             **kw) if planned else nothing_run()
    return _with_skipped(r, done, skip_existing)


def _check_skip(skip_existing: bool, overwrite: bool) -> None:
    if skip_existing and overwrite:
        raise InputError("--skip-existing keeps existing outputs, --overwrite replaces them: "
                         "choose one")


def predict_files(images, model_path, outputs, *, expect: str | None = None,
                  options: dict | None = None, tile: int | None = None,
                  overlap: int | None = None, batch_size: int | None = None,
                  device: str = "auto", backend: str | None = None, precision: str = "fp32",
                  gsd="auto", cog: bool = False, co: dict | None = None,
                  class_co: dict | None = None, overwrite: bool = False,
                  nodata: float | None = None, runner=None, workers: int | None = None,
                  scale="percentile", bands=None, dsm=None, label: str = "predict",
                  on_file: Callable[[dict], None] | None = None) -> dict:
    """Apply a task model to every input, writing what its task writes
    (:mod:`rsgeo.infer.writers`), in one pipeline.

    One model load and one :class:`~rsgeo.infer.stream.Pipeline` serve every input: the
    next file's reads start while the last one's strips are written, and small files
    share model batches. The model loads in the background while the first file is read.

    Args:
        images: input rasters; for change models ``(pre, post)`` pairs.
        outputs: one output per input (classification: the same table for all).
        model_path: .onnx (ONNX Runtime) or task checkpoint (torch); a list of height
            models: an ensemble, heights averaged tile by tile (:mod:`rsgeo.infer.ensemble`;
            same GSD, bands and stride; the first model's tile and overlap).
        expect: the task the model must hold (None: any task with a writer).
        options: the writer's options (``probabilities``, ``threshold``, ``per_input``).
        tile, overlap: window size and overlap in pixels (default: the model's recommendation;
            rounded up to the encoder stride; classification overlaps 0 by default).
        batch_size: tiles per model call (default: from the tile size and, on a GPU, its
            free memory; see :mod:`rsgeo.infer.batching`).
        gsd: ``"auto"`` (resample to the model's GSD when off by > 5 %), ``"native"`` (never
            resample), or metres per pixel to run the model at.
        co: creation options of float rasters (heights, probabilities); ``class_co``: of
            uint8 class rasters (default: ``co`` for height models' callers, else none).
        nodata: override the input's nodata value. ``runner``: a loaded ``(runner, meta,
            config)`` (several calls, one model).
        scale: how image values map onto the 0-255 training scale: ``percentile`` (2-98 %
            stretch for images wider than 8 bits), ``bitdepth``, ``none`` or ``(min, max)``;
            see :mod:`rsgeo.io.stretch`. Recorded per file (``input_stretch``) and in tags.
        dsm: an RGB + DSM (or nDSM) model's height raster: a file, or a folder of one per
            input's file name (:mod:`rsgeo.infer.surface`: heights are never stretched).
        workers: reader threads per file (default: ``RSGEO_IO_THREADS``, else up to 8).
        on_file: called with each file's summary (as in the result) once its outputs are
            published, in input order, while the run goes on (a table: once it is written);
            an error it raises stops the run (files not finished are discarded).

    Returns:
        ``{"files": [per-file summary], "total": {files, mpx, seconds, mpx_per_s, outputs}}``;
        a file's ``seconds`` run from its preparation to its closed output (files overlap).
    """
    t0 = time.perf_counter()
    _gsd_value(gsd)  # a bad --gsd is refused before the model loads
    models = _model_list(model_path, runner)
    model_path = models[0]  # what error messages, the writer and the tags name
    scale = parse_scale(scale) if isinstance(scale, (str, type(None))) else tuple(scale)
    pick = parse_bands(bands)
    if len(images := list(images)) != len(outputs := [Path(o) for o in outputs]):
        raise ValueError("one output per input")
    flat = [p for item in images for p in (item if isinstance(item, tuple) else (item,))]
    if expect is not None:  # outputs known before the model loads: refuse early
        _check_outputs(writer_for(expect, model_path, **(options or {})), outputs, overwrite,
                       (*flat, *models))
    run_future, meta, config = _load_ensemble(models, backend, device, precision) \
        if len(models) > 1 else _load(runner, model_path, backend, device, precision, tile,
                                      batch_size)
    spec = dict(model_spec(meta, config, model_path, tile, overlap, expect=expect, check=False),
                meta=meta, config=config, model_path=model_path, gsd=gsd, nodata=nodata,
                scale=scale, pick=pick, models=models)
    writer = spec["writer"] = writer_for(spec["task"], model_path, **(options or {}))
    spec["channels"] = writer.channels(meta, config)
    spec["meta"] = {**meta, "num_classes": meta.get("num_classes") or config.get("num_classes")}
    _check_inputs(images, spec, dsm, model_path)
    _check_outputs(writer, outputs, overwrite, (*flat, *models))
    spec["ctx"] = OutputContext(float_co=co, co=class_co, cog=cog, overwrite=overwrite)
    files, pipe = _run(run_future, spec, images, outputs, batch_size, workers, label,
                       None if writer.table else on_file)
    if writer.table:
        _write_tables(writer, images, outputs, overwrite)
    _describe_run(files, spec, pipe)
    for f in files if writer.table and on_file else ():
        on_file(f)
    return {"files": files, "total": _total(files, time.perf_counter() - t0)}


def _write_tables(writer, images, outputs, overwrite: bool) -> None:
    """A table writer's rows of every input into its output file(s)."""
    names = [str(i[0] if isinstance(i, tuple) else i) for i in images]
    for out in dict.fromkeys(outputs):
        writer.write_table(out, names, overwrite)


def _total(files: list[dict], seconds: float) -> dict:
    """The totals of a run's per-file summaries (``seconds``: the run's wall time)."""
    mpx = sum(f["mpx"] for f in files)
    return {"files": len(files), "mpx": round(mpx, 3), "seconds": round(seconds, 3),
            "mpx_per_s": float(f"{mpx / max(seconds, 1e-9):.3g}"),
            "outputs": list(dict.fromkeys(f["output"] for f in files))}


def _model_list(model_path, runner) -> list:
    """``model_path`` as a list (several: an ensemble; never with a loaded ``runner``)."""
    models = list(model_path) if isinstance(model_path, (list, tuple)) else [model_path]
    if not models:
        raise InputError("no model given")
    if len(models) > 1 and runner is not None:
        raise ValueError("give several models or a loaded runner, not both")
    # a run folder stands for its best.ckpt (a missing file is refused where it loads)
    return [resolve_model_path(m) if runner is None and Path(m).is_dir() else m
            for m in models]


def _describe_run(files: list[dict], spec: dict, pipe) -> None:
    """Add the task, device, backend(s), batch size and an ensemble's models to each
    file's summary."""
    models = spec["models"]
    backends = sorted({"onnx" if Path(m).suffix.lower() == ".onnx" else "torch" for m in models})
    for f in files:
        f.update(task=spec["task"], device=getattr(pipe.runner, "device", "cpu"),
                 backend="+".join(backends), batch_size=pipe.batch_size,
                 **({"models": [str(m) for m in models]} if len(models) > 1 else {}))


def predict_paths(images, model_path, output, *, backend: str | None = None,
                  device: str = "auto", precision: str = "fp32", tile: int | None = None,
                  batch_size: int | None = None, skip_existing: bool = False,
                  folder: bool = False, **kw) -> dict:
    """``rsgeo predict IMAGE... -m MODEL -o OUTPUT``: plan the outputs from the model's task,
    then :func:`predict_files`.

    - height, segmentation: OUTPUT for one input file, else a folder of ``<stem>_height.tif``
      / ``<stem>_classes.tif`` (as :func:`plan_outputs`);
    - change: exactly two image files, PRE POST, into OUTPUT;
    - classification: every input's rows into the one table OUTPUT.

    ``skip_existing``: leave finished outputs of the same model (:func:`split_finished`)
    and predict the rest (height and segmentation; the summary's total lists ``skipped``).
    ``folder``: OUTPUT is a folder even for one input (``-o out/``; height, segmentation).

    Under torchrun, height and segmentation inputs are shared among the ranks; change and
    classification (one output file) run on rank 0 only. Several height models (a list):
    their ensemble, as :func:`predict_height_files`.
    """
    _check_skip(skip_existing, kw.get("overwrite", False))
    models = _model_list(model_path, None)
    if len(models) > 1:  # an ensemble of height models
        return predict_height_paths(images, models, output, skip_existing=skip_existing,
                                    folder=folder, backend=backend, device=device,
                                    precision=precision, tile=tile, batch_size=batch_size,
                                    label="predict", **kw)
    model_path = models[0]
    inputs = expand_inputs([Path(p) for p in images])
    open_each(inputs)  # before torch's import, not after it
    if len(images) == 1 and not Path(images[0]).is_dir() and not Path(output).is_dir() and \
            not folder and Path(output).suffix.lower() not in GEOTIFF_SUFFIXES + TABLE_SUFFIXES:
        raise InputError("an output file of predict is a GeoTIFF raster (" + ", ".join(
            GEOTIFF_SUFFIXES) + ") or a classification table (" + ", ".join(TABLE_SUFFIXES)
            + ")", output)  # refused before the model loads
    loading = start_loading(model_path, backend, device, precision, warmup=functools.partial(
        _warmup_shape, tile=tile, batch_size=batch_size))
    meta, config = loading.meta()
    task = meta.get("task", config.get("task"))
    writer = writer_for(task, model_path, **(kw.get("options") or {}))
    images = [Path(p) for p in images]
    first = int(os.environ.get("RANK", 0)) == 0  # one output file: written by rank 0 only
    if skip_existing and (task == "change" or writer.table):
        raise InputError(f"--skip-existing resumes folders of per-file outputs; a {task} model "
                         "writes one output", model_path)
    done = []
    if folder and (task == "change" or writer.table):
        raise InputError(f"names a folder (a trailing /), but a {task} model writes one file: "
                         "give its name", output)
    if task == "change":
        if len(images) != 2 or any(p.is_dir() for p in images):
            raise InputError(f"holds a change model: give two image files, PRE POST (got "
                             f"{len(images)} input{'s' if len(images) != 1 else ''})", model_path)
        items, outs = [(images[0], images[1])][:int(first)], [Path(output)][:int(first)]
    elif writer.table:
        items = expand_inputs(images) if first else []
        outs = [Path(output)] * len(items)
    else:
        planned = plan_outputs(images, output, writer.suffix, opened=True, folder=folder)
        if skip_existing:
            planned, done = split_finished(planned, model_path, task, writer.outputs)
        items, outs = [i for i, _ in planned], [o for _, o in planned]
    r = predict_files(items, model_path, outs, runner=(loading.runner, meta, config),
                      tile=tile, batch_size=batch_size, **kw) if items else nothing_run()
    return _with_skipped(r, done, skip_existing)


def _with_skipped(r: dict, done: list, skip_existing: bool) -> dict:
    if skip_existing:
        r["total"]["skipped"] = [str(p) for p in done]
    return r


def _load(runner, model_path, backend, device, precision, tile, batch_size):
    """``(runner future, meta, config)``: a given runner (or its Future), or the model
    loading."""
    if runner is not None:
        run, meta, config = runner
        if isinstance(run, Future):
            return run, meta, config
        run_future: Future = Future()
        run_future.set_result(run)
        return run_future, meta, config
    loading = start_loading(model_path, backend, device, precision, warmup=functools.partial(
        _warmup_shape, tile=tile, batch_size=batch_size))
    meta, config = loading.meta()
    return loading.runner, meta, config


def _load_ensemble(models: list, backend, device, precision):
    """``(runner future, meta, config)`` of an ensemble of height models: every model
    loads at once; meta and config are the first model's (its tile, overlap and
    normalisation), and every member must match it in task, bands, GSD and encoder stride."""
    loadings = [start_loading(m, backend, device, precision) for m in models]
    metas = [ld.meta() for ld in loadings]
    (meta0, config0), first = metas[0], model_label(models[0])

    def facts(meta, config):
        return {"task": meta.get("task", config.get("task")),
                "bands": model_bands(meta, config), "GSD (m)": meta.get("gsd"),
                "encoder stride": model_stride(meta, config)}

    want = facts(meta0, config0)
    for m, (meta, config) in zip(models, metas):
        got = facts(meta, config)
        if got["task"] != "height":
            raise InputError(f"holds a {got['task']} model: ensembles (several --model) "
                             "are of height models", m)
        for key, value in want.items():
            if got[key] != value:
                raise InputError(f"{key} {got[key]}, but {first} has {value}: the models "
                                 "of an ensemble must match", m)
    runner_f: Future = Future()

    def gather():
        try:
            runner_f.set_result(EnsembleRunner(
                [ld.runner.result() for ld in loadings],
                means=[meta.get("mean", [0.0] * want["bands"]) for meta, _ in metas],
                stds=[meta.get("std", [1.0] * want["bands"]) for meta, _ in metas]))
        except BaseException as e:  # noqa: BLE001 - raised where the pipeline waits for it
            runner_f.set_exception(e)

    threading.Thread(target=gather, name="rsgeo-load-ensemble", daemon=False).start()
    meta = {**meta0, "ensemble": [model_label(m) for m in models]}
    return runner_f, meta, config0


def _check_outputs(writer, outputs, overwrite: bool, inputs: tuple) -> None:
    """Every file the writer would write for ``outputs``: refused if it exists (without
    ``overwrite``) or is one of the inputs."""
    guard = InputSet(inputs)
    for out in dict.fromkeys(outputs):
        for p in writer.outputs(out):
            check_output(p, overwrite, inputs=guard)


def _check_inputs(images, spec: dict, dsm, model_path) -> None:
    """Inputs the model takes (PRE POST pairs for change models only); ``spec`` gains the
    model's height bands (``kinds``) and each image's height raster (``surface``)."""
    task, pairs = spec["task"], [isinstance(i, tuple) for i in images]
    if task == "change" and not all(pairs):
        raise InputError("a change model needs two images, PRE and POST", model_path)
    if task != "change" and any(pairs):
        raise InputError(f"a {task} model takes one image per output, not PRE POST pairs",
                         model_path)
    spec["kinds"] = height_bands(spec["meta"], spec["bands"])
    spec["surface"] = surfaces_for(images, dsm, spec["kinds"], spec["meta"], model_path)


def _run(run_future, spec: dict, images, outputs, batch_size, workers, label, on_file=None):
    """``(per-file summaries, pipeline)``; the output folders are made here, after every
    check, and removed again if the run fails before writing into them."""
    created = [d for out in dict.fromkeys(outputs) for d in make_parents(Path(out))]
    try:
        return _sweep(run_future, spec, images, outputs, batch_size, workers, label, on_file)
    except BaseException:
        for d in reversed(created):  # folders this run made, if they stayed empty
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise


def _sweep(run_future, spec: dict, images, outputs, batch_size, workers, label, on_file=None):
    total_tiles = [0]
    with progress(None, label) as bar:
        def on_job(job):
            total_tiles[0] += len(job.tiles)
            bar.update(total=total_tiles[0])

        def on_result(f: dict) -> None:  # a published file, told at once (described first)
            _describe_run([f], spec, pipe)
            on_file(f)

        pipe = Pipeline(run_future, batch_size=batch_size, threads=workers,
                        on_tiles=bar.advance, on_job=on_job,
                        on_result=on_result if on_file else None)
        files = pipe.run(functools.partial(_prepare, img, out, spec)
                         for img, out in zip(images, outputs))
    return files, pipe


def model_spec(meta: dict, config: dict, model_path, tile: int | None,
               overlap: int | None, *, expect: str | None = "height",
               check: bool = True) -> dict:
    """``{task, bands, tile, overlap}`` a model runs with: the tile rounded up to the
    encoder stride (default: the model's), the overlap below it (default: the model's,
    at most a quarter tile; 0 for classification). A model of another task than
    ``expect`` is an InputError naming the model and the task it holds."""
    task = meta.get("task", config.get("task"))
    if expect is not None and task != expect:
        raise InputError(f"holds a {task} model, not a {expect} model (this needs a model "
                         f"from `rsgeo finetune --task {expect}`)", model_path)
    if check:
        writer_for(task, model_path)
    bands = model_bands(meta, config)
    stride = model_stride(meta, config)
    tile = _round_up(int(tile or meta.get("tile", 512)), stride)
    if overlap is None:  # the model's recommendation, kept below the tile the user chose
        overlap = 0 if task == "classification" else min(int(meta.get("overlap", tile // 8)),
                                                         tile // 4)
    overlap = int(overlap)
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap must be in [0, tile), got {overlap} for tile {tile}")
    return {"task": task, "bands": bands, "tile": tile, "overlap": overlap}


def _warmup_shape(meta: dict, config: dict, *, tile, batch_size) -> tuple | None:
    """The first batch's shape, so CUDA kernels are ready before the first tiles arrive."""
    if batch_size is None:  # the batch-size probe warms up instead
        return None
    bands = model_bands(meta, config)
    if config.get("task") == "change":
        bands *= 2
    stride = model_stride(meta, config)
    t = _round_up(int(tile or meta.get("tile", 512)), stride)
    return (batch_size, bands, t, t)


def _stretch_and_valid(src, scale, nodata, path) -> tuple:
    """``(stretch, valid mask of band 1 at sampled pixels or None)`` from one sample: the
    stretch's decimated read when it needs one (its raw band 1 against ``nodata``), else a
    block sample (:func:`~rsgeo.io.heights.sample_plan`) only when ``nodata`` is set."""
    smp = image_sample(src) if needs_sample(src, scale) else None
    stretch = image_stretch(src, scale, smp)
    if nodata is None:
        return stretch, None
    if smp is not None:
        return stretch, valid_mask(np.asarray(smp.data[0]), nodata)
    return stretch, sample(src, nodata, sample_plan(src), path)[1]


def _open_input(item, spec: dict, stack: ExitStack, out_path):
    """``(dataset, grid, norm, stretch, nodata, band choice)`` for one input (a PRE/POST
    pair: stacked; its band choice is None)."""
    bands, meta = spec["bands"], spec["meta"]
    mean = [float(m) for m in meta.get("mean", [0.0] * bands)]
    std = [float(s) for s in meta.get("std", [1.0] * bands)]
    if not isinstance(item, tuple):
        kinds = spec.get("kinds") or (False,) * bands
        images = kinds.count(False)
        src, choice = stack.enter_context(open_image(  # --bands: rsgeo.io.bands
            item, want=images or bands, bands=spec["pick"], nodata=spec["nodata"],
            purpose=f"{'height raster' if not images else 'image'} for this {bands}-band model"))
        nodata = spec["nodata"] if spec["nodata"] is not None and not choice.masked \
            else src.nodata  # an alpha-masked view holds both masks in its own nodata
        # height bands are metres: a model of heights alone reads its raster unstretched
        stretch, ok = _stretch_and_valid(src, spec["scale"] if images else "none", nodata, item)
        if nodata is not None:  # all nodata: an error, never a raster of nodata only
            require_valid(src, nodata, item, ok)
        if images and images < bands:  # image + DSM: one float32 stack, nodata NaN
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".rsgeo-", dir=Path(out_path).parent)))
            src = stack.enter_context(open_raster(stack_surface(
                src, nodata, spec["surface"][str(item)], kinds, work)))
            nodata = float("nan")
        # x * scale - offset on 0-255, then (. - mean) / std: the offset folds into the mean;
        # a height band is x * scale / scale: (x - mean) / std in metres
        k = float(np.float32(stretch.scale))
        norm = Norm(k, tuple(m * k if h else m + stretch.offset for m, h in zip(mean, kinds)),
                    tuple(s * k if h else s for s, h in zip(std, kinds)),
                    spec["channels"], spec["writer"].spatial)
        return src, Grid.of(src), norm, stretch, nodata, choice
    pre, post = item
    with open_raster(pre, bands=bands, purpose="PRE image") as a, \
            open_raster(post, bands=bands, purpose="POST image") as b:
        s1, s2 = image_stretch(a, spec["scale"]), image_stretch(b, spec["scale"])
        nodata = pair_nodata(a, b, spec["nodata"])
    work = Path(stack.enter_context(tempfile.TemporaryDirectory(
        prefix=".rsgeo-", dir=Path(out_path).parent)))
    src = stack.enter_context(open_raster(stack_pair(pre, post, bands, work, nodata)))
    # POST's own scale k2 under PRE's k1: (x*k2 - o2 - m)/s == (x*k1 - (o2+m)*k1/k2)/(s*k1/k2)
    r = float(np.float32(s1.scale)) / float(np.float32(s2.scale))
    norm = Norm(float(np.float32(s1.scale)),
                tuple([m + s1.offset for m in mean] + [(m + s2.offset) * r for m in mean]),
                tuple(std + [s * r for s in std]), spec["channels"], True)
    return src, Grid.of(src), norm, s1, nodata, None


def _prepare(item, out_path, spec: dict):
    """The :class:`~rsgeo.infer.stream.Job` for one input (opened, checked, GSD decided)."""
    t0 = time.perf_counter()
    tile, overlap, writer = spec["tile"], spec["overlap"], spec["writer"]
    stack, out_stack = ExitStack(), ExitStack()
    surface = spec.get("surface", {}).get(str(item))
    try:
        src, grid, norm, stretch, in_nodata, choice = _open_input(item, spec, stack, out_path)
        in_gsd, target = _target_gsd(spec["gsd"], spec["meta"].get("gsd"), grid)
        wgrid, work_out = grid, Path(out_path)
        if target is not None:  # model-GSD scores go to a temporary file, then onto the input grid
            wgrid = work_grid(grid, in_gsd, target)
            check_pixels(wgrid.width, wgrid.height, item, f"grid at {target:g} m/px")
            log.warning("%s: resampled from %.3f m%s to %s %.3f m GSD and back",
                        _input_name(item), in_gsd, estimate_note(grid),
                        "the model's" if spec["gsd"] == "auto" else "the requested", target)
            work_out = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".rsgeo-", dir=Path(out_path).parent))) / "work.tif"
        tags = {"model": ",".join(model_label(m) for m in spec["models"]), "task": spec["task"],
                "tile": tile, "overlap": overlap, "input_stretch": stretch.mode,
                "input_scale": repr(stretch.scale), "input_offset": repr(stretch.offset),
                **({"input_bands": choice.tag()} if choice is not None else {}),
                **({"input_dsm": str(surface)} if surface else {})}
        ctx = replace(spec["ctx"], tags=tags)
        ds = stack.enter_context(align_to(src, wgrid, "bilinear", nodata=in_nodata)) \
            if target is not None else src
        tiles = TileGrid(wgrid.height, wgrid.width, tile, overlap)
        dst, collect = _open_work(writer, out_path, work_out, wgrid, spec, ctx, out_stack, item)
    except BaseException:
        out_stack.close()
        stack.close()
        raise
    panels = plan_panels(tiles, int(dst.block_shapes[0][1]) if dst is not None else tiles.width,
                         PANEL_WIDTH if block_shape(ds)[1] < ds.width else None)
    resample = target is not None and not writer.table

    def finish() -> dict:
        sink = collect() if collect is not None else dst
        if resample:
            sink = _warp_back(work_out, out_path, grid, src, in_nodata, spec, ctx)
        seconds = time.perf_counter() - t0
        mpx = grid.width * grid.height / 1e6
        pair = {"post": str(item[1])} if isinstance(item, tuple) else {}
        return {"input": str(item[0] if pair else item), **pair, "output": str(out_path),
                "seconds": round(seconds, 3), "mpx": round(mpx, 3),
                "mpx_per_s": float(f"{mpx / max(seconds, 1e-9):.3g}"), "tiles": len(tiles),
                "tile": tile, "overlap": overlap, "resampled": target is not None,
                "input_scale": float(np.float32(stretch.scale)),
                "input_stretch": stretch.as_dict(),
                **({"input_bands": choice.as_dict()} if choice is not None else {}),
                **({"dsm": str(surface)} if surface else {}),
                **writer.summary(out_path, sink)}

    return Job(ds, tiles, panels, norm, dst, finish, stack, out_stack, nodata=in_nodata,
               scores=writer.scores, collect=collect)


def _open_work(writer, out_path, work_out, wgrid, spec, ctx, out_stack, item):
    """``(dst, collect)``: the open output the blending writes (a resampled run's lossless
    work file of scores, else the writer's sink), or for tables a row collector."""
    if writer.table:
        name = str(item[0] if isinstance(item, tuple) else item)
        rows = writer.open(out_path, wgrid, spec["meta"], ctx, out_stack, input_name=name,
                           tile=spec["tile"])
        return None, lambda: rows
    if work_out != Path(out_path):   # in a temporary folder: written in place, never published
        # (the finisher publishes a file's outputs together after the warp back reads it)
        profile = gtiff_profile(wgrid, spec["channels"], "float32", HEIGHT_NODATA)
        return out_stack.enter_context(create_gtiff(work_out, profile, None)), None
    return writer.open(out_path, wgrid, spec["meta"], ctx, out_stack), None


def _warp_back(work: Path, out, grid: Grid, src, in_nodata, spec: dict, ctx):
    """Resample the work file's scores (bilinear) onto the input grid into the writer's
    outputs; returns the writer's sink (closed)."""
    writer = spec["writer"]
    with ExitStack() as es:
        w = es.enter_context(open_raster(work))
        vrt = es.enter_context(align_to(w, grid, "bilinear", nodata=HEIGHT_NODATA))
        sink = writer.open(out, grid, spec["meta"], ctx, es)
        for win in strips(grid.height, grid.width, 512):
            a = vrt.read(window=win)
            ok = valid_mask(src.read(window=win), in_nodata)
            a[:, ~(ok & (a[0] != HEIGHT_NODATA))] = HEIGHT_NODATA
            sink.write(a, window=win)
    return sink


def _target_gsd(gsd, model_gsd, grid: Grid) -> tuple[float | None, float | None]:
    """``(the input's GSD in metres, the GSD to run the model at)``: None for either when
    not needed (``--gsd native``, a model without GSD) or when the input is run as it is.
    A geographic CRS's estimate is said in the resampling warning, with the file's name."""
    if gsd in (None, "native") or (gsd == "auto" and not model_gsd):
        return None, None
    here = ground_gsd(grid, hint=None)
    if gsd == "auto":
        return here, (float(model_gsd) if abs(here / float(model_gsd) - 1) > 0.05 else None)
    value = _gsd_value(gsd)
    return here, (value if abs(here / value - 1) > 1e-6 else None)


def _input_name(item) -> str:
    """An input as messages name it: its path, or a PRE/POST pair's two paths."""
    return " + ".join(map(str, item)) if isinstance(item, tuple) else str(item)


def _gsd_value(gsd):
    """``gsd`` as given (None, "auto", "native") or its metres per pixel; InputError when
    it is neither or outside [0.005, 1000] m."""
    if gsd in (None, "auto", "native"):
        return gsd
    try:
        value = float(gsd)
    except (TypeError, ValueError):
        raise InputError(f"--gsd must be auto, native or metres per pixel, got {gsd!r}") from None
    if not 0.005 <= value <= 1000:  # the bounds prepare uses; 0.0001 m would be 10^4x the pixels
        raise InputError(f"--gsd must be in [0.005, 1000] metres per pixel, got {value}")
    return value


def _round_up(x: int, m: int) -> int:
    return max(m, int(math.ceil(x / m)) * m)


def model_bands(meta: dict, config: dict) -> int:
    """The band count a model takes (its config, else its per-band means, else 3)."""
    return int(config.get("in_chans", len(meta.get("mean", [0, 0, 0]))))


def model_stride(meta: dict, config: dict) -> int:
    """The encoder's stride in pixels (its metadata, else its config)."""
    return int(meta.get("stride") or stride_of(config))
