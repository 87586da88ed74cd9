"""rsgeo footprints: tracing in strips, regularisation, attributes, formats, CRS, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio import features
from rasterio.crs import CRS

from rsgeo.errors import InputError
from rsgeo.footprints import footprints
from rsgeo.footprints.regularise import orthogonalise
from rsgeo.io.vector import read_vector
from rsgeo.metrics.footprints import score_footprints
from rsgeo.synth import generate_scene
from tests.conftest import make_raster


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    """A small synthetic city: its land cover (class 8 = building) and true footprints."""
    s = generate_scene(256, 0.5, "mid", 0.3, seed=3)
    path = tmp_path_factory.mktemp("city") / "landcover.tif"
    make_raster(path, s.landcover.astype(np.uint8), crs=s.grid.crs, transform=s.grid.transform)
    return path, s


def _angles(poly) -> np.ndarray:
    """Interior corner angles (degrees) of a polygon's outer ring."""
    xy = np.asarray(poly.exterior.coords)[:-1]
    a, b = np.roll(xy, 1, 0) - xy, np.roll(xy, -1, 0) - xy
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_true_mask_gives_the_true_footprints(city, tmp_path):
    path, s = city
    out = tmp_path / "fp.gpkg"
    summary = footprints(path, out, classes=(8,))
    got = read_vector(out)
    assert summary["features"] == len(got) and summary["regularised"]
    score = score_footprints(got, s.footprints, iou=0.5)
    assert score["f1"] >= 0.95, score
    # right angles wherever the building lies inside the raster (edges cut by it may slant)
    inner = shapely.box(*s.grid.bounds).buffer(-1.0)
    inside = [g for g in got.geometry if inner.contains(g)]
    assert len(inside) > 5
    ang = np.concatenate([_angles(g) for g in inside])
    assert np.all(np.abs(ang - 90) < 1e-6), ang[np.abs(ang - 90) >= 1e-6]


def test_strips_give_the_same_polygons_as_one_piece(city, tmp_path):
    path, _ = city
    for reg in (True, False):
        one = footprints(path, tmp_path / f"one{reg}.gpkg", classes=(8,), regularise=reg,
                         strip_rows=4096)
        cut = footprints(path, tmp_path / f"cut{reg}.gpkg", classes=(8,), regularise=reg,
                         strip_rows=23)
        assert one["features"] == cut["features"] > 5
        a, b = read_vector(tmp_path / f"one{reg}.gpkg"), read_vector(tmp_path / f"cut{reg}.gpkg")
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
        assert all(shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), 1e-9))


def test_worker_processes_give_the_same_polygons(city, tmp_path, monkeypatch):
    from rsgeo.footprints import regularise

    path, _ = city
    footprints(path, tmp_path / "one.gpkg", classes=(8,))
    monkeypatch.setattr(regularise, "PARALLEL_MIN", 1)
    footprints(path, tmp_path / "two.gpkg", classes=(8,), workers=2)
    a, b = read_vector(tmp_path / "one.gpkg"), read_vector(tmp_path / "two.gpkg")
    assert len(a) > 5 and a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert all(shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), 0))


def test_attributes_on_a_hand_made_raster(tmp_path):
    prob = np.zeros((40, 40), np.float32)
    prob[2:8, 3:13] = 0.8                     # 60 px
    prob[5:6, 5:6] = 1.0
    prob[20:30, 20:30] = 0.6                  # 100 px with a 2x2 courtyard
    prob[24:26, 24:26] = 0.1
    prob[35:37, 35:37] = 0.9                  # 4 px: under --min-area 2 m² at 0.5 m
    hgt = np.zeros((40, 40), np.float32)
    hgt[2:8, 3:13] = np.arange(60, dtype=np.float32).reshape(6, 10) / 4
    hgt[20:30, 20:30] = 7.0
    p = make_raster(tmp_path / "p.tif", prob)
    h = make_raster(tmp_path / "h.tif", hgt)
    out = tmp_path / "fp.geojson"
    s = footprints(p, out, heights=h, min_area=2.0, regularise=False)
    gdf = read_vector(out)
    assert s["features"] == 2 and s["dropped_small"] == 1
    assert list(gdf["id"]) == [1, 2] and list(gdf["pixels"]) == [60, 96]
    np.testing.assert_allclose(gdf["area_m2"], [15.0, 24.0])     # holes kept: 100 - 4 px
    roof = hgt[2:8, 3:13].ravel()
    assert gdf["score"][0] == pytest.approx((59 * 0.8 + 1.0) / 60, abs=1e-4)
    assert gdf["score"][1] == pytest.approx(0.6, abs=1e-4)
    assert gdf["height_m"][0] == pytest.approx(np.percentile(roof, 95), abs=0.01)
    assert gdf["height_median_m"][0] == pytest.approx(np.median(roof), abs=0.01)
    assert gdf["height_mean_m"][0] == pytest.approx(roof.mean(), abs=0.01)
    assert gdf["volume_m3"][0] == pytest.approx(roof.sum() * 0.25, abs=0.01)  # 0.5 m pixels
    assert gdf["height_m"][1] == pytest.approx(7.0)
    assert len(gdf.geometry[1].interiors) == 1
    assert footprints(p, tmp_path / "r.geojson", min_area=2.0)["features"] == 2
    reg = read_vector(tmp_path / "r.geojson")
    assert len(reg.geometry[1].interiors) == 1                    # regularised: courtyard kept
    assert reg["area_m2"][1] == pytest.approx(24.0, abs=0.5)
    filled = footprints(p, tmp_path / "f.geojson", fill_holes=True, regularise=False)
    assert filled["building_area_m2"] == pytest.approx(15 + 25 + 1)
    high = footprints(p, tmp_path / "t.geojson", threshold=0.7, regularise=False)
    assert high["features"] == 2                                  # the 0.6 block is gone


