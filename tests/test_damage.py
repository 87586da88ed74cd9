import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from shapely.geometry import box

from rsgeo.damage import damage_map
from rsgeo.io.components import StripComponents
from rsgeo.damage.stats import parse_grades
from rsgeo.metrics.grouped import grouped_median
from rsgeo.errors import InputError
from rsgeo.synth import write_scenes
from tests.conftest import make_raster


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    d = tmp_path_factory.mktemp("city")
    paths = write_scenes(d, size=384, gsd=0.5, style="mid", scenes=1, destroyed=0.3, seed=11)[0]
    return paths


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = (pred & truth).sum()
    fp = (pred & ~truth).sum()
    fn = (~pred & truth).sum()
    return 2 * tp / max(2 * tp + fp + fn, 1)


def test_destroyed_buildings_found_from_true_heights(city, tmp_path):
    summary = damage_map(city["pre_ndsm"], city["post_ndsm"], tmp_path / "d.tif",
                         buildings=city["footprints"])
    out = gpd.read_file(tmp_path / "d.gpkg")
    truth = gpd.read_file(city["footprints"])
    assert len(out) == len(truth) and list(out["id"]) == list(truth["id"])  # attributes kept
    f1_destroyed = _f1((out["grade"] == "destroyed").to_numpy(),
                       (truth["damage"] == "destroyed").to_numpy())
    f1_damaged = _f1(out["grade"].isin(["major", "destroyed"]).to_numpy(),
                     truth["damage"].isin(["major", "destroyed"]).to_numpy())
    print(f"destroyed F1 {f1_destroyed:.3f}, damaged (major+destroyed) F1 {f1_damaged:.3f}")
    assert f1_destroyed >= 0.95 and f1_damaged >= 0.9
    intact = out[truth["damage"] == "none"]
    assert (intact["height_loss_m"].abs() < 0.01).all() and (intact["lost_volume_m3"] < 1).all()
    assert summary["by_grade"]["destroyed"] == (out["grade"] == "destroyed").sum()
    with rasterio.open(tmp_path / "d.tif") as ds:
        classes = ds.read(1)
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs.to_epsg() == 32631
        assert ds.colormap(1)[4][:3] == (200, 0, 0)
    with rasterio.open(tmp_path / "d_loss.tif") as ds:
        assert ds.dtypes[0] == "float32" and ds.nodata == -9999 and ds.units[0] == "metre"
    assert set(np.unique(classes)) <= {0, 1, 2, 3, 4}


def test_strip_merged_regions_equal_one_shot(city, tmp_path):
    a = damage_map(city["pre_ndsm"], city["post_ndsm"], tmp_path / "a.tif", strip_rows=37,
                   min_area=5)
    b = damage_map(city["pre_ndsm"], city["post_ndsm"], tmp_path / "b.tif", strip_rows=4096,
                   min_area=5)
    ga, gb = gpd.read_file(tmp_path / "a.gpkg"), gpd.read_file(tmp_path / "b.gpkg")
    assert len(ga) == len(gb) > 3 and a["damaged_area_m2"] == b["damaged_area_m2"]
    key = lambda g: g.assign(k=g.geometry.centroid.x.round(3) * 1e7 + g.geometry.centroid.y.round(3)).sort_values("k")
    ga, gb = key(ga), key(gb)
    for x, y in zip(ga.geometry, gb.geometry):
        assert x.symmetric_difference(y).area < 1e-6
    for col in ("pre_median_m", "post_median_m", "lost_volume_m3", "area_m2"):
        np.testing.assert_allclose(ga[col].to_numpy(), gb[col].to_numpy(), rtol=1e-9)


