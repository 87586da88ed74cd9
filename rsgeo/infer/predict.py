"""``predict-height``: heights in metres for rasters of any size, with bounded memory.

Everything streams through :func:`rsgeo.io.pipeline.run_tiled` (overlapping tiles,
reflect padding, raised-cosine blending that leaves scene edges untapered, rows written as
the sweep moves down), so seams are invisible and memory grows with the raster width.

How the model is fed comes from its metadata (checkpoint ``meta`` or ONNX
``metadata_props``): band count, per-band mean/std on the 0-255 scale, training GSD,
recommended tile and overlap. Input scaling: uint8 as is; 16/32-bit integers are scaled
from their bit depth (the smallest 2^k - 1 above the data maximum, so 11- or 12-bit
imagery fills 0-255); floats in [0, 1] are multiplied by 255, other floats used as is.
Input at another GSD is resampled to the model's (``gsd="auto"``, tolerance 5 %), and the
heights are resampled back onto the input grid, so the output always shares the input's
CRS, transform and shape. Input nodata becomes -9999 in the output.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError
from rsgeo.io.raster import Grid, align_to, open_raster, valid_mask
from rsgeo.io.writer import HEIGHT_NODATA, open_output

log = logging.getLogger("rsgeo.infer")


def load_model(model_path, backend: str | None = None, device: str = "auto",
               precision: str = "fp32"):
    """``(runner, meta, config)`` for an .onnx file (ORT) or a task checkpoint (torch)."""
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
    if backend == "onnx":
        from rsgeo.infer.export import read_metadata
        from rsgeo.infer.session import OrtRunner

        if precision != "fp32":
            raise InputError("--precision bf16 needs --backend torch (ONNX models run in fp32)")
        meta = read_metadata(p)
        if meta.get("format") != "rsgeo-onnx":
            raise InputError("ONNX file has no rsgeo metadata (export it with `rsgeo export`)", p)
        return OrtRunner(p, device), meta, meta["config"]
    from rsgeo.infer.session import TorchRunner
    from rsgeo.models.task import load_task_model

    model, config, meta = load_task_model(p)
    return TorchRunner(model, device, precision), meta, config


def input_scale(ds) -> float:
    """Factor that maps the raster's values onto the 0-255 scale the model was trained on."""
    kind = np.dtype(ds.dtypes[0]).kind
    if ds.dtypes[0] == "uint8":
        return 1.0
    step = max(1, int(math.ceil(max(ds.width, ds.height) / 1024)))
    sample = ds.read(out_shape=(ds.count, max(1, ds.height // step), max(1, ds.width // step)),
                     masked=True)
    top = float(sample.max()) if sample.count() else 0.0
    if kind in "iu":
        if top <= 255:
            return 1.0
        return 255.0 / (2 ** math.ceil(math.log2(top + 1)) - 1)
    return 255.0 if top <= 1.0 else 1.0


def ground_gsd(grid: Grid) -> float:
    """Pixel size in metres (geographic CRSs estimated at the scene centre, with a warning)."""
    rx, ry = grid.res
    if grid.crs is not None and grid.crs.is_geographic:
        lat = math.radians((grid.bounds[1] + grid.bounds[3]) / 2)
        gsd = math.sqrt(rx * 111320.0 * math.cos(lat) * ry * 110574.0)
        log.warning("geographic CRS: GSD estimated as %.3f m at latitude %.2f; pass --gsd to "
                    "override", gsd, math.degrees(lat))
        return gsd
    factor = grid.crs.linear_units_factor[1] if grid.crs is not None else 1.0
    return math.sqrt(rx * ry) * factor


def work_grid(grid: Grid, in_gsd: float, target_gsd: float) -> Grid:
    """``grid``'s extent at ``target_gsd`` (same CRS and origin)."""
    from affine import Affine

    f = target_gsd / in_gsd
    t = grid.transform
    w = max(1, int(round(grid.width / f)))
    h = max(1, int(round(grid.height / f)))
    return Grid(grid.crs, Affine(t.a * grid.width / w, t.b, t.c, t.d, t.e * grid.height / h, t.f),
                w, h)


def predict_height_file(image_path, model_path, out_path, *, tile: int | None = None,
                        overlap: int | None = None, batch_size: int = 4, device: str = "auto",
                        backend: str | None = None, precision: str = "fp32", gsd="auto",
                        cog: bool = False, co: dict | None = None, overwrite: bool = False,
                        nodata: float | None = None, runner=None) -> dict:
    """Predict heights (m) for ``image_path`` into ``out_path``; returns a summary dict.

    Args:
        model_path: .onnx (ONNX Runtime) or task checkpoint (torch).
        tile, overlap: window size and overlap in pixels (default: the model's recommendation;
            rounded up to the encoder stride).
        gsd: ``"auto"`` (resample to the model's GSD when off by > 5 %), ``"native"`` (never
            resample), or metres per pixel to run the model at.
        nodata: override the input's nodata value.
        runner: an already loaded ``(runner, meta, config)`` (several inputs, one model).
    """
    from rsgeo.io.atomic import check_output
    from rsgeo.io.pipeline import run_tiled
    from rsgeo.progress import progress

    check_output(out_path, overwrite, inputs=(image_path, model_path))
    run, meta, config = runner or load_model(model_path, backend, device, precision)
    task = meta.get("task", config.get("task"))
    if task != "height":
        raise InputError(f"a {task} model, not a height model (predict-height needs a model "
                         "from `rsgeo finetune --task height`)", model_path)
    bands = int(config.get("in_chans", len(meta.get("mean", [0, 0, 0]))))
    stride = int(meta.get("stride") or _stride(config))
    tile = _round_up(int(tile or meta.get("tile", 512)), stride)
    overlap = int(overlap if overlap is not None else meta.get("overlap", tile // 8))
    if not 0 <= overlap < tile:
        raise InputError(f"--overlap must be in [0, tile), got {overlap} for tile {tile}")
    mean = np.asarray(meta.get("mean", [0.0] * bands), np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(meta.get("std", [1.0] * bands), np.float32).reshape(1, -1, 1, 1)
    t0 = time.perf_counter()
    with ExitStack() as stack:
        src = stack.enter_context(open_raster(image_path, bands=bands,
                                              purpose=f"image for this {bands}-band model"))
        grid = Grid.of(src)
        scale = np.float32(input_scale(src))
        in_nodata = nodata if nodata is not None else src.nodata
        target = _target_gsd(gsd, meta.get("gsd"), grid)
        resample = target is not None
        ds = src
        if resample:
            in_gsd = ground_gsd(grid)
            wgrid = work_grid(grid, in_gsd, target)
            log.warning("%s: resampled from %.3f m to the model's %.3f m GSD and back",
                        image_path, in_gsd, target)
            ds = stack.enter_context(align_to(src, wgrid, "bilinear", nodata=in_nodata))
        else:
            wgrid = grid

        def model(batch: np.ndarray) -> np.ndarray:
            return run((batch * scale - mean) / std)[:, :1]

        work_out = Path(out_path)
        if resample:  # model-GSD heights go to a temporary file, then back onto the input grid
            work_out = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix=".rsgeo-", dir=Path(out_path).parent))) / "work.tif"
        tags = {"model": Path(model_path).name, "task": "height", "units": "metre",
                "tile": tile, "overlap": overlap}
        with open_output(work_out, wgrid, nodata=HEIGHT_NODATA, co=co, overwrite=overwrite,
                         cog=cog and not resample, tags=tags, units="metre",
                         band_descriptions=["height above ground (m)"]) as dst:
            from rsgeo.io.windows import TileGrid

            n_tiles = len(TileGrid(wgrid.height, wgrid.width, tile, overlap))
            with progress(n_tiles, "predict-height") as bar:
                run_tiled(ds, dst, model, tile=tile, overlap=overlap, batch_size=batch_size,
                          in_nodata=in_nodata, on_batch=bar.advance)
        if resample:
            _warp_back(work_out, out_path, grid, src, in_nodata, co, overwrite, cog, tags)
    seconds = time.perf_counter() - t0
    stats = height_stats(out_path)
    return {"input": str(image_path), "output": str(out_path), "seconds": round(seconds, 3),
            "mpx_per_s": round(grid.width * grid.height / 1e6 / max(seconds, 1e-9), 2),
            "tiles": n_tiles, "tile": tile, "overlap": overlap, "device": run.device,
            "backend": "onnx" if Path(model_path).suffix.lower() == ".onnx" else "torch",
            "resampled": resample, "input_scale": float(scale), **stats}


def _warp_back(work: Path, out, grid: Grid, src, in_nodata, co, overwrite, cog, tags) -> None:
    from rsgeo.io.windows import strips

    with open_raster(work) as w, align_to(w, grid, "bilinear", nodata=HEIGHT_NODATA) as vrt, \
            open_output(out, grid, nodata=HEIGHT_NODATA, co=co, overwrite=overwrite, cog=cog,
                        tags=tags, units="metre",
                        band_descriptions=["height above ground (m)"]) as dst:
        for win in strips(grid.height, grid.width, 512):
            h = vrt.read(1, window=win)
            ok = valid_mask(src.read(window=win), in_nodata)
            dst.write(np.where(ok & (h != HEIGHT_NODATA), h, HEIGHT_NODATA)[None], window=win)


def height_stats(path) -> dict:
    """min/median/max of valid heights (from a decimated read for large rasters)."""
    import rasterio

    with rasterio.open(path) as ds:
        step = max(1, int(math.ceil(max(ds.width, ds.height) / 2048)))
        h = ds.read(1, out_shape=(max(1, ds.height // step), max(1, ds.width // step)))
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
    from rsgeo.infer.export import stride_of

    return stride_of(config)
