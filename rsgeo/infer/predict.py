"""``predict-height``: heights in metres for rasters of any size, with bounded memory.

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
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError
from rsgeo.infer.export import read_metadata, stride_of
from rsgeo.infer.session import Norm, OrtRunner, TorchRunner
from rsgeo.infer.stream import Job, Pipeline
from rsgeo.io.atomic import check_output
from rsgeo.io.bands import open_image, parse_bands
from rsgeo.io.limits import check_pixels
from rsgeo.io.raster import Grid, align_to, ground_gsd, open_raster, valid_mask, work_grid
from rsgeo.io.reader import block_shape
from rsgeo.io.stretch import image_stretch, parse_scale
from rsgeo.io.windows import TileGrid, plan_panels, strips
from rsgeo.io.writer import HEIGHT_NODATA, open_output
from rsgeo.progress import progress
from rsgeo.tasks import get_task

log = logging.getLogger("rsgeo.infer")
PANEL_WIDTH = 4096  # rasters wider than this are swept in vertical panels (memory bound)
HEIGHT_LAYER = get_task("height").writer.layers[0]  # what this module writes: float32 metres


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
    p = Path(model_path)
    if not p.is_file():
        raise InputError("no such model file", p)
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


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their raster files (sorted by name)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputError(f"folder holds no rasters ({', '.join(RASTER_SUFFIXES)})", p)
            out.extend(found)
        else:
            out.append(p)
    return out


def plan_outputs(images: list[Path], output: Path) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs for ``predict-height IMAGE... -o OUTPUT``, this process's
    share under torchrun (every ``WORLD_SIZE``-th pair from ``RANK``).

    One input file and an OUTPUT that is not a folder: OUTPUT itself. Otherwise OUTPUT is
    a folder (created) of ``<stem>_height.tif``; colliding names are an InputError.
    """
    images, output = [Path(p) for p in images], Path(output)
    inputs = expand_inputs(images)
    if len(inputs) > 1 or output.is_dir() or any(p.is_dir() for p in images):
        if output.exists() and not output.is_dir():
            raise InputError("several inputs need an output folder", output)
        output.mkdir(parents=True, exist_ok=True)
        targets = [output / f"{p.stem}_height.tif" for p in inputs]
        if len(set(targets)) < len(targets):
            raise InputError("inputs share a file name, so their outputs would collide", output)
    else:
        targets = [output]
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return list(zip(inputs, targets))[rank::world]


def predict_height_file(image_path, model_path, out_path, **kw) -> dict:
    """Predict heights (m) for one image into ``out_path``; returns its summary dict.

    Keyword arguments as for :func:`predict_height_files`.
    """
    return predict_height_files([image_path], model_path, [out_path], **kw)["files"][0]


def predict_height_files(images, model_path, outputs, *, tile: int | None = None,
                         overlap: int | None = None, batch_size: int | None = None,
                         device: str = "auto", backend: str | None = None,
                         precision: str = "fp32", gsd="auto", cog: bool = False,
                         co: dict | None = None, overwrite: bool = False,
                         nodata: float | None = None, runner=None,
                         workers: int | None = None, scale="percentile",
                         bands=None) -> dict:
    """Predict heights (m) for every image into the matching output, in one pipeline.

    One model load and one :class:`~rsgeo.infer.stream.Pipeline` serve every input: the
    next file's reads start while the last one's strips are written, and small files
    share model batches. The model loads in the background while the first file is read.

    Args:
        images, outputs: input rasters and their output GeoTIFFs (same length).
        model_path: .onnx (ONNX Runtime) or task checkpoint (torch).
        tile, overlap: window size and overlap in pixels (default: the model's recommendation;
            rounded up to the encoder stride).
        batch_size: tiles per model call (default: from the tile size and, on a GPU, its
            free memory; see :mod:`rsgeo.infer.batching`).
        gsd: ``"auto"`` (resample to the model's GSD when off by > 5 %), ``"native"`` (never
            resample), or metres per pixel to run the model at.
        nodata: override the input's nodata value.
        scale: how image values map onto the 0-255 training scale: ``percentile`` (2-98 %
            stretch for images wider than 8 bits), ``bitdepth``, ``none`` or ``(min, max)``;
            see :mod:`rsgeo.io.stretch`. Recorded per file (``input_stretch``) and in tags.
        bands: which image bands feed the model (``"3,2,1"`` or a tuple, 1-based; default:
            RGBA -> RGB, 1 band replicated); see :mod:`rsgeo.io.bands`. Recorded per file
            (``input_bands``) and in tags.
        runner: an already loaded ``(runner, meta, config)`` (several calls, one model).
        workers: reader threads per file (default: the engine's, ``RSGEO_IO_THREADS`` or
            up to 8).

    Returns:
        ``{"files": [per-file summary], "total": {files, mpx, seconds, mpx_per_s, outputs}}``;
        a file's ``seconds`` run from its preparation to its closed output (files overlap).
    """
    t0 = time.perf_counter()
    scale = parse_scale(scale) if isinstance(scale, (str, type(None))) else tuple(scale)
    pick = parse_bands(bands)
    images, outputs = list(images), [Path(o) for o in outputs]
    if len(images) != len(outputs):
        raise ValueError("one output per input")
    for out in outputs:
        check_output(out, overwrite, inputs=(*images, model_path))
    if runner is not None:
        run, meta, config = runner
        run_future: Future = Future()
        run_future.set_result(run)
    else:
        loading = start_loading(model_path, backend, device, precision, warmup=functools.partial(
            _warmup_shape, tile=tile, batch_size=batch_size))
        meta, config = loading.meta()
        run_future = loading.runner
    spec = dict(model_spec(meta, config, model_path, tile, overlap), meta=meta,
                model_path=model_path, gsd=gsd, cog=cog, co=co, overwrite=overwrite,
                nodata=nodata, scale=scale, pick=pick)
    backend_name = "onnx" if Path(model_path).suffix.lower() == ".onnx" else "torch"
    total_tiles = [0]
    with progress(None, "predict-height") as bar:
        def on_job(job):
            total_tiles[0] += len(job.tiles)
            bar.update(total=total_tiles[0])

        pipe = Pipeline(run_future, batch_size=batch_size, threads=workers,
                        on_tiles=bar.advance, on_job=on_job)
        files = pipe.run(functools.partial(_prepare, img, out, spec)
                         for img, out in zip(images, outputs))
    device_used = getattr(pipe.runner, "device", "cpu")
    for f in files:
        f.update(device=device_used, backend=backend_name, batch_size=pipe.batch_size)
    seconds = time.perf_counter() - t0
    mpx = sum(f["mpx"] for f in files)
    total = {"files": len(files), "mpx": round(mpx, 3), "seconds": round(seconds, 3),
             "mpx_per_s": float(f"{mpx / max(seconds, 1e-9):.3g}"),
             "outputs": [f["output"] for f in files]}
    return {"files": files, "total": total}


