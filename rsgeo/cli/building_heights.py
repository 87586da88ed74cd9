"""``rsgeo building-heights HEIGHTS --buildings FILE -o OUT``: how tall is each building."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (FILE, VECTOR_IN, VECTOR_OUT, Bands, Json, Overwrite, Scale,
                               emit, output_option)
from rsgeo.errors import InputError


class OutCrs(str, Enum):
    buildings = "buildings"
    raster = "raster"


@app.command("building-heights", epilog=examples(
    'rsgeo building-heights ndsm.tif --buildings fp.gpkg -o heights.gpkg',
    'rsgeo building-heights dsm.tif --dtm dtm.tif --buildings fp.gpkg -o h.gpkg',
    'rsgeo building-heights ortho.tif -m height.onnx --buildings fp.gpkg -o h.gpkg'))
def building_heights_cmd(
    heights: Annotated[Path, typer.Argument(help="Heights above ground (m): an nDSM or predict-height's output; with --dtm a DSM; with -m an image.")],
    buildings: Annotated[Path, typer.Option(
        "--buildings", help=f"Building polygons ({VECTOR_IN}; with a CRS).")],
    output: output_option(f"The polygons with their heights, to write: {VECTOR_OUT}.", FILE),
    dtm: Annotated[Optional[Path], typer.Option(
        "--dtm", help="Terrain model (m): HEIGHTS is a DSM; the DTM is subtracted.")] = None,
    model: Annotated[Optional[list[Path]], typer.Option(
        "-m", "--model", help="Height model: HEIGHTS is an image whose heights are predicted first (several -m: an ensemble, as in predict-height).")] = None,
    bands: Bands = None,
    scale: Scale = "percentile",
    prefix: Annotated[str, typer.Option(
        "--prefix", help="Prepended to the new column names (when the footprints already have a height_m).")] = "",
    compare: Annotated[Optional[str], typer.Option(
        "--compare", metavar="COLUMN", help="A column of reference heights (m) in --buildings: report bias, MAE, RMSE, r against it.")] = None,
    crs: Annotated[OutCrs, typer.Option(
        "--crs", help="The output's CRS: the footprints' own (default) or the height raster's.")] = OutCrs.buildings,
    max_height: Annotated[float, typer.Option(
        "--max-height", metavar="M", help="Refuse heights above this (m).")] = 1000.0,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Measure every building of --buildings on a height raster and write the polygons with
    height_m (95th percentile of the pixels inside: a robust maximum), height_median_m,
    height_mean_m, volume_m3, measured_px and coverage (inside, partly outside, outside, no
    valid pixel) into OUTPUT (its format by its extension), in the footprints' CRS
    (--crs raster: the height raster's).

    With -m MODEL, HEIGHTS is an image: predict-height runs first (its heights go to a
    temporary file; the summary's heights_from names the model).

    Refused (exit 2): no CRS, no overlap, no valid height, absolute elevations without
    --dtm (a DSM), non-polygon buildings, a column name already taken (use --prefix), an
    existing output without --overwrite.
    """
    # lazy: keep rsgeo --help fast
    from rsgeo.damage.buildings import predicted_building_heights
    from rsgeo.footprints.heights import building_heights

    opts = dict(prefix=prefix, compare=compare, crs=crs.value, max_height=max_height,
                overwrite=overwrite)
    if model:
        if dtm is not None:
            raise InputError("--dtm goes with a DSM, not with -m (predicted heights are above "
                             "ground already)", dtm)
        s = predicted_building_heights(heights, list(model), buildings, output,
                                       predict_kw={"bands": bands, "scale": scale}, **opts)
    else:
        if bands is not None:
            raise InputError("--bands chooses image bands for -m MODEL", heights)
        s = building_heights(heights, buildings, output, dtm=dtm, **opts)
    median = "" if s["median_height_m"] is None else f", median height {s['median_height_m']} m"
    line = (f"{s['output']}: {s['measured']} of {s['features']} buildings measured{median} "
            f"({s['partly_outside']} partly outside, {s['outside']} outside, "
            f"{s['no_valid_pixel']} without a valid pixel)")
    if "compare" in s:
        a = s["compare"]["median"]
        line += (f"\nmedian height vs {compare}: n {a['n']}" if a["n"] == 0 else
                 f"\nmedian height vs {compare}: bias {a['bias']:+.2f} m, MAE {a['mae']:.2f} m, "
                 f"RMSE {a['rmse']:.2f} m, r {a['r']}, within 1 m {a['within_1m']:.0%} "
                 f"(n {a['n']})")
    emit(s, json_out, line)
