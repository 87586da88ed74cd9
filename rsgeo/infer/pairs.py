"""PRE and POST images as one raster for change models: POST aligned onto PRE's grid.

As ``damage-map`` does, POST is resampled (bilinear) onto PRE's grid when the grids
differ, with a warning; grids that do not overlap are refused (one line, exit 2). The
aligned POST is written once to a temporary GeoTIFF (streamed in strips), then a small VRT
stacks PRE's bands and POST's bands (``2 x bands``), so the tile readers see one raster
and the model gets ``pre = bands[:C]``, ``post = bands[C:]`` (see
:func:`rsgeo.infer.session.split_pair`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from xml.sax.saxutils import escape

from rsgeo.errors import InputError
from rsgeo.io.atomic import write_work_text
from rsgeo.io.raster import Grid, align_to, check_overlap, open_raster
from rsgeo.io.windows import strips
from rsgeo.io.writer import open_output

log = logging.getLogger("rsgeo.infer")

GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
              "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}


def pair_nodata(pre, post, override: float | None) -> float | None:
    """The one nodata value of the stacked pair: ``override``, PRE's, POST's, or 0 when
    POST must be resampled (pixels outside it need a value that reads as nodata)."""
    for v in (override, pre.nodata, post.nodata):
        if v is not None:
            return v
    return None if Grid.of(post).same_as(Grid.of(pre)) else 0


def stack_pair(pre_path, post_path, bands: int, workdir: Path, nodata: float | None) -> Path:
    """A VRT in ``workdir`` stacking PRE's bands and POST's bands on PRE's grid.

    Refused (InputError): grids that do not overlap, different data types, band counts
    other than ``bands``.
    """
    with open_raster(pre_path, bands=bands, purpose=f"PRE image for this {bands}-band model") \
            as pre, open_raster(post_path, bands=bands,
                                purpose=f"POST image for this {bands}-band model") as post:
        grid = Grid.of(pre)
        check_overlap(grid, Grid.of(post), str(pre_path), str(post_path))
        if pre.dtypes[0] != post.dtypes[0]:
            raise InputError(f"POST is {post.dtypes[0]} but PRE is {pre.dtypes[0]}; give both "
                             "images in the same data type", post_path)
        dtype = pre.dtypes[0]
        nd = pair_nodata(pre, post, nodata)
        post_file = Path(post_path)
        if not Grid.of(post).same_as(grid):
            log.warning("%s: resampled (bilinear) onto the grid of %s (%s)", post_path, pre_path,
                        grid.describe())
            post_file = workdir / "post_aligned.tif"
            with align_to(post, grid, "bilinear", nodata=nd) as vrt, \
                    open_output(post_file, grid, count=bands, dtype=dtype, nodata=nd) as dst:
                for win in strips(grid.height, grid.width, 512):
                    dst.write(vrt.read(window=win), window=win)
    path = workdir / "pair.vrt"
    return write_work_text(path, _vrt(grid, dtype, nd, [(Path(pre_path), bands),
                                                        (post_file, bands)]))


def _vrt(grid: Grid, dtype: str, nodata, sources: list[tuple[Path, int]]) -> str:
    """VRT XML: the bands of ``sources`` (same grid) one after another."""
    if dtype not in GDAL_TYPES:
        raise InputError(f"image data type {dtype} is not supported for change pairs")
    gt = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs is not None:
        lines.append(f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>")
    lines.append(f"  <GeoTransform>{gt}</GeoTransform>")
    n = 0
    for path, count in sources:
        for b in range(1, count + 1):
            n += 1
            nd = "" if nodata is None else f"<NoDataValue>{vrt_number(nodata)}</NoDataValue>"
            lines.append(
                f'  <VRTRasterBand dataType="{GDAL_TYPES[dtype]}" band="{n}">{nd}'
                f'<SimpleSource><SourceFilename relativeToVRT="0">'
                f"{escape(str(path.resolve()))}</SourceFilename><SourceBand>{b}</SourceBand>"
                "</SimpleSource></VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def vrt_number(v) -> str:
    """A nodata value as VRT XML writes it (integers without a decimal point)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))
