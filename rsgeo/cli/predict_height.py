"""``rsgeo predict-height IMAGE... -m MODEL -o OUT``: sliding-window height inference."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import Cog, CreationOpts, Device, DeviceChoice, Json, Nodata, Overwrite


class Backend(str, Enum):
    onnx = "onnx"
    torch = "torch"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


@app.command("predict-height")
def predict_height_cmd(
    images: Annotated[list[Path], typer.Argument(help="Input image(s).")],
    model: Annotated[Path, typer.Option("-m", "--model", help="model.onnx or a task checkpoint (.ckpt).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output .tif (one input) or folder.")],
    tile: Annotated[Optional[int], typer.Option("--tile", min=16, help="Tile size px (default: the model's).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="Tile overlap px (default: the model's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per model call.")] = 4,
    device: Device = DeviceChoice.auto,
    backend: Annotated[Optional[Backend], typer.Option("--backend", help="Default: onnx for .onnx, torch for .ckpt.")] = None,
    precision: Annotated[Precision, typer.Option("--precision", help="bf16 autocast (torch backend).")] = Precision.fp32,
    gsd: Annotated[str, typer.Option("--gsd", help="auto (resample to the model's GSD), native, or m/px.")] = "auto",
    nodata: Nodata = None,
    cog: Cog = False,
    co: CreationOpts = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Predict heights above ground (metres, float32 GeoTIFF, nodata -9999) on the input grid.

    Several inputs are processed one after another into the OUTPUT folder as
    <stem>_height.tif; under torchrun each rank takes its share of the inputs.
    """
    import json
    import os

    from rsgeo.cli.options import nodata_value
    from rsgeo.errors import InputError
    from rsgeo.infer.predict import load_model, predict_height_file
    from rsgeo.io.writer import parse_co

    if len(images) > 1 or output.is_dir():
        if output.exists() and not output.is_dir():
            raise InputError("several inputs need an output folder", output)
        output.mkdir(parents=True, exist_ok=True)
        targets = [output / f"{p.stem}_height.tif" for p in images]
        if len(set(targets)) < len(targets):
            raise InputError("inputs share a file name, so their outputs would collide", output)
    else:
        targets = [output]
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    loaded = load_model(model, backend.value if backend else None, device.value, precision.value)
    results = []
    for img, out in list(zip(images, targets))[rank::world]:
        results.append(predict_height_file(
            img, model, out, tile=tile, overlap=overlap, batch_size=batch_size,
            gsd=gsd, cog=cog, co=parse_co(co), overwrite=overwrite,
            nodata=nodata_value(nodata), runner=loaded))
    for r in results:
        if json_out:
            typer.echo(json.dumps(r))
        else:
            typer.echo(f"{r['output']}: {r['mpx_per_s']:.1f} Mpx/s, heights min "
                       f"{r['height_min']} / median {r['height_median']} / max {r['height_max']} m"
                       f" ({r['tiles']} tiles, {r['backend']} on {r['device']})")
