import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Polygon, box

import rasterio

from rsgeo.errors import InputError
from rsgeo.evaluate import evaluate
from rsgeo.metrics.footprints import match
from rsgeo.metrics.height import HeightAccumulator
from rsgeo.metrics.synrs3d import Synrs3dAverager, synrs3d_image_metrics
from tests.conftest import make_raster


# ---------------------------------------------------------------- synrs3d rules, by hand
def test_synrs3d_rule1_clamp_and_sentinels():
    ref = np.zeros((10, 10), np.float32)
    ref[:5] = 8.0
    ref[0, 0], ref[0, 1] = np.nan, 500.0          # -> 0, then -> 1e-6
    pred = ref.copy()
    pred[0, 0], pred[0, 1] = 0.0, -3.0            # <= 0 -> 1e-6: equal to the clamped reference
    pred[9, 9] = 0.3                              # 0.3 m on ground: ratio 3e5, delta-inaccurate
    m = synrs3d_image_metrics(pred, ref)["whole"]
    # whole: union of > 0 is every pixel (after clamping everything is > 0)
    assert m["delta1"] == pytest.approx(99 / 100)
    assert m["mae"] == pytest.approx(0.3 / 100, rel=1e-5)


def test_synrs3d_rule2_group_validity_and_union_mask():
    ref = np.zeros((20, 20), np.float32)
    ref[:10, :10] = 2.5                           # 100 px above 2 m, none above 3 m
    pred = ref.copy()
    pred[15:, 15:] = 2.5                          # 25 false-positive px above 2
    m = synrs3d_image_metrics(pred, ref)
    assert "high" not in m                        # nothing above 3 m in either
    assert m["mid"]["mae"] == pytest.approx(25 * 2.5 / 125, rel=1e-6)   # union mask: 125 px
    small = np.zeros((20, 20), np.float32)
    small[:6, :6] = 5.0                           # 36 px < 49: every group but whole skipped
    m = synrs3d_image_metrics(small, small)
    assert set(m) == {"whole"}


def test_synrs3d_rule3_f1_ignores_inaccurate_significant_pixels():
    ref = np.full(100, 0.0, np.float32)
    pred = np.full(100, 0.0, np.float32)
    ref[:10], pred[:10] = 10.0, 10.0              # 10 TP
    ref[10:20], pred[10:20] = 10.0, 20.0          # both > 1 m, ratio 2: in none of TP/FP/FN
    pred[20:25] = 5.0                             # 5 FP
    ref[25:30] = 5.0                              # 5 FN
    m = synrs3d_image_metrics(pred.reshape(10, 10), ref.reshape(10, 10))["whole"]
    assert m["precision_1"] == pytest.approx(10 / 15) and m["recall_1"] == pytest.approx(10 / 15)
    assert m["f1he_1"] == pytest.approx(2 / 3)     # a naive F1 counting them would give 0.4
    assert m["f1he_3"] == pytest.approx(2 / 3)     # 1.95 < 2: still excluded


def test_synrs3d_rule4_all_ground_scores_zero_and_per_image_average():
    avg = Synrs3dAverager()
    ground = np.zeros((10, 10), np.float32)
    avg.update(ground, ground)                     # perfect, all ground: F1 = 0, averaged in
    b = np.zeros((10, 10), np.float32)
    b[:6, :6] = 6.0
    avg.update(b, b)                               # perfect building image: F1 = 1
    r = avg.result()
    assert r["f1he_1"] == pytest.approx(0.5) and r["n_valid"] == 2
    assert r["mae_high"] == 0.0 and r["n_valid_high"] == 0    # 36 px < 49: no valid image


