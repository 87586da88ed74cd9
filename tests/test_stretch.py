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


@pytest.mark.parametrize("dtype", ["uint16", "uint8"])
def test_prediction_samples_an_input_once(tmp_path, monkeypatch, dtype):
    """The stretch's decimated read also answers "any valid pixel?"; uint8 images (no
    stretch read) take the block sample instead; an all-nodata image is still refused."""
    from rsgeo.infer import predict
    from rsgeo.io import stretch as stretch_mod
    from rsgeo.io.heights import require_valid

    calls = {"image_sample": 0, "sample": 0}

    def counted(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapper

    img_sample = counted("image_sample", stretch_mod.image_sample)
    monkeypatch.setattr(stretch_mod, "image_sample", img_sample)
    monkeypatch.setattr(predict, "image_sample", img_sample)
    monkeypatch.setattr(predict, "sample", counted("sample", predict.sample))
    rng = np.random.default_rng(2)
    img = rng.integers(1, 250, (3, 40, 50)).astype(dtype)
    img[:, :20] = 0
    path = make_raster(tmp_path / "i.tif", img, nodata=0)
    with rasterio.open(path) as ds:
        got, ok = predict._stretch_and_valid(ds, "percentile", 0, path)
        assert calls == ({"image_sample": 1, "sample": 0} if dtype == "uint16"
                         else {"image_sample": 0, "sample": 1})
        assert got == image_stretch(ds) and ok.any() and not ok.all()
    empty = make_raster(tmp_path / "e.tif", np.zeros_like(img), nodata=0)
    with rasterio.open(empty) as ds:
        _, ok = predict._stretch_and_valid(ds, "percentile", 0, empty)
        with pytest.raises(InputError, match="no valid pixel"):
            require_valid(ds, 0, empty, ok)


def test_nan_pixels_become_0_without_a_warning():
    import warnings

    from rsgeo.io.stretch import Stretch

    a = np.array([[[np.nan, np.inf, -np.inf, 12.4]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "invalid value encountered in cast" before
        out = Stretch("minmax", 2.0, 4.0).apply_uint8(a)
    assert out.tolist() == [[[0, 255, 0, 21]]]
