"""Silent wrong answers turned into errors with a way through: all-nodata inputs, absolute
elevations (DSM/DTM), centimetre heights, implausible heights, non-polygon footprints,
buildings outside the raster (damage-map and evaluate)."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import LineString, Point, box

from rsgeo.damage import damage_map
from rsgeo.evaluate import evaluate
from rsgeo.io.heights import HeightUnits, check_heights, sample, sample_plan
from tests.conftest import make_raster

X0, Y0 = 500000.0, 4100000.0      # make_raster's origin; 0.5 m pixels


def _scene():
    """100x100 nDSM (m): one 12 m building (rows/cols 20:60) on ground, destroyed after."""
    pre = np.zeros((100, 100), np.float32)
    pre[20:60, 20:60] = 12.0
    post = pre.copy()
    post[20:60, 20:60] = 1.0
    return pre, post


def _tag(path, **kw):
    with rasterio.open(path, "r+") as ds:
        for k, v in kw.items():
            setattr(ds, k, v)
    return path


def _one_line_error(cli, *args, must=()):
    code, out, err = cli(*args)
    assert code == 2, (args, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for m in must:
        assert m in err, (m, err)
    return err


# ---------------------------------------------------------------- 1. nothing valid
@pytest.mark.parametrize("fill", [np.nan, -9999.0])
@pytest.mark.parametrize("which", ["pre", "post"])
def test_damage_map_refuses_an_input_without_valid_pixels(tmp_path, cli, fill, which):
    pre, post = _scene()
    bad = np.full_like(pre, fill)
    a = make_raster(tmp_path / "pre.tif", bad if which == "pre" else pre, nodata=-9999)
    b = make_raster(tmp_path / "post.tif", bad if which == "post" else post, nodata=-9999)
    err = _one_line_error(cli, "damage-map", a, b, "-o", tmp_path / "o.tif",
                          must=("no valid pixel", f"{which}.tif"))
    assert "damaged" not in err
    assert not list(tmp_path.glob("o*"))


@pytest.mark.parametrize("fill", [np.nan, -9999.0])
def test_evaluate_refuses_a_prediction_or_reference_without_valid_pixels(tmp_path, cli, fill):
    good = make_raster(tmp_path / "good.tif", _scene()[0], nodata=-9999)
    bad = make_raster(tmp_path / "bad.tif", np.full((100, 100), fill, np.float32), nodata=-9999)
    for args in ([bad, good], [good, bad], [bad, good, "--task", "segmentation"]):
        _one_line_error(cli, "evaluate", *args, must=("bad.tif", "no valid pixel"))


# ---------------------------------------------------------------- 2. absolute elevations
def test_dsm_is_refused_with_a_hint_and_dtm_subtracts_the_terrain(tmp_path, cli):
    pre, post = _scene()
    terrain = (300.0 + np.linspace(0, 5, 100)[None, :] * np.ones((100, 1))).astype(np.float32)
    a = make_raster(tmp_path / "pre_dsm.tif", pre + terrain, nodata=-9999)
    b = make_raster(tmp_path / "post_dsm.tif", post + terrain, nodata=-9999)
    err = _one_line_error(cli, "damage-map", a, b, "-o", tmp_path / "o.tif",
                          must=("pre_dsm.tif", "absolute elevations", "--dtm", "--absolute"))
    assert not (tmp_path / "o.tif").exists(), err
    # the DTM on a coarser grid (1 m) is resampled onto PRE's grid before subtraction
    coarse = terrain[::2, ::2] + 0.0
    dtm = make_raster(tmp_path / "dtm.tif", coarse, nodata=-9999, gsd=1.0)
    code, out, err = cli("damage-map", a, b, "--dtm", dtm, "-o", tmp_path / "o.tif", "--json")
    assert code == 0, err
    s = json.loads(out)
    ref = damage_map(make_raster(tmp_path / "pre.tif", pre), make_raster(tmp_path / "post.tif", post),
                     tmp_path / "ref.tif")
    assert s["dtm"] == str(dtm) and s["by_grade"] == ref["by_grade"] == {
        "none": 0, "minor": 0, "major": 0, "destroyed": 1}
    assert s["damaged_area_m2"] == pytest.approx(ref["damaged_area_m2"], rel=0.02)
    assert s["heights"]["pre"]["max_m"] == pytest.approx(12.0, abs=0.1)
    # --absolute accepts the DSMs as they are: the loss is the same, footprints say where,
    # grades in metres (a share of an elevation means nothing)
    gpd.GeoDataFrame(geometry=[box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10)], crs=32633).to_file(
        tmp_path / "b.gpkg")
    code, out, err = cli("damage-map", a, b, "--absolute", "--buildings", tmp_path / "b.gpkg",
                         "--grades", "minor:1,major:3,destroyed:6", "-o", tmp_path / "abs.tif",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["by_grade"]["destroyed"] == 1
    _one_line_error(cli, "damage-map", a, b, "--absolute", "--dtm", dtm, "-o", tmp_path / "x.tif",
                    must=("exclude",))
    far = make_raster(tmp_path / "far.tif", coarse, origin=(900000.0, 10.0))
    empty = make_raster(tmp_path / "empty_dtm.tif", np.full_like(coarse, -9999), nodata=-9999,
                        gsd=1.0)
    for bad, msg in ((tmp_path / "missing.tif", "no such file"), (far, "does not overlap"),
                     (empty, "no valid pixel")):
        _one_line_error(cli, "damage-map", a, b, "--dtm", bad, "-o", tmp_path / "x.tif",
                        must=(bad.name, msg))
    assert not (tmp_path / "x.tif").exists()


def test_evaluate_refuses_absolute_elevations_unless_told(tmp_path, cli):
    pre, _ = _scene()
    dsm = make_raster(tmp_path / "dsm.tif", pre + 40.0, nodata=-9999)
    pred = make_raster(tmp_path / "pred.tif", pre, nodata=-9999)
    _one_line_error(cli, "evaluate", pred, dsm, must=("dsm.tif", "--absolute"))
    code, out, err = cli("evaluate", pred, dsm, "--absolute", "--format", "json")
    assert code == 0 and json.loads(out)["mae"] == pytest.approx(40.0), err


# ---------------------------------------------------------------- 3. units and scale
def test_int16_centimetres_become_metres(tmp_path, cli):
    """A 522 m building (raw int16 522) with scale 0.01, or with unit "cm", is 5.22 m."""
    pre = np.zeros((100, 100), np.int16)
    pre[20:60, 20:60] = 522
    post = np.zeros_like(pre)
    fp = tmp_path / "b.gpkg"
    gpd.GeoDataFrame(geometry=[box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10)], crs=32633).to_file(fp)
    for tag in ({"scales": (0.01,)}, {"units": ("cm",)}):
        d = tmp_path / next(iter(tag))
        d.mkdir()
        a = _tag(make_raster(d / "pre.tif", pre, nodata=-32768), **tag)
        b = _tag(make_raster(d / "post.tif", post, nodata=-32768), **tag)
        # integer rasters with a scale or a length unit are heights: no --heights needed
        code, out, err = cli("damage-map", a, b, "--buildings", fp, "-o", d / "o.tif", "--json")
        assert code == 0, err
        s = json.loads(out)
        assert s["heights"]["pre"]["max_m"] == pytest.approx(5.22, abs=1e-4)
        g = gpd.read_file(d / "o.gpkg")
        assert g.loc[0, "pre_median_m"] == pytest.approx(5.22, abs=1e-4)
        assert g.loc[0, "height_loss_m"] == pytest.approx(5.22, abs=1e-4)
        with rasterio.open(d / "o_loss.tif") as ds:
            assert ds.read(1)[30, 30] == pytest.approx(5.22, abs=1e-4)
        # evaluate: the same centimetres against a float metre reference
        ref = make_raster(d / "ref.tif", pre.astype(np.float32) / 100, nodata=-9999)
        r = evaluate(a, ref)["summary"]
        assert r["mae"] == pytest.approx(0.0, abs=1e-5)


def test_heights_above_max_height_are_refused_unless_raised(tmp_path, cli):
    pre = np.zeros((100, 100), np.int16)
    pre[20:60, 20:60] = 1500           # centimetres without metadata: 1,500 "m"
    a = make_raster(tmp_path / "pre.tif", pre, nodata=-32768)
    b = make_raster(tmp_path / "post.tif", np.zeros_like(pre), nodata=-32768)
    _one_line_error(cli, "damage-map", a, b, "--heights", "-o", tmp_path / "o.tif",
                    must=("pre.tif", "--max-height", "1500 m"))
    code, _, err = cli("damage-map", a, b, "--heights", "--max-height", 2000,
                       "-o", tmp_path / "o.tif")
    assert code == 0, err
    ref = make_raster(tmp_path / "ref.tif", pre.astype(np.float32), nodata=-9999)
    _one_line_error(cli, "evaluate", a, ref, must=("--max-height",))
    code, _, err = cli("evaluate", a, ref, "--max-height", 2000)
    assert code == 0, err
    _one_line_error(cli, "damage-map", a, b, "--max-height", -1, "-o", tmp_path / "p.tif",
                    must=("--max-height",))


def test_feet_are_converted_and_unknown_units_refused(tmp_path, cli):
    pre, post = _scene()
    a = _tag(make_raster(tmp_path / "pre.tif", pre / 0.3048, nodata=-9999), units=("ft",))
    b = _tag(make_raster(tmp_path / "post.tif", post / 0.3048, nodata=-9999), units=("ft",))
    s = damage_map(a, b, tmp_path / "o.tif")
    assert s["heights"]["pre"]["max_m"] == pytest.approx(12.0, abs=1e-3)
    assert s["heights"]["pre"]["units"] == "float32 (unit ft)"
    c = _tag(make_raster(tmp_path / "c.tif", pre, nodata=-9999), units=("pixels",))
    _one_line_error(cli, "damage-map", c, b, "-o", tmp_path / "x.tif", must=("c.tif", "'pixels'"))


def test_height_units_helpers():
    u = HeightUnits(0.01, 1.0)
    np.testing.assert_allclose(u.to_metres(np.array([0, 522], np.int16)), [1.0, 6.22], rtol=1e-6)
    f64 = np.array([1.5])
    assert HeightUnits().to_metres(f64) is f64
    assert check_heights(np.r_[np.zeros(10), 30.0], "x") == {"p2_m": 0.0, "max_m": 30.0}


def test_large_rasters_are_sampled_in_spread_blocks(tmp_path):
    a = np.arange(300 * 200, dtype=np.float32).reshape(300, 200)
    striped = make_raster(tmp_path / "a.tif", a)
    tiled = tmp_path / "t.tif"
    with rasterio.open(striped) as src:
        prof = src.profile | {"tiled": True, "blockxsize": 32, "blockysize": 32}
        with rasterio.open(tiled, "w", **prof) as dst:
            dst.write(a, 1)
    for p, full_width in ((striped, True), (tiled, False)):
        with rasterio.open(p) as ds:
            assert sample_plan(ds) is None
            plan = sample_plan(ds, limit=20_000)
            rows = sorted({int(w.row_off) for w, _ in plan})
            assert len(rows) >= 2 and rows[0] == 0 and rows[-1] >= 200
            assert all((w.width == 200) == full_width for w, _ in plan)
            assert sum(s[0] * s[1] for _, s in plan) <= 20_000
            v, ok = sample(ds, None, plan)
            assert ok.all() and v.size == sum(s[0] * s[1] for _, s in plan)
            w0, (hh, ww) = plan[0]
            np.testing.assert_array_equal(
                v[:hh * ww].reshape(hh, ww)[:, 0], a[:hh, int(w0.col_off)])
            _, ok = sample(ds, 0.0, sample_plan(ds, limit=1000))   # columns decimated
            assert ok.sum() > 0


# ---------------------------------------------------------------- 4. footprints
@pytest.mark.parametrize("geom", [Point(X0 + 20, Y0 - 20),
                                  LineString([(X0 + 10, Y0 - 10), (X0 + 30, Y0 - 30)])])
def test_points_and_lines_are_not_buildings(tmp_path, cli, geom):
    pre, post = _scene()
    a, b = make_raster(tmp_path / "a.tif", pre), make_raster(tmp_path / "b.tif", post)
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - 5, X0 + 5, Y0), geom], crs=32633).to_file(
        tmp_path / "fp.gpkg")
    _one_line_error(cli, "damage-map", a, b, "--buildings", tmp_path / "fp.gpkg",
                    "-o", tmp_path / "o.tif", must=("fp.gpkg", "buildings must be polygons",
                                                    geom.geom_type))
    assert not (tmp_path / "o.tif").exists()


def test_buildings_outside_the_raster_are_counted_not_graded(tmp_path, cli):
    pre, post = _scene()
    pre[:10] = -9999
    a = make_raster(tmp_path / "a.tif", pre, nodata=-9999)
    b = make_raster(tmp_path / "b.tif", post, nodata=-9999)
    fp = gpd.GeoDataFrame({"name": ["hit", "far", "edge", "hole"]}, geometry=[
        box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10),            # the destroyed building
        box(X0 + 500, Y0 - 30, X0 + 520, Y0 - 10),          # far outside
        box(X0 - 5, Y0 - 45, X0 + 5, Y0 - 35),              # half outside (west edge)
        box(X0 + 40, Y0 - 4, X0 + 45, Y0 - 1),              # on nodata rows
    ], crs=32633)
    fp.to_file(tmp_path / "fp.gpkg")
    code, out, err = cli("damage-map", a, b, "--buildings", tmp_path / "fp.gpkg",
                         "-o", tmp_path / "o.tif", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert (s["outside"], s["partly_outside"], s["no_valid_pixel"]) == (1, 1, 1)
    assert s["by_grade"] == {"none": 1, "minor": 0, "major": 0, "destroyed": 1}
    assert "unknown" not in out
    g = gpd.read_file(tmp_path / "o.gpkg").set_index("name")
    assert list(g["coverage"]) == ["inside", "outside", "partly outside", "no valid pixel"]
    assert g.loc["hit", "grade"] == "destroyed" and g.loc["edge", "grade"] == "none"
    assert g.loc[["far", "hole"], "grade"].isna().all()
    assert g.loc[["far", "hole"], "pre_median_m"].isna().all()
    code, out, _ = cli("damage-map", a, b, "--buildings", tmp_path / "fp.gpkg",
                       "-o", tmp_path / "o.tif", "--overwrite")
    assert code == 0 and "1 outside" in out and "1 no valid pixel" in out


def test_evaluate_footprints_refuses_points(tmp_path, cli):
    ref = gpd.GeoDataFrame(geometry=[box(X0, Y0, X0 + 10, Y0 + 10)], crs=32633)
    ref.to_file(tmp_path / "ref.gpkg")
    gpd.GeoDataFrame(geometry=[Point(X0 + 5, Y0 + 5), box(X0, Y0, X0 + 9, Y0 + 9)],
                     crs=32633).to_file(tmp_path / "pred.gpkg")
    _one_line_error(cli, "evaluate", tmp_path / "pred.gpkg", tmp_path / "ref.gpkg",
                    "--task", "footprints", must=("pred.gpkg", "must be polygons", "1 Point"))
    (tmp_path / "p.csv").write_text("ImageId,BuildingId,PolygonWKT_Pix\na,1,POINT (1 1)\n")
    (tmp_path / "r.csv").write_text("ImageId,BuildingId,PolygonWKT_Pix\na,1,POLYGON EMPTY\n")
    _one_line_error(cli, "evaluate", tmp_path / "p.csv", tmp_path / "r.csv",
                    "--task", "footprints", must=("p.csv", "must be polygons"))


def test_rsgeo_predicted_heights_skip_the_dsm_test(tmp_path, cli):
    """A (poor) model's height map with no ground is still heights above ground."""
    pre = np.full((100, 100), 8.0, np.float32)
    post = pre.copy()
    post[20:60, 20:60] = 1.0
    a = make_raster(tmp_path / "pre_height.tif", pre, nodata=-9999)
    b = make_raster(tmp_path / "post_height.tif", post, nodata=-9999)
    _one_line_error(cli, "damage-map", a, b, "-o", tmp_path / "x.tif", must=("absolute",))
    for p in (a, b):
        _tag(p)
        with rasterio.open(p, "r+") as ds:
            ds.update_tags(model="m.onnx", task="height", units="metre")
    code, out, err = cli("damage-map", a, b, "-o", tmp_path / "o.tif", "--json")
    assert code == 0 and json.loads(out)["by_grade"]["destroyed"] == 1, err
    code, out, err = cli("evaluate", a, b, "--format", "json")
    assert code == 0, err