def test_streaming_components_equal_one_shot_labels():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    mask = ndimage.binary_opening(rng.random((200, 150)) > 0.55)
    comps = StripComponents()
    for r in range(0, 200, 13):
        comps.add(mask[r:r + 13], r)
    comps.finish()
    labels = np.concatenate([comps.relabel(mask[r:r + 13]) for r in range(0, 200, 13)])
    ref, n = ndimage.label(mask, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert len(np.unique(labels[labels > 0])) == n
    # the same partition: each reference component maps to exactly one streamed id
    pairs = set(zip(ref[mask].tolist(), labels[mask].tolist()))
    assert len(pairs) == n


def test_grouped_median_and_grades():
    ids = np.array([3, 1, 3, 1, 1, 3, 3])
    vals = np.array([4.0, 1.0, 2.0, 3.0, 2.0, 8.0, 6.0])
    u, m = grouped_median(ids, vals)
    assert u.tolist() == [1, 3] and m.tolist() == [2.0, 5.0]
    g = parse_grades("minor:1,major:3,destroyed:6")
    assert g["major"] == (3.0, False)
    assert parse_grades("minor:10%,major:35%,destroyed:70%")["destroyed"] == (0.7, True)
    for bad in ("minor:1,major:3", "minor:3,major:1,destroyed:6", "minor:x,major:3,destroyed:6",
                "huge:1,major:3,destroyed:6"):
        with pytest.raises(InputError):
            parse_grades(bad)


def _pair(tmp_path, post_crs=None, post_transform=None, **kw):
    pre = np.zeros((120, 100), np.float32)
    pre[20:60, 20:60] = 12.0
    pre[70:100, 50:90] = 8.0
    post = pre.copy()
    post[20:60, 20:60] = 1.0
    a = make_raster(tmp_path / "pre.tif", pre, nodata=-9999, **kw)
    b = make_raster(tmp_path / "post.tif", post, nodata=-9999, crs=post_crs or CRS.from_epsg(32633),
                    transform=post_transform)
    return a, b


def test_plain_form_writes_to_current_folder(tmp_path, monkeypatch, cli):
    a, b = _pair(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("damage-map", "pre.tif", "post.tif")
    assert code == 0, err
    assert (tmp_path / "pre_damage.tif").exists() and (tmp_path / "pre_damage.gpkg").exists()
    assert "destroyed" in out
    code, _, err = cli("damage-map", "pre.tif", "post.tif")
    assert code == 2 and "--overwrite" in err
    code, out, _ = cli("damage-map", "pre.tif", "post.tif", "--json", "--overwrite")
    s = json.loads(out)
    assert s["by_grade"]["destroyed"] == 1 and s["damaged_area_m2"] == 40 * 40 * 0.25
    g = gpd.read_file(tmp_path / "pre_damage.gpkg")
    assert len(g) == 1 and g.crs.to_epsg() == 32633
    assert abs(g.geometry.iloc[0].area - 400.0) < 1e-6


def test_nodata_is_propagated(tmp_path):
    pre = np.full((50, 50), 10.0, np.float32)
    pre[45:] = 0.0                        # some ground: all-roof heights look like a DSM
    post = pre.copy()
    post[10:20, 10:20] = np.nan
    post[30:40, 30:40] = -9999
    a = make_raster(tmp_path / "a.tif", pre, nodata=-9999)
    b = make_raster(tmp_path / "b.tif", post, nodata=-9999)
    damage_map(a, b, tmp_path / "o.tif")
    cls = rasterio.open(tmp_path / "o.tif").read(1)
    loss = rasterio.open(tmp_path / "o_loss.tif").read(1)
    assert (cls[10:20, 10:20] == 255).all() and (cls[30:40, 30:40] == 255).all()
    assert (loss[10:20, 10:20] == -9999).all() and (cls[0] == 1).all() and (loss[0] == 0).all()


def test_different_crs_is_resampled_and_footprints_reprojected(tmp_path):
    a, _ = _pair(tmp_path)
    # POST given in Web Mercator: warp the post raster there and back through align_to
    from rasterio.warp import calculate_default_transform, reproject
    with rasterio.open(tmp_path / "post.tif") as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        dst = np.full((h, w), -9999, np.float32)
        reproject(src.read(1), dst, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:3857", src_nodata=-9999, dst_nodata=-9999)
    b = make_raster(tmp_path / "post3857.tif", dst, crs=CRS.from_epsg(3857), transform=t, nodata=-9999)
    fp = gpd.GeoDataFrame({"name": ["big", "small"]},
                          geometry=[box(500010, 4099970, 500030, 4099990),
                                    box(500025, 4099950, 500045, 4099965)], crs=32633).to_crs(4326)
    fp.to_file(tmp_path / "fp.geojson")
    s = damage_map(a, b, tmp_path / "o.tif", buildings=tmp_path / "fp.geojson")
    assert s["post_resampled"]
    g = gpd.read_file(tmp_path / "o.gpkg")
    assert g.crs.to_epsg() == 32633 and list(g["name"]) == ["big", "small"]
    assert g.loc[0, "grade"] == "destroyed" and g.loc[1, "grade"] == "none"


def test_the_same_surface_delivered_on_a_shifted_grid_is_not_damage(city, tmp_path):
    # POST is PRE's unchanged surface on a grid 8 rows (4 m) further south, correctly
    # georeferenced: at UTM northings that is still a different grid, resampled, no damage
    with rasterio.open(city["pre_ndsm"]) as src:
        h, t = src.read(1), src.transform
    shifted = np.full_like(h, -9999)
    shifted[:-8] = h[8:]
    post = make_raster(tmp_path / "post.tif", shifted, crs=CRS.from_epsg(32631),
                       transform=t * rasterio.Affine.translation(0, 8), nodata=-9999)
    s = damage_map(city["pre_ndsm"], post, tmp_path / "o.tif", buildings=city["footprints"])
    assert s["post_resampled"]
    assert s["by_grade"]["none"] > 0 and s["lost_volume_m3"] < 1.0, s


def test_bad_inputs_exit_2(tmp_path, cli):
    a, b = _pair(tmp_path)
    far = make_raster(tmp_path / "far.tif", np.zeros((10, 10), np.float32), origin=(900000.0, 10.0))
    rgb = make_raster(tmp_path / "rgb.tif", np.zeros((3, 10, 10), np.uint8))
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    gpd.GeoDataFrame(geometry=[box(600000, 4099900, 600010, 4099910)] * 2,
                     crs=32633).to_file(tmp_path / "far.gpkg")
    # UTM metres in a GeoJSON without "crs" (read as lon/lat): crashed in GEOS, exit 1
    (tmp_path / "utm.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": box(500010, 4099970, 500030,
                                                               4099990).__geo_interface__}]}))
    cases = [
        (["damage-map", a, b, "--buildings", tmp_path / "far.gpkg"],
         "far.gpkg: none of the 2 footprints overlaps the raster"),
        (["damage-map", a, b, "--buildings", tmp_path / "utm.geojson"],
         "utm.geojson: coordinates outside EPSG:4326's range"),
        (["damage-map", a, far], "does not overlap"),
        (["damage-map", a, rgb], "image"),
        (["damage-map", rgb, rgb], "-m MODEL"),
        (["damage-map", a, b, "--threshold", 0], "positive"),
        (["damage-map", a, b, "--event", "custom"], "--threshold"),
        (["damage-map", a, b, "--buildings", tmp_path / "nocrs.gpkg"], "no CRS"),
        (["damage-map", a, tmp_path / "missing.tif"], "no such file"),
        (["damage-map", a, b, "--grades", "minor:1"], "--grades"),
        (["damage-map", a, b, "--footprints", tmp_path / "x.xyz"], "vector format"),
        (["damage-map", a, b, "--min-height", "nan"], "--min-height"),
        (["damage-map", a, b, "--min-area", "nan"], "--min-area"),
        (["damage-map", a, b, "--min-area", "inf"], "--min-area"),
        (["damage-map", a, b, "--grades", "minor:nan,major:35%,destroyed:70%"], "--grades"),
    ]
    for args, msg in cases:
        code, _, err = cli(*args, "-o", tmp_path / "o.tif")
        assert code == 2, (args, err)
        assert msg in err and len(err.strip().splitlines()) == 1, (args, err)
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.gpkg").exists()
    assert not (tmp_path / "o_loss.tif").exists()
    for name in ("o.png", "o"):  # a GeoTIFF was written under these names
        code, _, err = cli("damage-map", a, b, "-o", tmp_path / name)
        assert code == 2 and f"{name}: " in err and ".tif" in err, err
        assert not list(tmp_path.glob("o*")), err
    for kw, msg in (({"min_area": float("inf")}, "--min-area"),  # the library checks too
                    ({"min_height": float("nan")}, "--min-height"),
                    ({"threshold": float("inf")}, "--threshold")):
        with pytest.raises(InputError, match=msg):
            damage_map(a, b, tmp_path / "o.tif", **kw)
    assert not (tmp_path / "o.tif").exists()


