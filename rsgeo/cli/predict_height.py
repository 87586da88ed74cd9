"""``rsgeo predict-height IMAGE... -m MODEL -o OUT``: sliding-window height inference."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import (
    Cog,
    Compress,
    CreationOpts,
    Device,
    DeviceChoice,
    Json,
    MaxZError,
    Nodata,
    Overwrite,
    Scale,
)
from rsgeo.cli.options import Bands, MaxPixels


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")


@app.command("predict-height")
def predict_height_cmd(
    images: Annotated[list[Path], typer.Argument(help="Input image(s) or folder(s) of images.")],
    model: Annotated[Path, typer.Option("-m", "--model", help="model.onnx or a task checkpoint (.ckpt).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .tif (one input) or folder.")],
    tile: Annotated[Optional[int], typer.Option("--tile", min=16, help="Tile size px (default: the model's).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="Tile overlap px (default: the model's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Tiles per model call (default: from the tile and free GPU memory).")] = None,
    device: Device = DeviceChoice.auto,
    backend: Annotated[Optional[Backend], typer.Option("--backend", help="Default: onnx for .onnx, torch for .ckpt.")] = None,
    precision: Annotated[Precision, typer.Option("--precision", help="bf16 autocast (torch backend).")] = Precision.fp32,
    gsd: Annotated[str, typer.Option("--gsd", help="auto (resample to the model's GSD), native, or m/px.")] = "auto",
    nodata: Nodata = None,
    scale: Scale = "percentile",
    bands: Bands = None,
    max_pixels: MaxPixels = None,
    cog: Cog = False,
    compress: Compress = None,
    max_z_error: MaxZError = None,
    co: CreationOpts = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Predict heights above ground (metres, float32 GeoTIFF, nodata -9999) on the input grid.

    Several inputs (or folders of .tif/.tiff/.vrt/.jp2/.img) share one model load and one
    pipeline, into the OUTPUT folder as <stem>_height.tif; under torchrun each rank takes
    its share. --json prints one line per file and a last line with the totals
    ("total": true).
    """
    import json
    import os

    from rsgeo.cli.options import nodata_value
    from rsgeo.errors import InputError
    from rsgeo.infer.predict import predict_height_files
    from rsgeo.io.writer import height_co, parse_co

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
    mine = list(zip(inputs, targets))[rank::world]
    r = predict_height_files(
        [i for i, _ in mine], model, [t for _, t in mine], tile=tile, overlap=overlap,
        batch_size=batch_size, device=device.value, backend=backend.value if backend else None,
        precision=precision.value, gsd=gsd, cog=cog, overwrite=overwrite, scale=scale,
        co=height_co(compress.value if compress else None, max_z_error, parse_co(co)),
        nodata=nodata_value(nodata), bands=bands)
    for f in r["files"]:
        if json_out:
            typer.echo(json.dumps(f))
        else:
            typer.echo(f"{f['output']}: {f['mpx_per_s']:.1f} Mpx/s, heights min "
                       f"{f['height_min']} / median {f['height_median']} / max {f['height_max']} m"
                       f" ({f['tiles']} tiles, {f['backend']} on {f['device']})")
    t = r["total"]
    if json_out:
        typer.echo(json.dumps({"total": True, **t}))
    elif t["files"] > 1:
        typer.echo(f"{t['files']} files, {t['mpx']:.1f} Mpx in {t['seconds']:.1f} s: "
                   f"{t['mpx_per_s']:.1f} Mpx/s")


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by their raster files (sorted by name)."""
    from rsgeo.errors import InputError

    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir()
                           if f.is_file() and f.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputError(f"folder holds no rasters ({', '.join(RASTER_SUFFIXES)})", p)
            out.extend(found)
        else:
            out.append(p)
    return out
