"""What PRE and POST are (height rasters or images), and heights for images via a model."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError
from rsgeo.infer.predict import predict_height_file
from rsgeo.io.heights import declares_heights
from rsgeo.io.raster import open_raster


def kind_of(path: str | os.PathLike, force_heights: bool = False) -> str:
    """``"heights"`` (single-band float, single-band with a length unit or a scale/offset
    of its own, or forced) or ``"image"`` (anything else: a single-band integer raster in a
    compound CRS, which GDAL reports in the vertical axis's ``metre``, stays an image,
    :func:`rsgeo.io.heights.declares_heights`)."""
    with open_raster(path, purpose="pre/post raster") as ds:
        if force_heights:
            if ds.count != 1:
                raise InputError(f"--heights needs single-band height rasters, this one has "
                                 f"{ds.count} bands", path)
            return "heights"
        if ds.count == 1 and (np.dtype(ds.dtypes[0]).kind == "f" or declares_heights(ds)):
            return "heights"
        return "image"


def resolve_heights(pre: Path, post: Path, model, force_heights: bool,
                    workdir: Path, stack: ExitStack, before_predict=None,
                    **predict_kw) -> tuple[Path, Path, str]:
    """Return height rasters for PRE and POST, predicting them from images with ``model``
    (a path, or a list of paths: an ensemble). ``before_predict``: called (no arguments)
    once PRE and POST turned out to be images, before the first prediction -- the place
    for checks of other inputs that would otherwise fail only after minutes of it."""
    kinds = (kind_of(pre, force_heights), kind_of(post, force_heights))
    if kinds[0] != kinds[1]:
        img = pre if kinds[0] == "image" else post
        raise InputError("one input is an image and the other a height raster; give two "
                         "height rasters (nDSM, metres) or two images with -m MODEL", img)
    if kinds[0] == "heights":
        return pre, post, "heights"
    model = model or os.environ.get("RSGEO_MODEL")
    if not model:
        with open_raster(pre) as ds:
            single = ds.count == 1
        what = ("a single-band integer raster without a length unit or scale of its own "
                "(class ids or counts?)" if single else "an image (multi-band)")
        raise InputError(f"is {what}: heights must be predicted; pass -m MODEL (or set "
                         "RSGEO_MODEL), or --heights if it holds heights" + (
                             " (or set its unit: gdal_edit.py -units m)" if single else ""),
                         pre)
    if before_predict is not None:
        before_predict()
    out = []
    for p in (pre, post):
        dst = workdir / f"{Path(p).stem}_height.tif"
        predict_height_file(p, model, dst, overwrite=True, **predict_kw)
        out.append(dst)
    return out[0], out[1], "predicted"
