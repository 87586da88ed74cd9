"""--bands: one band choice (rsgeo.io.bands) for predict-height, prepare and damage-map."""

import json
import logging

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rsgeo.errors import InputError
from rsgeo.infer.predict import predict_height_file
from rsgeo.io.bands import BandChoice, choose_bands, open_image, parse_bands
from tests.conftest import make_raster
from tests.test_predict_height import CFG, META, ckpt  # noqa: F401 - the tiny height model


def first_band_runner():
    """A 'model' whose height is the first normalised input band (band order visible)."""
    class R:
        device = "cpu"

        def __call__(self, batch):
            return batch[:, :1].copy()
    return R(), META, CFG


def _img(h=70, w=80, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(10, 250, (3, h, w)).astype(np.uint8)


def _rgba(path, rgb, alpha):
    with rasterio.open(path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1],
                       count=4, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4100000, 0.5, 0.5), photometric="RGB",
                       alpha="YES") as dst:
        dst.write(np.concatenate([rgb, alpha[None]]))
    return path


def _expected(band):
    return (band.astype(np.float32) - 120) / 50


def test_parse_bands():
    assert parse_bands("3,2,1") == (3, 2, 1) and parse_bands(None) is None
    for bad in ("a,b", "0,1,2", "1,,2"):
        with pytest.raises(InputError, match="--bands"):
            parse_bands(bad)


def test_choose_bands_defaults_and_errors(tmp_path, caplog):
    rgb = _img(16, 16)
    four = _rgba(tmp_path / "rgba.tif", rgb, np.full((16, 16), 255, np.uint8))
    pan = make_raster(tmp_path / "pan.tif", rgb[:1])
    five = make_raster(tmp_path / "five.tif", np.zeros((5, 16, 16), np.uint16))
    with rasterio.open(four) as ds:
        assert choose_bands(ds, four, 3, None) == BandChoice((1, 2, 3), 4)
        assert choose_bands(ds, four, 3, (3, 2, 1)) == BandChoice((3, 2, 1), 4)
        assert choose_bands(ds, four, 3, (4, 2, 1)).alpha is None  # alpha picked: no mask
    with caplog.at_level(logging.WARNING), rasterio.open(pan) as ds:
        assert choose_bands(ds, pan, 3, None) == BandChoice((1, 1, 1), None, True)
    assert "replicated" in caplog.text
    with rasterio.open(five) as ds:
        with pytest.raises(InputError, match="5 band.*--bands"):
            choose_bands(ds, five, 3, None)
        with pytest.raises(InputError, match="has 5 band"):
            choose_bands(ds, five, 3, (1, 2, 6))
        with pytest.raises(InputError, match="picks 2 band"):
            choose_bands(ds, five, 3, (1, 2))
        assert choose_bands(ds, five, 3, (4, 3, 2)).indexes == (4, 3, 2)


def test_bgr_is_read_as_rgb_with_bands_3_2_1(tmp_path):
    rgb = _img()
    src = make_raster(tmp_path / "bgr.tif", rgb[::-1].copy())
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=first_band_runner(), tile=64,
                            overlap=16, bands="3,2,1")
    with rasterio.open(tmp_path / "h.tif") as ds:
        np.testing.assert_allclose(ds.read(1), _expected(rgb[0]), atol=1e-4)
        assert ds.tags()["input_bands"] == "3,2,1"
    assert r["input_bands"] == {"indexes": [3, 2, 1], "alpha_mask": None, "mask_band": False,
                                 "replicated": False}
    # views of the file read in parallel threads see the same chosen bands
    with open_image(src, bands=(3, 2, 1)) as (ds, _):
        np.testing.assert_array_equal(ds.read(), rgb)


def test_rgba_alpha_is_the_valid_mask(tmp_path):
    rgb = _img()
    alpha = np.full(rgb.shape[1:], 255, np.uint8)
    alpha[:20, :30] = 0
    src = _rgba(tmp_path / "rgba.tif", rgb, alpha)
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=first_band_runner(), tile=64,
                            overlap=16)
    h = rasterio.open(tmp_path / "h.tif").read(1)
    assert (h[:20, :30] == -9999).all()
    np.testing.assert_allclose(h[20:], _expected(rgb[0])[20:], atol=1e-4)
    assert r["input_bands"] == {"indexes": [1, 2, 3], "alpha_mask": 4, "mask_band": False,
                                 "replicated": False}


def test_rgba_alpha_and_a_user_nodata_both_mask(tmp_path):
    rgb = _img()
    rgb[:, 40:, 50:] = 0
    alpha = np.full(rgb.shape[1:], 255, np.uint8)
    alpha[:20, :30] = 0
    src = _rgba(tmp_path / "rgba.tif", rgb, alpha)
    predict_height_file(src, "x", tmp_path / "h.tif", runner=first_band_runner(), tile=64,
                        overlap=16, nodata=0)
    h = rasterio.open(tmp_path / "h.tif").read(1)
    assert (h[:20, :30] == -9999).all() and (h[40:, 50:] == -9999).all()
    assert (h[20:40] != -9999).all()


def test_panchromatic_is_replicated_with_one_warning_line(tmp_path, cli, caplog):
    pan = _img()[:1]
    src = make_raster(tmp_path / "pan.tif", pan)
    with caplog.at_level(logging.WARNING):
        r = predict_height_file(src, "x", tmp_path / "h.tif", runner=first_band_runner(),
                                tile=64, overlap=16)
    assert sum("replicated" in m for m in caplog.messages) == 1
    np.testing.assert_allclose(rasterio.open(tmp_path / "h.tif").read(1), _expected(pan[0]),
                               atol=1e-4)
    assert r["input_bands"]["replicated"] is True


