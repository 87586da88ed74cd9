import numpy as np
import pytest
from affine import Affine

from rsgeo.errors import GridMismatchError, InputError
from rsgeo.io.raster import Grid, align_to, check_overlap, check_same_grid, open_raster


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_raster(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputError, match="not a readable"):
        open_raster(bad)
    txt = tmp_path / "t.tif"
    txt.write_text("hello")
    with pytest.raises(InputError) as e:
        open_raster(txt)
    assert str(txt) in str(e.value)


def test_no_crs_and_band_count(raster_factory):
    p = raster_factory(np.zeros((3, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match="no CRS"):
        open_raster(p)
    p = raster_factory(np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(InputError, match="4 band"):
        open_raster(p, bands=3, purpose="RGB image")


def test_grid_mismatch_names_both(raster_factory):
    a = raster_factory(np.zeros((1, 8, 8), np.float32), name="a.tif")
    b = raster_factory(np.zeros((1, 8, 8), np.float32), name="b.tif", gsd=1.0)
    with open_raster(a) as da, open_raster(b) as db:
        with pytest.raises(GridMismatchError) as e:
            check_same_grid(da, db)
    assert "a.tif" in str(e.value) and "b.tif" in str(e.value)


def test_align_to_resamples_explicitly(raster_factory):
    a = raster_factory(np.arange(64, dtype=np.float32).reshape(1, 8, 8), gsd=1.0)
    b = raster_factory(np.zeros((1, 16, 16), np.float32), gsd=0.5)
    with open_raster(a) as da, open_raster(b) as db:
        with align_to(da, Grid.of(db), "nearest") as v:
            arr = v.read(1)
    assert arr.shape == (16, 16)
    assert arr[0, 0] == 0 and arr[0, 2] == 1 and arr[2, 0] == 8


def test_overlap(raster_factory):
    a = Grid(None, Affine(1, 0, 0, 0, -1, 100), 100, 100)
    b = Grid(None, Affine(1, 0, 500, 0, -1, 100), 100, 100)
    with pytest.raises(InputError, match="does not overlap"):
        check_overlap(a, b, "a", "b")
    check_overlap(a, a)
