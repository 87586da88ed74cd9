"""Ensembles of height models: ``predict-height -m A -m B`` averages their heights."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsgeo.errors import InputError
from rsgeo.infer.ensemble import EnsembleRunner
from rsgeo.infer.predict import predict_height_file
from rsgeo.infer.session import Norm
from rsgeo.tasks.bundle import build_task_model, save_task_model
from tests.conftest import make_raster

CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
       "head": "dpt", "head_features": 16}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
        "std": [50.0] * 3, "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m",
        "nodata": -9999}


def _ckpt(path: Path, seed: int, cfg=None, **meta) -> Path:
    torch.manual_seed(seed)
    cfg = {**CFG, **(cfg or {})}
    model = build_task_model(cfg)
    with torch.no_grad():  # heights well above 0 m, different per seed
        model.head.out[4].bias.fill_(3.0 + seed)
    save_task_model(model, cfg, {**META, **meta}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    return {"a": _ckpt(d / "a.ckpt", 0),
            # another seed, trained on other imagery: its own normalisation
            "b": _ckpt(d / "b.ckpt", 1, mean=[100.0, 110.0, 90.0], std=[40.0, 45.0, 35.0]),
            "gsd1": _ckpt(d / "gsd1.ckpt", 2, gsd=1.0),
            "seg": _ckpt(d / "seg.ckpt", 3, cfg={"task": "segmentation", "num_classes": 3},
                         task="segmentation", num_classes=3)}


def _rgb(tmp_path, h=150, w=170, name="img.tif", dtype=np.uint8, top=255):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(yy / 9.0) * np.cos(xx / 7.0)
    img = np.clip(base[None] + rng.integers(0, 30, (3, h, w)), 0, 255) * (top / 255)
    return make_raster(tmp_path / name, img.astype(dtype))


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.tags()


def test_runner_normalises_each_member_its_own_way():
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 8, 8)).astype(np.uint8)
    ma, sa, mb, sb = (120.0,) * 3, (50.0,) * 3, (100.0, 110.0, 90.0), (40.0, 45.0, 35.0)
    offset = 7.0  # an input stretch's offset, folded into the first model's mean
    norm = Norm(2.0, tuple(m + offset for m in ma), sa)

    def band_sum(x):
        return x.sum(axis=1, keepdims=True)

    ens = EnsembleRunner([band_sum, band_sum], means=[ma, mb], stds=[sa, sb])
    got = ens.submit(raw, norm).result()
    a = band_sum(norm.host(raw))
    b = band_sum(Norm(2.0, tuple(m + offset for m in mb), sb).host(raw))
    np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(EnsembleRunner([band_sum], [ma], [sa]).submit(raw, norm)
                                  .result(), a)  # one member: that model, bit for bit
    with pytest.raises(ValueError, match="normalise differently"):
        ens(norm.host(raw))


def test_results_are_gathered_when_asked_for_and_every_member_released():
    """A CUDA runner's submit returns at once: the ensemble must not wait for its result in
    submit (consecutive batches overlap as with one model), and release frees every member."""
    log = []

    class Member:
        device = "cuda"

        def __init__(self, name, value):
            self.name, self.value = name, value

        def submit(self, raw, norm):
            log.append(("submit", self.name))
            member = self

            class P:
                def result(self):
                    log.append(("result", member.name))
                    return np.full((len(raw), 1, 2, 2), member.value, np.float32)

                def release(self):
                    log.append(("release", member.name))
            return P()

    ens = EnsembleRunner([Member("a", 1.0), Member("b", 4.0)], [(0,)] * 2, [(1,)] * 2)
    pending = ens.submit(np.zeros((3, 1, 2, 2), np.uint8), Norm(1.0, (0.0,), (1.0,)))
    assert log == [("submit", "a"), ("submit", "b")] and ens.device == "cuda"
    np.testing.assert_array_equal(pending.result(), np.full((3, 1, 2, 2), 2.5, np.float32))
    pending.result()  # computed once
    pending.release()
    assert log[2:] == [("result", "a"), ("result", "b"), ("release", "a"), ("release", "b")]


def test_ensemble_heights_are_the_mean_of_the_members(tmp_path, models):
    src = _rgb(tmp_path)
    a, b, ab = (tmp_path / f"{n}.tif" for n in ("a", "b", "ab"))
    predict_height_file(src, models["a"], a)
    predict_height_file(src, models["b"], b)
    r = predict_height_file(src, [models["a"], models["b"]], ab)
    ha, hb, (hab, tags) = _read(a)[0], _read(b)[0], _read(ab)
    assert np.abs(ha - hb).mean() > 0.5  # two different models
    np.testing.assert_allclose(hab, (ha + hb) / 2, rtol=1e-5, atol=1e-5)
    assert r["models"] == [str(models["a"]), str(models["b"])]
    assert tags["model"] == "a.ckpt,b.ckpt"


def test_an_ensemble_of_one_model_twice_is_that_model(tmp_path, models):
    src = _rgb(tmp_path, 96, 130)
    predict_height_file(src, models["a"], tmp_path / "one.tif")
    predict_height_file(src, [models["a"], models["a"]], tmp_path / "two.tif")
    np.testing.assert_array_equal(_read(tmp_path / "one.tif")[0], _read(tmp_path / "two.tif")[0])


def test_ensemble_keeps_the_input_stretch(tmp_path, models):
    """16-bit input: the percentile stretch's offset reaches every member."""
    src = _rgb(tmp_path, 90, 100, dtype=np.uint16, top=4000)
    for name, model in (("a", models["a"]), ("b", models["b"])):
        predict_height_file(src, model, tmp_path / f"{name}.tif")
    predict_height_file(src, [models["a"], models["b"]], tmp_path / "ab.tif")
    ha, hb = _read(tmp_path / "a.tif")[0], _read(tmp_path / "b.tif")[0]
    np.testing.assert_allclose(_read(tmp_path / "ab.tif")[0], (ha + hb) / 2, rtol=1e-5, atol=1e-5)