def test_cli_bands_errors_are_one_line(tmp_path, cli, ckpt):  # noqa: F811
    src = make_raster(tmp_path / "five.tif", np.zeros((5, 64, 64), np.uint16) + 7)
    model = ckpt
    for args, msg in ((["--bands", "1,2,9"], "has 5 band"), ([], "--bands"),
                      (["--bands", "x"], "--bands")):
        code, _, err = cli("predict-height", src, "-m", model, "-o", tmp_path / "o.tif", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o.tif").exists()


def _jpeg_with_mask(path, rgb, mask):
    """A JPEG/YCbCr GeoTIFF whose collar is marked by an internal GDAL mask, as orthophoto
    deliveries often are (no nodata value, no alpha)."""
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", width=rgb.shape[2], height=rgb.shape[1], count=3,
            dtype="uint8", crs="EPSG:32633", transform=from_origin(500000, 4100000, 0.5, 0.5),
            tiled=True, blockxsize=64, blockysize=64, compress="jpeg",
            photometric="ycbcr") as dst:
        dst.write(rgb)
        dst.write_mask(mask)
    return path


def test_a_gdal_mask_band_is_the_valid_mask(tmp_path, cli):
    from rsgeo.data.dataset import ChipDataset

    rgb = _img(64, 128)
    mask = np.full((64, 128), 255, np.uint8)
    mask[:, 64:] = 0  # the right half is collar
    src = _jpeg_with_mask(tmp_path / "ortho.tif", rgb, mask)
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=first_band_runner(), tile=64,
                            overlap=16)
    h = rasterio.open(tmp_path / "h.tif").read(1)
    assert (h[:, 64:] == -9999).all() and (h[:, :64] != -9999).all()
    assert r["input_bands"]["mask_band"] is True
    code, out, err = cli("prepare", "--rgb", src, "-o", tmp_path / "chips", "--size", 64,
                         "--dedup-distance", 0, "--json")
    assert code == 0, err
    s = json.loads(out)["ortho"]
    assert s["kept"] == 1 and s["nodata"] == 1
    assert s["input_bands"] == {"rgb": "1,2,3 (mask band as mask)"}
    assert ChipDataset(tmp_path / "chips", split=None)[0]["rgb"].shape == (3, 64, 64)


def test_prepare_picks_bands_and_masks_alpha(tmp_path, cli):
    from rsgeo.data.dataset import ChipDataset

    rgb = _img(64, 128)
    bgr = make_raster(tmp_path / "bgr.tif", rgb[::-1].copy())
    code, out, err = cli("prepare", "--rgb", bgr, "--bands", "3,2,1", "-o", tmp_path / "a",
                         "--size", 64, "--dedup-distance", 0, "--split", "1,0,0", "--json",
                         "--scale", "none")
    assert code == 0, err
    assert json.loads(out)["bgr"]["input_bands"] == {"rgb": "3,2,1"}
    ds = ChipDataset(tmp_path / "a", split=None)
    np.testing.assert_array_equal(ds[0]["rgb"], rgb[:, :, :64])
    alpha = np.full((64, 128), 255, np.uint8)
    alpha[:, 64:] = 0  # the right chip is all transparent: nodata
    rgba = _rgba(tmp_path / "rgba.tif", rgb, alpha)
    code, out, err = cli("prepare", "--rgb", rgba, "-o", tmp_path / "b", "--size", 64,
                         "--dedup-distance", 0, "--json")
    assert code == 0, err
    s = json.loads(out)["rgba"]
    assert s["kept"] == 1 and s["nodata"] == 1 and s["input_bands"] == {
        "rgb": "1,2,3 (alpha 4 as mask)"}
    np.testing.assert_array_equal(ChipDataset(tmp_path / "b", split=None)[0]["rgb"],
                                  rgb[:, :, :64])


def test_damage_map_takes_bands_for_its_images(tmp_path, cli, ckpt):  # noqa: F811
    rgb = _img(64, 64)
    pre = make_raster(tmp_path / "pre.tif", np.concatenate([rgb[::-1], rgb[:1]]).astype(np.uint16))
    post = make_raster(tmp_path / "post.tif", np.concatenate([rgb[::-1], rgb[:1]]).astype(np.uint16))
    code, _, err = cli("damage-map", pre, post, "-m", ckpt, "-o", tmp_path / "d.tif")
    assert code == 2 and "--bands" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli("damage-map", pre, post, "-m", ckpt, "--bands", "3,2,1",
                         "-o", tmp_path / "d.tif", "--json")
    assert code == 0, err
    assert [i["input_bands"] for i in json.loads(out)["inputs"]] == ["3,2,1", "3,2,1"]


@pytest.mark.parametrize("dtype,value", [("uint8", 0), ("uint8", 128), ("uint8", 255),
                                         ("uint16", 3000)])
def test_masked_view_holds_alpha_and_nodata_in_one_value(tmp_path, dtype, value):
    from rasterio.enums import ColorInterp

    rng = np.random.default_rng(1)
    top = 255 if dtype == "uint8" else 5000
    a = rng.integers(0, top + 1, (4, 32, 32)).astype(dtype)
    a[3] = np.where(rng.random((32, 32)) < 0.3, 0, top)
    a[:3, 0, :5] = value
    p = make_raster(tmp_path / "m.tif", a)
    with rasterio.open(p, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.alpha]
    with open_image(p, nodata=value) as (ds, choice):
        assert choice.alpha == 4
        r = ds.read()
        expected = np.where((a[3] > 0)[None] & (a[:3] != value), a[:3].astype(np.int64),
                            ds.nodata)
        np.testing.assert_array_equal(r, expected)
        assert ds.nodata not in a[:3][(a[3] > 0)[None].repeat(3, 0) & (a[:3] != value)]