# ---------------------------------------------------------------- rsgeo protocol, rasters
def test_streamed_equals_one_shot_and_folders(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        ref = np.where(rng.random((70, 50)) < 0.6, 0, rng.uniform(1, 30, (70, 50))).astype(np.float32)
        pred = np.clip(ref + rng.normal(0, 1.5, ref.shape), 0, None).astype(np.float32)
        pred[rng.random(ref.shape) < 0.05] = -9999
        (tmp_path / "p").mkdir(exist_ok=True)
        (tmp_path / "r").mkdir(exist_ok=True)
        make_raster(tmp_path / "p" / f"t{i}.tif", pred, nodata=-9999)
        make_raster(tmp_path / "r" / f"t{i}.tif", ref, nodata=-9999)
    a = evaluate(tmp_path / "p", tmp_path / "r", strip_rows=7)
    b = evaluate(tmp_path / "p", tmp_path / "r", strip_rows=4096)
    for k in a["summary"]:
        assert a["summary"][k] == pytest.approx(b["summary"][k]), k
    assert a["summary"]["n_images"] == 3 and len(a["images"]) == 3
    assert a["summary"]["n_pixels"] < 3 * 70 * 50       # nodata excluded


def test_segmentation_and_change(tmp_path):
    ref = np.array([[1, 1, 2, 2], [1, 3, 3, 255]], np.uint8)
    pred = np.array([[1, 2, 2, 2], [1, 3, 1, 3]], np.uint8)
    p, r = make_raster(tmp_path / "p.tif", pred), make_raster(tmp_path / "r.tif", ref)
    (tmp_path / "c.json").write_text(json.dumps({"1": "road", "2": "tree", "3": "roof"}))
    s = evaluate(p, r, task="segmentation", classes=tmp_path / "c.json", ignore_index=255)["summary"]
    # pairs: (1,1)(1,2)(2,2)(2,2)(1,1)(3,3)(3,1)
    assert s["iou_road"] == pytest.approx(2 / 4) and s["iou_tree"] == pytest.approx(2 / 3)
    assert s["iou_roof"] == pytest.approx(1 / 2) and s["oa"] == pytest.approx(5 / 7)
    c = evaluate(p, r, task="change", ignore_index=255)["summary"]
    assert c["change_f1"] == 1.0 and set(c) >= {"change_iou", "change_precision", "change_recall"}


def test_ignore_index_is_refused_where_nothing_would_skip_it(tmp_path, cli):
    """--ignore-index applies to class maps; `evaluate --ignore-index 0` on heights (say, to
    skip the ground) scored every pixel anyway, silently, and its help did not say which
    tasks read it."""
    h = np.array([[0, 0, 5, 9]], np.float32)
    p, r = make_raster(tmp_path / "p.tif", h, nodata=-9999), make_raster(tmp_path / "r.tif", h)
    code, out, err = cli("evaluate", p, r, "--ignore-index", "0")
    assert code == 2 and out == "" and "--ignore-index" in err and "--nodata" in err, err
    with pytest.raises(InputError, match="--ignore-index skips reference values of class maps"):
        evaluate(p, r, task="height", ignore_index=0)


# ---------------------------------------------------------------- footprints
def test_iou_exactly_half_is_not_a_match():
    ref = [box(0, 0, 2, 1)]
    pred = [box(0, 0, 1, 1)]                      # IoU = 0.5 exactly
    assert match(pred, ref, iou=0.5)["tp"] == 0
    assert match(pred, ref, iou=0.49)["tp"] == 1


def test_confidence_order_decides_who_matches():
    ref = [box(0, 0, 10, 10)]
    low, high = box(0, 0, 10, 9), box(0, 0, 10, 8)
    r = match([low, high], ref, confidence=[0.1, 0.9])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 0)


