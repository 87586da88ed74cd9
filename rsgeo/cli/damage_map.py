"""``rsgeo damage-map PRE POST``: height loss -> damage raster and damaged-building footprints."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import (Compress, CreationOpts, Json, MaxZError, OptionalOutput,
                               Overwrite)


class Event(str, Enum):
    earthquake = "earthquake"
    wildfire = "wildfire"
    custom = "custom"


@app.command("damage-map")
def damage_map_cmd(
    pre: Annotated[Path, typer.Argument(help="Pre-event nDSM (m) or image.")],
    post: Annotated[Path, typer.Argument(help="Post-event nDSM (m) or image.")],
    output: OptionalOutput = None,
    footprints: Annotated[Optional[Path], typer.Option(
        "--footprints", help="Vector output (.gpkg, .geojson, .parquet, .fgb); "
                             "default: OUTPUT with .gpkg.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "-m", "--model", help="Height model for image inputs (or env RSGEO_MODEL).")] = None,
    heights: Annotated[bool, typer.Option("--heights", help="Treat single-band inputs as heights.")] = False,
    buildings: Annotated[Optional[Path], typer.Option(
        "--buildings", help="Pre-event footprints: one output record per building.")] = None,
    event: Annotated[Event, typer.Option("--event", help="Threshold preset: earthquake 3 m, wildfire 1 m.")] = Event.earthquake,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Height loss (m) that counts as damaged.")] = None,
    min_height: Annotated[float, typer.Option("--min-height", help="Pre height (m) of a structure without footprints.")] = 2.5,
    min_area: Annotated[float, typer.Option("--min-area", help="Drop damaged regions smaller than this (m²).")] = 10.0,
    grades: Annotated[str, typer.Option("--grades", help="Loss thresholds, m or % of pre height.")] = "minor:10%,major:35%,destroyed:70%",
    co: CreationOpts = None,
    compress: Compress = None,
    max_z_error: MaxZError = None,
    json_out: Json = False,
    overwrite: Overwrite = False,
):
    """Map building damage from pre/post heights: a class raster (OUTPUT, with OUTPUT_loss.tif
    holding the height loss in metres) and footprints of damaged buildings or regions.

    Without -o, outputs go to the current folder as <PRE stem>_damage.tif/.gpkg.
    """
    from rsgeo.damage import damage_map
    from rsgeo.io.writer import parse_co

    summary = damage_map(pre, post, output, footprints, buildings=buildings, event=event.value,
                         threshold=threshold, min_height=min_height, min_area=min_area,
                         grades=grades, model=model, heights=heights, overwrite=overwrite,
                         co=parse_co(co), compress=compress.value if compress else None,
                         max_z_error=max_z_error)
    if json_out:
        import json

        typer.echo(json.dumps(summary))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"damage (height loss > {summary['threshold_m']:g} m)")
    table.add_column("grade")
    table.add_column("count", justify="right")
    for g, n in summary["by_grade"].items():
        table.add_row(g, str(n))
    console = Console()
    console.print(table)
    kind = "buildings" if summary["mode"] == "buildings" else "damaged regions"
    console.print(f"{summary['features']} {kind}; damaged area {summary['damaged_area_m2']:.0f} m², "
                  f"lost volume {summary['lost_volume_m3']:.0f} m³"
                  + ("; POST resampled onto PRE's grid" if summary["post_resampled"] else ""))
    for k, v in summary["outputs"].items():
        console.print(f"{k}: {v}")
