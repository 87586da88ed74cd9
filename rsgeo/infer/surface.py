"""Height bands of a model's input (DSM, nDSM): read in metres, never stretched.

``rsgeo prepare`` stores DSM and nDSM chips in metres and fine-tuning feeds them as they
are (the checkpoint records mean 0, std 1 for them), so prediction must do the same: a
height band is read raw, whatever ``--scale`` does to image bands. A model trained on DSM
(or nDSM) alone reads the height raster given as its image. A model of RGB + DSM (or RGB +
nDSM) reads its heights from a second raster (``--dsm``), stacked after the image's bands
in a float32 VRT whose nodata is NaN: an image or DSM nodata pixel, or a pixel outside the
DSM, reads as NaN and is written as nodata. A DSM on another grid is resampled (bilinear)
onto the image's, with a warning, as POST is for change models (:mod:`rsgeo.infer.pairs`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from xml.sax.saxutils import escape

from rsgeo.errors import InputError
from rsgeo.infer.pairs import vrt_number
from rsgeo.io.atomic import write_work_text
from rsgeo.io.raster import Grid, align_to, check_overlap, open_raster
from rsgeo.io.windows import strips
from rsgeo.io.writer import open_output

log = logging.getLogger("rsgeo.infer")

HEIGHT_BANDS = ("dsm", "ndsm")


def height_bands(meta: dict, count: int) -> tuple[bool, ...]:
    """Per input band of the model: whether it is a height band (metres). Models whose
    metadata lists no band names (older or external ones) read images only."""
    names = meta.get("bands")
    if not isinstance(names, list) or len(names) != count:
        return (False,) * count
    return tuple(str(n).lower() in HEIGHT_BANDS for n in names)


def surface_name(meta: dict) -> str:
    """``DSM`` or ``nDSM``: the kind of height raster the model was trained on."""
    kinds = [str(n).lower() for n in meta.get("bands") or [] if str(n).lower() in HEIGHT_BANDS]
    return "nDSM" if kinds == ["ndsm"] else "DSM"


def surfaces_for(images: list, dsm, kinds: tuple[bool, ...], meta: dict,
                 model_path) -> dict[str, Path]:
    """``{image: its height raster}`` for a model of image + height bands (``dsm`` a file
    for one image, or a folder holding a raster of each image's file name); ``{}`` for
    other models. InputError when the model and ``--dsm`` do not go together."""
    what = f"takes {', '.join(map(str, meta.get('bands') or []))}"
    if not any(kinds) or all(kinds):
        if dsm is not None:
            hint = "give the height raster as its image" if any(kinds) else "it reads images only"
            raise InputError(f"{what}: --dsm is for models of RGB + DSM or RGB + nDSM ({hint})",
                             model_path)
        return {}
    if sum(kinds) != 1:
        raise InputError(f"{what}: one height band is supported", model_path)
    if dsm is None:
        raise InputError(f"{what}: give its {surface_name(meta)} raster (metres, the kind it "
                         "was trained on) with --dsm", model_path)
    dsm = Path(dsm)
    if any(isinstance(i, tuple) for i in images):
        raise InputError("--dsm does not go with PRE POST pairs", dsm)
    if not dsm.is_dir() and len(images) != 1:
        raise InputError("a --dsm file goes with one image; for several, give a folder "
                         "holding a raster of each image's file name", dsm)
    out = {str(i): dsm / Path(i).name if dsm.is_dir() else dsm for i in images}
    for image, path in out.items():
        if dsm.is_dir() and not path.exists():
            raise InputError(f"holds no {Path(image).name} for {image}", dsm)
    for path in dict.fromkeys(out.values()):  # refused now, not after the first files
        with open_raster(path, bands=1, purpose=f"{surface_name(meta)} for this model"):
            pass
    return out


def stack_surface(image, image_nodata, dsm_path: Path, kinds: tuple[bool, ...],
                  workdir: Path) -> Path:
    """A float32 VRT in ``workdir``: the open ``image``'s bands and ``dsm_path``'s band 1 in
    the model's order (``kinds``: True = the height band), on the image's grid, nodata NaN
    (``image_nodata`` and the DSM's nodata read as NaN)."""
    grid = Grid.of(image)
    with open_raster(dsm_path, bands=1, purpose="DSM / nDSM for this model") as dsm:
        check_overlap(grid, Grid.of(dsm), str(image.name), str(dsm_path))
        dsm_file, dsm_nd = Path(dsm_path).resolve(), dsm.nodata
        if not Grid.of(dsm).same_as(grid):
            log.warning("%s: resampled (bilinear) onto the grid of %s (%s)", dsm_path,
                        image.name, grid.describe())
            dsm_file, dsm_nd = workdir / "dsm_aligned.tif", (
                float("nan") if dsm.nodata is None else dsm.nodata)
            with align_to(dsm, grid, "bilinear", nodata=dsm_nd) as vrt, \
                    open_output(dsm_file, grid, count=1, dtype="float32", nodata=dsm_nd) as dst:
                for win in strips(grid.height, grid.width, 512):
                    dst.write(vrt.read(window=win).astype("float32"), window=win)
    sources, b = [], 0
    for is_height in kinds:
        if is_height:
            sources.append((str(dsm_file), 1, dsm_nd))
        else:
            b += 1
            sources.append((image.name, b, image_nodata))
    path = workdir / "surface.vrt"
    return write_work_text(path, _vrt(grid, sources))


def _vrt(grid: Grid, sources: list[tuple[str, int, float | None]]) -> str:
    """VRT XML: float32 bands from ``(file, band, nodata)`` sources on one grid, nodata NaN."""
    gt = ", ".join(repr(float(v)) for v in grid.transform.to_gdal())
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs is not None:
        lines.append(f"  <SRS>{escape(grid.crs.to_wkt())}</SRS>")
    lines.append(f"  <GeoTransform>{gt}</GeoTransform>")
    for n, (name, band, nodata) in enumerate(sources, 1):
        skip = "" if nodata is None or math.isnan(nodata) else \
            f"<NODATA>{vrt_number(nodata)}</NODATA>"
        lines.append(
            f'  <VRTRasterBand dataType="Float32" band="{n}"><NoDataValue>nan</NoDataValue>'
            f'<ComplexSource><SourceFilename relativeToVRT="0">{escape(name)}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand>{skip}</ComplexSource></VRTRasterBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"