def test_model_mode_refuses_footprints_off_the_images_before_any_prediction(tmp_path, cli,
                                                                            monkeypatch):
    # damage-map PRE POST -m MODEL --buildings FAR: refused only after both predictions ran
    # (minutes on big rasters)
    import rsgeo.damage.inputs as inputs

    def predict(*a, **k):
        raise AssertionError("predicted before the footprints were checked")

    monkeypatch.setattr(inputs, "predict_height_file", predict)
    rgb = np.random.default_rng(0).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    pre = make_raster(tmp_path / "pre_rgb.tif", rgb)
    post = make_raster(tmp_path / "post_rgb.tif", rgb)
    gpd.GeoDataFrame(geometry=[box(600000, 4099900, 600010, 4099910)] * 2,
                     crs=32633).to_file(tmp_path / "far.gpkg")
    code, _, err = cli("damage-map", pre, post, "-m", tmp_path / "model.onnx",
                       "--buildings", tmp_path / "far.gpkg", "-o", tmp_path / "o.tif")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "far.gpkg: none of the 2 footprints overlaps the raster" in err, err
    assert not list(tmp_path.glob("o*"))


def test_damage_classes_in_a_compound_crs_are_classes_not_metres(tmp_path):
    # GDAL gives a band without a unit of its own the CRS's vertical unit: the damage
    # classes of EPSG:2154+5720 heights read back as metres, and as heights (kind_of)
    from rsgeo.damage.inputs import kind_of

    crs = CRS.from_user_input("EPSG:2154+5720")
    t = rasterio.Affine(0.5, 0, 700000.0, 0, -0.5, 6600000.0)
    a, b = _pair(tmp_path, post_crs=crs, post_transform=t, crs=crs, transform=t)
    damage_map(a, b, tmp_path / "d.tif")
    with rasterio.open(tmp_path / "d.tif") as ds, rasterio.open(tmp_path / "d_loss.tif") as lo:
        assert ds.crs == crs and ds.units == ("class",) and lo.units == ("metre",)
    assert kind_of(tmp_path / "d.tif") == "image" and kind_of(tmp_path / "d_loss.tif") == "heights"
