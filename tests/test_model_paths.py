"""Models as users name them: a file, or the run folder ``rsgeo finetune`` wrote."""

import json

import numpy as np
import pytest
import rasterio
import torch

from rsgeo.errors import InputError
from rsgeo.tasks.bundle import build_task_model, load_task_model, save_task_model
from rsgeo.tasks.files import model_label, resolve_model_path
from tests.conftest import make_raster

CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
       "head": "dpt", "head_features": 16}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
        "std": [50.0] * 3, "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m",
        "nodata": -9999}


def _run_folder(root, seed: int):
    """A run folder as ``rsgeo finetune`` leaves it: best.ckpt and a training state."""
    (root / "checkpoints").mkdir(parents=True)
    torch.manual_seed(seed)
    model = build_task_model(CFG)
    with torch.no_grad():
        model.head.out[4].bias.fill_(2.0 + seed)
    save_task_model(model, CFG, META, root / "best.ckpt")
    torch.save({"model": model.state_dict(), "optimizer": {}, "step": 4, "config": {}},
               root / "checkpoints" / "last.pt")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return [_run_folder(d / name, i) for i, name in enumerate(("city_a", "city_b"))]


def _image(tmp_path):
    rng = np.random.default_rng(0)
    return make_raster(tmp_path / "img.tif", rng.integers(0, 255, (3, 70, 90), dtype=np.uint8))


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


def test_a_run_folder_stands_for_its_best_checkpoint(tmp_path, cli, runs):
    src = _image(tmp_path)
    code, _, err = cli("predict-height", src, "-m", runs[0], "-o", tmp_path / "folder.tif")
    assert code == 0, err
    code, _, err = cli("predict-height", src, "-m", runs[0] / "best.ckpt", "-o",
                       tmp_path / "file.tif")
    assert code == 0, err
    (a, tags), (b, _) = _read(tmp_path / "folder.tif"), _read(tmp_path / "file.tif")
    np.testing.assert_array_equal(a, b)
    assert tags["model"] == "city_a/best.ckpt"
    assert resolve_model_path(runs[0]) == runs[0] / "best.ckpt"
    assert load_task_model(runs[0])[1]["backbone"] == "vit-tiny-2"


def test_an_ensemble_of_run_folders_names_each_run(tmp_path, cli, runs):
    src = _image(tmp_path)
    code, out, err = cli("predict-height", src, "-m", runs[0], "-m", runs[1], "-o",
                         tmp_path / "h.tif", "--json")
    assert code == 0, err
    assert json.loads(out.splitlines()[0])["models"] == [str(r / "best.ckpt") for r in runs]
    assert _read(tmp_path / "h.tif")[1]["model"] == "city_a/best.ckpt,city_b/best.ckpt"


def test_export_takes_a_run_folder(tmp_path, cli, runs):
    code, _, err = cli("export", runs[1], "-o", tmp_path / "m.onnx")
    assert code == 0, err
    assert (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("what", ["training state", "empty folder"])
def test_what_is_not_a_model_is_one_line_naming_what_to_use(tmp_path, cli, runs, what):
    src = _image(tmp_path)
    if what == "training state":
        bad, words = runs[0] / "checkpoints" / "last.pt", f"use {runs[0] / 'best.ckpt'}"
    else:
        (bad := tmp_path / "empty").mkdir()
        words = "a folder without best.ckpt"
    for command in (["predict-height", src, "-m", bad, "-o", tmp_path / "x.tif"],
                    ["export", bad, "-o", tmp_path / "x.onnx"]):
        code, _, err = cli(*command)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(bad) in err and words in err, err
    assert not (tmp_path / "x.tif").exists() and not (tmp_path / "x.onnx").exists()
    with pytest.raises(InputError, match="no such model file"):
        resolve_model_path(tmp_path / "missing.ckpt")


def test_model_label():
    assert model_label("runs/city_a/best.ckpt") == "city_a/best.ckpt"
    assert model_label("models/height.onnx") == "height.onnx"
