import numpy as np
import pytest
import rasterio

import rsgeo
from rsgeo.errors import InputError, OutputExistsError
from rsgeo.io.atomic import atomic_path
from rsgeo.io.pipeline import run_tiled
from rsgeo.io.raster import Grid, open_raster
from rsgeo.io.writer import BlendedWriter, HEIGHT_NODATA, open_output, ramp
from rsgeo.io.windows import TileGrid


def _blend(tmp_path, src, fn, tile=64, overlap=16, **kw):
    out = tmp_path / "out.tif"
    with open_raster(src) as ds, open_output(out, Grid.of(ds), overwrite=True) as dst:
        run_tiled(ds, dst, fn, tile=tile, overlap=overlap, batch_size=3, **kw)
    with rasterio.open(out) as ds:
        return ds.read(1), ds


def test_ramp_positive_and_untapered_at_scene_edges():
    w = ramp(64, 16, True, True)
    assert (w > 0).all() and w[20:44].min() == 1 and w[0] < 0.01
    assert (ramp(64, 16, False, False) == 1).all()
    np.testing.assert_allclose(w[:16] + w[:16][::-1], 1.0, atol=1e-6)  # partition of unity


@pytest.mark.parametrize("shape", [(300, 200), (64, 64), (40, 30), (257, 513)])
def test_constant_model_gives_constant_raster(tmp_path, raster_factory, shape):
    src = raster_factory(np.random.default_rng(0).integers(0, 255, (3, *shape), dtype=np.uint8))
    out, ds = _blend(tmp_path, src, lambda b: np.full((b.shape[0], 1, *b.shape[2:]), 7.5))
    assert out.shape == shape
    np.testing.assert_allclose(out, 7.5, rtol=1e-6)
    assert ds.crs is not None and ds.nodata == HEIGHT_NODATA


def test_identity_model_is_seamless(tmp_path, raster_factory):
    """A model that returns its (reflect-padded) input reproduces the input exactly."""
    yy, xx = np.mgrid[0:300, 0:250]
    smooth = (np.sin(yy / 17) + np.cos(xx / 23)).astype(np.float32)
    src = raster_factory(smooth)
    out, _ = _blend(tmp_path, src, lambda b: b[:, :1])
    np.testing.assert_allclose(out, smooth, atol=1e-5)


def test_georeferencing_copied(tmp_path, raster_factory):
    src = raster_factory(np.zeros((1, 70, 90), np.float32), gsd=0.3)
    _, ds = _blend(tmp_path, src, lambda b: b[:, :1])
    with rasterio.open(src) as s:
        assert ds.crs == s.crs and ds.transform == s.transform


def test_nodata_propagates(tmp_path, raster_factory):
    data = np.ones((1, 100, 100), np.float32)
    data[0, 10:20, 30:40] = -1
    src = raster_factory(data, nodata=-1)
    out, _ = _blend(tmp_path, src, lambda b: b[:, :1] * 2)
    assert (out[10:20, 30:40] == HEIGHT_NODATA).all()
    np.testing.assert_allclose(out[out != HEIGHT_NODATA], 2, rtol=1e-6)
    assert (out != HEIGHT_NODATA).sum() == 9900


def test_writer_memory_is_bounded_by_width(tmp_path):
    grid = Grid(None, rasterio.Affine(1, 0, 0, 0, -1, 0), 100, 5000)
    tiles = TileGrid(5000, 100, 64, 8)
    with open_output(tmp_path / "x.tif", grid) as dst:
        bw = BlendedWriter(dst, tiles)
        for w in tiles:
            bw.add(w, np.ones((1, 64, 64), np.float32))
        bw.close()
        assert bw.peak_rows <= 64 + 2 * 256  # rows held: tile + two blocks, not the height


def test_atomic_output_removed_on_failure_and_guarded(tmp_path):
    out = tmp_path / "a.tif"
    grid = Grid(None, rasterio.Affine(1, 0, 0, 0, -1, 0), 10, 10)
    with pytest.raises(RuntimeError):
        with open_output(out, grid) as dst:
            dst.write(np.zeros((1, 10, 10), np.float32))
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(out) as tmp:
            tmp.write_text("partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    out.write_text("keep")
    with pytest.raises(OutputExistsError):
        with open_output(out, grid):
            pass
    assert out.read_text() == "keep"
    with open_output(out, grid, overwrite=True) as dst:
        dst.write(np.zeros((1, 10, 10), np.float32))
    assert rasterio.open(out).count == 1


def test_cog_copy(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS
    grid = Grid(CRS.from_epsg(32633), Affine(0.5, 0, 5e5, 0, -0.5, 4e6), 600, 600)
    out = tmp_path / "c.tif"
    with open_output(out, grid, cog=True) as dst:
        dst.write(np.random.default_rng(0).random((1, 600, 600)).astype(np.float32))
    with rasterio.open(out) as ds:
        assert ds.overviews(1) and ds.profile.get("tiled")
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.tags()["TIFFTAG_SOFTWARE"] == f"rsgeo {rsgeo.__version__}"  # kept in the COG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif"]
    with open_output(tmp_path / "g.tif", grid, tags={"task": "height"}) as dst:
        dst.write(np.zeros((1, 600, 600), np.float32))
    with rasterio.open(tmp_path / "g.tif") as ds:
        assert ds.tags()["TIFFTAG_SOFTWARE"] == f"rsgeo {rsgeo.__version__}"
        assert ds.tags()["task"] == "height"


def test_creation_options_gdal_rejects_are_an_error_and_leave_nothing(tmp_path, cli):
    from affine import Affine
    from rasterio.crs import CRS

    from rsgeo.errors import InputError

    grid = Grid(CRS.from_epsg(32633), Affine(0.5, 0, 500000, 0, -0.5, 4100000), 32, 32)
    out = tmp_path / "x.tif"
    with pytest.raises(InputError, match="COMPRESS"):
        with open_output(out, grid, co={"COMPRESS": "NOPE"}) as dst:
            dst.write(np.zeros((1, 32, 32), np.float32))
    assert list(tmp_path.iterdir()) == []
    h = np.zeros((64, 64), np.float32)
    h[:, :20] = 8.0
    from tests.conftest import make_raster

    a = make_raster(tmp_path / "pre.tif", h, nodata=-9999)
    b = make_raster(tmp_path / "post.tif", h * 0, nodata=-9999)
    code, _, err = cli("damage-map", a, b, "-o", tmp_path / "d.tif", "--co", "COMPRESS=NOPE")
    assert code == 2 and "creation options" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["post.tif", "pre.tif"]


def test_rasters_are_written_under_geotiff_names_only(tmp_path):
    """open_output wrote a GeoTIFF under any name (out.png): the last line of defence
    behind each command's own check."""
    grid = Grid(None, rasterio.Affine(0.5, 0, 500000, 0, -0.5, 4100000), 8, 8)
    for name in ("out.png", "out.jpg", "out"):
        with pytest.raises(InputError, match="GeoTIFF"):
            with open_output(tmp_path / name, grid):
                pass
    assert not list(tmp_path.iterdir())
    with open_output(tmp_path / "ok.TIFF", grid) as dst:
        dst.write(np.zeros((1, 8, 8), np.float32))
