"""benchmarks/real_heights.py: a height model scored on the real rasters (skipped without them).

A constant model (every pixel 7.25 m) makes the scores computable by hand from the
references: MAE = mean |7.25 - ref| over the reference's valid pixels.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rsgeo.tasks.bundle import build_task_model, save_task_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "real_heights.py"
CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
       "head": "dpt", "head_features": 16}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
        "std": [50.0] * 3, "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m", "nodata": -9999}


def _module():
    spec = importlib.util.spec_from_file_location("real_heights", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _constant_model(path: Path, value: float) -> Path:
    torch.manual_seed(0)
    model = build_task_model(CFG)
    sd = model.state_dict()
    sd["head.out.4.weight"].zero_()
    sd["head.out.4.bias"].fill_(value)
    model.load_state_dict(sd)
    save_task_model(model, CFG, META, path)
    return path


def test_absent_folder_scores_nothing(tmp_path, capsys):
    rh = _module()
    assert rh.available_sites(tmp_path / "nope") == []
    assert rh.score_real("unused.ckpt", tmp_path / "nope") == {}
    assert rh.main(["unused.ckpt", "--realdata", str(tmp_path / "nope")]) == 0
    assert "nothing to score" in capsys.readouterr().out


def test_constant_model_scores_match_the_references(realdata, tmp_path):
    rh = _module()
    model = _constant_model(tmp_path / "const.ckpt", 7.25)
    res = rh.score_real(model, realdata, sites=["montpellier", "village"])
    assert set(res) == {"montpellier", "village"}
    assert res["montpellier"]["resampled"] and not res["village"]["resampled"]  # 0.2 m -> 0.5 m
    for site, r in res.items():
        _, ref, mask = (realdata / f for f in rh.SITES[site])
        with rasterio.open(ref) as ds, rasterio.open(mask) as ms:
            h, ok = ds.read(1), ds.read_masks(1) > 0
            bldg = ok & (ms.read(1) == 1)
        # Montpellier's ortho declares 255 nodata: a few saturated white pixels drop out
        assert 0.995 * ok.sum() <= r["n_pixels"] <= ok.sum()
        assert 0.99 * bldg.sum() <= r["n_bldg"] <= bldg.sum()
        assert r["mae"] == pytest.approx(np.abs(7.25 - h[ok]).mean(), rel=5e-3)
        assert r["mae_bldg"] == pytest.approx(np.abs(7.25 - h[bldg]).mean(), rel=5e-3)
        g = h[ok].clip(0.1)
        tp = ((h[ok] > 1) & (np.maximum(7.25 / g, g / 7.25) < 1.25)).sum()
        fp = (h[ok] <= 1).sum()          # every pixel is predicted above 1 m
        assert r["precision_1"] == pytest.approx(tp / (tp + fp), rel=1e-2)
        assert r["recall_1"] == 1.0
        assert 0 < r["f1he_1"] < 1
    assert "montpellier" in rh.table(res)


def test_constant_baseline_equals_the_constant_model_on_a_native_grid(realdata, tmp_path):
    rh = _module()
    model = _constant_model(tmp_path / "const.ckpt", 7.25)
    by_model = rh.score_real(model, realdata, sites=["village"])["village"]
    base = rh.constant_scores(7.25, realdata, sites=["village"])["village"]
    for k in ("f1he_1", "mae", "rmse", "delta1", "mae_bldg", "n_pixels"):
        assert base[k] == pytest.approx(by_model[k], rel=2e-3), k   # RGB nodata: 0.1 % fewer
    assert rh.constant_scores(0.0, realdata, sites=["village"])["village"]["f1he_1"] == 0.0
    _, ref, mask = (realdata / f for f in rh.SITES["village"])
    with rasterio.open(ref) as ds, rasterio.open(mask) as ms:
        h = ds.read(1)
        tall = (ds.read_masks(1) > 0) & (ms.read(1) == 1) & (h > 2)
    assert by_model["scale_bldg"] == pytest.approx(np.median(7.25 / h[tall]), rel=1e-4)


def test_an_ensemble_scores_as_its_mean_model(realdata, tmp_path, capsys):
    """Two constant models, 3 m and 7 m: their ensemble is the constant 5 m model."""
    rh = _module()
    models = [_constant_model(tmp_path / f"c{v}.ckpt", v) for v in (3.0, 7.0)]
    ens = rh.score_real(models, realdata, sites=["village"])["village"]
    five = rh.constant_scores(5.0, realdata, sites=["village"])["village"]
    for k in ("f1he_1", "mae", "rmse", "delta1", "mae_bldg"):
        assert ens[k] == pytest.approx(five[k], rel=2e-3), k
    assert rh.main([*map(str, models), "--realdata", str(realdata), "--constant"]) == 0
    out = capsys.readouterr().out
    assert "c3.0.ckpt + " in out and "scale" in out


def _synth_to_real():
    spec = importlib.util.spec_from_file_location("synth_to_real", BENCH.with_name("synth_to_real.py"))
    s2r = importlib.util.module_from_spec(spec)
    sys.modules["synth_to_real"] = s2r  # --jobs > 1: worker processes import it by name
    spec.loader.exec_module(s2r)
    return s2r


def test_synth_to_real_seed_summary_is_mean_and_sd_over_seeds():
    def record(f1, mae, val):
        site = {"f1he_1": f1, "mae": mae, "rmse": 2 * mae, "f1he_1_bldg": f1 / 2,
                "scale_bldg": 1 + f1}
        return {"results": {"montpellier": site}, "synthetic_val": {"f1he_1": val}}

    text = _synth_to_real().seed_summary([record(0.2, 3.0, 0.4), record(0.4, 1.0, 0.6)])
    row = next(line for line in text.splitlines() if line.startswith("montpellier"))
    # mean 0.3, sd (n-1) 0.141; MAE 2 ± 1.414; RMSE 4 ± 2.828; bldg 0.15 ± 0.071; scale
    assert row.split() == ["montpellier", "0.300", "±", "0.141", "2.000", "±", "1.414",
                           "4.000", "±", "2.828", "0.150", "±", "0.071", "1.300", "±", "0.141"]
    assert "0.500 ± 0.141" in text                          # synthetic validation F1^HE


def test_synth_to_real_runs_end_to_end_on_a_tiny_budget(realdata, tmp_path, capsys):
    s2r = _synth_to_real()
    assert s2r.main(["--scenes", "2", "--size", "128", "--steps", "2", "--batch-size", "2",
                     "--backbone", "vit-tiny-2", "--head-features", "16",
                     "--realdata", str(realdata), "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "montpellier" in out and "baseline: 7 m everywhere" in out and "load average" in out
    assert len(list((tmp_path / "synth").glob("*_scene.json"))) == 2
    assert (tmp_path / "run" / "best.ckpt").is_file()


@pytest.mark.slow
def test_synth_to_real_trains_seeds_in_parallel_workers(realdata, tmp_path, capsys):
    s2r = _synth_to_real()
    assert s2r.main(["--scenes", "1", "--size", "128", "--steps", "2", "--batch-size", "2",
                     "--backbone", "vit-tiny-2", "--head-features", "16", "--tiles",
                     "--seeds", "0", "1", "--jobs", "2",
                     "--realdata", str(realdata), "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    records = [json.loads(line) for line in out.splitlines() if line.startswith('{"seed"')]
    assert sorted(r["seed"] for r in records) == [0, 1]      # each seed's output, whole
    assert all(r["torch_threads"] >= 1 for r in records)
    assert "mean ± sd over seeds 0, 1" in out and "the 2 seeds' models as one ensemble" in out
    ensemble = json.loads(next(line for line in out.splitlines() if line.startswith('{"ensemble"')))
    assert ensemble["seeds"] == [0, 1] and "montpellier" in ensemble["ensemble"]
    assert all((tmp_path / f"seed{s}" / "run" / "best.ckpt").is_file() for s in (0, 1))