def test_footprints_follow_solaris_on_invalid_and_degenerate_polygons():
    """solaris' calculate_iou: an invalid reference has IoU 0 (an FN, never a crash); FN
    counts references of area > 0 only; a prediction's area test comes before buffer(0)
    (a bowtie of signed area 0 is dropped, not an FP); equal IoUs go to the first reference."""
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])            # invalid, signed area 0
    loop = Polygon([(0, 0), (4, 0), (4, 4), (2, 2), (0, 4), (2, 2)])  # invalid, area > 0
    r = match([box(0, 0, 4, 4), box(10, 10, 12, 12)], [loop, box(10, 10, 12, 12)])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    flat = Polygon([(0, 0), (1, 0), (2, 0)])                       # not empty, area 0
    r = match([box(5, 5, 6, 6)], [flat, box(5, 5, 6, 6)])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 0, 0)
    r = match([bowtie], [box(0, 0, 2, 2)])
    assert (r["tp"], r["fp"], r["fn"]) == (0, 0, 1)
    a, b = box(-1, 0, 3, 1), box(1, 0, 5, 1)                       # IoU 0.6 with the first
    r = match([box(0, 0, 4, 1), box(-1, 0, 3, 1)], [a, b])           # prediction: a tie, a wins
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)


def test_segmentation_ids_missing_from_the_classes_file_are_refused(tmp_path):
    """Classes 1-3 named: a prediction of 0 was counted, then dropped with class 0's row and
    column, so a map 30 % wrong scored mIoU 1.0."""
    rng = np.random.default_rng(0)
    ref = rng.integers(1, 4, (30, 40)).astype(np.uint8)
    pred = np.where(rng.random(ref.shape) < 0.3, 0, ref).astype(np.uint8)
    (tmp_path / "c.json").write_text(json.dumps({"1": "road", "2": "tree", "3": "roof"}))
    p, r = make_raster(tmp_path / "p.tif", pred), make_raster(tmp_path / "r.tif", ref)
    with pytest.raises(InputError, match=r"p\.tif.*class ids \[0\]"):
        evaluate(p, r, task="segmentation", classes=tmp_path / "c.json")
    with pytest.raises(InputError, match=r"p\.tif.*class ids \[0\].*--ignore-index"):
        evaluate(r, p, task="segmentation", classes=tmp_path / "c.json")   # p.tif as REF
    (tmp_path / "c4.json").write_text(json.dumps({"0": "other", "1": "road", "2": "tree",
                                                  "3": "roof"}))
    s = evaluate(p, r, task="segmentation", classes=tmp_path / "c4.json")["summary"]
    iou = {c: ((pred == c) & (ref == c)).sum() / ((pred == c) | (ref == c)).sum()
           for c in (0, 1, 2, 3)}
    assert iou[0] == 0 and s["iou_road"] == pytest.approx(iou[1]) and iou[1] < 0.75
    assert s["miou"] == pytest.approx(np.mean(list(iou.values())))
    assert s["oa"] == pytest.approx((pred == ref).mean())


def test_spacenet_reference_numbers(realdata):
    d = realdata / "spacenet-atlanta-solaris" / "eval_reference"
    r = evaluate(d / "SN2_sample_preds.csv", d / "SN2_sample_truth.csv", task="footprints",
                 confidence="Confidence")
    got = {row["image"]: (row["tp"], row["fp"], row["fn"]) for row in r["images"]}
    # CosmiQ/solaris SN2_test_results_full.csv
    assert got == {"AOI_5_Khartoum_img130": (22, 13, 32), "AOI_2_Vegas_img3457": (28, 2, 6),
                   "AOI_2_Vegas_img5979": (7, 0, 1), "AOI_5_Khartoum_img1301": (17, 15, 23),
                   "AOI_5_Khartoum_img1306": (13, 27, 20), "AOI_5_Khartoum_img463": (0, 0, 0)}
    same = evaluate(d / "sample_preds.csv", d / "sample_truth.csv", task="footprints")
    assert same["summary"]["f1"] == 1.0


def test_vector_footprints_reprojected_and_by_field(tmp_path):
    ref = gpd.GeoDataFrame({"img": ["a", "a", "b"]}, geometry=[box(0, 0, 10, 10),
                           box(20, 0, 30, 10), box(0, 20, 10, 30)], crs=32633)
    ref = ref.set_geometry(ref.translate(500000, 4000000))
    pred = ref.iloc[[0, 2]].to_crs(4326)
    ref.to_file(tmp_path / "ref.gpkg")
    pred.to_file(tmp_path / "pred.geojson")
    r = evaluate(tmp_path / "pred.geojson", tmp_path / "ref.gpkg", task="footprints", by="img")
    assert (r["summary"]["tp"], r["summary"]["fn"]) == (2, 1)
    assert {row["image"]: row["tp"] for row in r["images"]} == {"a": 1, "b": 1}


