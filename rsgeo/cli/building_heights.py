"""``rsgeo building-heights HEIGHTS --buildings FILE -o OUT``: how tall is each building."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import Json, Output, Overwrite, emit


@app.command("building-heights")
def building_heights_cmd(
    heights: Annotated[Path, typer.Argument(help="Heights above ground (m): an nDSM or predict-height's output; with --dtm a DSM.")],
    buildings: Annotated[Path, typer.Option(
        "--buildings", help="Building polygons (any OGR format or GeoParquet, with a CRS).")],
    output: Output,
    dtm: Annotated[Optional[Path], typer.Option(
        "--dtm", help="Terrain model (m): HEIGHTS is a DSM; the DTM is subtracted.")] = None,
    prefix: Annotated[str, typer.Option(
        "--prefix", help="Prepended to the new column names (when the footprints already have a height_m).")] = "",
    max_height: Annotated[float, typer.Option(
        "--max-height", metavar="M", help="Refuse heights above this (m).")] = 1000.0,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Measure every building of --buildings on a height raster and write the polygons with
    height_m (95th percentile of the pixels inside: a robust maximum), height_median_m,
    height_mean_m, volume_m3, measured_px and coverage (inside, partly outside, outside, no
    valid pixel) into OUTPUT (.gpkg, .geojson, .parquet, .fgb), in the raster's CRS.

    Heights from imagery: rsgeo predict-height IMAGE -m MODEL -o h.tif first.

    Refused (exit 2): no CRS, no overlap, no valid height, absolute elevations without
    --dtm (a DSM), non-polygon buildings, a column name already taken (use --prefix), an
    existing output without --overwrite.
    """
    from rsgeo.footprints.heights import building_heights  # lazy: keep rsgeo --help fast

    s = building_heights(heights, buildings, output, dtm=dtm, prefix=prefix,
                         max_height=max_height, overwrite=overwrite)
    median = "" if s["median_height_m"] is None else f", median height {s['median_height_m']} m"
    emit(s, json_out, f"{s['output']}: {s['measured']} of {s['features']} buildings measured"
                      f"{median} ({s['partly_outside']} partly outside, {s['outside']} outside, "
                      f"{s['no_valid_pixel']} without a valid pixel)")
