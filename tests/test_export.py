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
    assert s["exporter"] == "torchscript"                 # the fast path, no dynamo fallback


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
        export_onnx(ckpt, tmp_path / "h.onnx", exporter="torchscript")
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


def loud_checkpoint(path, backbone="vit-tiny-2"):
    """A checkpoint whose position embedding is N(0, 1) (a random ViT's is N(0, 0.02)), so a
    position embedding baked in at the traced size would change the outputs visibly."""
    from rsgeo.tasks.bundle import load_task_model

    checkpoint(path, backbone=backbone)
    model, cfg, meta = load_task_model(path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "pos_embed" in name:
                p.normal_(0, 1)
    save_task_model(model, cfg, meta, path)
    return model


@pytest.mark.parametrize("backbone", ["vit-tiny-2", "swin-tiny-2"])
def test_torchscript_export_runs_every_size_and_batch(tmp_path, backbone):
    """The fast path: traced once, it runs at sizes and batch sizes never traced (the
    stored 64 px position-embedding grid included) and matches torch."""
    model = loud_checkpoint(tmp_path / "h.ckpt", backbone)
    s = export_onnx(tmp_path / "h.ckpt", tmp_path / "h.onnx")
    assert s["exporter"] == "torchscript" and s["max_abs_diff"] < 1e-4
    sess = ort(tmp_path / "h.onnx")
    rng = np.random.default_rng(3)
    for shape in ((1, 3, 64, 64), (3, 3, 32, 96), (2, 3, 128, 64), (1, 3, 160, 224)):
        x = rng.standard_normal(shape).astype(np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"image": x})[0]
        assert got.shape == ref.shape == (shape[0], 1, *shape[2:])
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_antialiased_bicubic_resize_exports_as_torch_computes_it(tmp_path):
    """The symbolic for aten::_upsample_bicubic2d_aa (timm's position-embedding resampling)
    against torch, down (where antialiasing matters) and up, at sizes never traced."""
    from rsgeo.infer.onnx_trace import export_traced

    class Resample(torch.nn.Module):
        def forward(self, x):
            size = (x.shape[2] * 3 // 4, x.shape[3] + 5)
            return torch.nn.functional.interpolate(x, size=size, mode="bicubic", antialias=True)

    x = torch.randn(2, 3, 16, 24)
    export_traced(Resample(), (x,), ["image"], tmp_path / "r.onnx", None)
    sess = ort(tmp_path / "r.onnx")
    for shape in ((1, 3, 40, 12), (2, 3, 8, 8), (1, 3, 16, 24)):
        x = torch.randn(shape)
        np.testing.assert_allclose(sess.run(None, {"image": x.numpy()})[0],
                                   Resample()(x).numpy(), atol=1e-5)


def test_exporter_choice_and_a_failed_trace(tmp_path, monkeypatch):
    import rsgeo.infer.export as export

    ckpt = checkpoint(tmp_path / "h.ckpt")
    with pytest.raises(InputError, match="exporter must be one of"):
        export_onnx(ckpt, tmp_path / "h.onnx", exporter="jit")

    def broken(*a, **k):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(export, "export_traced", broken)
    with pytest.raises(RsgeoError, match="TorchScript.*cannot trace this"):
        export_onnx(ckpt, tmp_path / "h.onnx", exporter="torchscript")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.ckpt"]


@pytest.mark.slow
def test_auto_falls_back_to_dynamo_and_both_give_the_same_heights(tmp_path, monkeypatch):
    """``auto`` uses dynamo when tracing fails; predict-height gives the same heights with
    the TorchScript model, the dynamo model and the checkpoint itself."""
    import rasterio

    import rsgeo.infer.export as export
    from rsgeo.infer.predict import predict_height_file

    loud_checkpoint(tmp_path / "h.ckpt")
    export_onnx(tmp_path / "h.ckpt", tmp_path / "ts.onnx")
    real = export.export_traced
    monkeypatch.setattr(export, "export_traced",
                        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no tracing")))
    s = export_onnx(tmp_path / "h.ckpt", tmp_path / "dyn.onnx")
    assert s["exporter"] == "dynamo" and s["max_abs_diff"] < 1e-4
    monkeypatch.setattr(export, "export_traced", real)
    img = np.random.default_rng(0).integers(0, 255, (3, 150, 230), dtype=np.uint8)
    src = make_raster(tmp_path / "img.tif", img)
    heights = []
    for model in ("ts.onnx", "dyn.onnx", "h.ckpt"):
        predict_height_file(src, tmp_path / model, tmp_path / f"{model}.tif", device="cpu")
        with rasterio.open(tmp_path / f"{model}.tif") as ds:
            heights.append(ds.read(1))
    assert heights[0].shape == (150, 230)
    np.testing.assert_allclose(heights[0], heights[1], atol=1e-4)
    np.testing.assert_allclose(heights[0], heights[2], atol=1e-4)


def test_output_must_be_an_onnx_name(tmp_path, cli):
    """export writes ONNX only: ``-o m.txt`` (which predict-height would then read as a
    model) or a name without an extension is refused before the checkpoint is read."""
    ckpt = checkpoint(tmp_path / "h.ckpt")
    for name in ("m.txt", "model", "m.onnx.bak"):
        code, _, err = cli("export", ckpt, "-o", tmp_path / name)
        assert code == 2 and name in err and ".onnx" in err, err
        assert len(err.strip().splitlines()) == 1, err
        with pytest.raises(InputError, match=r"ending in \.onnx"):  # the library checks too,
            export_onnx(tmp_path / "none.ckpt", tmp_path / name)    # before reading anything
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.ckpt"]
    from rsgeo.tasks.files import check_onnx_output

    assert check_onnx_output(tmp_path / "M.ONNX") == tmp_path / "M.ONNX"
