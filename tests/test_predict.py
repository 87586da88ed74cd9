"""``rsgeo predict`` for every task: segmentation, change, classification (tiny models)."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsgeo.errors import InputError
from rsgeo.infer.predict import predict_files
from rsgeo.infer.writers import WRITERS, class_palette, softmax
from rsgeo.io.windows import TileGrid
from rsgeo.tasks.bundle import build_task_model, save_task_model
from rsgeo.viz import LANDCOVER_COLORS
from tests.conftest import make_raster

NAMES = {"0": "ground", "1": "tree", "2": "building"}
BASE = {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64, "head": "dpt",
        "head_features": 16}
META = {"bands": ["red", "green", "blue"], "mean": [120.0] * 3, "std": [50.0] * 3,
        "gsd": 0.5, "tile": 64, "overlap": 16, "nodata": -9999}


def _ckpt(path: Path, task: str) -> Path:
    torch.manual_seed(0)
    cfg = {**BASE, "task": task}
    meta = {**META, "task": task}
    if task in ("segmentation", "classification"):
        cfg["num_classes"] = 3
        meta.update(num_classes=3, classes=NAMES)
    save_task_model(build_task_model(cfg), cfg, meta, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return {t: _ckpt(d / f"{t}.ckpt", t) for t in ("height", "segmentation", "change",
                                                     "classification")}


def _rgb(path, h, w, seed=0, **kw):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(yy / 9.0) * np.cos(xx / 7.0)
    img = np.clip(base[None] + rng.integers(0, 30, (3, h, w)), 1, 255).astype(np.uint8)
    return make_raster(path, img, **kw), img


class PixelLogits:
    """A tile-independent 'model': class logits from the normalised bands of each pixel,
    so blending changes nothing and the expected probabilities are exact."""

    device = "cpu"

    def __call__(self, batch):
        return np.stack([batch[:, 0], batch[:, 1] - 0.2, 0.5 * batch[:, 2]], axis=1)


def _seg_runner():
    return PixelLogits(), {**META, "task": "segmentation", "classes": NAMES, "num_classes": 3}, \
        {**BASE, "task": "segmentation", "num_classes": 3}


def test_writers_cover_every_task():
    from rsgeo.tasks import task_names

    assert set(WRITERS) == set(task_names())  # every registered (built-in) task has a writer


def test_segmentation_classes_are_the_argmax_of_blended_probabilities(tmp_path):
    src, img = _rgb(tmp_path / "img.tif", 100, 130)
    out = tmp_path / "cls.tif"
    r = predict_files([src], "seg.ckpt", [out], runner=_seg_runner(), tile=64, overlap=16,
                      options={"probabilities": True})
    assert r["files"][0]["task"] == "segmentation"
    x = (img.astype(np.float32) - 120) / 50
    want = softmax(PixelLogits()(x[None]))[0]
    with rasterio.open(out) as ds, rasterio.open(tmp_path / "cls_probabilities.tif") as pr:
        cls, probs = ds.read(1), pr.read()
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and pr.count == 3
        assert ds.tags()["class_2"] == "building"
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)   # sum to 1
    np.testing.assert_allclose(probs, want, atol=1e-5)          # blending kept them
    np.testing.assert_array_equal(cls, probs.argmax(0))         # argmax of blended scores


def test_segmentation_nodata_and_other_gsd(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(1, 255, (3, 80, 90)).astype(np.uint8)
    img[:, 10:20, 30:50] = 0
    src = make_raster(tmp_path / "img.tif", img, nodata=0, gsd=0.7)  # model GSD 0.5: resampled
    out = tmp_path / "cls.tif"
    r = predict_files([src], "seg.ckpt", [out], runner=_seg_runner(), tile=64, overlap=16,
                      options={"probabilities": True})
    assert r["files"][0]["resampled"]
    with rasterio.open(out) as ds, rasterio.open(tmp_path / "cls_probabilities.tif") as pr:
        cls, probs = ds.read(1), pr.read()
        assert (ds.width, ds.height) == (90, 80)
        assert ds.colormap(1)[1] == (*LANDCOVER_COLORS[1], 255)
    assert (cls[10:20, 30:50] == 255).all() and (probs[:, 10:20, 30:50] == -9999).all()
    ok = cls != 255
    np.testing.assert_allclose(probs[:, ok].sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(cls[ok], probs[:, ok].argmax(0))



# Lambert-93 + NGF-IGN69 heights: GDAL reports a band without a unit of its own in the
# CRS's vertical unit, so class and probability rasters read back as "metre" (heights)
COMPOUND = dict(crs=rasterio.crs.CRS.from_user_input("EPSG:2154+5720"),
                origin=(700000.0, 6600000.0))


def test_class_and_probability_rasters_in_a_compound_crs_keep_their_own_units(tmp_path, cli,
                                                                             models):
    from rsgeo.damage.inputs import kind_of

    src, _ = _rgb(tmp_path / "img.tif", 64, 72, **COMPOUND)
    with rasterio.open(src) as ds:
        assert ds.crs.to_authority() == ("EPSG", "5698") and ds.units == ("metre",) * 3
    out = tmp_path / "cls.tif"
    predict_files([src], "seg.ckpt", [out], runner=_seg_runner(), tile=64, overlap=16,
                  options={"probabilities": True})
    with rasterio.open(out) as ds, rasterio.open(tmp_path / "cls_probabilities.tif") as pr:
        assert ds.crs == COMPOUND["crs"] and pr.crs == COMPOUND["crs"]  # the CRS is kept
        assert ds.units == ("class",) and pr.units == ("probability",) * 3
    assert kind_of(out) == "image"                     # not taken for heights
    post, _ = _rgb(tmp_path / "post.tif", 64, 72, seed=3, **COMPOUND)
    for task, args, want in (("change", [src, post], {"c.tif": "class",
                                                      "c_probability.tif": "probability"}),
                             ("height", [src], {"c.tif": "metre"})):
        code, _, err = cli("predict", *args, "-m", models[task], "-o", tmp_path / "c.tif",
                           "--cog", "--overwrite")
        assert code == 0, err
        for name, unit in want.items():
            with rasterio.open(tmp_path / name) as ds:
                assert ds.units == (unit,), (task, name, ds.units)

def test_cli_segmentation_names_colour_table_and_folder(tmp_path, cli, models):
    a, _ = _rgb(tmp_path / "a.tif", 70, 90)
    b, _ = _rgb(tmp_path / "b.tif", 64, 64, seed=2)
    code, out, err = cli("predict", a, b, "-m", models["segmentation"], "-o", tmp_path / "o",
                         "--probabilities", "--json")
    assert code == 0, err
    with rasterio.open(tmp_path / "o" / "a_classes.tif") as ds:
        assert ds.colormap(1)[2] == class_palette(3)[2] == (*LANDCOVER_COLORS[2], 255)
        assert ds.tags()["class_0"] == "ground" and ds.tags()["task"] == "segmentation"
        assert set(np.unique(ds.read(1))) <= {0, 1, 2}
    # class names for QGIS's legend: GDAL keeps them only in its .aux.xml side file
    side = ET.parse(tmp_path / "o" / "a_classes.tif.aux.xml").getroot()
    assert [c.text for c in side.iter("Category")] == ["ground", "tree", "building"]
    with rasterio.open(tmp_path / "o" / "b_classes_probabilities.tif") as pr:
        np.testing.assert_allclose(pr.read().sum(0), 1.0, atol=1e-5)
    assert '"class_fractions"' in out


def test_readme_and_help_name_the_probabilities_file_a_folder_run_writes(cli):
    # folder runs write <stem>_classes_probabilities.tif (the test above reads it); the
    # README said <stem>_probabilities.tif
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    seg = readme[readme.index("- **segmentation**"):readme.index("- **change**")]
    assert "`<stem>_classes_probabilities.tif`" in seg and "`<stem>_probabilities.tif`" not in seg
    code, out, _ = cli("predict", "--help")
    assert code == 0 and "<stem>_classes_probabilities.tif" in " ".join(out.split())


def test_predict_skip_existing_resumes_a_segmentation_folder(tmp_path, cli, models):
    """predict --skip-existing: a folder output whose every file (classes, probabilities) is
    there is left as it is; one with a file missing is refused, not half redone; models
    writing one output (change, classification) refuse the option."""
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        _rgb(folder / f"t{k}.tif", 40 + 8 * k, 48, seed=k)
    out = tmp_path / "o"
    args = ("predict", folder, "-m", models["segmentation"], "-o", out, "--probabilities")
    code, _, err = cli(*args)
    assert code == 0, err
    kept = (out / "t0_classes.tif").read_bytes()
    for name in ("t1_classes.tif", "t1_classes_probabilities.tif"):
        (out / name).unlink()
    code, text, err = cli(*args, "--skip-existing", "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in text.strip().splitlines()]
    assert [Path(x["output"]).name for x in lines[:-1]] == ["t1_classes.tif"]
    assert len(lines[-1]["skipped"]) == 2 and (out / "t0_classes.tif").read_bytes() == kept
    (out / "t2_classes_probabilities.tif").unlink()
    code, _, err = cli(*args, "--skip-existing")
    assert code == 2 and "t2_classes.tif" in err and "without t2_classes_probabilities.tif" in err
    pre, _ = _rgb(tmp_path / "pre.tif", 40, 40)
    code, _, err = cli("predict", pre, pre, "-m", models["change"], "-o", tmp_path / "c.tif",
                       "--skip-existing")
    assert code == 2 and "--skip-existing" in err and "change" in err, err


def test_cli_change_aligns_post_onto_pre(tmp_path, cli, models, caplog):
    pre, _ = _rgb(tmp_path / "pre.tif", 72, 80)
    post, _ = _rgb(tmp_path / "post.tif", 72, 80, seed=3, origin=(500004.0, 4100000.0))
    code, out, err = cli("predict", pre, post, "-m", models["change"], "-o", tmp_path / "c.tif",
                         "--json")
    assert code == 0, err
    with rasterio.open(tmp_path / "c.tif") as m, rasterio.open(pre) as p, \
            rasterio.open(tmp_path / "c_probability.tif") as pr:
        assert m.transform == p.transform and m.shape == p.shape and m.dtypes[0] == "uint8"
        mask, prob = m.read(1), pr.read(1)
    assert (mask[:, :8] == 255).all()          # 4 m = 8 px left of POST: no POST data
    v = mask != 255
    assert set(np.unique(mask[v])) <= {0, 1}
    assert ((prob[v] >= 0) & (prob[v] <= 1)).all()
    np.testing.assert_array_equal(mask[v], (prob[v] >= 0.5).astype(np.uint8))
    assert '"changed_fraction"' in out
    # GDAL's side file keeps "no change" transparent (the GeoTIFF palette has no alpha: it
    # read back opaque black, hiding the imagery in QGIS) and names both classes
    with rasterio.open(tmp_path / "c.tif") as m:
        assert m.colormap(1)[0][3] == 0 and m.colormap(1)[1] == (220, 30, 30, 255)
    side = ET.parse(tmp_path / "c.tif.aux.xml").getroot()
    assert [c.text for c in side.iter("Category")] == ["no change", "change"]


def test_change_pairs_refused_in_one_line(tmp_path, cli, models):
    pre, _ = _rgb(tmp_path / "pre.tif", 64, 64)
    far, _ = _rgb(tmp_path / "far.tif", 64, 64, origin=(600000.0, 4100000.0))
    wide = make_raster(tmp_path / "u16.tif", np.full((3, 64, 64), 300, np.uint16))
    for post, words in ((far, "does not overlap"), (wide, "same data type")):
        code, _, err = cli("predict", pre, post, "-m", models["change"], "-o", tmp_path / "x.tif")
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli("predict", pre, "-m", models["change"], "-o", tmp_path / "x.tif")
    assert code == 2 and "change.ckpt" in err and "holds a change model" in err
    assert not (tmp_path / "x.tif").exists()


def test_cli_classification_rows_with_footprints(tmp_path, cli, models):
    import pandas as pd
    from shapely import wkt

    src, _ = _rgb(tmp_path / "img.tif", 100, 140)
    code, _, err = cli("predict", src, "-m", models["classification"], "-o", tmp_path / "t.csv")
    assert code == 0, err
    rows = pd.read_csv(tmp_path / "t.csv")
    assert len(rows) == len(TileGrid(100, 140, 64, 0))      # overlap 0 for classification
    assert set(rows["class_name"]) <= set(NAMES.values())
    np.testing.assert_allclose(rows[["p_ground", "p_tree", "p_building"]].sum(axis=1), 1, atol=1e-5)
    with rasterio.open(src) as ds:
        left, bottom, right, top = ds.bounds
    first = wkt.loads(rows["geometry"][0])
    assert first.bounds == pytest.approx((left, top - 32.0, left + 32.0, top))  # 64 px at 0.5 m
    code, _, err = cli("predict", src, "-m", models["classification"], "-o",
                       tmp_path / "t.parquet", "--per-input")
    assert code == 0, err
    import geopandas as gpd

    g = gpd.read_parquet(tmp_path / "t.parquet")
    assert len(g) == 1 and g.crs.to_epsg() == 32633
    assert g.geometry[0].bounds == pytest.approx((left, bottom, right, top))


def test_table_rows_of_a_rotated_grid_are_its_tiles_true_shapes():
    import math

    from affine import Affine
    from rasterio.windows import Window

    from rsgeo.infer.writers import TileRows, _input_row, _tile_rows
    from rsgeo.io.raster import Grid

    th = math.radians(30)
    grid = Grid(rasterio.crs.CRS.from_epsg(32631),
                Affine(0.5 * math.cos(th), 0.5 * math.sin(th), 5e5, 0.5 * math.sin(th),
                       -0.5 * math.cos(th), 4.8e6), 128, 96)
    sink = TileRows(grid, 64, "img.tif", ["a", "b"])
    wins = [Window(c, r, 64, 64) for r in (0, 64) for c in (0, 64)]
    sink.put(wins, np.full((4, 2), 0.5), np.ones((4, 64, 64), bool))
    tiles = [row["geometry"] for row in _tile_rows(sink)]
    assert [t.area for t in tiles] == pytest.approx([32 * 32, 32 * 32, 32 * 16, 32 * 16])
    assert tiles[3].exterior.coords[0] == pytest.approx(grid.transform * (64, 64))
    whole = _input_row(sink)[0]["geometry"]
    assert whole.area == pytest.approx(64 * 48) and whole.equals(grid.outline())


def test_bad_models_and_outputs_exit_2_naming_the_model(tmp_path, cli, models):
    src, _ = _rgb(tmp_path / "img.tif", 64, 64)
    code, _, err = cli("predict", src, "-m", models["classification"], "-o", tmp_path / "t.tif")
    assert code == 2 and "table" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("predict-height", src, "-m", models["segmentation"], "-o",
                       tmp_path / "h.tif")
    assert code == 2 and "segmentation.ckpt" in err and "holds a segmentation model" in err
    with pytest.raises(InputError, match="not a segmentation model"):
        predict_files([src], models["height"], [tmp_path / "s.tif"], expect="segmentation")


def test_raster_outputs_not_named_tif_are_refused(tmp_path, cli, models):
    """predict -o x.png wrote a GeoTIFF named x.png: a raster output ends in .tif/.tiff
    (a name no task writes is refused before the model loads, a table name for a raster
    task once the model's task is known), and nothing is written."""
    src, _ = _rgb(tmp_path / "img.tif", 64, 64)
    post, _ = _rgb(tmp_path / "post.tif", 64, 64, seed=1)
    for args, name in (([src, "-m", tmp_path / "never_read.onnx"], "a.png"),
                       ([src, "-m", models["height"]], "b.csv"),
                       ([src, "-m", models["segmentation"], "--probabilities"], "c.jpg"),
                       ([src, post, "-m", models["change"]], "d.png")):
        code, _, err = cli("predict", *args, "-o", tmp_path / name)
        assert code == 2 and f"{name}: " in err and ".tif" in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "post.tif"]



