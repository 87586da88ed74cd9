"""Shared fixtures: small georeferenced rasters made on the fly, the CLI runner, realdata."""

from __future__ import annotations

import os

# Before anything loads torch: OpenMP threads sleep while they wait (rsgeo.train.threads);
# spinning threads make tests on a shared 2-core machine many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
UTM = CRS.from_epsg(32633)


def make_raster(path, data, *, crs=UTM, transform=None, nodata=None, gsd=0.5,
                origin=(500000.0, 4100000.0)):
    """Write ``data`` (bands, h, w) or (h, w) as a GeoTIFF and return its path."""
    arr = data if data.ndim == 3 else data[None]
    if transform is None:
        transform = Affine(gsd, 0, origin[0], 0, -gsd, origin[1])
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype=arr.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(arr)
    return Path(path)


@pytest.fixture
def raster_factory(tmp_path):
    counter = {"n": 0}

    def factory(data, name=None, **kw):
        counter["n"] += 1
        return make_raster(tmp_path / (name or f"r{counter['n']}.tif"), data, **kw)

    return factory


@pytest.fixture
def cli(capsys):
    """Run ``rsgeo ARGS`` in-process; returns (exit_code, stdout, stderr)."""
    from rsgeo.cli.app import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def realdata():
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata not present")
    return REALDATA


@pytest.fixture
def rng():
    return np.random.default_rng(0)
