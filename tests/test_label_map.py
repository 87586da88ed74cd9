"""--label-map (and classes files with values): a 0/255 mask keeps its building class."""

import json

import numpy as np
import pytest

from rsgeo.data.dataset import ChipDataset
from rsgeo.errors import InputError
from rsgeo.io.labels import classes_and_values, parse_label_map, recode
from tests.conftest import make_raster


def test_parse_and_recode():
    assert parse_label_map(["0:0,255:1", "7:2"]) == {0: 0, 255: 1, 7: 2}
    assert parse_label_map(None) is None and parse_label_map({255: 1}) == {255: 1}
    for bad, msg in (("255", "FROM:TO"), ("a:1", "FROM:TO"), ("1:255", "0..254"),
                     (["3:1", "3:2"], "both")):
        with pytest.raises(InputError, match=msg):
            parse_label_map(bad)
    a = np.array([[0, 255], [7, 9]], np.uint8)
    out, named = recode(a, {255: 1, 7: 2})
    np.testing.assert_array_equal(out, [[0, 1], [2, 9]])
    np.testing.assert_array_equal(named, [[False, True], [True, False]])
    assert out.dtype == np.uint8


def test_classes_file_values():
    names, lmap = classes_and_values({"0": "background",
                                      "1": {"name": "building", "values": [255]}})
    assert names == {0: "background", 1: "building"} and lmap == {255: 1}
    assert classes_and_values({"0": "a"}) == ({0: "a"}, None)
    with pytest.raises(InputError, match="integer ids"):
        classes_and_values({"x": "a"})


def _mask_scene(tmp_path, nodata=None):
    rng = np.random.default_rng(0)
    rgb = make_raster(tmp_path / "rgb.tif", rng.integers(0, 255, (3, 64, 64)).astype(np.uint8))
    m = np.zeros((64, 64), np.uint8)
    m[10:40, 20:50] = 255
    mask = make_raster(tmp_path / "mask.tif", m, nodata=nodata)
    (tmp_path / "classes.json").write_text(json.dumps({"0": "background", "1": "building"}))
    return rgb, mask, m


@pytest.mark.parametrize("nodata", [None, 255])
def test_prepare_keeps_the_building_class_of_a_0_255_mask(tmp_path, cli, nodata):
    rgb, mask, m = _mask_scene(tmp_path, nodata)
    common = ("--rgb", rgb, "--labels", mask, "--size", 64, "--split", "1,0,0")
    code, _, err = cli("prepare", *common, "-o", tmp_path / "plain")
    assert code == 0, err  # without a map 255 stays "ignore": the buildings are lost
    assert set(np.unique(ChipDataset(tmp_path / "plain", split=None,
                                     modalities=("labels",))[0]["labels"])) == {0, 255}
    code, _, err = cli("prepare", *common, "--label-map", "0:0,255:1",
                       "--classes", tmp_path / "classes.json", "-o", tmp_path / "mapped")
    assert code == 0, err
    lab = ChipDataset(tmp_path / "mapped", split=None, modalities=("labels",))[0]["labels"]
    np.testing.assert_array_equal(lab, (m == 255).astype(np.uint8))


def test_prepare_classes_file_with_values(tmp_path, cli):
    rgb, mask, m = _mask_scene(tmp_path)
    (tmp_path / "cv.json").write_text(json.dumps(
        {"0": "background", "1": {"name": "building", "values": [255]}}))
    code, _, err = cli("prepare", "--rgb", rgb, "--labels", mask, "--size", 64, "--split",
                       "1,0,0", "--classes", tmp_path / "cv.json", "-o", tmp_path / "d")
    assert code == 0, err
    lab = ChipDataset(tmp_path / "d", split=None, modalities=("labels",))[0]["labels"]
    np.testing.assert_array_equal(lab, (m == 255).astype(np.uint8))
    info = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert info["classes"] == {"0": "background", "1": "building"}


def test_bad_label_map_is_one_line_exit_2(tmp_path, cli):
    rgb, mask, _ = _mask_scene(tmp_path)
    code, _, err = cli("prepare", "--rgb", rgb, "--labels", mask, "--label-map", "255:300",
                       "-o", tmp_path / "x", "--size", 64)
    assert code == 2 and "0..254" in err and len(err.strip().splitlines()) == 1, err


def test_evaluate_recodes_the_reference_mask(tmp_path, cli):
    m = np.zeros((32, 32), np.uint8)
    m[5:20, 5:25] = 255
    ref = make_raster(tmp_path / "ref.tif", m)
    pred = make_raster(tmp_path / "pred.tif", (m == 255).astype(np.uint8))
    code, out, err = cli("evaluate", pred, ref, "--task", "segmentation", "--label-map",
                         "255:1", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["miou"] == pytest.approx(1.0) and r["oa"] == pytest.approx(1.0)
    code, out, err = cli("evaluate", pred, ref, "--task", "segmentation", "--format", "json")
    assert code == 0 and json.loads(out)["oa"] < 1.0
    (tmp_path / "cv.json").write_text(json.dumps(
        {"0": "background", "1": {"name": "building", "values": [255]}}))
    code, out, err = cli("evaluate", pred, ref, "--task", "segmentation", "--classes",
                         tmp_path / "cv.json", "--format", "json")
    assert code == 0, err
    r = json.loads(out)
    assert r["iou_building"] == pytest.approx(1.0) and r["miou"] == pytest.approx(1.0)
