"""``rsgeo damage-map PRE POST``: height loss -> damage raster and damaged-building footprints."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE, VECTOR_IN, VECTOR_OUT, Bands, Json, MaxPixels, RasterOutput, emit, output_option,
                               print_table, with_groups)


class Event(str, Enum):
    earthquake = "earthquake"
    wildfire = "wildfire"
    custom = "custom"


@app.command("damage-map", epilog=examples(
    'rsgeo damage-map pre_ndsm.tif post_ndsm.tif  # -> pre_ndsm_damage.tif/.gpkg',
    'rsgeo damage-map pre.tif post.tif --buildings fp.gpkg -o out/damage.tif',
    'rsgeo damage-map pre_rgb.tif post_rgb.tif -m height.onnx --json | jq .by_grade'))
@with_groups
def damage_map_cmd(
    pre: Annotated[Path, typer.Argument(help="Pre-event nDSM (m) or image.")],
    post: Annotated[Path, typer.Argument(help="Post-event nDSM (m) or image.")],
    output: output_option("Damage class raster (.tif), OUTPUT_loss.tif beside it (default: "
                          "<PRE stem>_damage.tif in the current folder).", FILE, optional=True) = None,
    footprints: Annotated[Optional[Path], typer.Option(
        "--footprints", metavar=FILE, help="Output vectors of the damaged buildings or regions "
                             f"({VECTOR_OUT}); default: OUTPUT with .gpkg. (Input "
                             "building polygons: --buildings.)")] = None,
    model: Annotated[Optional[list[str]], typer.Option(
        "-m", "--model", help="Height model for image inputs (or env RSGEO_MODEL); several "
        "-m: an ensemble, heights averaged as in predict-height.")] = None,
    heights: Annotated[bool, typer.Option("--heights", help="Treat single-band inputs as heights.")] = False,
    dtm: Annotated[Optional[Path], typer.Option(
        "--dtm", help="Terrain model (m): PRE and POST are DSMs; subtracted from both.")] = None,
    absolute: Annotated[bool, typer.Option(
        "--absolute", help="Accept heights that look like absolute elevations.")] = False,
    max_height: Annotated[float, typer.Option(
        "--max-height", metavar="M", help="Refuse heights above this (m).")] = 1000.0,
    buildings: Annotated[Optional[Path], typer.Option(
        "--buildings", help=f"Input pre-event building polygons ({VECTOR_IN}): one output record per building.")] = None,
    buildings_model: Annotated[Optional[Path], typer.Option(
        "--buildings-model", help="Segmentation model: grade the buildings it finds on the PRE image (instead of --buildings).")] = None,
    event: Annotated[Event, typer.Option("--event", help="Threshold preset: earthquake 3 m, wildfire 1 m.")] = Event.earthquake,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="Height loss (m) that counts as damaged.")] = None,
    min_height: Annotated[float, typer.Option("--min-height", help="Pre height (m) of a structure without footprints.")] = 2.5,
    min_area: Annotated[float, typer.Option("--min-area", help="Drop damaged regions smaller than this ground area (m²; without --buildings).")] = 10.0,
    grades: Annotated[str, typer.Option("--grades", help="Loss thresholds, m or % of pre height.")] = "minor:10%,major:35%,destroyed:70%",
    bands: Bands = None,
    max_pixels: MaxPixels = None,
    out: RasterOutput = RasterOutput(),
    json_out: Json = False,
):
    """Map building damage from pre/post heights: a class raster (OUTPUT, with OUTPUT_loss.tif
    holding the height loss in metres) and footprints of damaged buildings or regions.

    Without -o, outputs go to the current folder as <PRE stem>_damage.tif/.gpkg.

    Heights honour band scale/offset and units (cm, mm, ft).

    Buildings: --buildings FILE, or --buildings-model SEG_MODEL (found on the PRE image),
    else every pixel whose PRE height exceeds --min-height; the JSON says which
    (buildings_from).

    Refused (exit 2): an input without a valid pixel, absolute elevations
    (give --dtm or --absolute), heights above --max-height, non-polygon footprints,
    footprints none of which overlaps PRE (wrong CRS or zone), an OUTPUT not named .tif or
    .tiff (it is a GeoTIFF).
    """
    from rsgeo.damage import damage_map  # lazy: keep rsgeo --help fast

    summary = damage_map(pre, post, output, footprints, buildings=buildings, event=event.value,
                         threshold=threshold, min_height=min_height, min_area=min_area,
                         grades=grades, model=model or None, heights=heights,
                         overwrite=out.overwrite,
                         dtm=dtm, absolute=absolute, max_height=max_height,
                         co=out.creation_options, compress=out.codec,
                         max_z_error=out.max_z_error, buildings_model=buildings_model,
                         **({"bands": bands} if bands else {}))
    emit(summary, json_out, lambda: print_summary(summary))


def print_summary(summary: dict) -> None:
    """Counts per grade (a table), area, volume, what was not graded, and the outputs."""
    print_table(f"damage (height loss > {summary['threshold_m']:g} m)", ("grade", "count"),
                summary["by_grade"].items())
    kind = "buildings" if summary["mode"] == "buildings" else "damaged regions"
    typer.echo(f"{summary['features']} {kind}; damaged area {summary['damaged_area_m2']:.0f} m², "
               f"lost volume {summary['lost_volume_m3']:.0f} m³"
               + ("; POST resampled onto PRE's grid" if summary["post_resampled"] else ""))
    if summary["mode"] == "buildings":
        skipped = {k: summary[k] for k in ("outside", "partly_outside", "no_valid_pixel")
                   if summary[k]}
        if skipped:
            typer.echo("not graded: " + ", ".join(
                f"{n} {k.replace('_', ' ')}" for k, n in skipped.items() if k != "partly_outside")
                + (f"; {skipped['partly_outside']} partly outside (graded on the part inside)"
                   if "partly_outside" in skipped else ""))
    b = summary.get("buildings_from", {})
    if "model" in b:
        typer.echo(f"{b['buildings']} buildings found by {b['model']} (class {b['class']!r})")
    for k, v in summary["outputs"].items():
        typer.echo(f"{k}: {v}")
