"""``rsgeo footprints RASTER -o OUT``: building polygons from a probability, class or mask raster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE, VECTOR_OUT, Bands, Json, Overwrite, Scale, Surface, Workers,
                               output_option)
from rsgeo.errors import InputError
from rsgeo.jsonout import dumps


@app.command("footprints", epilog=examples(
    'rsgeo footprints landcover.tif --class 8 --heights ndsm.tif -o buildings.gpkg',
    'rsgeo footprints prob.tif --threshold 0.6 -o buildings.parquet --json',
    'rsgeo footprints ortho.tif -m seg.onnx --min-area 10 -o buildings.gpkg'))
def footprints_cmd(
    raster: Annotated[Path, typer.Argument(help="Building probability (float 0..1), class or 0/1 mask raster; with -m an image.")],
    output: output_option(f"Building polygons to write: {VECTOR_OUT}.", FILE),
    model: Annotated[Optional[Path], typer.Option(
        "-m", "--model", help="Segmentation model (.onnx, .ckpt or finetune run folder): RASTER is an image, buildings are its building class (the class named building, or --class ID).")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Probability rasters: building where >= this.")] = 0.5,
    classes: Annotated[Optional[list[float]], typer.Option(
        "--class", "--value", metavar="V",
        help="Class rasters: the value(s) that are building (repeatable), e.g. --class 8.")] = None,
    band: Annotated[Optional[int], typer.Option("--band", min=1, help="Band to read (required for multi-band rasters).")] = None,
    min_area: Annotated[float, typer.Option("--min-area", metavar="M2", help="Drop buildings smaller than this (m²).")] = 0.0,
    fill_holes: Annotated[bool, typer.Option("--fill-holes", help="Fill courtyards (holes are kept by default).")] = False,
    regularise: Annotated[bool, typer.Option("--regularise/--no-regularise", help="Right-angled outlines (default) or pixel outlines.")] = True,
    tolerance: Annotated[Optional[float], typer.Option(
        "--tolerance", metavar="M", help="Regularisation: deviation smoothed away (m; default one pixel).")] = None,
    heights: Annotated[Optional[Path], typer.Option(
        "--heights", help="nDSM (m): adds height_m (95th percentile of the roof), height_median_m, height_mean_m and volume_m3.")] = None,
    workers: Workers = 0,
    json_out: Json = False,
    bands: Bands = None,
    scale: Scale = "percentile",
    dsm: Surface = None,
    overwrite: Overwrite = False,
):
    """Trace one polygon per building (id, area_m2, pixels, score = mean probability;
    with --heights also height_m, height_median_m, height_mean_m, volume_m3) into OUTPUT (its format by its extension), in the
    raster's CRS.

    Float rasters are probabilities (building where >= --threshold); with --class, the
    listed values are building (e.g. land cover 8 of `rsgeo synth`); other integer rasters
    must be 0/1 (or 0/255) masks. Outlines are regularised to right angles along each
    building's dominant direction unless --no-regularise.

    With -m MODEL (a segmentation model) RASTER is an image: `rsgeo predict` gives the
    building class's probability, which is traced as above (the summary's buildings_from
    names the model and class).

    Refused (exit 2): a model of another task, no CRS, several bands without --band, no valid pixel, values that are
    neither probabilities nor a mask, an unknown output extension, an existing output
    without --overwrite.
    """
    # lazy: keeps `rsgeo --help` fast
    from rsgeo.damage.buildings import predicted_footprints
    from rsgeo.footprints import footprints

    common = dict(min_area=min_area, fill_holes=fill_holes, regularise=regularise,
                  tolerance=tolerance, heights=heights, overwrite=overwrite, workers=workers)
    if model is not None:
        if band is not None or len(classes or ()) > 1:
            raise InputError("with -m give at most one --class (the model's building class id) "
                             "and no --band", model)
        summary = predicted_footprints(raster, model, output, threshold=threshold,
                                       building=int(classes[0]) if classes else None,
                                       predict_kw={"bands": bands, "scale": scale, "dsm": dsm},
                                       **common)
    else:
        if bands is not None or dsm is not None:
            raise InputError(f"{'--bands' if dsm is None else '--dsm'} goes with -m MODEL (the "
                             "image's bands / heights); for a probability, class or mask raster"
                             " use --band", raster)
        summary = footprints(raster, output, threshold=threshold, classes=tuple(classes or ()),
                             band=band, **common)
    if json_out:
        typer.echo(dumps(summary))
        return
    typer.echo(f"{summary['features']} buildings ({summary['rule']}), "
               f"{summary['building_area_m2']:.0f} m² in all"
               + (f"; {summary['dropped_small']} under {summary['min_area_m2']:g} m² dropped"
                  if summary["dropped_small"] else "")
               + f"; {summary['megapixels']:.1f} Mpx in {summary['seconds']:.1f} s")
    if "buildings_from" in summary:
        b = summary["buildings_from"]
        typer.echo(f"buildings from {b['model']} (class {b['class']!r})")
    typer.echo(f"footprints: {summary['output']}")
