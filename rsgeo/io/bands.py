"""Which bands of an image a model or a chip sees (``--bands``), shared by every command.

``--bands 1,2,3`` (1-based, GDAL style) picks bands in the order given: ``3,2,1`` turns
BGR into RGB, ``4,3,2`` picks RGB from a Sentinel-2 stack. Without ``--bands``:

- an image with exactly the wanted band count is used as it is;
- an RGBA image (4 bands, the last one's colour interpretation alpha) gives its first
  three bands;
- a 1-band (panchromatic) image is replicated to the wanted count, with a warning, unless
  its band declares a length unit (an nDSM or DSM given for the image: refused);
- anything else is refused with a hint to pass ``--bands``.

An alpha band that is not picked becomes the valid mask: pixels whose alpha is 0 read as
nodata. So does a GDAL mask band (an internal mask or a ``.msk`` file, how JPEG-compressed
orthophotos usually mark their collar) of an image without nodata. The choice is a small VRT (GDAL XML in ``/vsimem``) over the source, so every
reader (parallel threads reopen datasets by name, WarpedVRTs on top) sees exactly the
chosen bands; the source itself is used directly when nothing changes.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from xml.sax.saxutils import escape

import numpy as np
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from rsgeo.errors import InputError
from rsgeo.io.heights import UNIT_FACTORS, band_unit
from rsgeo.io.raster import open_raster

log = logging.getLogger("rsgeo.io")

# uint8 images masked by alpha widen to UInt16 (values stay 0-255, so the stretch leaves
# them as they are) to free a nodata value that no real pixel can hold
_MASKED = {"uint8": ("UInt16", 65535), "int8": ("Int16", -32768), "uint16": ("Int32", -1),
           "int16": ("Int32", -2147483648), "uint32": ("Float64", float("nan")),
           "int32": ("Float64", float("nan")), "float32": ("Float32", float("nan")),
           "float64": ("Float64", float("nan"))}
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32", "float64": "Float64"}
_COLOURS = ("Red", "Green", "Blue")


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` (or a sequence of ints) -> ``(3, 2, 1)`` (1-based band indexes); None
    for None or empty text."""
    if text is None or not str(text).strip() or (isinstance(text, (tuple, list)) and not text):
        return None
    try:
        items = text if isinstance(text, (tuple, list)) else str(text).split(",")
        idx = tuple(int(v) for v in items)
    except ValueError:
        raise InputError(f"--bands takes comma-separated 1-based band numbers, e.g. 1,2,3; "
                         f"got {text!r}") from None
    if min(idx) < 1:
        raise InputError(f"--bands numbers are 1-based (GDAL style), got {text!r}")
    return idx


@dataclass(frozen=True)
class BandChoice:
    """The source bands (1-based) read, in order, and the alpha band or the file's GDAL mask
    band (``mask_band``) used as valid mask."""

    indexes: tuple[int, ...]
    alpha: int | None = None
    replicated: bool = False
    mask_band: bool = False

    @property
    def masked(self) -> bool:
        return bool(self.alpha) or self.mask_band

    def as_dict(self) -> dict:
        return {"indexes": list(self.indexes), "alpha_mask": self.alpha,
                "mask_band": self.mask_band, "replicated": self.replicated}

    def tag(self) -> str:
        """For output tags, e.g. ``"1,2,3 (alpha 4 as mask)"``."""
        s = ",".join(map(str, self.indexes))
        if self.replicated:
            s += " (panchromatic, replicated)"
        if self.alpha:
            s += f" (alpha {self.alpha} as mask)"
        elif self.mask_band:
            s += " (mask band as mask)"
        return s


def _alpha_band(ds) -> int | None:
    ci = ds.colorinterp
    return next((i + 1 for i, c in enumerate(ci) if c == ColorInterp.alpha), None)


def _has_mask_band(ds) -> bool:
    """A GDAL per-dataset mask (internal or ``.msk``) that is not alpha, and no nodata."""
    from rasterio.enums import MaskFlags

    return ds.nodata is None and set(ds.mask_flag_enums[0]) == {MaskFlags.per_dataset}


def choose_bands(ds, path, want: int | None, bands: tuple[int, ...] | None,
                 warn: bool = True) -> BandChoice:
    """The :class:`BandChoice` for the open image ``ds`` (see the module doc); with the
    file's mask band as valid mask when it has one (:func:`_has_mask_band`)."""
    choice = _choose(ds, path, want, bands, warn)
    if not choice.alpha and _has_mask_band(ds):
        return BandChoice(choice.indexes, None, choice.replicated, mask_band=True)
    return choice


def _choose(ds, path, want: int | None, bands: tuple[int, ...] | None,
            warn: bool = True) -> BandChoice:
    """The bands and alpha mask for ``ds`` (see the module doc).

    Args:
        want: the band count the caller needs (None: any, e.g. all bands).
        bands: the user's ``--bands`` (1-based), or None.
        warn: log the replication of a 1-band image (once per file is enough).
    """
    alpha = _alpha_band(ds)
    if bands is not None:
        if max(bands) > ds.count:
            raise InputError(f"--bands {','.join(map(str, bands))} but the image has "
                             f"{ds.count} band(s)", path)
        if want is not None and len(bands) != want:
            raise InputError(f"--bands picks {len(bands)} band(s), the model or chips need "
                             f"{want}", path)
        return BandChoice(bands, alpha if alpha not in bands else None)
    if want is None or ds.count == want:
        return BandChoice(tuple(range(1, ds.count + 1)))
    if alpha == ds.count and ds.count - 1 == want:
        return BandChoice(tuple(range(1, want + 1)), alpha)
    if ds.count == 1:
        _refuse_heights_as_image(ds, path, want)
        if warn:
            log.warning("%s: 1-band (panchromatic) image replicated to %d bands", path,
                        want)
        return BandChoice((1,) * want, None, True)
    raise InputError(f"image has {ds.count} band(s), {want} needed: pass --bands to pick them "
                     f"(e.g. --bands 1,2,3 for RGB first, 3,2,1 for BGR)", path)