def _pair_onnx(path: Path) -> Path:
    """A tiny two-input ONNX 'change model' with rsgeo metadata: logit = mean over bands
    of (post - pre), pixel by pixel (so the expected probability is exact)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    shape = ["b", 3, "h", "w"]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["post", "pre"], ["d"]),
         helper.make_node("ReduceMean", ["d"], ["output"], axes=[1], keepdims=1)],
        "pair", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                 for n in ("pre", "post")],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 1, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {**META, "task": "change", "format": "rsgeo-onnx", "stride": 16,
             "config": {**BASE, "task": "change"}, "inputs": ["pre", "post"]}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in props.items()})
    onnx.save(model, str(path))
    return path


def test_change_onnx_feeds_pre_and_post_inputs(tmp_path):
    onnx_path = _pair_onnx(tmp_path / "pair.onnx")
    pre, a = _rgb(tmp_path / "pre.tif", 64, 80)
    post, b = _rgb(tmp_path / "post.tif", 64, 80, seed=5)
    r = predict_files([(pre, post)], onnx_path, [tmp_path / "c.tif"], tile=32, overlap=8,
                      device="cpu")
    assert r["files"][0]["backend"] == "onnx" and r["files"][0]["post"] == str(post)
    want = 1 / (1 + np.exp(-((b.astype(np.float32) - a) / 50).mean(0)))
    with rasterio.open(tmp_path / "c_probability.tif") as ds:
        np.testing.assert_allclose(ds.read(1), want, atol=1e-5)


def _bright_building_onnx(path: Path) -> Path:
    """A tiny ONNX segmentation 'model' (classes ground, tree, building): the building
    logit is 5 x the normalised red band, the others 0 (bright red = building)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in (
        ("s", [0], np.int64), ("e", [1], np.int64), ("ax", [1], np.int64),
        ("five", 5.0, np.float32), ("zero", 0.0, np.float32))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["image", "s", "e", "ax"], ["r"]),
         helper.make_node("Mul", ["r", "five"], ["b"]),
         helper.make_node("Mul", ["r", "zero"], ["z"]),
         helper.make_node("Concat", ["z", "z", "b"], ["output"], axis=1)],
        "bright", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {**META, "task": "segmentation", "num_classes": 3, "classes": NAMES,
             "format": "rsgeo-onnx", "stride": 16, "inputs": ["image"],
             "config": {**BASE, "task": "segmentation", "num_classes": 3}}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in props.items()})
    onnx.save(model, str(path))
    return path


