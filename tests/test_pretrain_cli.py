"""`rsgeo pretrain`: end to end on a tiny chip folder, and every bad input exits 2."""

import json

import numpy as np
import pytest
import torch

from rsgeo.errors import InputError
from rsgeo.pretrain import pretrain
from rsgeo.train.logging import read_metrics
from tests.conftest import write_chip_dataset


def write_chips(root, n=8, size=64, modalities=("rgb", "dsm")):
    """A chip dataset in the documented format (docs/chip-dataset.md), one source: smooth
    random RGB with its HOG scores, and a DSM (one NaN corner) if asked."""
    from rsgeo.data.hog import hog_energy

    rng = np.random.default_rng(0)
    rgb = np.clip(rng.normal(120, 40, (n, 3, size, size)).cumsum(-1) / 8 + 60, 0, 255).astype(np.uint8)
    arrays = {"rgb": rgb, "hog": hog_energy(torch.from_numpy(rgb)).numpy().astype(np.float32)}
    if "dsm" in modalities:
        arrays["dsm"] = (rgb.mean(1, keepdims=True) / 10).astype(np.float32)
        arrays["dsm"][0, 0, :4, :4] = np.nan
    for m in ("labels", "change"):   # class ids / changed-or-not, as rsgeo prepare stores them
        if m in modalities:
            arrays[m] = (rgb[:, :1] > 120).astype(np.uint8) + (m == "labels")
    return write_chip_dataset(root, arrays)


@pytest.fixture
def chips(tmp_path):
    return write_chips(tmp_path / "chips")


@pytest.fixture
def reader():
    pytest.importorskip("rsgeo.data.dataset", reason="ChipDataset (rsgeo prepare) not in yet")


def test_unknown_backbone_lists_close_matches(cli, chips, tmp_path):
    code, _, err = cli("pretrain", chips, "--method", "mae", "--backbone", "vit-tiny4",
                       "-o", tmp_path / "run")
    assert code == 2 and "close matches: vit-tiny-4" in err and len(err.strip().splitlines()) == 1


def test_fusedmim_needs_a_dsm(cli, tmp_path):
    rgb_only = write_chips(tmp_path / "rgb", modalities=("rgb",))
    code, _, err = cli("pretrain", rgb_only, "--method", "fusedmim", "--backbone", "swin-tiny-2",
                       "-o", tmp_path / "run")
    assert code == 2 and "dsm" in err and "rgb" in err


def test_cuda_requested_but_absent(cli, chips, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("pretrain", chips, "--method", "mae", "--backbone", "vit-tiny-4",
                       "-o", tmp_path / "run", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_not_a_dataset_and_missing_method(cli, tmp_path):
    code, _, err = cli("pretrain", tmp_path, "--method", "mae", "--backbone", "vit-tiny-4",
                       "-o", tmp_path / "run")
    assert code == 2 and "not a chip dataset" in err
    code, _, err = cli("pretrain", tmp_path, "--backbone", "vit-tiny-4", "-o", tmp_path / "run")
    assert code == 2 and "--method" in err


def test_config_file_fills_unset_options(cli, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: mae\nbackbone: vit-tiny4\n")
    chips = tmp_path / "chips"  # past the CLI's checks, on to the backbone's
    chips.mkdir()
    (chips / "dataset.json").write_text("{}")
    code, _, err = cli("pretrain", chips, "--config", cfg, "-o", tmp_path / "run")
    assert code == 2 and "close matches" in err           # backbone came from the file
    cfg.write_text("method: mae\nbackbone: vit-tiny-4\nbatch_sise: 3\n")
    code, _, err = cli("pretrain", chips, "--config", cfg, "-o", tmp_path / "run")
    assert code == 2 and "batch_sise" in err


class Tiny(torch.utils.data.Dataset):
    modalities = ("rgb",)

    def __init__(self, n=8):
        self.x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"rgb": self.x[i]}


SMALL = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2)


def test_library_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="larger than the dataset"):
        pretrain(Tiny(), "mae", "vit-tiny-2", tmp_path / "a", steps=2, batch_size=16, **SMALL)
    pretrain(Tiny(), "mae", "vit-tiny-2", tmp_path / "b", steps=2, batch_size=4, **SMALL)
    with pytest.raises(InputError, match="different config"):
        pretrain(Tiny(), "mae", "vit-tiny-2", tmp_path / "b", steps=2, batch_size=4,
                 mask_ratio=0.5, resume=True, **SMALL)
    with pytest.raises(InputError, match="output exists"):
        pretrain(Tiny(), "mae", "vit-tiny-2", tmp_path / "b", steps=2, batch_size=4, **SMALL)
    with pytest.raises(InputError, match="needs a ViT"):
        pretrain(Tiny(), "mae", "swin-tiny-2", tmp_path / "c", steps=2, batch_size=4)
    with pytest.raises(InputError, match="multiple of 32"):
        pretrain(Tiny(), "simmim", "vit-tiny-2", tmp_path / "d", steps=2, batch_size=4, crop=48)


