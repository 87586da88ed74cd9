"""The shared artifacts in conftest.py are what their docstrings say, and the guards work."""

import json

import numpy as np
import pandas as pd
import pytest
import rasterio

from tests.conftest import _snapshot, _unchanged


def test_city_and_chips_are_a_prepared_dataset(synth_city, synth_chips):
    assert len(synth_city.scenes) == 2
    for scene in synth_city.scenes:
        for key in ("pre_rgb", "post_rgb", "pre_ndsm", "post_ndsm", "footprints"):
            assert scene[key].is_file() and scene[key].parent == synth_city.folder
        with rasterio.open(scene["pre_rgb"]) as ds:
            assert ds.shape == (256, 256) and ds.res == (0.5, 0.5) and ds.crs is not None
    info = json.loads((synth_chips / "dataset.json").read_text())
    assert info["chip_size"] == 64 and info["classes"]
    assert {"rgb", "ndsm", "labels", "hog"} <= set(info["modalities"])
    kept = pd.read_parquet(synth_chips / "manifest.parquet").query("status == 'kept'")
    assert len(kept) == 32 and set(kept["split"]) == {"train", "val"}


@pytest.mark.slow
def test_trained_models_chain(synth_chips, pretrained_encoder, height_bundle, height_onnx,
                              synth_city, tmp_path):
    from rsgeo.infer.export import read_metadata
    from rsgeo.infer.predict import predict_height_file
    from rsgeo.tasks.bundle import load_task_model

    assert pretrained_encoder["step"] == 4 and pretrained_encoder["encoders"]["encoder"]
    _, config, meta = load_task_model(height_bundle)
    assert config["task"] == "height" and config["backbone"] == "vit-tiny-2"
    assert read_metadata(height_onnx)["task"] == "height"
    src = synth_city.scenes[0]["pre_rgb"]
    predict_height_file(src, height_bundle, tmp_path / "t.tif")
    predict_height_file(src, height_onnx, tmp_path / "o.tif")
    with rasterio.open(tmp_path / "t.tif") as a, rasterio.open(tmp_path / "o.tif") as b, \
            rasterio.open(src) as s:
        assert a.transform == b.transform == s.transform and a.crs == s.crs
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-3)


def test_private_copy_leaves_the_original(tmp_path, private_copy):
    src = tmp_path / "shared"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    before = _snapshot(src)
    copy = private_copy(src)
    (copy / "sub" / "a.txt").write_text("changed")
    _unchanged(src, before, "x")                     # the original is untouched: no failure
    (src / "sub" / "a.txt").write_text("changed!")
    with pytest.raises(pytest.fail.Exception, match="changed the shared `x`"):
        _unchanged(src, before, "x")
