import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsgeo.infer.predict import input_scale, predict_height_file
from rsgeo.tasks.bundle import build_task_model, load_task_model, save_task_model
from tests.conftest import make_raster

CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
       "head": "dpt", "head_features": 32}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
        "std": [50.0] * 3, "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m", "nodata": -9999}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "model.ckpt"
    save_task_model(build_task_model(CFG), CFG, META, path)
    return path


@pytest.fixture(scope="module")
def onnx_model(ckpt, tmp_path_factory):
    from rsgeo.infer.export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    summary = export_onnx(ckpt, out)
    assert summary["max_abs_diff"] < 1e-4
    return out


def _rgb(tmp_path, h, w, name="img.tif", **kw):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(yy / 9.0) * np.cos(xx / 7.0)
    img = np.clip(base[None] + rng.integers(0, 30, (3, h, w)), 0, 255).astype(np.uint8)
    return make_raster(tmp_path / name, img, **kw), img


def mean_runner(meta=META):
    """A spatially smooth 'model': the mean of the normalised bands (exact reference)."""
    class R:
        device = "cpu"

        def __call__(self, batch):
            return batch.mean(axis=1, keepdims=True)
    return R(), meta, CFG


def test_smooth_model_has_no_seams_and_keeps_georeferencing(tmp_path):
    src, img = _rgb(tmp_path, 150, 230)
    out = tmp_path / "h.tif"
    predict_height_file(src, "x.ckpt", out, runner=mean_runner(), tile=64, overlap=16)
    expected = ((img.astype(np.float32) - 120) / 50).mean(0)
    with rasterio.open(out) as ds, rasterio.open(src) as s:
        h = ds.read(1)
        assert ds.crs == s.crs and ds.transform == s.transform and ds.nodata == -9999
        assert ds.dtypes[0] == "float32" and ds.units[0] == "metre"
    np.testing.assert_allclose(h, expected, atol=1e-4)   # no seam, no tapered edges


def test_constant_model_gives_constant_raster(tmp_path, ckpt):
    model, cfg, meta = load_task_model(ckpt)
    sd = model.state_dict()
    sd["head.out.4.weight"].zero_()
    sd["head.out.4.bias"].fill_(7.25)
    model.load_state_dict(sd)
    const = tmp_path / "const.ckpt"
    save_task_model(model, cfg, meta, const)
    src, _ = _rgb(tmp_path, 100, 170)
    r = predict_height_file(src, const, tmp_path / "c.tif")
    h = rasterio.open(tmp_path / "c.tif").read(1)
    np.testing.assert_allclose(h, 7.25, rtol=1e-6)
    assert r["height_min"] == r["height_max"] == 7.25


@pytest.mark.parametrize("shape", [(40, 50), (64, 200), (201, 77)])
def test_small_and_non_square_rasters(tmp_path, onnx_model, shape):
    src, _ = _rgb(tmp_path, *shape)
    r = predict_height_file(src, onnx_model, tmp_path / "h.tif")
    with rasterio.open(tmp_path / "h.tif") as ds:
        assert ds.shape == shape
        assert (ds.read(1) >= 0).all()
    assert r["backend"] == "onnx" and r["tiles"] >= 1


def test_onnx_matches_torch_on_a_raster(tmp_path, ckpt, onnx_model):
    src, _ = _rgb(tmp_path, 120, 130)
    predict_height_file(src, ckpt, tmp_path / "t.tif")
    predict_height_file(src, onnx_model, tmp_path / "o.tif")
    a = rasterio.open(tmp_path / "t.tif").read(1)
    b = rasterio.open(tmp_path / "o.tif").read(1)
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_export_metadata(onnx_model):
    from rsgeo.infer.export import read_metadata

    meta = read_metadata(onnx_model)
    for key in ("task", "bands", "mean", "std", "gsd", "tile", "overlap", "units", "nodata",
                "rsgeo_version", "config"):
        assert key in meta
    assert meta["mean"] == [120.0] * 3 and meta["units"] == "m" and meta["config"]["in_chans"] == 3


def test_nodata_holes_become_minus_9999(tmp_path):
    src, img = _rgb(tmp_path, 100, 100)
    with rasterio.open(src, "r+") as ds:
        ds.nodata = 0
        data = ds.read()
        data[:, 30:50, 40:60] = 0
        ds.write(data)
    predict_height_file(src, "x.ckpt", tmp_path / "h.tif", runner=mean_runner(), tile=64, overlap=16)
    h = rasterio.open(tmp_path / "h.tif").read(1)
    assert (h[30:50, 40:60] == -9999).all() and (h[:30] != -9999).all()


