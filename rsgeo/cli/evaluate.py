"""``rsgeo evaluate PRED REF``: height, segmentation, change and footprint metrics."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE_OR_STDOUT, LabelMap, MaxPixels, Nodata, Overwrite,
                               output_option, print_table, to_stdout)
from rsgeo.errors import InputError
from rsgeo.jsonout import dumps


class Task(str, Enum):
    height = "height"
    segmentation = "segmentation"
    change = "change"
    footprints = "footprints"


class Protocol(str, Enum):
    rsgeo = "rsgeo"
    synrs3d = "synrs3d"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Align(str, Enum):
    nearest = "nearest"
    bilinear = "bilinear"


@app.command("evaluate", epilog=examples(
    'rsgeo evaluate heights.tif lidar_ndsm.tif',
    'rsgeo evaluate preds/ refs/ --format csv -o scores.csv  # paired by file name',
    'rsgeo evaluate buildings.gpkg reference.gpkg --task footprints --json | jq .f1'))
def evaluate_cmd(
    ctx: typer.Context,
    pred: Annotated[Path, typer.Argument(help="Prediction: raster, folder of rasters, or vectors.")],
    ref: Annotated[Path, typer.Argument(help="Reference, same kind as PRED.")],
    task: Annotated[Task, typer.Option("--task", help="What PRED and REF hold: height rasters, class rasters, change masks, or building polygons (footprints).")] = Task.height,
    protocol: Annotated[Protocol, typer.Option("--protocol", help="rsgeo (nodata-aware, pooled) or synrs3d (the published code's numbers).")] = Protocol.rsgeo,
    fmt: Annotated[Format, typer.Option("--format", help="table, json (flat keys) or csv (one row per image + ALL).")] = Format.table,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json, the flag every other command takes.")] = False,
    output: output_option("Write the metrics to this file instead of printing them: JSON "
                          "(CSV with --format csv); - prints them as --json does.",
                          FILE_OR_STDOUT, optional=True) = None,
    align: Annotated[Optional[Align], typer.Option("--align", help="Resample PRED onto REF's grid.")] = None,
    nodata: Nodata = None,
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Segmentation: names of REF's class ids, JSON {id: name} or {id: {name, values: [mask values]}}, or id,name lines (the file prepare --classes reads).")] = None,
    ignore_index: Annotated[Optional[int], typer.Option("--ignore-index", help="Segmentation, change: reference value to skip (e.g. 255).")] = None,
    iou: Annotated[float, typer.Option("--iou", help="Footprints: a match needs IoU > this.")] = 0.5,
    min_area: Annotated[Optional[float], typer.Option("--min-area", help="Footprints: drop polygons smaller than this area, in CRS units² (m² in a metric CRS; default 0) or, for SpaceNet CSVs, pixels² (default 20).")] = None,
    confidence: Annotated[Optional[str], typer.Option("--confidence", help="Footprints: visit predictions by this field, descending.")] = None,
    by: Annotated[Optional[str], typer.Option("--by", help="Footprints: score per value of this field (e.g. an image id).")] = None,
    absolute: Annotated[bool, typer.Option("--absolute", help="Heights: accept values that look like absolute elevations (DSM/DTM).")] = False,
    max_height: Annotated[float, typer.Option("--max-height", metavar="M", help="Heights: refuse values above this (m).")] = 1000.0,
    label_map: LabelMap = None,
    max_pixels: MaxPixels = None,
    overwrite: Overwrite = False,
):
    """Score PRED against REF: F1^HE/MAE/RMSE/delta (height), IoU/mIoU/OA (segmentation),
    change IoU/F1, or SpaceNet-style footprint F1.

    Heights honour band scale/offset and units (cm, mm, ft).

    Refused (exit 2): a raster without a valid pixel, a raster without CRS whose grid is
    not the other's (nothing places it to align it), heights that look like
    absolute elevations (--absolute accepts them) or exceed --max-height,
    segmentation maps (PRED or REF) holding non-integer values, footprints that are
    not polygons."""
    # lazy: keep rsgeo --help fast
    from rsgeo.evaluate import evaluate, render
    from rsgeo.io.atomic import atomic_path, check_output

    if json_out:
        if fmt is Format.csv:
            raise InputError("--json and --format csv exclude each other")
        fmt = Format.json
    if to_stdout(ctx, "output"):  # -o -: what the file would hold, printed (as --json)
        output, fmt = None, Format.csv if fmt is Format.csv else Format.json
    if output is not None:  # refuse a bad output before the work, not after
        check_output(output, overwrite, inputs=(pred, ref))
    r = evaluate(pred, ref, task=task.value, protocol=protocol.value,
                 align=align.value if align else None, nodata=nodata,
                 classes=classes, ignore_index=ignore_index, iou=iou, min_area=min_area,
                 confidence=confidence, by=by, absolute=absolute, max_height=max_height,
                 label_map=label_map)
    summary = r["summary"]
    text = render(r, fmt.value) if fmt is not Format.table else None
    if output is not None:
        with atomic_path(output, overwrite, inputs=(pred, ref)) as tmp:
            tmp.write_text(text if text is not None else dumps(summary, indent=2))
    elif text is not None:
        typer.echo(text, nl=False)
    else:
        print_table(f"{task.value} ({protocol.value} protocol)", ("metric", "value"),
                    [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in summary.items()])