def _refuse_heights_as_image(ds, path, want: int) -> None:
    """Refuse a 1-band raster whose band declares a length unit (an nDSM or DSM, ``metre``)
    where an image of ``want`` bands is needed: replicated as "panchromatic", it gave a
    model heights in metres for grey levels and a plausible-looking output."""
    unit, own = band_unit(ds)     # not a unit GDAL lends from a compound CRS; a scale alone
    if own and unit in UNIT_FACTORS:  # (reflectance) does not make heights either
        raise InputError(f"holds heights (band unit {unit}), not an "
                         f"image: the model or chips need {want} image bands (an RGB ortho); "
                         "--bands 1,1,1 uses it as a grey image anyway", path)


def _mask_xml(ds, src_nodata, out_nodata) -> str:
    """What a masked source writes: values where the alpha is non-zero, ``out_nodata``
    for pixels equal to ``src_nodata`` (a LUT; integer images). GDAL's own rule applies
    to a file that declares nodata: its nodata, not its alpha, is the mask."""
    if ds.nodata is not None:
        return f"<NODATA>{src_nodata!r}</NODATA>"
    xml = "<UseMaskBand>true</UseMaskBand>"
    if src_nodata is None or np.dtype(ds.dtypes[0]).kind == "f":
        return xml
    info = np.iinfo(ds.dtypes[0])
    v = int(src_nodata)
    points = {x: x for x in (info.min, v - 1, v + 1, info.max) if info.min <= x <= info.max}
    points[v] = out_nodata  # identity elsewhere (linear between integer knots)
    lut = ",".join(f"{x}:{int(points[x])}" for x in sorted(points))
    return f"{xml}<LUT>{lut}</LUT>"


def _vrt_xml(ds, path: Path, choice: BandChoice, src_nodata=None) -> str:
    dtype = ds.dtypes[0]
    src_nodata = ds.nodata if src_nodata is None else src_nodata
    gtype, nodata = _GDAL_TYPES[dtype], ds.nodata
    if choice.masked:
        gtype, nodata = _MASKED[dtype]
    t = ds.transform
    srs = f"<SRS>{escape(ds.crs.to_wkt())}</SRS>" if ds.crs else ""
    src = escape(str(path.resolve()))
    bh, bw = ds.block_shapes[0]
    props = (f'<SourceProperties RasterXSize="{ds.width}" RasterYSize="{ds.height}" '
             f'DataType="{_GDAL_TYPES[dtype]}" BlockXSize="{bw}" BlockYSize="{bh}"/>')
    rect = f'xOff="0" yOff="0" xSize="{ds.width}" ySize="{ds.height}"'
    out = [f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}">', srs,
           f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"]
    for k, i in enumerate(choice.indexes, start=1):
        colour = _COLOURS[k - 1] if len(choice.indexes) == 3 else "Undefined"
        nd = "" if nodata is None else \
            f"<NoDataValue>{'nan' if np.isnan(nodata) else repr(nodata)}</NoDataValue>"
        kind, extra = ("ComplexSource", _mask_xml(ds, src_nodata, nodata)) if choice.masked \
            else ("SimpleSource", "")
        out.append(f'<VRTRasterBand dataType="{gtype}" band="{k}" blockXSize="{min(bw, 512)}" '
                   f'blockYSize="{min(bh, 512)}">{nd}<ColorInterp>{colour}</ColorInterp>'
                   f'<{kind}><SourceFilename relativeToVRT="0">{src}</SourceFilename>'
                   f"<SourceBand>{i}</SourceBand>{props}<SrcRect {rect}/><DstRect {rect}/>"
                   f"{extra}</{kind}></VRTRasterBand>")
    out.append("</VRTDataset>")
    return "".join(out)


@contextmanager
def open_image(path: str | os.PathLike, *, want: int | None = 3,
               bands: tuple[int, ...] | None = None, purpose: str = "image",
               warn: bool = True, nodata: float | None = None,
               **kw) -> Iterator[tuple[object, BandChoice]]:
    """Yield ``(dataset, choice)``: ``path`` seen through its :class:`BandChoice`.

    The dataset has exactly the chosen bands in order (a VRT in ``/vsimem`` when they
    differ from the file's, readable by name from any thread while the context is open).
    With an alpha mask, the dataset's nodata marks both alpha-0 pixels and source pixels
    equal to ``nodata`` (the user's ``--nodata``, else the file's): use ``ds.nodata`` then.
    Other keyword arguments go to :func:`rsgeo.io.raster.open_raster`.
    """
    p = Path(path)
    with open_raster(p, purpose=purpose, **kw) as src:
        choice = choose_bands(src, p, want, bands, warn)
        if choice.indexes == tuple(range(1, src.count + 1)) and not choice.masked:
            yield src, choice
            return
        xml = _vrt_xml(src, p, choice, nodata)
    with MemoryFile(xml.encode(), ext=".vrt") as mem, mem.open() as vrt:
        yield vrt, choice
