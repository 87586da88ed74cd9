"""benchmarks/low_label.py at toy size: the grid runs, cells resume, the table prints."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "low_label.py"


def _module():
    spec = importlib.util.spec_from_file_location("low_label", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["low_label"] = mod  # --jobs > 1: worker processes import it by name
    spec.loader.exec_module(mod)
    return mod


TOY = ["--inits", "random", "mae", "--labels", "3", "--seeds", "0", "1", "--pool-scenes", "1",
       "--val-scenes", "1", "--size", "128", "--chip", "64", "--pretrain-steps", "2",
       "--pretrain-batch", "2", "--finetune-steps", "2", "--batch-size", "2",
       "--backbone", "vit-tiny-2", "--head-features", "8"]


@pytest.mark.slow
def test_low_label_grid_resumes_and_prints_a_table(tmp_path, capsys):
    mod = _module()
    args = mod.parse(TOY + ["--work", str(tmp_path), "--jobs", "2"])  # two worker processes
    rows, pre = mod.run_study(args)
    assert [(r["init"], r["labels"], r["seed"]) for r in rows] == [
        ("random", 3, 0), ("random", 3, 1), ("mae", 3, 0), ("mae", 3, 1)]
    assert all(0.0 <= r["f1he_1"] <= 1.0 and r["mae"] >= 0.0 for r in rows)
    assert pre["mae"]["steps"] == 2 and "loss_start" in pre["mae"]
    assert Path(pre["mae"]["encoder"]).is_file()
    cells = (tmp_path / "cells.jsonl").read_text().splitlines()
    assert len(cells) == 4

    # a rerun with the same settings finishes from cells.jsonl: nothing is trained again
    capsys.readouterr()
    again, _ = mod.run_study(mod.parse(TOY + ["--work", str(tmp_path), "--jobs", "1"]))
    assert again == rows
    assert "pretrain mae" not in capsys.readouterr().out
    assert (tmp_path / "cells.jsonl").read_text().splitlines() == cells

    text = mod.table(rows, pre, [3])
    assert text.splitlines()[2].startswith("| random (nothing) | ")
    assert "mae (pool RGB, loss" in text and "(n=2)" in text

    # other settings in the same work folder are refused, not mixed
    with pytest.raises(SystemExit):
        mod.run_study(mod.parse(TOY + ["--work", str(tmp_path), "--lr", "1e-3"]))
    assert json.loads(cells[0])["init"] == "random"


def test_mean_sd_and_missing_cells():
    mod = _module()
    assert mod.mean_sd([0.2, 0.4]) == "0.300 ± 0.141"
    assert mod.mean_sd([0.5]) == "0.500 ± 0.000"
    rows = [{"init": "random", "labels": 10, "seed": 0, "f1he_1": 0.1, "mae": 2.0,
             "delta1": 0.5}]
    text = mod.table(rows, {}, [10, 50])
    assert text.splitlines()[-1].endswith("| - |")


def test_gains_are_paired_by_seed():
    mod = _module()
    rows = [{"init": i, "labels": 50, "seed": s, "f1he_1": v}
            for i, s, v in [("random", 0, 0.10), ("random", 1, 0.30), ("mae", 0, 0.15),
                            ("mae", 1, 0.33), ("mae", 2, 0.90)]]  # seed 2 has no partner
    text = mod.gains(rows, [10, 50])
    assert text == "mae - random, F1^HE points paired by seed: 50 labels +4.0 ± 1.4 (n=2)"
    assert mod.gains([r for r in rows if r["init"] == "random"], [50]) == ""


def test_missing_realdata_is_skipped_not_fatal(tmp_path, capsys):
    args = _module().parse(["--realdata", str(tmp_path / "absent")])
    assert args.realdata is None
    assert "real rasters skipped" in capsys.readouterr().out


def test_settings_id_keeps_older_work_folders_valid():
    """Settings added later (--pretrain-chip, --head-steps) enter the id only when set, so a
    work folder made before they existed still resumes with the defaults."""
    mod = _module()
    base = mod.parse([])
    assert set(mod.study_settings(base)) == set(mod.STUDY_KEYS)
    assert mod.settings_id(base) == mod.settings_id(mod.parse(["--head-steps", "0"]))
    for extra in (["--head-steps", "50"], ["--pretrain-chip", "128"]):
        assert mod.settings_id(mod.parse(extra)) != mod.settings_id(base)


@pytest.mark.slow
def test_pretrain_chip_and_head_steps(tmp_path):
    """--pretrain-chip cuts the same pool scenes into bigger chips for pretraining only;
    --head-steps reaches finetune (its config records it)."""
    import yaml

    mod = _module()
    toy = [a for a in TOY]
    toy[toy.index("--seeds") + 1: toy.index("--seeds") + 3] = ["0"]
    toy[toy.index("--size") + 1] = "256"                         # 4 pretraining chips of 128 px
    # one job, in this process: the pool of worker processes is what the grid test runs
    args = mod.parse(toy + ["--pretrain-chip", "128", "--head-steps", "1", "--work", str(tmp_path),
                            "--jobs", "1"])
    rows, pre = mod.run_study(args)
    assert len(rows) == 2
    pool = json.loads((tmp_path / "pool_chips128" / "dataset.json").read_text())
    assert pool["chip_size"] == 128
    assert json.loads((tmp_path / "pool_chips" / "dataset.json").read_text())["chip_size"] == 64
    enc = json.loads(Path(pre["mae"]["encoder"]).with_suffix(".json").read_text())
    assert enc["img_size"] == 128                                # pretrained on 128 px chips
    for init in ("random", "mae"):
        cfg = yaml.safe_load((mod.cell_dir(tmp_path, init, 3, 0) / "config.yaml").read_text())
        assert cfg["extra"]["head_steps"] == 1


def test_jobs_default_and_validation(capsys):
    mod = _module()
    assert mod.plan_jobs(3, "cpu") == 3
    assert mod.plan_jobs(None, "cuda") == 1
    assert 1 <= mod.plan_jobs(None, "cpu") <= 4
    with pytest.raises(SystemExit):
        mod.parse(["--jobs", "0"])
    assert "--jobs 0: use 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_cell_in_a_worker_stops_the_grid(tmp_path):
    mod = _module()
    args = mod.parse(TOY + ["--inits", "random", "--external", str(tmp_path / "none.pth"),
                            "--work", str(tmp_path / "w"), "--jobs", "2"])
    with pytest.raises(Exception, match="none.pth"):
        mod.run_study(args)


def test_gains_per_pretraining_run():
    mod = _module()
    rows = [{"init": i, "pretrain_seed": p, "labels": 50, "seed": s, "f1he_1": v, "mae": 2.0,
             "delta1": 0.5} for i, p, s, v in [("random", 0, 0, 0.10), ("random", 0, 1, 0.30),
                               ("mae", 0, 0, 0.15), ("mae", 0, 1, 0.35),
                               ("mae", 1, 0, 0.10), ("mae", 1, 1, 0.30)]]
    tail = " - random, F1^HE points paired by seed: 50 labels "
    assert mod.gains(rows, [50]).splitlines() == [
        "mae (2 pretraining runs)" + tail + "+2.5 ± 2.9 (n=4)",
        "mae pretraining seed 0" + tail + "+5.0 ± 0.0 (n=2)",
        "mae pretraining seed 1" + tail + "+0.0 ± 0.0 (n=2)"]
    assert "2 pretraining runs" in mod.table(rows, {}, [50])


@pytest.mark.slow
def test_pretraining_seeds_are_a_grid_axis(tmp_path):
    mod = _module()
    toy = TOY + ["--seeds", "0", "--work", str(tmp_path), "--jobs", "1"]
    rows, pre = mod.run_study(mod.parse(toy + ["--pretrain-seeds", "0", "1"]))
    assert [(r["init"], r["pretrain_seed"]) for r in rows] == [
        ("random", 0), ("mae", 0), ("mae", 1)]
    assert set(pre) == {"random", "mae", "mae_p1"}
    assert (tmp_path / "pretrain_mae").is_dir() and (tmp_path / "pretrain_mae_p1").is_dir()
    assert (tmp_path / "finetune" / "mae_p1_n3_s0" / "best.ckpt").is_file()
    # the pretraining seed changes the encoder, so the cells differ
    from safetensors.torch import load_file

    a, b = (load_file(pre[k]["encoder"]) for k in ("mae", "mae_p1"))
    assert any(not a[k].equal(b[k]) for k in a)
    # a later run with the default single pretraining seed reuses the seed-0 cells
    again, _ = mod.run_study(mod.parse(toy))
    assert again == rows[:2]


@pytest.mark.slow
def test_an_external_checkpoint_is_a_row_of_the_grid(tmp_path):
    """A timm-layout ViT checkpoint (written from a random model: nothing is downloaded)
    fine-tuned with the same recipe as every other start, and compared with random init."""
    import torch
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=4, num_heads=3,
                            num_classes=0)
    ext = tmp_path / "ext.pth"
    torch.save({"model": vit.state_dict()}, ext)
    mod = _module()
    rows, pre = mod.run_study(mod.parse(TOY + [
        "--inits", "random", "--seeds", "0", "--external", str(ext), "--work", str(tmp_path / "w"),
        "--jobs", "1"]))
    assert [r["init"] for r in rows] == ["random", "external"]
    assert pre["external"] == {"source": str(ext)}
    assert (tmp_path / "w" / "finetune" / "external_n3_s0" / "best.ckpt").is_file()
    assert "| external (its own data) |" in mod.table(rows, pre, [3])
    assert mod.gains(rows, [3]).startswith("external - random, F1^HE points paired by seed: ")