def test_cli_ensemble_and_its_errors(tmp_path, cli, models):
    src = _rgb(tmp_path, 70, 80)
    code, out, err = cli("predict-height", src, "-m", models["a"], "-m", models["b"], "-o",
                         tmp_path / "h.tif", "--json")
    assert code == 0, err
    line = json.loads(out.splitlines()[0])
    assert [Path(m).name for m in line["models"]] == ["a.ckpt", "b.ckpt"]
    for other, words in ((models["gsd1"], "GSD (m) 1.0, but a.ckpt has 0.5"),
                         (models["seg"], "holds a segmentation model"),
                         (tmp_path / "missing.ckpt", "no such model file")):
        code, _, err = cli("predict-height", src, "-m", models["a"], "-m", other, "-o",
                           tmp_path / "x.tif")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert Path(other).name in err and words in err, err
        assert not (tmp_path / "x.tif").exists()
    with pytest.raises(InputError, match="no model given"):
        predict_height_file(src, [], tmp_path / "y.tif")


def test_damage_map_from_images_with_an_ensemble(tmp_path, cli, models):
    """damage-map -m A -m B grades the ensemble's heights: the same classes as damage-map on
    the heights predict-height -m A -m B writes."""
    from rsgeo.synth import write_scenes

    p = write_scenes(tmp_path / "city", size=128, seed=2)[0]
    code, out, err = cli("damage-map", p["pre_rgb"], p["post_rgb"], "-m", models["a"], "-m",
                         models["b"], "-o", tmp_path / "d.tif", "--json")
    assert code == 0, err
    assert json.loads(out)["heights_from"] == "predicted"
    for k in ("pre_rgb", "post_rgb"):
        code, _, err = cli("predict-height", p[k], "-m", models["a"], "-m", models["b"], "-o",
                           tmp_path / f"{k}_h.tif")
        assert code == 0, err
    code, _, err = cli("damage-map", tmp_path / "pre_rgb_h.tif", tmp_path / "post_rgb_h.tif",
                       "-o", tmp_path / "e.tif")
    assert code == 0, err
    np.testing.assert_array_equal(_read(tmp_path / "d.tif")[0], _read(tmp_path / "e.tif")[0])
    code, _, err = cli("damage-map", p["pre_rgb"], p["post_rgb"], "-m", models["a"], "-m",
                       models["gsd1"], "-o", tmp_path / "f.tif")
    assert code == 2 and "gsd1.ckpt" in err and not (tmp_path / "f.tif").exists()


def test_predict_runs_an_ensemble_of_height_models_as_predict_height_does(tmp_path, cli, models):
    src = _rgb(tmp_path, 70, 90)
    code, _, err = cli("predict", src, "-m", models["a"], "-m", models["b"], "-o",
                       tmp_path / "p.tif")
    assert code == 0, err
    code, _, err = cli("predict-height", src, "-m", models["a"], "-m", models["b"], "-o",
                       tmp_path / "h.tif")
    assert code == 0, err
    np.testing.assert_array_equal(_read(tmp_path / "p.tif")[0], _read(tmp_path / "h.tif")[0])
    code, _, err = cli("predict", src, "-m", models["seg"], "-m", models["a"], "-o",
                       tmp_path / "s.tif")
    assert code == 2 and "seg.ckpt" in err and "ensembles" in err, err


@pytest.mark.cuda
def test_ensemble_on_cuda_is_the_mean_of_its_members_on_cuda(tmp_path, models):
    """Members on the GPU, each with its own normalisation, batches in flight: the ensemble
    is the mean of the members' own CUDA heights (to float32 rounding), and matches CPU
    to cuDNN's TF32 tolerance."""
    src = _rgb(tmp_path, 300, 340)
    a, b, ab, cpu = (tmp_path / f"{n}.tif" for n in ("a", "b", "ab", "cpu"))
    for m, out in ((models["a"], a), (models["b"], b)):
        predict_height_file(src, m, out, device="cuda")
    r = predict_height_file(src, [models["a"], models["b"]], ab, device="cuda")
    predict_height_file(src, [models["a"], models["b"]], cpu, device="cpu")
    assert r["device"] == "cuda"
    ha, hb, hab, hcpu = (_read(p)[0] for p in (a, b, ab, cpu))
    np.testing.assert_allclose(hab, (ha + hb) / 2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hab, hcpu, rtol=1e-2, atol=1e-2)