def test_evaluate_checks_while_streaming_with_a_thinned_sample(tmp_path, cli, monkeypatch):
    """Above STREAM_SAMPLE the checks see every k-th pixel of the stream."""
    import rsgeo.io.heights

    monkeypatch.setattr(rsgeo.io.heights, "STREAM_SAMPLE", 100)
    monkeypatch.setattr(rsgeo.io.heights, "PERCENTILE_VALUES", 10)
    ref = np.zeros((100, 100), np.float32)
    ref[50:] = 3.0
    ref[70:72, :] = 1234.0
    r = make_raster(tmp_path / "ref.tif", ref)
    p = make_raster(tmp_path / "pred.tif", np.ones_like(ref))
    _one_line_error(cli, "evaluate", p, r, "--format", "json", must=("ref.tif", "1234 m"))
    d = make_raster(tmp_path / "dsm.tif", ref + 30.0)
    _one_line_error(cli, "evaluate", p, d, must=("dsm.tif", "absolute elevations"))
    code, out, err = cli("evaluate", p, r, "--max-height", 2000, "--format", "json")
    assert code == 0 and json.loads(out)["n_pixels"] == 10_000, err


COMPD_WKT = (
    'COMPD_CS["RGF93 / Lambert-93 + NGF-IGN69 height",PROJCS["RGF93 / Lambert-93",GEOGCS['
    '"RGF93",DATUM["Reseau_Geodesique_Francais_1993",SPHEROID["GRS 1980",6378137,'
    '298.257222101]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION['
    '"Lambert_Conformal_Conic_2SP"],PARAMETER["latitude_of_origin",46.5],PARAMETER['
    '"central_meridian",3],PARAMETER["standard_parallel_1",49],PARAMETER['
    '"standard_parallel_2",44],PARAMETER["false_easting",700000],PARAMETER['
    '"false_northing",6600000],UNIT["metre",1]],VERT_CS["NGF-IGN69 height",VERT_DATUM['
    '"Nivellement General de la France - IGN69",2005],UNIT["metre",1]]]')