def test_segmentation_refuses_non_integer_maps_naming_the_file(tmp_path, cli):
    # a float PRED was refused without naming it; a float REF was truncated and scored
    ints = np.array([[1, 1, 2, 2], [1, 3, 3, 2]], np.float32)
    probs = ints * 0.3
    whole = make_raster(tmp_path / "whole.tif", ints)
    frac = make_raster(tmp_path / "probs.tif", probs)
    for args, name in (([frac, whole], "probs.tif"), ([whole, frac], "probs.tif")):
        code, out, err = cli("evaluate", *args, "--task", "segmentation")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{name}: segmentation" in err and "non-integer values" in err, err
        assert ("reference" in err) == (args[1] == frac), err
    code, _, err = cli("evaluate", whole, whole, "--task", "segmentation")
    assert code == 0, err


# ---------------------------------------------------------------- bad inputs
def test_bad_inputs_exit_2(tmp_path, cli):
    a = make_raster(tmp_path / "a.tif", np.ones((8, 8), np.float32))
    b = make_raster(tmp_path / "b.tif", np.ones((8, 8), np.float32), gsd=1.0)
    c = make_raster(tmp_path / "c.tif", np.ones((8, 8), np.float32), crs="EPSG:3857")
    nod = make_raster(tmp_path / "n.tif", np.full((8, 8), -9999, np.float32), nodata=-9999)
    cplx = make_raster(tmp_path / "x.tif", np.ones((8, 8), np.complex64))
    gpd.GeoDataFrame(geometry=[]).set_crs(32633).to_file(tmp_path / "empty.gpkg")
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=32633).to_file(tmp_path / "crs.gpkg")
    utm = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
           "geometry": box(500000, 4000000, 500010, 4000010).__geo_interface__}]}
    (tmp_path / "utm.geojson").write_text(json.dumps(utm))  # no "crs": read as lon/lat
    (tmp_path / "p").mkdir(), (tmp_path / "r").mkdir()
    make_raster(tmp_path / "p" / "x.tif", np.ones((8, 8), np.float32))
    make_raster(tmp_path / "r" / "y.tif", np.ones((8, 8), np.float32))
    cases = [
        ([a, b], "grid differs"), ([a, c], "grid differs"), ([a, nod], "no valid pixel"),
        ([cplx, a], "data type"), ([a, a, "--task", "volume"], "volume"),
        ([tmp_path / "empty.gpkg", tmp_path / "crs.gpkg", "--task", "footprints"], "empty"),
        ([tmp_path / "nocrs.gpkg", tmp_path / "crs.gpkg", "--task", "footprints"], "no CRS"),
        ([tmp_path / "utm.geojson", tmp_path / "crs.gpkg", "--task", "footprints"],
         "utm.geojson: coordinates outside EPSG:4326's range"),
        ([tmp_path / "p", tmp_path / "r"], "without a partner"),
    ]
    for args, msg in cases:
        code, _, err = cli("evaluate", *args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) <= 3, (args, err)
    code, out, err = cli("evaluate", a, b, "--align", "bilinear", "--format", "json")
    assert code == 0 and json.loads(out)["mae"] == 0


