"""CRS and georeferencing edge cases of real orthophotos, reproduced on small generated
rasters: a CRS written as a custom WKT (IGN's "EPSG:2154" on an unnamed datum) against the
same CRS by code, grids in degrees a few pixels apart, images georeferenced by a world file
alone, and what a geographic input's warnings say. The real files they come from
(../shared/realdata) are checked at the end, skipped when absent."""

import json
import logging

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from rsgeo.errors import GridMismatchError, InputError
from rsgeo.infer.predict import predict_height_file
from rsgeo.io.raster import Grid, check_same_grid, open_raster
from tests.conftest import make_raster
from tests.test_io_raster import LCC_WKT
from tests.test_predict_height import mean_runner

L93 = CRS.from_epsg(2154)
CUSTOM = CRS.from_wkt(LCC_WKT)                     # the same projection, no authority code
T_L93 = Affine(0.5, 0, 770549.75, 0, -0.5, 6277600.25)


def _heights(path, crs, transform=T_L93, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.uniform(0, 12, (1, 40, 40)).astype(np.float32)
    h[0, :5, :5] = -9999
    return make_raster(path, h, crs=crs, transform=transform, nodata=-9999), h[0]


def test_a_custom_wkt_and_its_epsg_code_on_one_grid_are_the_same_grid():
    """IGN's ortho carries Lambert-93 as a WKT named "EPSG:2154" on an unnamed datum with
    WGS84's ellipsoid; rasterio calls the two CRSs different, PROJ places a point of one
    within 3 microns of the other. Same pixels: the same grid (either way round)."""
    assert CUSTOM != L93
    a, b = Grid(CUSTOM, T_L93, 100, 100), Grid(L93, T_L93, 100, 100)
    assert a.same_as(b) and b.same_as(a)
    check_same_grid(a, b)
    # still a different grid: one pixel east, or another projection with the same numbers
    assert not a.same_as(Grid(L93, T_L93 * Affine.translation(1, 0), 100, 100))
    assert not a.same_as(Grid(CRS.from_epsg(27572), T_L93, 100, 100))
    assert not a.same_as(Grid(CRS.from_epsg(4326), Affine(1e-5, 0, 3.87, 0, -1e-5, 43.6),
                              100, 100))


def test_evaluate_and_damage_map_read_an_equivalent_crs_pixel_for_pixel(tmp_path, cli):
    """evaluate refused the pair ("grid differs ... WKT "EPSG:2154" (no authority code) vs
    EPSG:2154") and damage-map resampled POST bilinearly onto PRE's identical grid."""
    from rsgeo.damage import damage_map

    pred, h = _heights(tmp_path / "pred.tif", CUSTOM)
    ref, _ = _heights(tmp_path / "ref.tif", L93)
    code, out, err = cli("evaluate", pred, ref, "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["n_pixels"] == int((h != -9999).sum()) and s["mae"] == 0.0
    r = damage_map(pred, ref, tmp_path / "d.tif")
    assert r["post_resampled"] is False


def test_a_grid_mismatch_in_degrees_shows_where_the_grids_differ(tmp_path):
    """Two 4.5e-6° grids 3 columns and 2 rows apart were described with the same origin
    (three decimals of a degree are 100 m), so the message contradicted itself."""
    t = Affine(5.07e-6, 8.0e-8, -94.50925, 6.4e-8, -4.07e-6, 37.06565)  # xBD-like, skewed
    a = Grid(CRS.from_epsg(4326), t, 1024, 1024)
    b = Grid(CRS.from_epsg(4326), t * Affine.translation(3, 2), 1024, 1024)
    with pytest.raises(GridMismatchError) as e:
        check_same_grid(a, b, "pre.png", "post.png")
    msg = str(e.value)
    first, second = msg.split(" vs ")
    assert first.split("origin")[1][:30] != second.split("origin")[1][:30], msg
    assert "shifted by 3.00 columns, 2.00 rows" in msg and len(msg.splitlines()) == 1, msg


def test_an_image_georeferenced_by_a_world_file_alone_is_refused_naming_it(tmp_path):
    png = tmp_path / "tile.png"
    img = np.full((3, 16, 16), 100, np.uint8)
    with rasterio.open(png, "w", driver="PNG", width=16, height=16, count=3, dtype="uint8",
                       transform=Affine(5e-6, 0, -94.5, 0, -4e-6, 37.06),
                       WORLDFILE="YES") as dst:
        dst.write(img)
    (tmp_path / "tile.png.aux.xml").unlink(missing_ok=True)
    (tmp_path / "tile.prj").write_text(CRS.from_epsg(4326).to_wkt())  # GDAL does not read it
    assert (tmp_path / "tile.wld").exists() or (tmp_path / "tile.pgw").exists()
    with pytest.raises(InputError) as e:
        open_raster(png, purpose="image")
    msg = str(e.value)
    assert msg.startswith(str(png)) and "has no CRS" in msg and "world file tile." in msg, msg
    assert "gdal_edit -a_srs" in msg and "tile.png.aux.xml" in msg and "\n" not in msg, msg


def test_a_geographic_input_is_warned_once_naming_the_file(tmp_path, caplog):
    """Three lines per file (the GSD estimate twice, without the file's name, and telling
    damage-map users to pass a --gsd it does not have) -> one naming the file."""
    img = np.full((3, 70, 90), 100, np.uint8)
    src = make_raster(tmp_path / "g.tif", img, crs=CRS.from_epsg(4326),
                      transform=Affine(4.5e-6, 0, 3.87, 0, -4.5e-6, 43.6))
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        predict_height_file(src, "x", tmp_path / "h.tif", runner=mean_runner(), tile=64,
                            overlap=16)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    # 4.5e-6° at 43.6°N: 0.362 m x 0.500 m, geometric mean 0.426 m
    assert lines[0] == (f"{src}: resampled from 0.426 m (estimated: geographic CRS, latitude "
                        "43.60) to the model's 0.500 m GSD and back"), lines
    with rasterio.open(tmp_path / "h.tif") as ds:
        assert ds.crs.to_epsg() == 4326 and ds.transform == Affine(4.5e-6, 0, 3.87, 0, -4.5e-6,
                                                                   43.6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        predict_height_file(src, "x", tmp_path / "h2.tif", runner=mean_runner(), tile=64,
                            overlap=16, gsd=0.8)
    assert "to the requested 0.800 m GSD" in caplog.text, caplog.text  # not "the model's"


def test_a_change_pair_is_named_by_its_two_files(tmp_path, caplog):
    """The resampling warning of a PRE/POST pair printed the tuple's repr:
    "(PosixPath('pre.tif'), PosixPath('post.tif')): resampled ..."."""
    from rsgeo.infer.predict import predict_files
    from tests.test_predict import META, _rgb

    pre, _ = _rgb(tmp_path / "pre.tif", 64, 64, gsd=0.25)
    post, _ = _rgb(tmp_path / "post.tif", 64, 64, seed=1, gsd=0.25)

    class Diff:
        device = "cpu"

        def __call__(self, batch):
            return batch[:, :1] - batch[:, 3:4]

    cfg = {"task": "change", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64}
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        predict_files([(pre, post)], "x", [tmp_path / "c.tif"],
                      runner=(Diff(), {**META, "task": "change"}, cfg), tile=64, overlap=16)
    assert f"{pre} + {post}: resampled from 0.250 m" in caplog.text, caplog.text
    assert "PosixPath" not in caplog.text


# ---- the real files (skipped without ../shared/realdata) ----------------------------------

def test_montpellier_ortho_crs_and_ign_ndsm_crs_are_one_grid(realdata, tmp_path, cli):
    d = realdata / "montpellier-ign"
    with rasterio.open(d / "ortho_rgb_0p2m_770550_6277600.tif") as o, \
            rasterio.open(d / "ign_dhm_ndsm_0p5m_770550_6277600.tif") as n:
        assert o.crs.to_epsg() is None and n.crs.to_epsg() == 2154
        prof, ndsm = n.profile, n.read()
        prof.update(crs=o.crs)
    with rasterio.open(tmp_path / "as_ortho.tif", "w", **prof) as dst:  # the ortho's WKT
        dst.write(ndsm)
    code, out, err = cli("evaluate", tmp_path / "as_ortho.tif",
                         d / "ign_dhm_ndsm_0p5m_770550_6277600.tif", "--json")
    assert code == 0, err
    assert json.loads(out)["mae"] == 0.0 and json.loads(out)["n_pixels"] > 9900


def test_xbd_tile_without_its_aux_xml_is_refused_naming_its_world_file(realdata, tmp_path):
    import shutil

    src = realdata / "xbd-joplin-tornado" / "images"
    for suffix in (".png", ".pgw"):
        shutil.copy(src / f"joplin-tornado_00000000_pre_disaster{suffix}", tmp_path)
    with pytest.raises(InputError, match="world file joplin-tornado_00000000_pre_disaster.pgw"):
        open_raster(tmp_path / "joplin-tornado_00000000_pre_disaster.png")


@pytest.mark.parametrize("crs, transform, ground", [
    # Autzen's ortho: 1 ft pixels in an Oregon Lambert CRS in feet = 0.3048 m
    (CRS.from_epsg(2994), Affine(1.0, 0, 635615.4, 0, -1.0, 853362.6), (0.3048, 0.3048)),
    # an xBD tile: 5.07e-6 x 4.07e-6 degree pixels at 37.06 N (pyproj.Geod: 0.4513 m x 0.4513 m)
    (CRS.from_epsg(4326), Affine(5.0744e-6, 0, -94.50925, 0, -4.0666e-6, 37.06565),
     (0.4513, 0.4513)),
])
def test_a_model_runs_at_its_gsd_in_metres_on_grids_in_feet_and_degrees(tmp_path, crs,
                                                                         transform, ground):
    """The work grid the model sees has the model's 0.5 m pixels on the ground (within a
    pixel: degrees are measured on a sphere): its tile count is that of the input's ground
    size / 0.5 m (feet read as metres: 800 x 600 px; degrees: 1 px); heights come back on
    the input's own grid and CRS, in metres."""
    from rsgeo.io.windows import TileGrid

    img = np.full((3, 300, 400), 100, np.uint8)
    src = make_raster(tmp_path / "in.tif", img, crs=crs, transform=transform)
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=mean_runner(), tile=64,
                            overlap=16)
    w, h = (round(400 * ground[0] / 0.5), round(300 * ground[1] / 0.5))
    near = {len(TileGrid(h + i, w + j, 64, 16)) for i in (-1, 0, 1) for j in (-1, 0, 1)}
    assert r["resampled"] and r["tiles"] in near, (r["tiles"], w, h, near)
    with rasterio.open(tmp_path / "h.tif") as o:
        assert o.crs == crs and o.transform == transform and o.shape == (300, 400)
        assert o.units[0] == "metre" and o.nodata == -9999


def test_unitless_heights_in_a_crs_in_feet_are_warned_about(tmp_path, cli, caplog):
    """A US nDSM in a State Plane CRS in feet often stores feet with no band unit: it was
    read as metres without a word (a 30 ft house as 30 m, every damage threshold 3.3x too
    small). Now each such raster is named in a warning with the way to say it is feet; a
    band that declares its unit, or rsgeo's own metres, is not."""
    h = np.random.default_rng(0).uniform(0, 30, (1, 32, 32)).astype(np.float32)
    t = Affine(1.0, 0, 635615.0, 0, -1.0, 853362.0)
    ft = make_raster(tmp_path / "ft.tif", h, crs=CRS.from_epsg(2994), transform=t)
    usft = make_raster(tmp_path / "usft.tif", h, crs=CRS.from_epsg(2236), transform=t)
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        code, _, err = cli("evaluate", ft, ft, "--json")
        assert code == 0, err
        code, _, err = cli("evaluate", usft, usft, "--json")
    assert caplog.text.count(f"{ft}: band 1 has no unit and its CRS is in feet") == 2
    assert "-units ft FILE" in caplog.text and "-units us-ft FILE" in caplog.text
    assert f"{usft}: band 1 has no unit and its CRS is in US survey feet" in caplog.text
    caplog.clear()
    with rasterio.open(ft, "r+") as ds:          # declared: read in metres, no warning
        ds.units = ("ft",)
    m = make_raster(tmp_path / "m.tif", h * np.float32(0.3048), crs=CRS.from_epsg(2994),
                    transform=t)
    with rasterio.open(m, "r+") as ds:
        ds.update_tags(task="height", model="height.onnx")  # written by predict-height
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        code, out, err = cli("evaluate", ft, m, "--json")
    assert code == 0 and json.loads(out)["mae"] < 1e-5, (err, out)
    assert "has no unit" not in caplog.text, caplog.text


def test_a_folder_of_world_file_pngs_is_a_folder_of_rasters(tmp_path):
    """xBD comes as PNG + .pgw (+ .aux.xml for the CRS): predict-height on its folder said
    "folder holds no rasters (.tif, .tiff, .vrt, .jp2, .img)" (evaluate took .png folders).
    Georeferenced PNG/JPEG files are inputs now; a quicklook PNG beside them is not."""
    from rsgeo.infer.predict import expand_inputs, predict_height_paths

    d = tmp_path / "tiles"
    d.mkdir()
    img = np.full((3, 40, 40), 100, np.uint8)
    t = Affine(4.5e-6, 0, -94.5, 0, -4.5e-6, 37.06)
    for name, crs, extra in (("a.png", CRS.from_epsg(4326), {"WORLDFILE": "YES"}),
                             ("quicklook.png", None, {})):
        with rasterio.open(d / name, "w", driver="PNG", width=40, height=40, count=3,
                           dtype="uint8", crs=crs, transform=t if crs else None,
                           **extra) as dst:
            dst.write(img)
    make_raster(d / "b.tif", img, crs=CRS.from_epsg(4326), transform=t)
    assert expand_inputs([d]) == [d / "a.png", d / "b.tif"]
    r = predict_height_paths([d], "x", tmp_path / "out", runner=mean_runner(), tile=64,
                             overlap=16)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_height.tif",
                                                                     "b_height.tif"]
    with rasterio.open(tmp_path / "out" / "a_height.tif") as o, rasterio.open(d / "a.png") as s:
        assert o.crs == s.crs and o.transform == s.transform and r["total"]["files"] == 2
    (d / "b.tif").unlink()
    (d / "a.png").rename(d / "a.jpg.bak")
    with pytest.raises(InputError, match="PNG/JPEG with a world file"):
        expand_inputs([d])