def _compound(path, a, crs="EPSG:2154+5720", units=None):
    """``a`` [H, W] as a one-band GeoTIFF in a compound (horizontal + vertical) CRS."""
    from rasterio.crs import CRS

    with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0],
                       count=1, dtype=a.dtype, crs=CRS.from_user_input(crs),
                       transform=rasterio.Affine(0.5, 0, 700000.0, 0, -0.5, 6600000.0)) as ds:
        ds.write(a[None])
        if units:
            ds.units = (units,)
    return path


@pytest.mark.parametrize("crs", ["EPSG:2154+5720", COMPD_WKT])
def test_integer_rasters_in_a_compound_crs_are_not_taken_for_heights(tmp_path, cli, crs):
    """GDAL reports a band without a unit of its own in the vertical axis's unit of a
    compound CRS (``metre``), so a uint8 class raster counted as heights in damage-map
    (8 m "buildings" that "lost" 5 m). Only the band's own unit or scale, or a float
    raster, makes heights now; the class raster is refused with a way through."""
    pre, post = _scene()
    classes = np.where(pre > 0, 8, 2).astype(np.uint8)
    after = np.where(post > 2, 8, 3).astype(np.uint8)
    a, b = _compound(tmp_path / "pre.tif", classes, crs), _compound(tmp_path / "post.tif", after, crs)
    with rasterio.open(a) as ds:
        assert ds.units == ("metre",)                 # what GDAL lends the band
    _one_line_error(cli, "damage-map", a, b, "-o", tmp_path / "o.tif",
                    must=("pre.tif", "single-band integer raster without a length unit",
                          "--heights"))
    assert not list(tmp_path.glob("o*"))
    s = damage_map(a, b, tmp_path / "forced.tif", heights=True)   # --heights: as asked
    assert s["heights"]["pre"]["units"] == "uint8 (unit metre of the vertical CRS)"
    # heights of their own stay heights: float, or an integer band's own unit (cm, m)
    fa, fb = _compound(tmp_path / "fa.tif", pre, crs), _compound(tmp_path / "fb.tif", post, crs)
    assert damage_map(fa, fb, tmp_path / "f.tif")["heights"]["pre"]["max_m"] == 12.0
    for unit, scale in (("cm", 100), ("m", 1)):
        ia = _compound(tmp_path / f"{unit}a.tif", (pre * scale).astype(np.int16), crs, unit)
        ib = _compound(tmp_path / f"{unit}b.tif", (post * scale).astype(np.int16), crs, unit)
        s = damage_map(ia, ib, tmp_path / f"{unit}.tif")
        assert s["heights"]["pre"] == {"units": f"int16 (unit {unit})", "p2_m": 0.0,
                                       "max_m": 12.0}, unit


