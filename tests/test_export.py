import json

import numpy as np
import pytest
import torch

from rsgeo.errors import InputError, RsgeoError
from rsgeo.infer.export import export_onnx, read_metadata
from rsgeo.tasks.bundle import build_task_model, save_task_model
from tests.conftest import make_raster

META = {"bands": ["red", "green", "blue"], "mean": [110.0, 115.0, 120.0],
        "std": [40.0, 45.0, 50.0], "input_range": [0, 255], "gsd": 0.3, "tile": 128,
        "overlap": 16, "units": "m", "nodata": -9999}


def checkpoint(path, task="height", backbone="vit-tiny-2", **extra):
    torch.manual_seed(0)
    cfg = {"task": task, "backbone": backbone, "in_chans": 3, "img_size": 64,
           "head_features": 16, "num_classes": 4, **extra}
    save_task_model(build_task_model(cfg), cfg, {**META, "task": task}, path)
    return path


def ort(path):
    from rsgeo.infer.session import ort_session

    return ort_session(path, "cpu")


@pytest.mark.slow
def test_height_round_trip_dynamic_batch_and_size(tmp_path, cli):
    ckpt = checkpoint(tmp_path / "h.ckpt", aux_classes=9)
    code, out, err = cli("export", ckpt, "-o", tmp_path / "h.onnx", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["stride"] == 16 and s["inputs"] == ["image"] and s["max_abs_diff"] < 1e-3
    meta = read_metadata(tmp_path / "h.onnx")
    for key in ("task", "bands", "mean", "std", "gsd", "tile", "overlap", "units", "nodata"):
        assert meta[key] == {**META, "task": "height"}[key], key
    from rsgeo import __version__

    assert meta["rsgeo_version"] == __version__ and meta["config"]["aux_classes"] == 9
    height = meta["writer"]["layers"][0]                  # what prediction writes (rsgeo.tasks)
    assert meta["writer"]["kind"] == "raster" and height["dtype"] == "float32"
    assert height["units"] == "metre" and height["nodata"] == meta["nodata"] == -9999
    from rsgeo.tasks.bundle import load_task_model

    model, *_ = load_task_model(ckpt)
    sess = ort(tmp_path / "h.onnx")
    for shape in ((3, 3, 64, 160), (1, 3, 96, 32)):      # batch and sizes never seen at export
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        got = sess.run(None, {"image": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert got.shape == (shape[0], 1, *shape[2:])      # heights only, no aux logits
        np.testing.assert_allclose(got, ref, atol=1e-3)
    code, _, err = cli("export", ckpt, "-o", tmp_path / "h.onnx")
    assert code == 2 and "--overwrite" in err
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    code, _, err = cli("export", tmp_path / "junk.ckpt", "-o", tmp_path / "j.onnx")
    assert code == 2 and "checkpoint" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "j.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", ["segmentation", "change", "classification"])
def test_other_tasks_export(tmp_path, task):
    s = export_onnx(checkpoint(tmp_path / "m.ckpt", task), tmp_path / "m.onnx")
    sess = ort(tmp_path / "m.onnx")
    names = [i.name for i in sess.get_inputs()]
    assert names == (["pre", "post"] if task == "change" else ["image"]) == s["inputs"]
    x = np.zeros((2, 3, 48, 80), np.float32)
    out = sess.run(None, {n: x for n in names})[0]
    assert out.shape == {"segmentation": (2, 4, 48, 80), "change": (2, 1, 48, 80),
                         "classification": (2, 4)}[task]
    assert read_metadata(tmp_path / "m.onnx")["task"] == task


@pytest.mark.slow
def test_parity_failure_fails_the_export_and_leaves_no_file(tmp_path, monkeypatch):
    import rsgeo.infer.session as session

    real = session.ort_session

    class Drifting:
        """An ORT session whose outputs drift by 0.01 (a broken export, simulated)."""

        def __init__(self, s):
            self.s = s

        def get_inputs(self):
            return self.s.get_inputs()

        def run(self, names, feed):
            return [y + 0.01 for y in self.s.run(names, feed)]

    monkeypatch.setattr(session, "ort_session", lambda *a, **k: Drifting(real(*a, **k)))
    ckpt = checkpoint(tmp_path / "h.ckpt")
    with pytest.raises(RsgeoError, match="differs from torch by 0.01"):
        export_onnx(ckpt, tmp_path / "h.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.ckpt"]   # no file, no temp left


def test_predict_height_refuses_a_segmentation_model(tmp_path, cli):
    seg = checkpoint(tmp_path / "s.ckpt", "segmentation")
    img = make_raster(tmp_path / "img.tif", np.zeros((3, 64, 64), np.uint8))
    code, _, err = cli("predict-height", img, "-m", seg, "-o", tmp_path / "h.tif")
    assert code == 2 and "not a height model" in err
    assert not (tmp_path / "h.tif").exists()
    with pytest.raises(InputError, match="not a height model"):
        from rsgeo.infer.predict import predict_height_file

        predict_height_file(img, seg, tmp_path / "h.tif")
