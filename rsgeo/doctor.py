"""``rsgeo doctor``: what this installation runs on, for bug reports and GPU set-up.

:func:`report` gathers, without starting any work: rsgeo's and Python's versions; torch (its
CUDA build, the devices it sees, bf16 on the CPU); ONNX Runtime (its providers, whether an
NVIDIA driver is present for the CUDA one); the geospatial stack (rasterio with its GDAL and
PROJ, shapely with GEOS, pyogrio, geopandas, pyproj); the threads rsgeo will use. A missing
optional package is reported as missing, never raised.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys

from rsgeo import __version__
from rsgeo.infer.session import cpu_has_bf16, cuda_driver_present
from rsgeo.io.reader import default_threads


def _version(name: str) -> str | None:
    try:
        return getattr(importlib.import_module(name), "__version__", "unknown")
    except ImportError:
        return None


def _torch() -> dict:
    try:
        import torch
    except ImportError:
        return {"version": None}
    cuda = torch.cuda.is_available()
    return {"version": torch.__version__, "cuda_build": torch.version.cuda,
            "cuda_available": cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if cuda else [],
            "cpu_bf16": cpu_has_bf16(), "threads": torch.get_num_threads()}


def _onnxruntime() -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        return {"version": None}
    return {"version": ort.__version__, "providers": ort.get_available_providers(),
            "nvidia_driver": cuda_driver_present()}


def _geo() -> dict:
    out: dict = {}
    try:
        import rasterio

        out.update(rasterio=rasterio.__version__, gdal=rasterio.__gdal_version__,
                   proj=getattr(rasterio, "__proj_version__", None))
    except ImportError:
        out["rasterio"] = None
    try:
        import shapely

        out.update(shapely=shapely.__version__, geos=shapely.geos_version_string)
    except ImportError:
        out["shapely"] = None
    out.update({name: _version(name) for name in ("pyogrio", "geopandas", "pyproj")})
    return out


def report() -> dict:
    """Versions, devices and threads as a JSON-able dict (see the module docstring)."""
    return {"rsgeo": __version__,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "numpy": _version("numpy"), "timm": _version("timm"),
            "torch": _torch(), "onnxruntime": _onnxruntime(), "geo": _geo(),
            "threads": {"cpus": os.cpu_count(), "io": default_threads(),
                        **{k: os.environ[k] for k in ("RSGEO_IO_THREADS", "OMP_NUM_THREADS")
                           if k in os.environ}}}