@pytest.mark.parametrize("ext", [".gpkg", ".geojson", ".parquet", ".fgb"])
def test_formats_by_extension_keep_the_crs(city, tmp_path, ext):
    path, s = city
    out = tmp_path / f"fp{ext}"
    footprints(path, out, classes=(8,))
    got = read_vector(out)
    assert got.crs == s.grid.crs and len(got) > 5
    assert {"id", "area_m2", "pixels", "score"} <= set(got.columns)


def test_no_building_gives_an_empty_layer(cli, tmp_path):
    src = make_raster(tmp_path / "zero.tif", np.zeros((10, 10), np.uint8))
    code, out, _ = cli("footprints", src, "-o", tmp_path / "zero.gpkg", "--json")
    assert code == 0 and '"features": 0' in out
    got = read_vector(tmp_path / "zero.gpkg")
    assert len(got) == 0 and got.crs == CRS.from_epsg(32633)


def test_gpkg_bytes_are_deterministic(city, tmp_path):
    path, _ = city
    for run in ("a", "b"):                   # the layer is named after the file: same name
        footprints(path, tmp_path / run / "fp.gpkg", classes=(8,))
    assert (tmp_path / "a" / "fp.gpkg").read_bytes() == (tmp_path / "b" / "fp.gpkg").read_bytes()


def test_geographic_crs_areas_in_square_metres(tmp_path):
    mask = np.zeros((30, 30), np.uint8)
    mask[5:25, 5:15] = 1                                          # 200 px
    d = 1e-5
    t = Affine(d, 0, 5.0, 0, -d, 52.0)
    p = make_raster(tmp_path / "g.tif", mask, crs=CRS.from_epsg(4326), transform=t)
    out = tmp_path / "g.gpkg"
    s = footprints(p, out, min_area=1.0)
    gdf = read_vector(out)
    lat = math.radians(52.0 - 15 * d)
    expect = 200 * (d * 111320 * math.cos(lat)) * (d * 110950)   # ~ 1.2 m² per pixel
    assert gdf.crs.to_epsg() == 4326 and s["features"] == 1
    assert gdf["area_m2"][0] == pytest.approx(expect, rel=0.01)


def test_orthogonalise_squares_a_rotated_rectangle():
    truth = shapely.affinity.rotate(shapely.box(10, 10, 40, 25), 23, origin="centroid")
    mask = features.rasterize([truth], out_shape=(50, 50), transform=Affine.identity(),
                               dtype="uint8")
    traced = max((shapely.geometry.shape(g) for g, v in
                  features.shapes(mask, mask=mask > 0, transform=Affine.identity())),
                 key=lambda g: g.area)
    out = orthogonalise(traced, 1.0)
    assert len(out.exterior.coords) == 5
    assert np.all(np.abs(_angles(out) - 90) < 1e-6)
    iou = out.intersection(truth).area / out.union(truth).area
    assert iou > 0.95 and iou > traced.intersection(truth).area / traced.union(truth).area