def test_json_flag_is_an_alias_of_format_json(tmp_path, cli):
    # every other command prints its machine-readable report with --json; evaluate refused it
    rng = np.random.default_rng(0)
    a = make_raster(tmp_path / "a.tif", rng.uniform(0, 20, (16, 16)).astype(np.float32))
    b = make_raster(tmp_path / "b.tif", rng.uniform(0, 20, (16, 16)).astype(np.float32))
    code, flag, err = cli("evaluate", a, b, "--json")
    assert code == 0, err
    code, old, _ = cli("evaluate", a, b, "--format", "json")
    assert code == 0 and json.loads(flag) == json.loads(old) and "mae" in json.loads(flag)
    code, _, _ = cli("evaluate", a, b, "--json", "-o", tmp_path / "m.json")
    assert code == 0 and json.loads((tmp_path / "m.json").read_text()) == json.loads(old)
    code, _, err = cli("evaluate", a, b, "--json", "--format", "csv")
    assert code == 2 and "--json and --format csv" in err


def test_a_raster_without_crs_is_never_aligned(tmp_path, cli):
    """PRED without a CRS was resampled with --align as if it were in REF's CRS and scored;
    rasters without CRS on one grid (benchmark tiles) are still scored pixel for pixel."""
    h = np.arange(64, dtype=np.float32).reshape(8, 8)
    ref = make_raster(tmp_path / "ref.tif", h)
    nocrs = make_raster(tmp_path / "pred_nocrs.tif", h, crs=None)
    for args in ([nocrs, ref, "--align", "bilinear"], [ref, nocrs, "--align", "nearest"],
                 [nocrs, ref], [nocrs, ref, "--align", "bilinear", "--protocol", "synrs3d"]):
        code, out, err = cli("evaluate", *args, "-o", tmp_path / "o.json")
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert "pred_nocrs.tif: has no CRS" in err, (args, err)
    assert not (tmp_path / "o.json").exists()
    also = make_raster(tmp_path / "ref_nocrs.tif", h, crs=None)
    code, out, err = cli("evaluate", nocrs, also, "--format", "json")
    assert code == 0 and json.loads(out)["mae"] == 0, err


def test_malformed_spacenet_csv_names_the_file_and_line(tmp_path, cli):
    head = "ImageId,BuildingId,PolygonWKT_Pix,Confidence\n"
    good = tmp_path / "good.csv"
    good.write_text(head + 'img1,1,"POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))",1\n')
    bad = tmp_path / "bad.csv"
    bad.write_text(head + 'img1,1,"POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))",1\n'
                   'img1,2,"POLYGON ((0 0, 10 0",1\n')
    for args in ((good, bad), (bad, good)):
        code, _, err = cli("evaluate", *args, "--task", "footprints")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "bad.csv" in err and "line 3" in err, err


@pytest.mark.parametrize("task", ["height", "segmentation"])
def test_evaluate_same_numbers_for_any_thread_count(tmp_path, monkeypatch, task):
    """Metrics run on a thread pool beside the reads; totals are added in stream order."""
    rng = np.random.default_rng(3)
    if task == "height":
        ref = np.where(rng.random((150, 260)) < 0.5, 0, rng.uniform(0, 20, (150, 260)))
        pred = np.clip(ref + rng.normal(0, 2, ref.shape), 0, None).astype(np.float32)
        pred[rng.random(ref.shape) < 0.05] = np.nan
        ref, nodata = ref.astype(np.float32), -9999.0
        ref[:9, :30] = nodata
    else:
        ref = rng.integers(0, 4, (150, 260)).astype(np.uint8)
        pred = np.where(rng.random(ref.shape) < 0.7, ref, 3).astype(np.uint8)
        nodata = None
    p = make_raster(tmp_path / "p.tif", pred)
    r = make_raster(tmp_path / "r.tif", ref, nodata=nodata)
    results = []
    for threads in ("1", "3"):
        monkeypatch.setenv("RSGEO_IO_THREADS", threads)
        results.append(evaluate(p, r, task=task, strip_rows=40))
    assert results[0] == results[1]
    one = evaluate(p, r, task=task, strip_rows=10_000)  # one strip: a different grouping
    for k, v in results[0]["summary"].items():
        assert v == pytest.approx(one["summary"][k], rel=1e-12, nan_ok=True), k


