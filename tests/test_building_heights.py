"""``rsgeo building-heights``: per-building heights of footprints users already have."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio import features

from rsgeo.errors import InputError
from rsgeo.footprints.heights import building_heights
from rsgeo.metrics.grouped import grouped_median, grouped_percentile
from tests.conftest import UTM, make_raster

GSD, X0, Y0 = 0.5, 500000.0, 4100000.0  # make_raster's default grid origin


def _box(c0, r0, c1, r1):
    """A polygon over pixel columns [c0, c1) and rows [r0, r1) of the test grid."""
    return shapely.box(X0 + c0 * GSD, Y0 - r1 * GSD, X0 + c1 * GSD, Y0 - r0 * GSD)


@pytest.fixture
def scene(tmp_path, rng):
    """A 60 x 80 nDSM with a nodata hole and five footprints (one outside, one across the
    edge, one on nodata only, one L-shaped across many strips), stored in EPSG:4326 so
    they are reprojected onto the raster's CRS."""
    h = rng.uniform(0, 1, (60, 80)).astype(np.float32)
    h[5:25, 5:30] = rng.uniform(9, 12, (20, 25))      # a roof with noise
    h[30:58, 40:78] = np.linspace(3, 15, 38)[None]     # a shed roof rising to the east
    h[0:4, 60:70] = -9999                              # nodata under the fourth building
    path = make_raster(tmp_path / "ndsm.tif", h[None], nodata=-9999)
    geoms = [_box(5, 5, 30, 25),
             shapely.union(_box(40, 30, 78, 58), _box(30, 40, 40, 50)),
             _box(70, 20, 90, 30),                     # partly east of the raster
             _box(60, 0, 70, 4),                       # nodata only
             _box(200, 200, 210, 210)]                 # outside
    gdf = gpd.GeoDataFrame({"name": list("abcde")}, geometry=geoms, crs=UTM).to_crs(4326)
    gdf.to_file(tmp_path / "buildings.gpkg")
    return path, tmp_path / "buildings.gpkg", h, gdf.to_crs(UTM)


def _inside(gdf, h):
    """Pixel values inside each footprint (pixel centres), as rasterio burns them."""
    with rasterio.open(gdf.attrs["path"]) as ds:
        ids = features.rasterize(zip(gdf.geometry, range(1, len(gdf) + 1)), out_shape=h.shape,
                                 transform=ds.transform, fill=0, dtype="int32")
    return [h[(ids == i) & (h != -9999)] for i in range(1, len(gdf) + 1)]


def test_heights_are_the_statistics_of_the_pixels_inside_each_footprint(scene, tmp_path):
    path, fp, h, ref = scene
    s = building_heights(path, fp, tmp_path / "out.gpkg", crs="raster")
    g = gpd.read_file(tmp_path / "out.gpkg")
    assert s["features"] == 5 and s["measured"] == 3 and s["crs"] == "EPSG:32633"
    assert (s["inside"], s["partly_outside"], s["outside"], s["no_valid_pixel"]) == (2, 1, 1, 1)
    assert list(g["coverage"]) == ["inside", "inside", "partly outside", "no valid pixel",
                                   "outside"]
    assert list(g["name"]) == list("abcde") and g.crs.to_epsg() == 32633
    ref.attrs["path"] = path
    for i, px in enumerate(_inside(ref, h)[:3]):
        row = g.iloc[i]
        assert row["measured_px"] == px.size > 0
        assert row["height_m"] == pytest.approx(np.percentile(px, 95), abs=0.006)
        assert row["height_median_m"] == pytest.approx(np.median(px), abs=0.006)
        assert row["height_mean_m"] == pytest.approx(px.mean(), abs=0.006)
        assert row["volume_m3"] == pytest.approx(px.sum() * GSD * GSD, abs=0.006)
    assert g["height_m"][3:].isna().all() and (g["measured_px"][3:] == 0).all()
    # by default the footprints come back in their own CRS, the same shapes
    s = building_heights(path, fp, tmp_path / "own.gpkg")
    own, given = gpd.read_file(tmp_path / "own.gpkg"), gpd.read_file(fp)
    assert s["crs"] == "EPSG:4326" and own.crs == given.crs
    assert own.geometry.geom_equals_exact(given.geometry, tolerance=1e-9).all()
    assert own.drop(columns="geometry").equals(g.drop(columns="geometry"))