def _scene(path, seed=0):
    img = np.full((3, 72, 96), 60, np.uint8) + np.random.default_rng(seed).integers(
        0, 20, (3, 72, 96)).astype(np.uint8)
    img[0, 20:40, 30:60] = 250                   # 20 x 30 px at 0.5 m: 150 m²
    return make_raster(path, img)


def test_footprints_from_an_image_with_a_segmentation_model(tmp_path, cli, models):
    import json

    import geopandas as gpd

    seg = _bright_building_onnx(tmp_path / "bright.onnx")
    img = _scene(tmp_path / "img.tif")
    code, out, err = cli("footprints", img, "-m", seg, "-o", tmp_path / "b.gpkg", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["buildings_from"]["class"] == "building" and s["features"] == 1
    g = gpd.read_file(tmp_path / "b.gpkg")
    assert g.area.iloc[0] == pytest.approx(150.0, rel=0.02) and g.crs.to_epsg() == 32633
    code, _, err = cli("footprints", img, "-m", models["height"], "-o", tmp_path / "h.gpkg")
    assert code == 2 and "height.ckpt" in err and "holds a height model" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "h.gpkg").exists()


def test_footprints_from_a_bgr_image_take_bands(tmp_path, cli):
    """--bands reaches the model through footprints -m: a BGR image read as 3,2,1 finds the
    bright-red building that the band order as stored hides; --bands without -m is refused."""
    import json

    seg = _bright_building_onnx(tmp_path / "bright.onnx")
    rgb = _scene(tmp_path / "rgb.tif")
    with rasterio.open(rgb) as ds:
        bgr = make_raster(tmp_path / "bgr.tif", ds.read()[::-1].copy())
    code, out, err = cli("footprints", bgr, "-m", seg, "-o", tmp_path / "stored.gpkg", "--json")
    assert code == 0, err
    assert json.loads(out)["features"] == 0
    code, out, err = cli("footprints", bgr, "-m", seg, "--bands", "3,2,1", "-o",
                         tmp_path / "b.gpkg", "--json")
    assert code == 0, err
    assert json.loads(out)["features"] == 1
    code, _, err = cli("footprints", tmp_path / "rgb.tif", "--bands", "1,2,3", "-o",
                       tmp_path / "x.gpkg")
    assert code == 2 and "--band" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.gpkg").exists()


