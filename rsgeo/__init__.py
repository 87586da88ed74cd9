"""rsgeo: building heights, change and damage from aerial RGB and surface models.

The library is the product; the ``rsgeo`` command line is a thin layer over it.
Heavy dependencies (torch, geopandas, onnxruntime) are imported lazily by the
modules that need them, so ``import rsgeo`` and ``rsgeo --help`` stay fast.
"""

__version__ = "0.1.0"

from rsgeo.train.threads import passive_openmp as _passive_openmp

_passive_openmp()  # OpenMP threads sleep, not spin, while waiting: see rsgeo.train.threads