def model_spec(meta: dict, config: dict, model_path, tile: int | None,
               overlap: int | None) -> dict:
    """``{bands, tile, overlap}`` a height model runs with: the tile rounded up to the
    encoder stride (default: the model's), the overlap below it (default: the model's,
    at most a quarter tile). A model of another task is an InputError."""
    task = meta.get("task", config.get("task"))
    if task != "height":
        raise InputError(f"a {task} model, not a height model (predict-height needs a model "
                         "from `rsgeo finetune --task height`)", model_path)
    bands = int(config.get("in_chans", len(meta.get("mean", [0, 0, 0]))))
    stride = int(meta.get("stride") or _stride(config))
    tile = _round_up(int(tile or meta.get("tile", 512)), stride)
    if overlap is None:  # the model's recommendation, kept below the tile the user chose
        overlap = min(int(meta.get("overlap", tile // 8)), tile // 4)
    overlap = int(overlap)
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap must be in [0, tile), got {overlap} for tile {tile}")
    return {"bands": bands, "tile": tile, "overlap": overlap}


def _warmup_shape(meta: dict, config: dict, *, tile, batch_size) -> tuple | None:
    """The first batch's shape, so CUDA kernels are ready before the first tiles arrive."""
    if batch_size is None:  # the batch-size probe warms up instead
        return None
    bands = int(config.get("in_chans", len(meta.get("mean", [0, 0, 0]))))
    stride = int(meta.get("stride") or _stride(config))
    t = _round_up(int(tile or meta.get("tile", 512)), stride)
    return (batch_size, bands, t, t)


def _prepare(image_path, out_path, spec: dict):
    """The :class:`~rsgeo.infer.stream.Job` for one input (opened, checked, GSD decided)."""

    t0 = time.perf_counter()
    bands, tile, overlap, meta = spec["bands"], spec["tile"], spec["overlap"], spec["meta"]
    stack = ExitStack()
    try:
        src, choice = stack.enter_context(open_image(  # --bands: rsgeo.io.bands
            image_path, want=bands, bands=spec["pick"], nodata=spec["nodata"],
            purpose=f"image for this {bands}-band model"))
        grid = Grid.of(src)
        stretch = image_stretch(src, spec["scale"])
        in_nodata = spec["nodata"] if spec["nodata"] is not None and not choice.alpha \
            else src.nodata  # an alpha-masked view holds both masks in its own nodata
        target = _target_gsd(spec["gsd"], meta.get("gsd"), grid)
        resample = target is not None
        wgrid = grid
        work_out = Path(out_path)
        if resample:  # model-GSD heights go to a temporary file, then back onto the input grid
            in_gsd = ground_gsd(grid)
            wgrid = work_grid(grid, in_gsd, target)
            check_pixels(wgrid.width, wgrid.height, image_path, f"grid at {target:g} m/px")
            log.warning("%s: resampled from %.3f m to the model's %.3f m GSD and back",
                        image_path, in_gsd, target)
            work_out = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".rsgeo-", dir=Path(out_path).parent))) / "work.tif"
    except BaseException:
        stack.close()
        raise
    tiles = TileGrid(wgrid.height, wgrid.width, tile, overlap)
    # x * scale - offset on 0-255, then (. - mean) / std: the offset folds into the mean
    norm = Norm(float(np.float32(stretch.scale)),
                tuple(float(m) + stretch.offset for m in meta.get("mean", [0.0] * bands)),
                tuple(float(s) for s in meta.get("std", [1.0] * bands)), 1)
    tags = {"model": Path(spec["model_path"]).name, "task": "height", "units": HEIGHT_LAYER.units,
            "tile": tile, "overlap": overlap, "input_stretch": stretch.mode,
            "input_scale": repr(stretch.scale), "input_offset": repr(stretch.offset),
            "input_bands": choice.tag()}
    co, cog, overwrite = spec["co"], spec["cog"], spec["overwrite"]
    out_stack = ExitStack()
    try:
        ds = stack.enter_context(align_to(src, wgrid, "bilinear", nodata=in_nodata)) \
            if resample else src
        dst = out_stack.enter_context(open_output(  # a resampled run's work file: lossless
            work_out, wgrid, nodata=HEIGHT_NODATA, co=None if resample else co,
            overwrite=overwrite,
            cog=cog and not resample, tags=tags, units=HEIGHT_LAYER.units,
            band_descriptions=[HEIGHT_LAYER.description]))
    except BaseException:
        out_stack.close()
        stack.close()
        raise
    panels = plan_panels(tiles, int(dst.block_shapes[0][1]),
                         PANEL_WIDTH if block_shape(ds)[1] < ds.width else None)

    def finish() -> dict:
        if resample:
            _warp_back(work_out, out_path, grid, src, in_nodata, co, overwrite, cog, tags)
        seconds = time.perf_counter() - t0
        mpx = grid.width * grid.height / 1e6
        return {"input": str(image_path), "output": str(out_path), "seconds": round(seconds, 3),
                "mpx": round(mpx, 3), "mpx_per_s": float(f"{mpx / max(seconds, 1e-9):.3g}"),
                "tiles": len(tiles), "tile": tile, "overlap": overlap, "resampled": resample,
                "input_scale": float(np.float32(stretch.scale)),
                "input_stretch": stretch.as_dict(), "input_bands": choice.as_dict(),
                **height_stats(out_path)}

    return Job(ds, tiles, panels, norm, dst, finish, stack, out_stack, nodata=in_nodata)