def test_footprints_from_an_image_name_the_image_not_the_temporary_probabilities(
        tmp_path, cli, caplog):
    # the warnings and the JSON "input" named .rsgeo-XXXX/<stem>_classes_probabilities.tif,
    # a file deleted before the user could look at it
    import json
    import logging

    seg = _bright_building_onnx(tmp_path / "bright.onnx")
    empty = make_raster(tmp_path / "empty.tif", np.full((3, 72, 96), 60, np.uint8))
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        code, out, err = cli("footprints", empty, "-m", seg, "-o", tmp_path / "e.gpkg", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["features"] == 0 and s["input"] == str(empty)
    assert f"{empty}: no building found" in caplog.text, caplog.text
    assert "_probabilities" not in caplog.text + out + err and ".rsgeo-" not in caplog.text + out


def test_damage_map_grades_buildings_found_by_a_model(tmp_path, cli, models):
    import json

    seg = _bright_building_onnx(tmp_path / "bright.onnx")
    pre, post = _scene(tmp_path / "pre.tif"), _scene(tmp_path / "post.tif", seed=1)
    code, out, err = cli("damage-map", pre, post, "-m", models["height"], "--buildings-model",
                         seg, "-o", tmp_path / "d.tif", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["mode"] == "buildings" and s["features"] == 1
    assert s["buildings_from"]["model"] == str(seg) and s["buildings_from"]["buildings"] == 1



def test_damage_map_refuses_a_model_that_finds_no_building(tmp_path, cli, models):
    """Not a temporary file's "footprints layer is empty": the model and the image, exit 2."""
    seg = _bright_building_onnx(tmp_path / "bright.onnx")
    pre, post = _scene(tmp_path / "pre.tif"), _scene(tmp_path / "post.tif", seed=1)
    code, _, err = cli("damage-map", pre, post, "-m", models["height"], "--buildings-model",
                       seg, "--min-area", "1000", "-o", tmp_path / "d.tif")
    last = err.strip().splitlines()[-1]
    assert code == 2 and "bright.onnx" in last and "found no building on" in last, err
    assert "pre.tif" in last and "--min-area 1000" in last and "rsgeo-damage-" not in last
    assert not (tmp_path / "d.tif").exists() and not (tmp_path / "d.gpkg").exists()


cuda = pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("task", ["segmentation", "change", "classification"])
def test_cuda_matches_cpu_for_every_task(tmp_path, models, task):
    """CUDA streams with (B, K) outputs (classification) and stacked PRE+POST (change)."""
    import pandas as pd

    a, _ = _rgb(tmp_path / "a.tif", 96, 112)
    b, _ = _rgb(tmp_path / "b.tif", 96, 112, seed=4)
    item = (a, b) if task == "change" else a
    name = "t.csv" if task == "classification" else "t.tif"
    for dev in ("cpu", "cuda"):
        predict_files([item], models[task], [tmp_path / dev / name], device=dev, tile=64,
                      overlap=16 if task != "classification" else 0,
                      options={"probabilities": True})
    if task == "classification":
        cols = ["p_ground", "p_tree", "p_building"]
        np.testing.assert_allclose(pd.read_csv(tmp_path / "cuda" / name)[cols],
                                   pd.read_csv(tmp_path / "cpu" / name)[cols], atol=2e-2)
        return
    prob = "t_probability.tif" if task == "change" else "t_probabilities.tif"
    with rasterio.open(tmp_path / "cpu" / prob) as c, rasterio.open(tmp_path / "cuda" / prob) as g:
        np.testing.assert_allclose(g.read(), c.read(), atol=2e-2)  # cuDNN TF32 convs


@pytest.mark.parametrize("gsd", [0.5, 0.7])   # 0.7: resampled to the model's GSD and back
def test_class_raster_and_its_side_file_are_published_together(tmp_path, monkeypatch, gsd):
    """The .aux.xml side file (class names, RGBA table) was written after the class raster
    had been published: a stop in between left a valid .tif without it. Both now belong
    to one all-or-nothing publication."""
    import rsgeo.io.atomic as atomic

    src, _ = _rgb(tmp_path / "img.tif", 70, 80, gsd=gsd)
    real = atomic.publish

    def stop_at_side_file(tmp, final, overwrite):
        if str(final).endswith(".aux.xml"):
            raise KeyboardInterrupt   # the run stopped after the raster was complete
        real(tmp, final, overwrite)

    monkeypatch.setattr(atomic, "publish", stop_at_side_file)
    out = tmp_path / "cls.tif"
    with pytest.raises(KeyboardInterrupt):
        predict_files([src], "seg.ckpt", [out], runner=_seg_runner(), tile=64, overlap=16,
                      options={"probabilities": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]   # neither file
    monkeypatch.setattr(atomic, "publish", real)
    predict_files([src], "seg.ckpt", [out], runner=_seg_runner(), tile=64, overlap=16,
                  options={"probabilities": True})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cls.tif", "cls.tif.aux.xml", "cls_probabilities.tif", "img.tif"]
