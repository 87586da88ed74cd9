"""The quick demo end to end: every step, every output file, the report."""

import errno
import json
import os
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from rsgeo import demo
from rsgeo.errors import OutputWriteError, RsgeoError


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, cli):
    out = tmp_path / "demo"
    code, stdout, err = cli("demo", "-o", out, "--quick", "--json")
    assert code == 0, err
    s = json.loads(stdout)
    assert [x["step"] for x in s["steps"]] == [
        "synth city", "prepare chips", f"pretrain {demo.PRETRAIN['method']}", "finetune heights",
        "export ONNX", "predict heights", "damage map", "evaluate", "report"]
    m = s["metrics"]
    assert 0 <= m["height_f1he_1"] <= 1 and 0 <= m["damaged_building_f1"] <= 1
    assert 0 < m["height_mae"] < 20 and m["buildings"] > 5
    assert m["pretrain_loss_end"] < m["pretrain_loss_start"]       # pretraining trains
    assert m["pretrain_loss_start_step"] == 1                     # the untrained model's loss
    assert m["pretrain_lr"] == demo.PRETRAIN["lr"]
    assert "baseline_height_f1he_1" not in m                      # full demo only
    for key in ("heights_pre", "heights_post", "damage"):
        with rasterio.open(s["files"][key]) as ds:
            assert ds.crs is not None and ds.width > 0 and ds.read(1).size
    with rasterio.open(s["files"]["heights_pre"]) as ds:
        h = ds.read(1)
        assert ds.nodata == -9999 and h.max() > 1.0          # it predicts some buildings
    fp = gpd.read_file(s["files"]["damage_buildings"])
    assert len(fp) == m["buildings"] and fp.crs is not None and "grade" in fp
    bh = gpd.read_file(s["files"]["building_heights"])      # how tall is each building
    assert len(bh) == m["buildings"] and {"height_m", "predicted_height_m"} <= set(bh.columns)
    measured = bh["predicted_height_m"].notna()
    d = (bh["predicted_height_m"] - bh["height_m"])[measured]
    assert measured.sum() > 5 and m["building_height_mae"] == pytest.approx(d.abs().mean(),
                                                                           abs=1e-3)
    assert (out / "report.png").stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "report.png" in html and "height_f1he_1" in html
    assert f"start {m['pretrain_loss_start']:.3f}, end {m['pretrain_loss_end']:.3f}" in html
    code, _, err = cli("demo", "-o", out, "--quick")
    assert code == 2 and "--overwrite" in err


def test_full_demo_adds_a_random_init_baseline(tmp_path, monkeypatch):
    """The full demo's branch (sizes shrunk to seconds): a random-init model tuned with the
    same budget, scored on the same held-out city, side by side in the report."""
    tiny = dict(demo.QUICK, train_scenes=1, size=256, pretrain_steps=4, finetune_steps=4,
                train_size=8, batch=4, test_size=128, baseline=True, unlabelled_scenes=2,
                pretrain_batch=8)
    monkeypatch.setattr(demo, "demo_sizes", lambda quick, device: tiny)
    lines = []
    s = demo.run_demo(tmp_path / "d", device="cpu", log=lines.append)
    m = s["metrics"]
    assert [x["step"] for x in s["steps"]][-3:] == [
        "finetune random init", "predict baseline heights", "report"]
    assert 0 <= m["baseline_height_f1he_1"] <= 1 and m["baseline_height_mae"] > 0
    assert (tmp_path / "d" / "baseline" / "best.ckpt").is_file()
    # pretraining read the pool: the training city's and the unlabelled scenes' RGB, pre
    # and post, and no heights
    import yaml

    pool = json.loads((tmp_path / "d" / "pool" / "dataset.json").read_text())
    assert len(list((tmp_path / "d" / "unlabelled").glob("*_pre_rgb.tif"))) == 2
    cfg = yaml.safe_load((tmp_path / "d" / "pretrain" / "config.yaml").read_text())
    assert Path(cfg["extra"]["dataset"]).name == "pool" and "ndsm" not in pool["modalities"]
    assert sorted(pool["sources"]) == ["city", "city-post", "unlabelled", "unlabelled-post"]
    html = (tmp_path / "d" / "report.html").read_text()
    assert f"<td>random init</td><td>{m['baseline_height_f1he_1']:.3f}</td>" in html
    assert f"<td>{m['height_f1he_1']:.3f}</td>" in html
    assert any("random init" in x and "pretrained" in x for x in lines)
    assert any(x.startswith("[11/11] report") for x in lines)


def test_loss_curve_first_step_and_mean_of_the_tail(tmp_path):
    f = tmp_path / "metrics.jsonl"
    losses = [1.6, 1.2] + [1.0] * 15 + [0.5, 0.7, 0.6]          # 20 steps, logged every step
    f.write_text("".join(json.dumps({"step": i, "loss": v, "lr": 1e-3}) + "\n"
                         for i, v in enumerate(losses, 1))
                 + json.dumps({"kind": "val", "step": 20, "acc": 1.0}) + "\n")  # no loss: skipped
    c = demo.loss_curve(f)
    assert c["start"] == pytest.approx(1.6) and c["start_step"] == 1       # the untrained model
    assert c["end"] == pytest.approx(0.6) and c["end_steps"] == (20, 20)   # 5 % of 20: 1 record
    c = demo.loss_curve(f, tail=0.15)
    assert c["end"] == pytest.approx(0.6) and c["end_steps"] == (18, 20)   # mean of 0.5, 0.7, 0.6
    f.write_text(json.dumps({"step": 1, "loss": 0.8}) + "\n")
    assert demo.loss_curve(f) == {"start": 0.8, "end": 0.8, "start_step": 1, "end_steps": (1, 1)}
    f.write_text("")
    with pytest.raises(RsgeoError, match="no loss"):
        demo.loss_curve(f)


def test_loss_note_only_for_normalised_pixel_losses(monkeypatch):
    assert demo.loss_note() == "; 1.0 = each patch's mean colour"       # the demo's SelectiveMAE
    monkeypatch.setitem(demo.PRETRAIN, "norm_pix_loss", False)
    assert demo.loss_note() == ""
    monkeypatch.setattr(demo, "PRETRAIN", {"method": "simmim"})
    assert demo.loss_note() == ""


def _disk_fills_mid_write(monkeypatch):
    """Every ``Path.write_text`` writes half its text, then fails as on a full disk."""
    real = Path.write_text

    def torn(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", torn)


def test_summary_failing_mid_write_leaves_no_torn_file(tmp_path, monkeypatch):
    _disk_fills_mid_write(monkeypatch)
    with pytest.raises(OutputWriteError, match="summary.json: no space left on device"):
        demo.write_summary(tmp_path, {"metrics": {"height_mae": 1.5}, "steps": []})
    assert list(tmp_path.iterdir()) == []          # no summary.json, no temporary file


def test_report_failing_mid_write_publishes_neither_file(tmp_path, monkeypatch):
    """report.png was complete when report.html's write failed: neither is published."""
    from PIL import Image

    _disk_fills_mid_write(monkeypatch)
    with pytest.raises(OutputWriteError, match="report.html: no space left on device"):
        demo.publish_report(tmp_path, Image.new("RGB", (8, 8)), "<html>" + "x" * 100)
    assert list(tmp_path.iterdir()) == []
