"""``rsgeo predict-height IMAGE... -m MODEL -o OUT``: sliding-window height inference."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import (Bands, Cog, Compute, Json, MaxPixels, Nodata, RasterOutput, Scale,
                               in_panel, output_option, with_groups)


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


@app.command("predict-height")
@with_groups
def predict_height_cmd(
    images: Annotated[list[Path], typer.Argument(help="Input image(s) or folder(s) of images.")],
    model: Annotated[Path, typer.Option("-m", "--model", help="model.onnx or a task checkpoint (.ckpt).")],
    output: output_option("Output .tif (one input) or folder."),
    tile: Annotated[Optional[int], typer.Option("--tile", min=16, help="Tile size px (default: the model's).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="Tile overlap px (default: the model's).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Tiles per model call (default: from the tile and free GPU memory).")] = None,
    backend: Annotated[Optional[Backend], typer.Option("--backend", help="Default: onnx for .onnx, torch for .ckpt.")] = None,
    gsd: Annotated[str, typer.Option("--gsd", help="Ground sampling distance the model runs at: auto (the model's training GSD; inputs more than 5 % off are resampled to it and back), native (never resample), or metres per pixel.")] = "auto",
    nodata: Nodata = None,
    scale: Scale = "percentile",
    bands: Bands = None,
    max_pixels: MaxPixels = None,
    compute: Compute = Compute(),
    cog: in_panel("Raster output", Cog) = False,
    out: RasterOutput = RasterOutput(),
    json_out: Json = False,
):
    """Predict heights above ground (metres, float32 GeoTIFF, nodata -9999) on the input grid.

    Several inputs (or folders of .tif/.tiff/.vrt/.jp2/.img) share one model load and one
    pipeline, into the OUTPUT folder as <stem>_height.tif; under torchrun each rank takes
    its share. --precision: fp32 or bf16 (torch backend). --json prints one line per file
    and a last line with the totals ("total": true).
    """
    # lazy: keep rsgeo --help fast
    from rsgeo.infer.predict import plan_outputs, predict_height_files
    from rsgeo.io.writer import height_co

    mine = plan_outputs(images, output)
    r = predict_height_files(
        [i for i, _ in mine], model, [t for _, t in mine], tile=tile, overlap=overlap,
        batch_size=batch_size, device=compute.device.value,
        backend=backend.value if backend else None, precision=compute.precision.value,
        gsd=gsd, cog=cog, overwrite=out.overwrite, scale=scale, nodata=nodata, bands=bands,
        co=height_co(out.codec, out.max_z_error, out.creation_options))
    for f in r["files"]:
        typer.echo(json.dumps(f) if json_out else
                   f"{f['output']}: {f['mpx_per_s']:.1f} Mpx/s, heights min "
                   f"{f['height_min']} / median {f['height_median']} / max {f['height_max']} m"
                   f" ({f['tiles']} tiles, {f['backend']} on {f['device']})")
    t = r["total"]
    if json_out:
        typer.echo(json.dumps({"total": True, **t}))
    elif t["files"] > 1:
        typer.echo(f"{t['files']} files, {t['mpx']:.1f} Mpx in {t['seconds']:.1f} s: "
                   f"{t['mpx_per_s']:.1f} Mpx/s")
