"""``rsgeo predict-height IMAGE... -m MODEL -o OUT``: sliding-window height inference."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE_OR_DIR, Bands, Cog, Compute, JsonLines, MaxPixels, Nodata,
                               RasterOutput, Scale, SkipExisting, Surface, Tiling, in_panel,
                               output_option, with_groups)
from rsgeo.cli.predict import run_prediction


@app.command("predict-height", epilog=examples(
    'rsgeo predict-height ortho.tif -m height.onnx -o heights.tif --cog',
    'rsgeo predict-height tiles/ -m height.onnx -o heights/ --json | jq .mpx_per_s',
    'rsgeo predict-height ortho.tif -m runs/h1 -m runs/h2 -o mean.tif  # ensemble'))
@with_groups
def predict_height_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Input image(s) or folder(s) of images.")],
    model: Annotated[list[Path], typer.Option(
        "-m", "--model", help="model.onnx, a task checkpoint (.ckpt) or a finetune run folder; several -m: an "
        "ensemble, their heights averaged (same GSD and bands).")],
    output: output_option("Output .tif (one input), or a folder of <stem>_height.tif (several "
                          "inputs, a folder of inputs, an existing folder, or a name ending "
                          "in /).", FILE_OR_DIR),
    tiling: Tiling = Tiling(),
    nodata: Nodata = None,
    scale: Scale = "percentile",
    bands: Bands = None,
    dsm: Surface = None,
    max_pixels: MaxPixels = None,
    compute: Compute = Compute(),
    cog: in_panel("Raster output", Cog) = False,
    skip_existing: in_panel("Raster output", SkipExisting) = False,
    out: RasterOutput = RasterOutput(),
    json_out: JsonLines = False,
):
    """Predict heights above ground (metres, float32 GeoTIFF, nodata -9999) on the input grid.

    Several inputs (or folders of .tif/.tiff/.vrt/.jp2/.img, and PNG/JPEG with a world file
    or .aux.xml) share one model load and one pipeline, into the OUTPUT folder as
    <stem>_height.tif; under torchrun each rank takes its share. --precision: fp32 or bf16 (torch backend). --json prints one line per file
    and a last line with the totals ("total": true). Several --model (e.g. seeds of one
    recipe) run as one ensemble: each model sees every tile, the heights are averaged.
    """
    from rsgeo.infer.predict import predict_height_paths  # lazy: keep rsgeo --help fast

    run_prediction(ctx, predict_height_paths, images, model, output, tiling=tiling,
                   compute=compute, out=out, json_out=json_out, cog=cog, scale=scale,
                   nodata=nodata, bands=bands, dsm=dsm, skip_existing=skip_existing)
