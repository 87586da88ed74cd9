"""The pixel budget (``--max-pixels``): rasters too large to handle are refused up front.

The budget is a pixel count (width x height) that no input raster, resampled working grid
or output may exceed. Streaming keeps what is *held* in memory small whatever the size,
but a raster beyond the budget would still take hours and terabytes of output (a 10^6 x
10^6 px VRT is one XML line), and some steps (connected regions, statistics) grow with the
raster. Default: the machine's physical memory in bytes / 4, so one float32 band of the
largest allowed raster would fit in RAM (16 GiB -> 4.3 Gpx, e.g. 65,000 x 65,000 px).

Order of precedence: :func:`set_max_pixels` (the CLI's ``--max-pixels``), the
``RSGEO_MAX_PIXELS`` environment variable, the default. GDAL's own block cache is bounded
separately (``GDAL_CACHEMAX``, see :mod:`rsgeo.io`).
"""

from __future__ import annotations

import os
from functools import lru_cache

from rsgeo.errors import InputError

_override: int | None = None


@lru_cache(maxsize=1)
def physical_memory() -> int:
    """Physical memory in bytes (psutil when installed, else ``os.sysconf``; 8 GiB if
    neither can tell). Asked once per process: every raster opened checks the pixel budget,
    and a missing psutil would otherwise be searched for on ``sys.path`` each time."""
    try:
        import psutil  # lazy: optional third-party

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def set_max_pixels(n: int | None) -> None:
    """Set the process-wide budget (None: back to the environment or the default)."""
    if n is not None and n < 1:
        raise InputError(f"--max-pixels must be a positive pixel count, got {n}")
    global _override
    _override = None if n is None else int(n)


def max_pixels() -> int:
    """The budget in pixels (see the module doc)."""
    if _override is not None:
        return _override
    env = os.environ.get("RSGEO_MAX_PIXELS")
    if env:
        try:
            n = int(float(env))
        except ValueError:
            raise InputError(f"RSGEO_MAX_PIXELS must be a pixel count, got {env!r}") from None
        if n >= 1:
            return n
        raise InputError(f"RSGEO_MAX_PIXELS must be positive, got {env!r}")
    return physical_memory() // 4


def check_pixels(width: int, height: int, path=None, what: str = "raster") -> None:
    """InputError (``path: problem``) when ``width x height`` exceeds the budget."""
    n, budget = int(width) * int(height), max_pixels()
    if n > budget:
        raise InputError(f"{what} of {width:,} x {height:,} px ({n / 1e6:,.0f} Mpx) exceeds "
                         f"the pixel budget of {budget / 1e6:,.0f} Mpx (--max-pixels or "
                         "RSGEO_MAX_PIXELS to raise it)", path)