@pytest.mark.parametrize("dtype,nodata", [("int16", None), ("int16", -1), ("int16", 0),
                                          ("float32", float("nan"))])
def test_height_pieces_with_and_without_nodata(tmp_path, dtype, nodata):
    """Pieces without nodata skip the masks; the counts are those of the masked arrays
    (centimetres, nodata only in some strips; NaN nodata: NaN pixels drop as non-finite)."""
    rng = np.random.default_rng(7)
    ref = np.where(rng.random((90, 120)) < 0.5, 0, rng.integers(100, 2500, (90, 120)))
    pred = np.clip(ref + rng.integers(-150, 150, ref.shape), 1, None)
    ref, pred = ref.astype(dtype), pred.astype(dtype)
    hole = np.nan if nodata is None or np.isnan(nodata) else nodata
    if nodata is not None:
        ref[60:70, 5:9] = hole                   # only the strips over rows 60-69
        pred[3, 100] = hole
    paths = []
    for name, a in (("p", pred), ("r", ref)):
        path = make_raster(tmp_path / f"{name}.tif", a, nodata=nodata)
        with rasterio.open(path, "r+") as ds:
            ds.units = ("cm",)
        paths.append(path)
    got = evaluate(*paths, strip_rows=20)["summary"]
    ok = np.ones(ref.shape, bool) if nodata is None else (
        np.isfinite(ref) & np.isfinite(pred) if np.isnan(hole) else (ref != hole) & (pred != hole))
    acc = HeightAccumulator()
    acc.update(pred[ok].astype(np.float32) * np.float32(0.01),
               ref[ok].astype(np.float32) * np.float32(0.01))
    want = acc.result()
    assert got["n_pixels"] == int(ok.sum()) == want["n_pixels"]
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9), k


def test_integer_heights_without_a_unit_are_warned_about_once_per_file(tmp_path, caplog):
    """evaluate scored uint16 / int16 heights without a unit as whole metres without a word,
    where building-heights, footprints and damage-map speak up. Now each such file gets the
    same warning, once, however many pairs it is in; float heights and integer heights
    with a unit pass quietly."""
    rng = np.random.default_rng(3)
    h = rng.integers(0, 20, (40, 50))
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    make_raster(tmp_path / "pred" / "a.tif", h.astype(np.uint16))
    make_raster(tmp_path / "pred" / "b.tif", h.astype(np.int16))
    make_raster(tmp_path / "ref" / "a.tif", h.astype(np.float32))
    cm = make_raster(tmp_path / "ref" / "b.tif", (h * 100).astype(np.uint16))
    with rasterio.open(cm, "r+") as ds:
        ds.units = ("cm",)

    def warned(*args) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="rsgeo"):
            evaluate(*args)
        return sorted(r.getMessage().split(":")[0] for r in caplog.records
                      if "integer heights without a length unit" in r.getMessage())

    pred, ref = tmp_path / "pred", tmp_path / "ref"
    assert warned(pred, ref) == [str(pred / "a.tif"), str(pred / "b.tif")]
    assert warned(pred, pred) == [str(pred / "a.tif"), str(pred / "b.tif")]  # each once
    assert warned(pred / "a.tif", pred / "a.tif") == [str(pred / "a.tif")]
    assert warned(ref / "a.tif", ref / "b.tif") == []


def _solaris_counts(preds, refs, conf=None, miniou=0.5, min_area=0.0):
    """solaris' eval_iou_spacenet_csv + calculate_iou as plain loops: (tp, fp, fn)."""
    order = sorted(range(len(preds)), key=lambda i: -conf[i]) if conf is not None else \
        range(len(preds))
    gt = [j for j, r in enumerate(refs) if r.area >= min_area]
    props = [i for i in order if preds[i].area > min_area]
    tp = 0
    for i in props:
        g = preds[i] if preds[i].is_valid else preds[i].buffer(0.0)
        best, best_j = None, None
        for j in gt:                                   # idxmax: the first of equal IoUs
            if refs[j].intersects(g):
                s = (g.intersection(refs[j]).area / g.union(refs[j]).area
                     if g.is_valid and refs[j].is_valid else 0.0)
                if best is None or s > best:
                    best, best_j = s, j
        if best is not None and best > miniou:
            tp += 1
            gt.remove(best_j)
    return tp, len(props) - tp, sum(1 for j in gt if refs[j].area > 0)


