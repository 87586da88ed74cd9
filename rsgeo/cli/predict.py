"""``rsgeo predict IMAGE... -m MODEL -o OUT``: any task model over rasters of any size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Callable

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE_OR_DIR, Bands, Cog, Compute, JsonLines, MaxPixels, Nodata,
                               RasterOutput, Scale, SkipExisting, Surface, Tiling, as_folder,
                               in_panel, output_option, plural, with_groups)


@app.command("predict", epilog=examples(
    'rsgeo predict ortho.tif -m seg.onnx -o classes.tif --probabilities',
    'rsgeo predict pre.tif post.tif -m runs/change -o change.tif',
    'rsgeo predict tiles/ -m seg.onnx -o classes/ --json | jq -r .output'))
@with_groups
def predict_cmd(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Input image(s) or folder(s); change models: PRE POST.")],
    model: Annotated[list[Path], typer.Option("-m", "--model", help="model.onnx, a task checkpoint (.ckpt) or a finetune run folder, of any task; several height models: an ensemble, as predict-height.")],
    output: output_option("Output .tif (one input; change), a folder (several inputs, a folder "
                          "of inputs, or an existing folder), or a table .csv, .parquet, .gpkg, "
                          ".geojson or .fgb (classification); a trailing / makes it a "
                          "folder.", FILE_OR_DIR),
    probabilities: Annotated[bool, typer.Option("--probabilities", help="Segmentation: also OUTPUT_probabilities.tif (<stem>_classes_probabilities.tif in folders), one float band per class.")] = False,
    threshold: Annotated[float, typer.Option("--threshold", help="Change: change where the blended probability >= this.")] = 0.5,
    per_input: Annotated[bool, typer.Option("--per-input", help="Classification: one row per input (tile probabilities averaged) instead of one per tile.")] = False,
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
    """Apply a fine-tuned model of any task; what is written follows the model's task.

    height: heights above ground (float32 m, nodata -9999), as predict-height.

    segmentation: <stem>_classes.tif, uint8 classes (255 nodata) with the model's class names (tags class_<i>) and a colour table: the argmax of the softmax probabilities blended across overlapping tiles; --probabilities adds one float band per class.

    change: two images PRE POST (POST resampled onto PRE's grid when they differ): a uint8 change mask (1 change, 0 none, 255 nodata) and <stem>_probability.tif.

    classification: a table (.csv (geometry as WKT), .parquet, .gpkg, .geojson or .fgb) with one row per tile (per input with --per-input): footprint, class, class_name, probability, p_<class>.

    --compress/--max-z-error apply to float rasters, --co to every raster.
    """
    from rsgeo.infer.predict import predict_paths  # lazy: keep rsgeo --help fast

    run_prediction(ctx, predict_paths, images, model, output, tiling=tiling, compute=compute,
                   out=out, json_out=json_out, cog=cog, scale=scale, nodata=nodata,
                   bands=bands, dsm=dsm, skip_existing=skip_existing,
                   class_co=out.creation_options, options={
                       "probabilities": probabilities, "threshold": threshold,
                       "per_input": per_input})


def run_prediction(ctx: typer.Context, paths: Callable[..., dict], images, model, output, *,
                   tiling: Tiling, compute: Compute, out: RasterOutput, json_out: bool,
                   **kw) -> None:
    """What ``predict`` and ``predict-height`` do with their options: call ``paths``
    (:func:`rsgeo.infer.predict.predict_paths` or ``predict_height_paths``) with the option
    groups as the library's arguments (``kw``: the other options, as they are), print each
    file's line as soon as it is published (JSON, or :func:`_human`'s words), then the
    totals (:func:`echo_total`)."""
    from rsgeo.io.writer import height_co  # lazy: keep rsgeo --help fast

    def echo_file(f: dict) -> None:  # as soon as the file is published (pipelines read on)
        typer.echo(json.dumps(f) if json_out else f"{f['output']}: {_human(f)} "
                   f"({f['mpx_per_s']:.1f} Mpx/s, {plural(f['tiles'], 'tile')}, {f['backend']} "
                   f"on {f['device']})")

    r = paths(images, model, output, **tiling.kwargs(), device=compute.device.value,
              precision=compute.precision.value, overwrite=out.overwrite,
              co=height_co(out.codec, out.max_z_error, out.creation_options),
              on_file=echo_file, folder=as_folder(ctx, "output"), **kw)
    echo_total(r["total"], json_out)


def echo_total(t: dict, json_out: bool) -> None:
    """The last line of a prediction run (predict, predict-height): the totals as JSON
    (``"total": true``), or in words when there was more than one file; outputs left as
    they were (``--skip-existing``) are counted."""
    if json_out:
        typer.echo(json.dumps({"total": True, **t}))
        return
    if t.get("skipped"):
        typer.echo(f"{plural(len(t['skipped']), 'output')} already there, left as they are")
    if t["files"] > 1:
        typer.echo(f"{t['files']} files, {t['mpx']:.1f} Mpx in {t['seconds']:.1f} s: "
                   f"{t['mpx_per_s']:.1f} Mpx/s")


def _human(f: dict) -> str:
    """One file's result in words, by task."""
    if f["task"] == "height":
        return (f"heights min {f['height_min']} / median {f['height_median']} / max "
                f"{f['height_max']} m")
    if f["task"] == "segmentation":
        top = sorted(f["class_fractions"].items(), key=lambda kv: -kv[1])[:3]
        return "classes " + ", ".join(f"{n} {v:.0%}" for n, v in top)
    if f["task"] == "change":
        return f"{f['changed_fraction']:.1%} changed"
    return f"{f['rows']} rows"