def test_bad_inputs_exit_2_with_one_line(cli, tmp_path):
    good = make_raster(tmp_path / "m.tif", np.ones((8, 8), np.uint8))
    nocrs = make_raster(tmp_path / "nocrs.tif", np.ones((8, 8), np.uint8), crs=None)
    two = make_raster(tmp_path / "two.tif", np.ones((2, 8, 8), np.float32) * 0.9)
    empty = make_raster(tmp_path / "nd.tif", np.full((8, 8), -1, np.float32), nodata=-1)
    big = make_raster(tmp_path / "big.tif", np.full((8, 8), 3.5, np.float32))
    cases = [
        (nocrs, ["-o", tmp_path / "a.gpkg"], "no CRS"),
        (two, ["-o", tmp_path / "b.gpkg"], "--band"),
        (two, ["-o", tmp_path / "b.gpkg", "--band", "3"], "does not exist"),
        (empty, ["-o", tmp_path / "c.gpkg"], "no valid pixel"),
        (big, ["-o", tmp_path / "d.gpkg"], "not building probabilities"),
        (good, ["-o", tmp_path / "e.txt"], "unknown vector format"),
        (tmp_path / "missing.tif", ["-o", tmp_path / "f.gpkg"], "no such file"),
        (good, ["-o", tmp_path / "g.gpkg", "--threshold", "0"], "--threshold"),
        (good, ["-o", tmp_path / "h.gpkg", "--tolerance", "nan"], "--tolerance"),
        (good, ["-o", tmp_path / "i.gpkg", "--min-area", "inf"], "--min-area"),
    ]
    for src, args, words in cases:
        code, out, err = cli("footprints", src, *args)
        assert code == 2, (src, err)
        assert words in err and len(err.strip().splitlines()) == 1, err
        assert not any(p.suffix in (".gpkg",) for p in tmp_path.iterdir()), err
    for kw, name in (({"tolerance": math.nan}, "--tolerance"),  # the library checks too
                     ({"min_area": math.inf}, "--min-area")):
        with pytest.raises(InputError, match=name):
            footprints(good, tmp_path / "j.gpkg", **kw)
    code, out, _ = cli("footprints", two, "-o", tmp_path / "ok.fgb", "--band", "2", "--json")
    assert code == 0 and '"features": 1' in out
    code, _, err = cli("footprints", two, "-o", tmp_path / "ok.fgb", "--band", "2")
    assert code == 2 and "exists" in err


def test_class_raster_without_class_is_refused(city, tmp_path):
    path, _ = city
    with pytest.raises(InputError, match="--class"):
        footprints(path, tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()


def test_heights_on_another_grid_are_resampled(city, tmp_path):
    path, s = city
    t = s.grid.transform
    coarse = Affine(t.a * 2, 0, t.c, 0, t.e * 2, t.f)
    ndsm = s.pre_ndsm[::2, ::2].astype(np.float32)
    h = make_raster(tmp_path / "h.tif", ndsm, crs=s.grid.crs, transform=coarse)
    out = tmp_path / "fp.gpkg"
    footprints(path, out, classes=(8,), heights=h)
    gdf = read_vector(out)
    with rasterio.open(h) as ds:
        assert ds.res == (1.0, 1.0)
    big = gdf[gdf["area_m2"] > 100]
    ref = s.footprints.set_index("id")["height_m"]
    assert len(big) > 3 and big["height_m"].notna().all()
    assert (big["height_m"] <= ref.max() + 0.5).all()
    assert (big["height_median_m"] <= big["height_m"] + 1e-6).all()


def test_real_drone_mask_in_degrees(realdata, tmp_path):
    """A 2 cm drone mask (0/255) in EPSG:4326: one large roof, area in m² on the ellipsoid."""
    src = realdata / "opencities-accra" / "665946_tile_920_mask.tif"
    if not src.exists():
        pytest.skip("Accra sample not present")
    out = tmp_path / "accra.geojson"
    s = footprints(src, out, min_area=1.0)
    gdf = read_vector(out)
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == s["features"] >= 1
    assert s["pixel_size_m"][0] == pytest.approx(0.02, rel=0.05)
    # the traced roof area agrees with its pixel count at ~2 cm x 2 cm per pixel
    px_m2 = s["pixel_size_m"][0] * s["pixel_size_m"][1]
    assert gdf["area_m2"].sum() == pytest.approx(gdf["pixels"].sum() * px_m2, rel=0.05)


def test_pixel_size_of_a_geographic_grid_is_the_one_prediction_resamples_by():
    # footprints had its own sphere constant (111,320 m/degree): pixels 0.1 % larger than
    # the GSD predict-height resamples by for the same raster
    from affine import Affine
    from rasterio.crs import CRS

    from rsgeo.footprints.ground import pixel_size_m
    from rsgeo.io.raster import Grid, ground_res

    grid = Grid(CRS.from_epsg(4326), Affine(1.8e-7, 0, -0.2, 0, -1.8e-7, 5.6), 400, 300)
    assert pixel_size_m(grid) == ground_res(grid)
    assert pixel_size_m(grid)[1] == pytest.approx(1.8e-7 * 6371008.8 * math.pi / 180)
