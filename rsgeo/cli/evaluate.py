"""``rsgeo evaluate PRED REF``: height, segmentation, change and footprint metrics."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import Nodata, OptionalOutput, Overwrite
from rsgeo.cli.options import LabelMap, MaxPixels


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


@app.command("evaluate")
def evaluate_cmd(
    pred: Annotated[Path, typer.Argument(help="Prediction: raster, folder of rasters, or vectors.")],
    ref: Annotated[Path, typer.Argument(help="Reference, same kind as PRED.")],
    task: Annotated[Task, typer.Option("--task")] = Task.height,
    protocol: Annotated[Protocol, typer.Option("--protocol", help="rsgeo (nodata-aware, pooled) or synrs3d (the published code's numbers).")] = Protocol.rsgeo,
    fmt: Annotated[Format, typer.Option("--format", help="table, json (flat keys) or csv (one row per image + ALL).")] = Format.table,
    output: OptionalOutput = None,
    align: Annotated[Optional[Align], typer.Option("--align", help="Resample PRED onto REF's grid.")] = None,
    nodata: Nodata = None,
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Class names: JSON {id: name} or id,name lines.")] = None,
    ignore_index: Annotated[Optional[int], typer.Option("--ignore-index", help="Reference value to skip.")] = None,
    iou: Annotated[float, typer.Option("--iou", help="Footprints: a match needs IoU > this.")] = 0.5,
    min_area: Annotated[Optional[float], typer.Option("--min-area", help="Footprints: drop smaller polygons (CRS units², SpaceNet CSV: 20 px²).")] = None,
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

    Refused (exit 2): a raster without a valid pixel, heights that look like
    absolute elevations (--absolute accepts them) or exceed --max-height,
    footprints that are not polygons."""
    import csv
    import io
    from rsgeo.jsonout import dumps

    from rsgeo.cli.options import nodata_value
    from rsgeo.evaluate import evaluate

    if output is not None:  # refuse a bad output before the work, not after
        from rsgeo.io.atomic import check_output

        check_output(output, overwrite, inputs=(pred, ref))
    r = evaluate(pred, ref, task=task.value, protocol=protocol.value,
                 align=align.value if align else None, nodata=nodata_value(nodata),
                 classes=classes, ignore_index=ignore_index, iou=iou, min_area=min_area,
                 confidence=confidence, by=by, absolute=absolute, max_height=max_height,
                 label_map=label_map)
    summary = r["summary"]
    if fmt is Format.json:
        text = dumps(summary) + "\n"
    elif fmt is Format.csv:
        rows = r["images"] + [{"image": "ALL", **summary}]
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
        text = buf.getvalue()
    else:
        text = None
    if output is not None:
        from rsgeo.io.atomic import atomic_path

        with atomic_path(output, overwrite, inputs=(pred, ref)) as tmp:
            tmp.write_text(text if text is not None else dumps(summary, indent=2))
        return
    if text is not None:
        typer.echo(text, nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{task.value} ({protocol.value} protocol)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in summary.items():
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(t)
