"""One rule for image values -> 0-255, shared by prepare and prediction."""

import numpy as np
import pytest
import rasterio

from rsgeo.errors import InputError
from rsgeo.io.stretch import image_stretch, parse_scale
from tests.conftest import make_raster


def test_modes(tmp_path):
    rng = np.random.default_rng(0)
    dark = rng.integers(100, 601, (3, 64, 64)).astype(np.uint16)
    with rasterio.open(make_raster(tmp_path / "d.tif", dark)) as ds:
        s = image_stretch(ds)
        lo, hi = np.percentile(dark, [2, 98])
        assert s.mode == "percentile" and s.scale == pytest.approx(255 / (hi - lo))
        chips = s.apply_uint8(dark)
        assert chips.dtype == np.uint8 and chips.min() == 0 and chips.max() == 255
        assert image_stretch(ds, "bitdepth").scale == pytest.approx(255 / 1023)
        assert image_stretch(ds, "none").identity
        assert image_stretch(ds, "100,600").offset == pytest.approx(100 * 255 / 500)
    u8 = rng.integers(0, 256, (3, 32, 32)).astype(np.uint8)
    with rasterio.open(make_raster(tmp_path / "u8.tif", u8)) as ds:
        assert image_stretch(ds).identity
    small = rng.integers(0, 256, (3, 32, 32)).astype(np.uint16)   # 8-bit data, wider type
    with rasterio.open(make_raster(tmp_path / "s.tif", small)) as ds:
        assert image_stretch(ds).identity


@pytest.mark.parametrize("text", ["percent", "5,5", "a,b", "1,nan"])
def test_bad_scale_is_an_input_error(text):
    with pytest.raises(InputError, match="--scale"):
        parse_scale(text)


def test_prepare_stretches_dark_16bit_imagery_like_prediction(tmp_path, cli):
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:128, 0:128]
    base = 300 + 200 * np.sin(yy / 7.0) * np.cos(xx / 5.0)
    img = (base[None] + rng.integers(0, 60, (3, 128, 128))).astype(np.uint16)
    src = make_raster(tmp_path / "dark.tif", img)
    code, _, err = cli("prepare", "--rgb", src, "-o", tmp_path / "chips", "--size", "64",
                       "--dedup-distance", "0", "--split", "1,0,0")
    assert code == 0, err
    from rsgeo.data.dataset import ChipDataset

    ds = ChipDataset(tmp_path / "chips", split=None)
    chips = np.stack([ds[i]["rgb"] for i in range(len(ds))])
    assert chips.dtype == np.uint8 and chips.max() == 255 and chips.min() == 0
    with rasterio.open(src) as r:
        expected = image_stretch(r).apply_uint8(img[:, :64, :64])
    assert any(np.array_equal(c, expected) for c in chips)
