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
    assert "--align bilinear" in str(e.value)


def test_same_grid_is_a_fraction_of_a_pixel_however_large_the_coordinates():
    # a UTM northing of 4.83e6 m: a tolerance relative to the coordinate would be 4.8 m
    base = Grid(None, Affine(0.5, 0, 560000.0, 0, -0.5, 4830000.0), 256, 256)
    moved = lambda dx, dy, da=0.0: Grid(None, Affine(0.5 + da, 0, 560000.0 + dx, 0, -0.5,
                                                     4830000.0 + dy), 256, 256)
    assert not base.same_as(moved(0, -4.0))    # 8 rows south
    assert not base.same_as(moved(0.5, 0))     # one column east
    assert not base.same_as(moved(0, -0.01))   # 2 % of a pixel
    assert base.same_as(moved(1e-9, -1e-9))    # rounding of the stored transform
    assert not base.same_as(moved(0, 0, 1e-4))  # pixel size off: 2.56 cm at the far edge
    assert base.same_as(moved(0, 0, 1e-12))


# a CRS without an authority code, as IGN's Montpellier ortho carries it (a WKT named
# "EPSG:2154" on an unnamed datum): messages name it, not its 600-character WKT
LCC_WKT = ('PROJCS["EPSG:2154",GEOGCS["unknown",DATUM["unnamed",SPHEROID["unretrievable - '
           'using WGS84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",'
           '0.0174532925199433]],PROJECTION["Lambert_Conformal_Conic_2SP"],PARAMETER['
           '"latitude_of_origin",46.5],PARAMETER["central_meridian",3],PARAMETER['
           '"standard_parallel_1",49],PARAMETER["standard_parallel_2",44],PARAMETER['
           '"false_easting",700000],PARAMETER["false_northing",6600000],UNIT["metre",1]]')


def test_a_crs_without_authority_code_is_named_in_one_short_line(raster_factory):
    from rasterio.crs import CRS

    from rsgeo.io.raster import crs_label

    crs = CRS.from_wkt(LCC_WKT)
    assert crs.to_epsg() is None and len(crs.to_string()) > 300
    assert crs_label(crs) == 'WKT "EPSG:2154" (no authority code)'
    assert crs_label(CRS.from_epsg(32631)) == "EPSG:32631" and crs_label(None) == "no CRS"
    a = raster_factory(np.zeros((1, 8, 8), np.float32), name="a.tif", crs=crs)
    b = raster_factory(np.zeros((1, 8, 8), np.float32), name="b.tif")
    with open_raster(a) as da, open_raster(b) as db:
        with pytest.raises(GridMismatchError) as e:
            check_same_grid(da, db)
    message = str(e.value)
    assert len(message.splitlines()) == 1, message
    assert len(message.replace(str(a), "").replace(str(b), "")) < 300, message
    assert 'WKT "EPSG:2154" (no authority code)' in message and "EPSG:32633" in message



def test_one_crs_label_for_rasterio_and_pyproj_crss_and_every_message():
    # rsgeo.io.buildings had its own crs_name: a pyproj CRS without code gave its bare name
    # ("EPSG:2154", read as a code), a rasterio one the first 40 characters of its WKT
    import pyproj
    from rasterio.crs import CRS

    import rsgeo.io.buildings as buildings
    from rsgeo.io.raster import crs_label

    assert not hasattr(buildings, "crs_name")
    for make in (CRS.from_user_input, pyproj.CRS.from_user_input):
        assert crs_label(make(LCC_WKT)) == 'WKT "EPSG:2154" (no authority code)'
        assert crs_label(make("EPSG:2154+5720")) == "EPSG:5698"  # compound: its own code
        assert crs_label(make("+proj=utm +zone=31 +datum=WGS84 +units=m")) == "EPSG:32631"
        # a PROJ string without code: GDAL names it "unknown"; the string itself says more
        label = crs_label(make("+proj=tmerc +lat_0=43 +lon_0=3.5 +k=1 +x_0=1000 +y_0=2000 "
                               "+ellps=GRS80 +units=m"))
        assert label.startswith('custom CRS "+proj=tmerc +lat_0=43 +lon_0=3.5') and \
            label.endswith('(no authority code)') and len(label) < 100, label
    outside = np.ones(2, bool)
    with pytest.raises(InputError) as e:
        buildings.report_outside(outside, "far.gpkg", pyproj.CRS.from_wkt(LCC_WKT),
                                 CRS.from_wkt(LCC_WKT), "skipped")
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "GEOGCS" not in message, message
    assert message.count('WKT "EPSG:2154" (no authority code)') == 2, message

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
