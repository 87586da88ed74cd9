"""--max-pixels: rasters beyond the pixel budget are refused up front, by every command."""

import numpy as np
import pytest

from rsgeo.errors import InputError
from rsgeo.io import limits
from tests.conftest import make_raster
from tests.test_predict_height import ckpt  # noqa: F401 - the tiny height model


@pytest.fixture(autouse=True)
def _reset_budget(monkeypatch):
    monkeypatch.delenv("RSGEO_MAX_PIXELS", raising=False)
    limits.set_max_pixels(None)
    yield
    limits.set_max_pixels(None)


def huge_vrt(tmp_path, small, bands=1, name="huge.vrt"):
    """A VRT declaring 10^6 x 10^6 px over a small GeoTIFF (one line of XML per band)."""
    src = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="0">{small}</SourceFilename><SourceBand>1</SourceBand></SimpleSource>'
        "</VRTRasterBand>" for b in range(1, bands + 1))
    p = tmp_path / name
    p.write_text('<VRTDataset rasterXSize="1000000" rasterYSize="1000000"><SRS>EPSG:32633</SRS>'
                 "<GeoTransform>500000, 0.5, 0, 4100000, 0, -0.5</GeoTransform>"
                 f"{src}</VRTDataset>")
    return p


def test_budget_defaults_to_memory_and_can_be_set():
    assert limits.max_pixels() == limits.physical_memory() // 4 > 10 ** 8
    limits.set_max_pixels(100)
    assert limits.max_pixels() == 100
    with pytest.raises(InputError, match="exceeds the pixel budget"):
        limits.check_pixels(11, 10, "x.tif")
    limits.check_pixels(10, 10)
    with pytest.raises(InputError, match="positive"):
        limits.set_max_pixels(0)


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("RSGEO_MAX_PIXELS", "1e6")
    assert limits.max_pixels() == 10 ** 6
    monkeypatch.setenv("RSGEO_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="RSGEO_MAX_PIXELS"):
        limits.max_pixels()


def test_a_huge_vrt_is_refused_by_every_command_in_one_line(tmp_path, cli, ckpt):  # noqa: F811
    small = make_raster(tmp_path / "small.tif", np.full((1, 8, 8), 3, np.uint8))
    vrt = huge_vrt(tmp_path, small)
    rgb = huge_vrt(tmp_path, small, bands=3, name="huge_rgb.vrt")
    ref = make_raster(tmp_path / "ref.tif", np.full((1, 8, 8), 3.0, np.float32))
    cases = [
        ("predict-height", rgb, "-m", ckpt, "-o", tmp_path / "o1.tif"),
        ("evaluate", vrt, ref, "-o", tmp_path / "o2.json"),
        ("damage-map", vrt, vrt, "--heights", "-o", tmp_path / "o3.tif"),
        ("prepare", "--rgb", rgb, "-o", tmp_path / "o4"),
        ("prepare", "--dsm", vrt, "-o", tmp_path / "o5"),
    ]
    for args in cases:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert "huge" in err and "pixel budget" in err and len(err.strip().splitlines()) == 1, err
    assert not any((tmp_path / o).exists() for o in ("o1.tif", "o2.json", "o3.tif"))
    assert not list(tmp_path.rglob("*.npy"))


def test_max_pixels_option_refuses_a_small_raster_and_resets(tmp_path, cli):
    a = make_raster(tmp_path / "a.tif", np.full((1, 20, 20), 3.0, np.float32))
    code, _, err = cli("evaluate", a, a, "--max-pixels", "399")
    assert code == 2 and "a.tif" in err and "pixel budget of 0 Mpx" in err, err
    code, out, err = cli("evaluate", a, a, "--max-pixels", "400", "--format", "json")
    assert code == 0, err
    code, out, err = cli("evaluate", a, a, "--format", "json")  # the next run: the default
    assert code == 0, err
    code, _, err = cli("evaluate", a, a, "--max-pixels", "0")
    assert code == 2 and "--max-pixels" in err


def test_a_resampled_grid_beyond_the_budget_is_refused(tmp_path, cli):
    rgb = make_raster(tmp_path / "rgb.tif", np.full((3, 64, 64), 90, np.uint8))
    code, _, err = cli("prepare", "--rgb", rgb, "--gsd", "0.01", "--max-pixels", "1000000",
                       "-o", tmp_path / "c")
    assert code == 2 and "grid at 0.01 m/px" in err and "pixel budget" in err, err