def test_library_resume_after_a_kill_matches(tmp_path):
    kw = dict(steps=6, batch_size=4, lr=1e-3, log_every=1, ckpt_every=2, **SMALL)
    pretrain(Tiny(), "selectivemae", "vit-tiny-2", tmp_path / "full", **kw)

    def kill(trainer, step, record):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain(Tiny(), "selectivemae", "vit-tiny-2", tmp_path / "cut", on_step_end=kill, **kw)
    assert not (tmp_path / "cut" / "encoder.safetensors").exists()
    pretrain(Tiny(), "selectivemae", "vit-tiny-2", tmp_path / "cut", resume=True, **kw)
    full = [r["loss"] for r in read_metrics(tmp_path / "full" / "metrics.jsonl")]
    cut = [r["loss"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl")]
    assert len(full) == 6 and cut == full


@pytest.mark.parametrize("method,backbone", [("mae", "vit-tiny-2"), ("fusedmim", "swin-tiny-2")])
def test_cli_end_to_end(cli, chips, tmp_path, reader, method, backbone):
    from rsgeo.models.backbones import load_encoder

    extra = ["--crop", "32"] if method == "mae" else []
    code, out, err = cli("pretrain", chips, "--method", method, "--backbone", backbone,
                         "-o", tmp_path / "run", "--steps", "4", "--batch-size", "4",
                         "--lr", "1e-3", "--log-every", "1", "--json", *extra)
    assert code == 0, err
    assert len(out.splitlines()) == 1  # one line, as every --json (it printed indented JSON)
    summary = json.loads(out)
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(rec) == 4 and all(np.isfinite(r["loss"]) for r in rec)
    assert list((tmp_path / "run" / "previews").glob("*.png"))
    for path in summary["encoders"].values():
        enc, meta = load_encoder(path)
        assert meta["method"] == method and meta["normalization"] == "per-source"
    if method == "fusedmim":
        assert set(summary["encoders"]) == {"encoder_rgb", "encoder_dsm"}


def test_cli_batch_and_resume_errors(cli, chips, tmp_path, reader):
    args = ["pretrain", chips, "--method", "simmim", "--backbone", "vit-tiny-2", "-o",
            tmp_path / "run", "--steps", "2", "--batch-size"]
    code, _, err = cli(*args, "64")
    assert code == 2 and "larger than the dataset" in err
    assert cli(*args, "4")[0] == 0
    code, _, err = cli(*args, "4", "--resume", "--mask-ratio", "0.4")
    assert code == 2 and "different config" in err


RUN = ("--steps", "1", "--batch-size", "4")   # runs that would start (without a check)
ONE = dict(steps=1, batch_size=4)


@pytest.mark.parametrize("flag,value,method", [
    ("--modality", "labels", "mae"), ("--modality", "change", "simmim"),
    ("--dsm-modality", "rgb", "fusedmim"), ("--dsm-modality", "labels", "fusedmim")])
def test_label_and_image_modalities_are_refused_up_front(cli, tmp_path, flag, value, method):
    """Label/change chips are targets, not images to pretrain on; fusedmim's second encoder
    reads heights: refused by the option (exit 2, one line), no run folder left. (The
    dataset holds them all: the runs crashed, exit 1, on a patch embedding of 3 bands.)"""
    chips = write_chips(tmp_path / "chips", modalities=("rgb", "dsm", "labels", "change"))
    backbone = "vit-tiny-2" if method == "mae" else "swin-tiny-2"
    code, _, err = cli("pretrain", chips, "--method", method, "--backbone", backbone,
                       "-o", tmp_path / "run", flag, value, *RUN)
    assert code == 2 and flag in err and repr(value) in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_modalities_from_yaml_and_the_library_are_checked(cli, tmp_path):
    chips = write_chips(tmp_path / "chips", modalities=("rgb", "dsm", "labels", "change"))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: mae\nbackbone: vit-tiny-2\nmodality: labels\nsteps: 1\nbatch_size: 4\n")
    code, _, err = cli("pretrain", chips, "--config", cfg, "-o", tmp_path / "run")
    assert code == 2 and "--modality 'labels'" in err and "rgb, dsm or ndsm" in err
    with pytest.raises(InputError, match="--dsm-modality 'rgb'.*dsm or ndsm"):
        pretrain(chips, "fusedmim", "swin-tiny-2", tmp_path / "lib", dsm_modality="rgb", **ONE)
    assert not (tmp_path / "run").exists() and not (tmp_path / "lib").exists()


@pytest.mark.parametrize("method", ["mae", "simmim", "ctxmim", "selectivemae", "fusedmim"])
def test_mask_ratio_zero_is_refused(cli, chips, tmp_path, method):
    """0 masks nothing: MAE's loss was 0/0 (NaN), SimMIM's 0 ("trained", exit 0)."""
    code, _, err = cli("pretrain", chips, "--method", method, "--backbone", "vit-tiny-2",
                       "-o", tmp_path / "run", "--mask-ratio", "0", *RUN)
    assert code == 2 and "--mask-ratio" in err and "0.01" in err, err
    with pytest.raises(InputError, match=rf"--method {method}: --mask-ratio 0.*\[0.01, 0.99\]"):
        pretrain(Tiny(), method, "vit-tiny-2", tmp_path / "lib", mask_ratio=0, **ONE)
    assert not (tmp_path / "run").exists() and not (tmp_path / "lib").exists()


@pytest.mark.parametrize("method,ratio,most", [("mae", 0.95, "0.93"), ("simmim", 0.8, "0.75"),
                                               ("fusedmim", 0.99, "0.75")])
def test_mask_ratio_that_leaves_nothing_visible_is_refused(cli, chips, tmp_path, method, ratio,
                                                          most):
    """64-px crops: 16 patches of 16 px (mae keeps int(16 x 0.05) = 0), 4 mask units of
    32 px (simmim masks ceil(4 x 0.8) = 4): an encoder that sees no patch learns nothing."""
    backbone = "swin-tiny-2" if method == "fusedmim" else "vit-tiny-2"
    code, _, err = cli("pretrain", chips, "--method", method, "--backbone", backbone,
                       "-o", tmp_path / "run", "--mask-ratio", ratio, *RUN)
    assert code == 2 and f"--method {method} --mask-ratio {ratio}" in err, err
    assert "leaving none visible" in err and f"use at most {most}" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="leaving none visible"):
        pretrain(Tiny(), method if method != "fusedmim" else "simmim", backbone,
                 tmp_path / "lib", mask_ratio=ratio, **ONE)
    assert not (tmp_path / "lib").exists()      # refused before the run folder is claimed


def test_selectivemae_rec_ratio_zero_names_rec_ratio(cli, chips, tmp_path):
    """--rec-ratio 0 made the lr 0 (lr x rec / mask ratio), blamed on --lr."""
    code, _, err = cli("pretrain", chips, "--method", "selectivemae", "--backbone", "vit-tiny-2",
                       "-o", tmp_path / "run", "--rec-ratio", "0", *RUN)
    assert code == 2 and "--rec-ratio" in err and "--lr" not in err, err
    with pytest.raises(InputError, match=r"--method selectivemae: --rec-ratio 0"):
        pretrain(Tiny(), "selectivemae", "vit-tiny-2", tmp_path / "lib", rec_ratio=0, **ONE)
    with pytest.raises(InputError, match="blr 0"):
        pretrain(Tiny(), "mae", "vit-tiny-2", tmp_path / "lib", blr=0, **ONE)
    assert not (tmp_path / "run").exists() and not (tmp_path / "lib").exists()