def _warp_back(work: Path, out, grid: Grid, src, in_nodata, co, overwrite, cog, tags) -> None:
    with open_raster(work) as w, align_to(w, grid, "bilinear", nodata=HEIGHT_NODATA) as vrt, \
            open_output(out, grid, nodata=HEIGHT_NODATA, co=co, overwrite=overwrite, cog=cog,
                        tags=tags, units=HEIGHT_LAYER.units,
                        band_descriptions=[HEIGHT_LAYER.description]) as dst:
        for win in strips(grid.height, grid.width, 512):
            h = vrt.read(1, window=win)
            ok = valid_mask(src.read(window=win), in_nodata)
            dst.write(np.where(ok & (h != HEIGHT_NODATA), h, HEIGHT_NODATA)[None], window=win)


def height_stats(path, sample: int = 2048) -> dict:
    """min/median/max of valid heights: exact up to ``sample``² px, else from an 8 x 8 grid
    of ``sample // 8``-px windows spread over the raster (a few Mpx, whatever the size)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        if max(ds.width, ds.height) <= sample:
            h = ds.read(1)
        else:
            n, k = 8, sample // 8
            wk, hk = min(k, ds.width), min(k, ds.height)
            rows = np.linspace(0, ds.height - hk, n).astype(int)
            cols = np.linspace(0, ds.width - wk, n).astype(int)
            h = np.concatenate([ds.read(1, window=Window(int(c), int(r), wk, hk)).ravel()
                                for r in rows for c in cols])
    v = h[h != HEIGHT_NODATA]
    if v.size == 0:
        return {"height_min": None, "height_median": None, "height_max": None}
    return {"height_min": round(float(v.min()), 3), "height_median": round(float(np.median(v)), 3),
            "height_max": round(float(v.max()), 3)}


def _target_gsd(gsd, model_gsd, grid: Grid) -> float | None:
    if gsd in (None, "native"):
        return None
    if gsd == "auto":
        if not model_gsd:
            return None
        here = ground_gsd(grid)
        return float(model_gsd) if abs(here / float(model_gsd) - 1) > 0.05 else None
    try:
        value = float(gsd)
    except (TypeError, ValueError):
        raise InputError(f"--gsd must be auto, native or metres per pixel, got {gsd!r}") from None
    if value <= 0:
        raise InputError(f"--gsd must be positive, got {value}")
    return value if abs(ground_gsd(grid) / value - 1) > 1e-6 else None


def _round_up(x: int, m: int) -> int:
    return max(m, int(math.ceil(x / m)) * m)


def _stride(config: dict) -> int:
    return stride_of(config)
