import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rsgeo.errors import InputError
from rsgeo.io.raster import open_raster
from rsgeo.io.windows import TileGrid, offsets, read_window, strips


@given(size=st.integers(1, 3000), tile=st.integers(8, 512), overlap_frac=st.floats(0, 0.9))
@settings(max_examples=200, deadline=None)
def test_tile_grid_covers_every_pixel_once_or_more_and_stays_inside(size, tile, overlap_frac):
    overlap = int(tile * overlap_frac)
    offs = offsets(size, tile, tile - overlap)
    cover = np.zeros(size, int)
    for o in offs:
        cover[o:o + tile] += 1
    assert (cover >= 1).all()
    if size >= tile:
        assert offs[-1] + tile == size  # last window snapped to the edge, never past it
        assert all(0 <= o <= size - tile for o in offs)
    else:
        assert offs == [0]
    assert offs == sorted(set(offs))


def test_tile_grid_rejects_bad_overlap():
    with pytest.raises(InputError):
        TileGrid(100, 100, 64, 64)
    with pytest.raises(InputError):
        TileGrid(100, 100, 0, 0)


def test_strips_partition_rows():
    ws = list(strips(1000, 7, 256))
    assert [int(w.row_off) for w in ws] == [0, 256, 512, 768]
    assert sum(int(w.height) for w in ws) == 1000


def test_read_window_pads_reflect_and_masks_outside(raster_factory):
    data = np.arange(5 * 6, dtype=np.float32).reshape(1, 5, 6)
    p = raster_factory(data)
    with open_raster(p) as ds:
        from rasterio.windows import Window
        arr, valid = read_window(ds, Window(0, 0, 8, 8), pad="reflect")
    assert arr.shape == (1, 8, 8) and valid.shape == (8, 8)
    assert valid[:5, :6].all() and not valid[5:, :].any() and not valid[:, 6:].any()
    np.testing.assert_array_equal(arr[0, :5, :6], data[0])
    np.testing.assert_array_equal(arr[0, 5, :6], data[0, 3])  # reflect about the last row
    with open_raster(p) as ds:
        arr, _ = read_window(ds, Window(0, 0, 8, 8), pad="constant", fill=-1)
    assert (arr[0, 5:] == -1).all()


def test_read_window_masks_nodata_and_nan(raster_factory):
    data = np.ones((2, 4, 4), np.float32)
    data[0, 1, 1] = -9999
    data[1, 2, 2] = np.nan
    p = raster_factory(data, nodata=-9999)
    with open_raster(p) as ds:
        from rasterio.windows import Window
        _, valid = read_window(ds, Window(0, 0, 4, 4))
    assert not valid[1, 1] and not valid[2, 2] and valid.sum() == 14
