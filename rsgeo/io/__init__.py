"""The streaming raster core shared by every command.

- :mod:`rsgeo.io.raster`: open/validate rasters, grids, explicit alignment.
- :mod:`rsgeo.io.windows`: tile grids, strips, padded window reads.
- :mod:`rsgeo.io.writer`: GeoTIFF/COG output, the blended row-flushing writer.
- :mod:`rsgeo.io.reader`: parallel reads (a thread pool, one dataset handle per thread).
- :mod:`rsgeo.io.pipeline`: read -> model -> blend -> write over a whole raster.
- :mod:`rsgeo.io.atomic`: atomic outputs and the overwrite guard.
- :mod:`rsgeo.io.vector`: vector output with the driver chosen by extension.
"""

import os

# Bound GDAL's block cache so resident memory stays flat on large rasters. The readers
# decode every block once (strips, not overlapping tiles), so the cache only serves
# resampling (WarpedVRT) and small re-reads; set GDAL_CACHEMAX to override.

os.environ.setdefault("GDAL_CACHEMAX", "32")