def test_the_result_does_not_depend_on_the_strips(scene, tmp_path):
    path, fp, _, _ = scene
    building_heights(path, fp, tmp_path / "a.gpkg")
    building_heights(path, fp, tmp_path / "b.gpkg", strip_rows=7)
    a, b = gpd.read_file(tmp_path / "a.gpkg"), gpd.read_file(tmp_path / "b.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))


def test_a_dsm_is_refused_without_its_dtm_and_measured_with_it(tmp_path, cli, scene):
    path, fp, h, _ = scene
    ground = np.full_like(h, 120.0)
    dsm = make_raster(tmp_path / "dsm.tif", (h + ground)[None] * (h != -9999) - 9999 * (h == -9999),
                      nodata=-9999)
    dtm = make_raster(tmp_path / "dtm.tif", ground[None, ::2, ::2], gsd=1.0)  # coarser grid
    code, _, err = cli("building-heights", dsm, "--buildings", fp, "-o", tmp_path / "x.gpkg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "dsm.tif" in err and "absolute elevations" in err and "--dtm" in err
    assert not (tmp_path / "x.gpkg").exists()
    code, out, err = cli("building-heights", dsm, "--dtm", dtm, "--buildings", fp, "-o",
                         tmp_path / "x.gpkg", "--json")
    assert code == 0, err
    building_heights(path, fp, tmp_path / "n.gpkg")
    a, b = gpd.read_file(tmp_path / "x.gpkg"), gpd.read_file(tmp_path / "n.gpkg")
    np.testing.assert_allclose(a["height_median_m"], b["height_median_m"], atol=0.011)
    assert json.loads(out)["dtm"] == str(dtm)


def test_synthetic_city_heights_match_its_buildings_true_heights(tmp_path, cli):
    """The synthetic city's footprints carry their true height_m: measured on the city's
    nDSM, every building's 95th percentile is within half a metre of it (the ridge of a
    pitched roof is the height), and the reference column is kept beside --prefix's."""
    from rsgeo.synth import write_scenes

    p = write_scenes(tmp_path / "city", size=256, seed=3)[0]
    code, _, err = cli("building-heights", p["pre_ndsm"], "--buildings", p["footprints"],
                       "-o", tmp_path / "h.gpkg")
    assert code == 2 and "height_m" in err and "--prefix" in err, err
    code, out, err = cli("building-heights", p["pre_ndsm"], "--buildings", p["footprints"],
                         "-o", tmp_path / "h.gpkg", "--prefix", "measured_")
    assert code == 0, err
    assert "buildings measured" in out
    g = gpd.read_file(tmp_path / "h.gpkg")
    truth = gpd.read_file(p["footprints"])
    assert list(g.columns[:len(truth.columns) - 1]) == list(truth.columns[:-1])
    np.testing.assert_array_equal(g["height_m"], truth["height_m"])  # kept as it was
    inside = g[g["measured_coverage"] == "inside"]
    assert len(inside) >= 10
    err_m = (inside["measured_height_m"] - inside["height_m"]).abs()
    assert err_m.median() < 0.3 and (err_m < 1.0).mean() > 0.9, err_m.describe()
    code, out, err = cli("building-heights", p["pre_ndsm"], "--buildings", p["footprints"],
                         "-o", tmp_path / "h.gpkg", "--prefix", "measured_", "--overwrite",
                         "--compare", "height_m", "--json")
    assert code == 0, err
    c = json.loads(out)["compare"]
    measured = g["measured_height_m"].notna()
    assert c["column"] == "height_m" and c["p95"]["n"] == measured.sum()
    d = (g["measured_height_m"] - g["height_m"])[measured]
    assert c["p95"]["mae"] == pytest.approx(d.abs().mean(), abs=1e-3)
    assert c["p95"]["bias"] == pytest.approx(d.mean(), abs=1e-3) and c["p95"]["r"] > 0.95
    assert c["median"]["bias"] < c["p95"]["bias"]   # pitched roofs: median below the ridge
    for column, words in (("nope", "no such column"), ("roof", "not numeric")):
        code, _, err = cli("building-heights", p["pre_ndsm"], "--buildings", p["footprints"],
                           "-o", tmp_path / "x.gpkg", "--prefix", "m_", "--compare", column)
        assert code == 2 and words in err and column in err, err
        assert not (tmp_path / "x.gpkg").exists()


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, cli, scene):
    path, fp, _, _ = scene
    points = gpd.GeoDataFrame(geometry=[shapely.Point(X0, Y0)], crs=UTM)
    points.to_file(tmp_path / "points.gpkg")
    for args, words in (([path, "--buildings", tmp_path / "points.gpkg"], "polygons"),
                        ([path, "--buildings", tmp_path / "none.gpkg"], "none.gpkg"),
                        ([tmp_path / "none.tif", "--buildings", fp], "none.tif"),
                        ([path, "--buildings", fp, "--max-height", "5"], "--max-height"),
                        ([path, "--buildings", fp, "--max-height", "nan"], "--max-height")):
        code, _, err = cli("building-heights", *args, "-o", tmp_path / "o.gpkg")
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
        assert not (tmp_path / "o.gpkg").exists()
    with pytest.raises(InputError, match="--max-height"):  # the library checks too
        building_heights(path, fp, tmp_path / "o.gpkg", max_height=float("nan"))


def test_a_geojson_of_metres_without_a_crs_member_is_refused_naming_it(tmp_path, cli, scene):
    # RFC 7946 reads a GeoJSON without "crs" as longitude/latitude; UTM metres there crashed
    # in GEOS ("Shell empty after removing invalid points", exit 1)
    path, _, _, ref = scene
    fc = json.loads(ref.to_json())
    fc.pop("crs", None)
    (tmp_path / "utm.geojson").write_text(json.dumps(fc))
    code, _, err = cli("building-heights", path, "--buildings", tmp_path / "utm.geojson",
                       "-o", tmp_path / "o.gpkg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "utm.geojson" in err and "outside EPSG:4326's range" in err and ".gpkg" in err, err
    assert not (tmp_path / "o.gpkg").exists()


def test_footprints_that_all_miss_the_raster_are_refused(tmp_path, cli, scene):
    path, _, _, _ = scene
    gpd.GeoDataFrame(geometry=[_box(200, 200, 210, 210), _box(300, 0, 310, 5)],
                     crs=UTM).to_file(tmp_path / "far.gpkg")
    code, out, err = cli("building-heights", path, "--buildings", tmp_path / "far.gpkg",
                         "-o", tmp_path / "o.gpkg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "far.gpkg" in err and "none of the 2 footprints overlaps the raster" in err, err
    assert not (tmp_path / "o.gpkg").exists()


def test_grouped_percentiles_are_numpys(rng):
    ids = rng.integers(0, 40, 5000)
    values = rng.normal(5, 3, 5000).astype(np.float32)
    for q in (0, 5, 50, 95, 100):
        uniq, got = grouped_percentile(ids, values, q)
        want = [np.percentile(values[ids == i].astype(np.float64), q) for i in uniq]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(grouped_median(ids, values)[1],
                               grouped_percentile(ids, values, 50)[1], atol=1e-6)


@pytest.mark.realdata
def test_delft_buildings_match_the_lidar_reference(realdata, tmp_path):
    """Delft's 160 BGT footprints carry per-building medians and pixel counts computed from
    the same LiDAR nDSM by another code path."""
    d = realdata / "delft-ahn3-bgt"
    s = building_heights(d / "derived_from_lidar" / "delft_ndsm.tif",
                         d / "bgt_pand_buildings_epsg28992.geojson", tmp_path / "d.gpkg")
    g = gpd.read_file(tmp_path / "d.gpkg")
    assert s["measured"] == 160
    np.testing.assert_array_equal(g["measured_px"], g["lidar_npix"])
    np.testing.assert_allclose(g["height_median_m"], g["lidar_ndsm_p50_m"], atol=0.006)
    assert (g["height_m"] >= g["lidar_ndsm_p90_m"] - 0.006).all()


@pytest.mark.realdata
def test_alexandria_heights_agree_with_the_footprints_independent_height(realdata, tmp_path):
    """84 footprints in EPSG:4326 with a HEIGHT attribute from another source, measured on
    the 2 m LiDAR DSM minus its DTM (UTM 18N): per-building medians within about half a
    metre of it (MAE 0.55 m, r 0.97 when written)."""
    d = realdata / "alexandria-lidar-buildings"
    s = building_heights(d / "dsm.tif", d / "buildings.geojson", tmp_path / "a.gpkg",
                         dtm=d / "dtm.tif", compare="HEIGHT")
    g = gpd.read_file(tmp_path / "a.gpkg")
    assert s["measured"] == 84 and g.crs.to_epsg() == 4326      # the footprints' own CRS
    ok = g["HEIGHT"].notna()
    err = g.loc[ok, "height_median_m"] - g.loc[ok, "HEIGHT"]
    assert ok.sum() == 82 and err.abs().mean() < 0.7 and abs(err.mean()) < 0.6
    assert np.corrcoef(g.loc[ok, "height_median_m"], g.loc[ok, "HEIGHT"])[0, 1] > 0.95
    c = s["compare"]["median"]
    assert c["n"] == 82 and c["mae"] == pytest.approx(err.abs().mean(), abs=1e-3)
    assert c["r"] > 0.95 and c["within_2m"] > 0.9


def _per_polygon(gdf, raster):
    """Each polygon's valid pixel values, rasterised on its own (pixel centres inside)."""
    with rasterio.open(raster) as ds:
        h, t, nodata = ds.read(1), ds.transform, ds.nodata
    return [h[features.geometry_mask([g], h.shape, t, invert=True) & (h != nodata)]
            for g in gdf.to_crs(ds.crs).geometry]


def _check_each_polygon(g, values):
    for i, px in enumerate(values):
        row = g.iloc[i]
        assert row["measured_px"] == px.size, (i, row["measured_px"], px.size)
        if px.size:
            assert row["height_m"] == pytest.approx(np.percentile(px, 95), abs=0.006), i
            assert row["height_median_m"] == pytest.approx(np.median(px), abs=0.006), i
            assert row["height_mean_m"] == pytest.approx(px.mean(), abs=0.006), i


def test_overlapping_footprints_each_get_every_pixel_inside_them(scene, tmp_path, cli):
    """Footprints were burnt into one id raster, so where two overlap (a building and its
    part, a duplicate from a second source, a block around its houses) the later took the
    shared pixels: the others came out smaller or "no valid pixel" (NaN). Each polygon is
    now measured on every pixel centre inside it, in building-heights and damage-map."""
    path, _, h, ref = scene
    a, b = ref.geometry[0], ref.geometry[1]
    geoms = [a, b, a, shapely.union(a, b).envelope, _box(10, 10, 20, 20),   # dup, block, part
             _box(100, 100, 110, 110)]                                         # outside
    gdf = gpd.GeoDataFrame({"name": list("abABpo")}, geometry=geoms, crs=UTM)
    gdf.to_file(tmp_path / "overlap.gpkg")
    for strip_rows in (1024, 7):
        s = building_heights(path, tmp_path / "overlap.gpkg", tmp_path / f"o{strip_rows}.gpkg",
                             strip_rows=strip_rows)
        g = gpd.read_file(tmp_path / f"o{strip_rows}.gpkg")
        assert s["measured"] == 5 and s["no_valid_pixel"] == 0, s
        _check_each_polygon(g, _per_polygon(gdf, path))
    # damage-map grades each overlapping footprint on all of its pixels too
    post = make_raster(tmp_path / "post.tif", np.where(h == -9999, -9999, h * 0.2)[None],
                       nodata=-9999)
    code, out, err = cli("damage-map", path, post, "--buildings", tmp_path / "overlap.gpkg",
                         "-o", tmp_path / "d.tif", "--footprints", tmp_path / "d.gpkg", "--json")
    assert code == 0, err
    d = gpd.read_file(tmp_path / "d.gpkg")
    assert list(d["coverage"]) == ["inside"] * 5 + ["outside"]
    assert (d["grade"][:5] == "destroyed").all() and not isinstance(d["grade"][5], str)
    px = _per_polygon(gdf, path)
    np.testing.assert_allclose(d["pre_median_m"][:5], [np.median(v) for v in px[:5]],
                               atol=0.006)


@pytest.mark.realdata
def test_delft_overlapping_blocks_and_duplicates_match_per_polygon_numpy(realdata, tmp_path):
    """Delft's 160 BGT footprints (touching terraced houses, no overlaps) plus a block
    polygon over five of them, one of them twice and a part inside another: every polygon's
    pixel count and statistics equal a per-polygon numpy computation (before, the five
    houses under the block and the duplicated one came out "no valid pixel")."""
    d = realdata / "delft-ahn3-bgt"
    ndsm = d / "derived_from_lidar" / "delft_ndsm.tif"
    bgt = gpd.read_file(d / "bgt_pand_buildings_epsg28992.geojson")[["gml_id", "geometry"]]
    big = int(bgt.area.argmax())
    extra = gpd.GeoDataFrame(
        {"gml_id": ["block", "dup", "part"]},
        geometry=[shapely.unary_union(bgt.geometry[:5]), bgt.geometry[0],
                  bgt.geometry[big].buffer(-2)], crs=bgt.crs)
    gdf = gpd.GeoDataFrame(gpd.pd.concat([bgt, extra], ignore_index=True), crs=bgt.crs)
    gdf.to_file(tmp_path / "fp.gpkg")
    s = building_heights(ndsm, tmp_path / "fp.gpkg", tmp_path / "h.gpkg")
    assert s["measured"] == 163 and s["no_valid_pixel"] == 0, s
    _check_each_polygon(gpd.read_file(tmp_path / "h.gpkg"), _per_polygon(gdf, ndsm))


def test_from_an_image_with_a_model_is_predict_height_then_building_heights(tmp_path, cli):
    """-m MODEL: the same polygons and numbers as predict-height followed by
    building-heights on its output, nothing left beside the output; an ensemble too."""
    import torch

    from rsgeo.synth import write_scenes
    from rsgeo.tasks.bundle import build_task_model, save_task_model

    p = write_scenes(tmp_path / "city", size=128, seed=4)[0]
    cfg = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
           "head": "dpt", "head_features": 16}
    meta = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
            "std": [50.0] * 3, "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m",
            "nodata": -9999}
    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_task_model(cfg)
        with torch.no_grad():
            model.head.out[4].bias.fill_(4.0 + 2 * seed)
        models.append(save_task_model(model, cfg, meta, tmp_path / f"m{seed}.ckpt"))
    out = tmp_path / "out"
    code, text, err = cli("building-heights", p["pre_rgb"], "-m", models[0], "-m", models[1],
                          "--buildings", p["footprints"], "--prefix", "pred_", "-o",
                          out / "a.gpkg", "--json")
    assert code == 0, err
    s = json.loads(text)
    assert s["heights"] == str(p["pre_rgb"]) and len(s["heights_from"]["models"]) == 2
    assert sorted(x.name for x in out.iterdir()) == ["a.gpkg"]  # the heights were temporary
    code, _, err = cli("predict-height", p["pre_rgb"], "-m", models[0], "-m", models[1], "-o",
                       tmp_path / "h.tif")
    assert code == 0, err
    building_heights(tmp_path / "h.tif", p["footprints"], tmp_path / "b.gpkg", prefix="pred_")
    a, b = gpd.read_file(out / "a.gpkg"), gpd.read_file(tmp_path / "b.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a["pred_height_m"].notna().all() and a["pred_height_m"].min() > 0
    code, _, err = cli("building-heights", p["pre_rgb"], "-m", models[0], "--dtm", p["dtm"],
                       "--buildings", p["footprints"], "-o", tmp_path / "c.gpkg")
    assert code == 2 and "--dtm" in err and not (tmp_path / "c.gpkg").exists()



def test_with_a_model_footprints_off_the_image_are_refused_before_the_prediction(
        tmp_path, cli, monkeypatch):
    import rsgeo.damage.buildings as model_buildings

    def predict(*a, **k):
        raise AssertionError("predicted before the footprints were checked")

    monkeypatch.setattr(model_buildings, "predict_height_file", predict)
    rgb = make_raster(tmp_path / "rgb.tif", np.zeros((3, 40, 40), np.uint8) + 90)
    gpd.GeoDataFrame(geometry=[_box(200, 200, 210, 210), _box(300, 0, 310, 5)],
                     crs=UTM).to_file(tmp_path / "far.gpkg")
    code, _, err = cli("building-heights", rgb, "-m", tmp_path / "model.onnx", "--buildings",
                       tmp_path / "far.gpkg", "-o", tmp_path / "o.gpkg")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "far.gpkg" in err and "none of the 2 footprints overlaps the raster" in err, err
    assert not (tmp_path / "o.gpkg").exists()

def test_agreement_counts_only_buildings_with_both_heights():
    from rsgeo.footprints.heights import agreement

    a = agreement([10.0, 12.0, np.nan, 7.0], [9.0, 12.5, 5.0, np.nan])
    assert a == {"n": 2, "bias": 0.25, "mae": 0.75, "rmse": pytest.approx(0.791, abs=1e-3),
                 "r": None, "within_1m": 1.0, "within_2m": 1.0}
    assert agreement([np.nan], [3.0]) == {"n": 0}
    assert agreement([1.0, 2.0, 3.0], [2.0, 4.0, 6.5])["r"] == pytest.approx(0.9979, abs=1e-4)


def test_a_vrt_mosaic_of_tiles_measures_buildings_across_tile_borders(scene, tmp_path):
    """nDSMs delivered as tiles (LiDAR HD's 1 km tiles): a VRT mosaic of them (what
    gdalbuildvrt writes) is read like one raster, so a building across a tile border gets
    the same numbers as on the whole raster."""
    path, fp, h, _ = scene
    tiles = []
    for name, r0, r1 in (("north", 0, 33), ("south", 33, 60)):  # building 2 crosses row 33
        tiles.append(make_raster(tmp_path / f"{name}.tif", h[None, r0:r1], nodata=-9999,
                                 origin=(X0, Y0 - r0 * GSD)))
    sources = "".join(
        f'<ComplexSource><SourceFilename relativeToVRT="0">{t}</SourceFilename>'
        f'<SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" xSize="80" ySize="{r1 - r0}"/>'
        f'<DstRect xOff="0" yOff="{r0}" xSize="80" ySize="{r1 - r0}"/><NODATA>-9999</NODATA>'
        f'</ComplexSource>' for t, (r0, r1) in zip(tiles, ((0, 33), (33, 60))))
    with rasterio.open(path) as ds:
        srs, gt = ds.crs.to_wkt(), ", ".join(map(str, ds.transform.to_gdal()))
    (tmp_path / "mosaic.vrt").write_text(
        f'<VRTDataset rasterXSize="80" rasterYSize="60"><SRS>{srs}</SRS>'
        f'<GeoTransform>{gt}</GeoTransform><VRTRasterBand dataType="Float32" band="1">'
        f'<NoDataValue>-9999</NoDataValue>{sources}</VRTRasterBand></VRTDataset>')
    building_heights(path, fp, tmp_path / "whole.gpkg")
    building_heights(tmp_path / "mosaic.vrt", fp, tmp_path / "mosaic.gpkg")
    a, b = gpd.read_file(tmp_path / "whole.gpkg"), gpd.read_file(tmp_path / "mosaic.gpkg")
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert a["measured_px"][1] > 0 and a["coverage"][1] == "inside"