def test_16bit_input_is_scaled_not_truncated(tmp_path):
    src8, img = _rgb(tmp_path, 80, 90, name="u8.tif")
    img16 = (img.astype(np.uint32) * 2047 // 255).astype(np.uint16)  # 11-bit imagery
    assert img16.max() > 1023
    src16 = make_raster(tmp_path / "u16.tif", img16)
    with rasterio.open(src16) as ds:
        assert input_scale(ds) == pytest.approx(255 / 2047)
    predict_height_file(src8, "x", tmp_path / "a.tif", runner=mean_runner(), tile=64, overlap=16)
    r = predict_height_file(src16, "x", tmp_path / "b.tif", runner=mean_runner(), tile=64,
                            overlap=16, scale="bitdepth")
    a = rasterio.open(tmp_path / "a.tif").read(1)
    b = rasterio.open(tmp_path / "b.tif").read(1)
    np.testing.assert_allclose(a, b, atol=0.03)
    assert r["input_stretch"]["mode"] == "bitdepth"


def test_dark_16bit_imagery_is_stretched_by_percentiles_by_default(tmp_path):
    _, img = _rgb(tmp_path, 80, 90, name="u8.tif")
    dark = (img.astype(np.float64) * 600 / 255).astype(np.uint16)   # 11-bit tile using 0-600
    src = make_raster(tmp_path / "dark.tif", dark)
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=mean_runner(), tile=64,
                            overlap=16)
    lo, hi = np.percentile(dark, [2, 98])
    k = 255 / (hi - lo)
    expected = ((dark.astype(np.float32) * np.float32(k) - lo * k - 120) / 50).mean(0)
    with rasterio.open(tmp_path / "h.tif") as ds:
        np.testing.assert_allclose(ds.read(1), expected, atol=1e-3)
        assert ds.tags()["input_stretch"] == "percentile"
    assert r["input_stretch"] == {"mode": "percentile", "scale": pytest.approx(k),
                                  "offset": pytest.approx(lo * k)}
    r = predict_height_file(src, "x", tmp_path / "n.tif", runner=mean_runner(), tile=64,
                            overlap=16, scale="0,600")
    assert r["input_stretch"]["scale"] == pytest.approx(255 / 600)


def test_other_gsd_is_resampled_and_written_on_the_input_grid(tmp_path):
    src, _ = _rgb(tmp_path, 120, 100, gsd=0.25)
    r = predict_height_file(src, "x", tmp_path / "h.tif", runner=mean_runner(), tile=64, overlap=16)
    assert r["resampled"]
    with rasterio.open(tmp_path / "h.tif") as ds, rasterio.open(src) as s:
        assert ds.shape == s.shape and ds.transform == s.transform
        assert (ds.read(1) != -9999).mean() > 0.95
    r = predict_height_file(src, "x", tmp_path / "n.tif", runner=mean_runner(), gsd="native",
                            tile=64, overlap=16)
    assert not r["resampled"]


def test_an_output_not_named_tif_is_refused_before_the_model_loads(tmp_path, cli):
    """predict-height -o h.png wrote a GeoTIFF named h.png (and -o h one named h)."""
    src, _ = _rgb(tmp_path, 64, 64)
    model = tmp_path / "never_read.onnx"  # the output is refused before the model is looked at
    for name in ("h.png", "h.jpg", "h"):
        code, out, err = cli("predict-height", src, "-m", model, "-o", tmp_path / name)
        assert code == 2 and f"{name}: " in err and ".tif" in err, err
        assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]


