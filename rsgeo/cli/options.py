"""Every shared option, defined once (rio style) and reused by every command.

Options (``Annotated`` aliases to use as parameter types):

- ``Output``       ``-o/--output PATH``       where to write (file or folder)
- ``Overwrite``    ``--overwrite``            replace an existing output (refused otherwise)
- ``CreationOpts`` ``--co KEY=VALUE``         GDAL creation options, repeatable
- ``Nodata``       ``--nodata V``             override the input's nodata value (``nan`` ok)
- ``Device``       ``--device cpu|cuda|auto`` where models run
- ``Json``         ``--json``                 machine-readable summary on stdout
- ``Seed``         ``--seed N``               random seed (runs are deterministic for a seed)
- ``Workers``      ``--workers N``            parallel workers (0 = in the main process)
- ``Cog``          ``--cog``                  copy raster outputs to Cloud Optimized GeoTIFF
- ``Compress``     ``--compress CODEC``       height outputs: zstd (default), deflate, lerc_zstd
- ``MaxZError``    ``--max-z-error M``        lerc_zstd: largest height error in metres

This module imports only typer, so ``rsgeo --help`` stays fast.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Codec(str, Enum):
    """Compression of height outputs (see ``rsgeo.io.writer.codec_co``)."""

    zstd = "zstd"
    deflate = "deflate"
    lerc_zstd = "lerc_zstd"


class Precision(str, Enum):
    """Training autocast precision (fp16: CUDA only)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _parse_nodata(value: Optional[str]) -> Optional[float]:
    if value is None:
        return None
    try:
        v = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a number (use e.g. -9999 or nan)") from None
    return v if not math.isnan(v) else float("nan")


def _check_co(values: Optional[list[str]]) -> list[str]:
    for item in values or []:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE")
    return values or []


Output = Annotated[Path, typer.Option("-o", "--output", help="Output path.")]
OptionalOutput = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output path.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
CreationOpts = Annotated[
    Optional[list[str]],
    typer.Option("--co", metavar="KEY=VALUE", callback=_check_co,
                 help="GDAL creation option for raster outputs (repeatable), "
                      "e.g. --co ZLEVEL=6 --co BLOCKXSIZE=512."),
]
Nodata = Annotated[
    Optional[str],
    typer.Option("--nodata", metavar="V", help="Override the input nodata value (number or nan)."),
]
Device = Annotated[
    DeviceChoice,
    typer.Option("--device", help="Where models run: auto picks CUDA when available."),
]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed.")]
Workers = Annotated[int, typer.Option("--workers", min=0, help="Parallel workers.")]
Cog = Annotated[bool, typer.Option("--cog", help="Write Cloud Optimized GeoTIFF (copy).")]
Compress = Annotated[
    Optional[Codec],
    typer.Option("--compress", help="Height output codec: zstd (default; lossless), deflate "
                                    "(lossless, most portable), lerc_zstd (lossy within "
                                    "--max-z-error, several times smaller)."),
]
MaxZError = Annotated[
    Optional[float],
    typer.Option("--max-z-error", min=0.0, metavar="M",
                 help="lerc_zstd: largest height error in metres (default 0.01)."),
]

Scale = Annotated[
    str,
    typer.Option("--scale", metavar="MODE",
                 help="Image values -> the 0-255 training scale: percentile (2-98 % stretch "
                      "of images wider than 8 bits), bitdepth, none, or MIN,MAX. Prepare and "
                      "predict use the same rule."),
]


def nodata_value(value: Optional[str]) -> Optional[float]:
    """The float of a ``--nodata`` string (None when not given)."""
    return _parse_nodata(value)

# --- imagery and limits (issue 14): --bands, --label-map, --max-pixels ---------------------

Bands = Annotated[
    Optional[str],
    typer.Option("--bands", metavar="B,G,R",
                 help="Image bands to use, 1-based in order (GDAL style): 1,2,3 takes RGB "
                      "from RGBA or RGBN, 3,2,1 reads BGR. Default: RGBA -> RGB with alpha "
                      "as valid mask; 1 band (panchromatic) replicated with a warning."),
]


def _check_label_map(values: Optional[list[str]]) -> list[str]:
    for item in values or []:
        for pair in item.split(","):
            a, sep, b = pair.partition(":")
            if not sep or not a.strip().lstrip("-").isdigit() or not b.strip().isdigit():
                raise typer.BadParameter(f"{pair!r} is not FROM:TO (integer mask value -> "
                                         "class id), e.g. 255:1")
    return values or []


LabelMap = Annotated[
    Optional[list[str]],
    typer.Option("--label-map", metavar="FROM:TO", callback=_check_label_map,
                 help="Recode mask values to class ids before anything else, repeatable or "
                      "comma-separated, e.g. --label-map 0:0,255:1 keeps a 0/255 building "
                      "mask's buildings (255 otherwise means ignore)."),
]


def _set_max_pixels(value: Optional[int]) -> Optional[int]:
    """Set the process-wide budget for this command (reset to the default when not given,
    so one in-process run never leaks its budget into the next)."""
    if value is not None and value < 1:
        raise typer.BadParameter(f"must be a positive pixel count, got {value}")
    from rsgeo.io import limits  # lazy: keeps `rsgeo --help` free of library imports

    limits.set_max_pixels(value)
    return value


MaxPixels = Annotated[
    Optional[int],
    typer.Option("--max-pixels", metavar="N", callback=_set_max_pixels,
                 help="Refuse rasters (inputs, resampled grids, outputs) larger than N "
                      "pixels (width x height). Default: RAM bytes / 4, i.e. one float32 "
                      "band of the raster fits in memory; env RSGEO_MAX_PIXELS."),
]