def test_a_float_surface_in_a_compound_crs_in_feet_is_read_in_feet(tmp_path):
    # the vertical axis's unit still converts heights of a band without one (elevations
    # in NAD83 / UTM 18N + NAVD88 height (ftUS) are in US survey feet)
    pre, post = _scene()
    crs = "EPSG:26918+6360"
    a = _compound(tmp_path / "pre.tif", pre / 0.3048006096, crs)
    b = _compound(tmp_path / "post.tif", post / 0.3048006096, crs)
    s = damage_map(a, b, tmp_path / "o.tif")
    assert s["heights"]["pre"]["units"] == "float32 (unit us survey foot of the vertical CRS)"
    assert s["heights"]["pre"]["max_m"] == pytest.approx(12.0, abs=1e-4)


def test_building_heights_warns_about_integer_heights_without_units(tmp_path, caplog):
    """building-heights and footprints --heights take any one-band raster as metres: a class
    raster (here in a compound CRS, whose ``metre`` GDAL lends the band) was measured as
    heights without a word. Now a warning says so; float heights and declared units pass
    quietly."""
    from rsgeo.footprints import footprints
    from rsgeo.footprints.heights import building_heights

    pre, _ = _scene()
    classes = _compound(tmp_path / "classes.tif", np.where(pre > 0, 8, 2).astype(np.uint8))
    cm = _compound(tmp_path / "cm.tif", (pre * 100).astype(np.int16), units="cm")
    metres = _compound(tmp_path / "m.tif", pre)
    gpd.GeoDataFrame({"id": [1]}, geometry=[box(700012, 6599972, 700028, 6599988)],
                     crs="EPSG:2154").to_file(tmp_path / "b.gpkg")
    for raster, warned in ((classes, True), (cm, False), (metres, False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="rsgeo"):
            s = building_heights(raster, tmp_path / "b.gpkg", tmp_path / f"{raster.stem}.gpkg")
            footprints(classes, tmp_path / f"fp_{raster.stem}.gpkg", classes=(8,),
                       heights=raster)
        hits = [r for r in caplog.records if "integer heights without a length unit" in r.message]
        assert len(hits) == (2 if warned else 0), (raster, caplog.text)
        assert s["measured"] == 1