def test_cli_errors(tmp_path, cli, ckpt, onnx_model):
    src, _ = _rgb(tmp_path, 64, 64)
    four = make_raster(tmp_path / "four.tif", np.zeros((4, 64, 64), np.uint16))  # RGBN
    cases = [
        (["predict-height", four, "-m", ckpt, "-o", tmp_path / "a.tif"], "4 band"),
        (["predict-height", src, "-m", onnx_model, "-o", tmp_path / "b.tif", "--device", "cuda"], "CUDA"),
        (["predict-height", src, "-m", ckpt, "-o", tmp_path / "c.tif", "--device", "cuda"], "CUDA"),
        (["predict-height", src, "-m", tmp_path / "none.onnx", "-o", tmp_path / "d.tif"], "no such model"),
        (["predict-height", src, "-m", onnx_model, "-o", tmp_path / "e.tif", "--precision", "bf16"], "bf16"),
    ]
    for args, msg in cases:
        code, _, err = cli(*args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
    other, _ = _rgb(tmp_path, 70, 50, name="other.tif")
    code, out, err = cli("predict-height", src, other, "-m", onnx_model, "-o", tmp_path / "many")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["img_height.tif",
                                                                    "other_height.tif"]
    code, _, err = cli("predict-height", src, src, "-m", onnx_model, "-o", tmp_path / "dup")
    assert code == 2 and "collide" in err
    code, out, err = cli("predict-height", src, "-m", ckpt, "-o", tmp_path / "x.tif", "--cog",
                         "--precision", "bf16")
    assert code == 0, err
    with rasterio.open(tmp_path / "x.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_damage_map_predicts_heights_for_images(tmp_path, cli, ckpt, monkeypatch):
    from rsgeo.synth import write_scenes

    p = write_scenes(tmp_path / "city", size=128, seed=2)[0]
    code, out, err = cli("damage-map", p["pre_rgb"], p["post_rgb"], "-m", ckpt, "-o",
                         tmp_path / "d.tif", "--json")
    assert code == 0, err
    import json
    s = json.loads(out)
    assert s["heights_from"] == "predicted"
    with rasterio.open(tmp_path / "d.tif") as ds, rasterio.open(p["pre_rgb"]) as src:
        assert ds.transform == src.transform and ds.crs == src.crs
    monkeypatch.setenv("RSGEO_MODEL", str(ckpt))
    code, out, err = cli("damage-map", p["pre_rgb"], p["post_rgb"], "-o", tmp_path / "e.tif")
    assert code == 0, err


def test_bf16_runner_agrees_with_fp32_and_warns_without_bf16_instructions(ckpt, monkeypatch, caplog):
    import rsgeo.infer.session as session

    model, *_ = load_task_model(ckpt)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    ref = session.TorchRunner(model, "cpu", "fp32")(x)
    monkeypatch.setattr(session, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        got = session.TorchRunner(model, "cpu", "bf16")(x)
    assert "without bf16 instructions" in caplog.text
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0.05, atol=0.05 * float(np.abs(ref).max()))


def test_corrupt_files_and_tile_choices_give_one_line_exit_2(tmp_path, cli, onnx_model):
    src, _ = _rgb(tmp_path, 96, 96)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(Path(onnx_model).read_bytes()[:2000])
    for args, msg in (
        (["predict-height", src, "-m", corrupt, "-o", tmp_path / "a.tif"], "not a readable ONNX"),
        (["export", onnx_model, "-o", tmp_path / "b.onnx"], "already an ONNX model"),
        (["predict-height", src, "-m", onnx_model, "-o", tmp_path / "c.tif", "--tile", "32",
          "--overlap", "40"], "--overlap must be in"),
    ):
        code, _, err = cli(*args)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
    code, _, err = cli("predict-height", src, "-m", onnx_model, "-o", tmp_path / "d.tif",
                       "--tile", "17")                 # rounded up; the model's overlap follows
    assert code == 0, err


def test_a_bad_input_while_the_model_loads_exits_2_not_abort(tmp_path, onnx_model):
    import subprocess
    import sys

    src, _ = _rgb(tmp_path, 300, 300)
    trunc = tmp_path / "trunc.tif"
    trunc.write_bytes(Path(src).read_bytes()[:4000])
    p = subprocess.run([sys.executable, "-m", "rsgeo", "predict-height", str(trunc), "-m",
                        str(onnx_model), "-o", str(tmp_path / "h.tif")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "terminate" not in p.stderr
    assert not (tmp_path / "h.tif").exists()


def test_skip_existing_resumes_an_interrupted_folder_run(tmp_path, cli, ckpt):
    """--skip-existing leaves the finished outputs of the same model untouched and predicts
    the rest; a file it did not write, another model's output or --overwrite beside it
    are refused (one line, exit 2)."""
    import json

    folder = tmp_path / "tiles"
    folder.mkdir()
    for k in range(3):
        _rgb(folder, 40 + 8 * k, 50, name=f"t{k}.tif")
    out = tmp_path / "out"
    code, _, err = cli("predict-height", folder, "-m", ckpt, "-o", out)
    assert code == 0, err
    kept = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "t1_height.tif").unlink()                       # the run stopped before t1
    code, text, err = cli("predict-height", folder, "-m", ckpt, "-o", out, "--skip-existing",
                          "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in text.strip().splitlines()]
    assert [Path(x["output"]).name for x in lines[:-1]] == ["t1_height.tif"]
    assert sorted(Path(p).name for p in lines[-1]["skipped"]) == ["t0_height.tif",
                                                                   "t2_height.tif"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == kept | {
        "t1_height.tif": (out / "t1_height.tif").read_bytes()}
    assert rasterio.open(out / "t1_height.tif").read(1).shape == (48, 50)
    code, text, err = cli("predict-height", folder, "-m", ckpt, "-o", out, "--skip-existing")
    assert code == 0 and "3 outputs already there" in text, err
    other = tmp_path / "other.ckpt"
    torch.manual_seed(1)
    save_task_model(build_task_model(CFG), CFG, META, other)
    make_raster(tmp_path / "mine.tif", np.zeros((1, 8, 8), np.float32))
    (out / "t2_height.tif").write_bytes((tmp_path / "mine.tif").read_bytes())
    for args, words in (([ckpt, "--skip-existing", "--overwrite"], "choose one"),
                        ([other, "--skip-existing"], "written by model"),
                        ([ckpt, "--skip-existing"], "not a height output")):
        if words == "not a height output":
            (out / "t0_height.tif").unlink()
        code, _, err = cli("predict-height", folder, "-m", *args, "-o", out)
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