@pytest.mark.parametrize("seed", range(40))
def test_footprints_equal_plain_solaris_loops(seed):
    import shapely

    rng = np.random.default_rng(seed)

    def poly():
        x, y, w, h = *rng.uniform(0, 20, 2), *rng.uniform(0.5, 4, 2)
        kind = rng.random()
        if kind < 0.1:
            return Polygon([(x, y), (x + w, y + h), (x + w, y), (x, y + h)])      # bowtie
        if kind < 0.15:
            return Polygon([(x, y), (x + w, y), (x + 2 * w, y)])                  # area 0
        return box(x, y, x + w, y + h)

    refs = [poly() for _ in range(rng.integers(0, 12))]
    preds = [shapely.affinity.translate(r, *rng.normal(0, 0.4, 2)) for r in refs
             if rng.random() < 0.8] + [poly() for _ in range(rng.integers(0, 5))]
    conf = rng.integers(0, 3, len(preds)).astype(float) if seed % 2 else None
    min_area = 2.0 if seed % 3 == 0 else 0.0
    r = match(preds, refs, min_area=min_area, confidence=conf)
    assert (r["tp"], r["fp"], r["fn"]) == _solaris_counts(preds, refs, conf, 0.5, min_area)


@pytest.mark.parametrize("seed", range(6))
def test_segmentation_and_change_equal_plain_counts(tmp_path, seed):
    """Per-class IoU, mIoU, OA and change F1 from per-pixel loops, with nodata in PRED,
    255 ignored in REF, named and unnamed classes and any strip height."""
    rng = np.random.default_rng(seed)
    k, (h, w) = int(rng.integers(2, 6)), (int(x) for x in rng.integers(1, 60, 2))
    ref = rng.integers(0, k, (h, w)).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < 0.6, ref, rng.integers(0, k, (h, w))).astype(np.uint8)
    ref[rng.random((h, w)) < 0.1] = 255
    pred[rng.random((h, w)) < 0.05] = 200                       # PRED's nodata
    keep = (ref != 255) & (pred != 200)
    pairs = list(zip(pred[keep].tolist(), ref[keep].tolist()))
    named = seed % 2 == 0
    (tmp_path / "c.json").write_text(json.dumps({str(i): f"c{i}" for i in range(k)}))
    classes = range(k) if named else sorted({c for pair in pairs for c in pair})
    p, r = make_raster(tmp_path / "p.tif", pred, nodata=200), make_raster(tmp_path / "r.tif", ref)
    s = evaluate(p, r, task="segmentation", classes=tmp_path / "c.json" if named else None,
                 ignore_index=255, strip_rows=int(rng.integers(1, 20)))["summary"]
    ious = []
    for c in classes:
        tp = sum(a == c and b == c for a, b in pairs)
        union = sum(a == c or b == c for a, b in pairs)
        ious.append(tp / union if union else 0.0)
        assert s[f"iou_{f'c{c}' if named else c}"] == pytest.approx(ious[-1])
    assert s["miou"] == pytest.approx(np.mean(ious))
    assert s["oa"] == pytest.approx(sum(a == b for a, b in pairs) / len(pairs))
    c = evaluate(p, r, task="change", ignore_index=255)["summary"]
    tp = sum(a != 0 and b != 0 for a, b in pairs)
    fp, fn = sum(a != 0 and b == 0 for a, b in pairs), sum(a == 0 and b != 0 for a, b in pairs)
    assert c["change_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    assert c["change_iou"] == pytest.approx(tp / (tp + fp + fn) if tp else 0.0)
