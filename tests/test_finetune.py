import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from rsgeo.errors import InputError
from rsgeo.finetune import finetune
from rsgeo.synth import generate_scene


class SynthChips(Dataset):
    """Chips cut from synthetic scenes, shaped like ChipDataset samples."""

    modalities = ("rgb", "post_rgb", "dsm", "ndsm", "labels", "change")
    num_classes = 9

    def __init__(self, n_scenes=2, size=256, chip=64, seed=0):
        self.items = []
        for s in range(n_scenes):
            sc = generate_scene(size, 0.5, "mid", 0.3, seed=seed + s)
            for r in range(0, size, chip):
                for c in range(0, size, chip):
                    w = (slice(r, r + chip), slice(c, c + chip))
                    self.items.append({
                        "rgb": torch.from_numpy((sc.pre_rgb[:, w[0], w[1]] - 120.0) / 50.0).float(),
                        "post_rgb": torch.from_numpy((sc.post_rgb[:, w[0], w[1]] - 120.0) / 50.0).float(),
                        "ndsm": torch.from_numpy(sc.pre_ndsm[w][None].copy()),
                        "dsm": torch.from_numpy(sc.dsm[w][None].copy()),
                        "labels": torch.from_numpy(sc.landcover[w].astype(np.int64)),
                        "change": torch.from_numpy(sc.change[w].astype(np.int64))})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


@pytest.fixture(scope="module")
def chips():
    return SynthChips()


@pytest.mark.slow
def test_height_finetune_learns_and_beats_zero(chips, tmp_path):
    torch.manual_seed(0)
    s = finetune(chips, "height", tmp_path / "run", backbone="vit-tiny-2", steps=60,
                 batch_size=8, lr=2e-3, head_features=16, seed=0, log_every=2)
    recs = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r["loss"] for r in recs if r.get("kind") != "val"]
    print("loss", np.mean(train[:5]), "->", np.mean(train[-5:]), "val", s["best"])
    assert np.mean(train[-5:]) < 0.75 * np.mean(train[:5])
    # the same validation chips (10 % held out with seed + 1) scored for a zero predictor
    from rsgeo.metrics.height import HeightAccumulator

    held = np.sort(np.random.default_rng(1).permutation(len(chips))[:len(chips) // 10])
    zero = HeightAccumulator()
    for i in held:
        ref = chips[int(i)]["ndsm"][0].numpy()
        zero.update(np.zeros_like(ref), ref)
    assert s["val_chips"] == len(held) and zero.result()["f1he_1"] == 0
    assert s["best"]["f1he_1"] > 0.2 > zero.result()["f1he_1"]
    assert (tmp_path / "run" / "best.ckpt").is_file() and (tmp_path / "run" / "val_preview.png").is_file()
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["f1he_1"] == pytest.approx(s["best"]["f1he_1"]) and best["step"] == s["best_step"]
    from rsgeo.tasks.bundle import load_task_model

    net, cfg, meta = load_task_model(tmp_path / "run" / "best.ckpt")
    assert cfg["task"] == "height" and meta["units"] == "m" and "val" in meta


def test_segmentation_change_and_classification_train(chips, tmp_path):
    for task in ("segmentation", "change", "classification"):
        s = finetune(chips, task, tmp_path / task, backbone="vit-tiny-2", steps=6, batch_size=4,
                     lr=5e-4, head_features=16, seed=0)
        assert s["best"] is not None and s["step"] == 6, task
    assert 0 <= s["best"]["accuracy"] <= 1


def test_train_size_subset_and_frozen_encoder(chips, tmp_path):
    s = finetune(chips, "height", tmp_path / "r", backbone="vit-tiny-2", steps=2, batch_size=2,
                 train_size=10, freeze_encoder=True, head_features=16)
    assert s["train_chips"] == 10


def test_pretrained_encoder_is_loaded(chips, tmp_path):
    from rsgeo.models.backbones import build_encoder, save_encoder

    enc = build_encoder("vit-tiny-2", 3, 64)
    save_encoder(enc, tmp_path / "encoder.safetensors",
                 {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64})
    s = finetune(chips, "height", tmp_path / "r", encoder=str(tmp_path / "encoder.safetensors"),
                 steps=1, batch_size=2, head_features=16)
    assert s["config"]["backbone"] == "vit-tiny-2"


def test_elevation_only_and_dual_encoder_from_a_fusedmim_run(chips, tmp_path):
    from rsgeo.models.backbones import build_encoder, save_encoder

    s = finetune(chips, "segmentation", tmp_path / "dem", backbone="vit-tiny-2", inputs="dsm",
                 steps=2, batch_size=2, head_features=16)
    assert s["config"]["in_chans"] == 1 and s["config"]["head"] == "upernet"
    run = tmp_path / "fused"
    run.mkdir()
    torch.manual_seed(1)
    for stem, bands in (("encoder_rgb", 3), ("encoder_dsm", 1)):
        save_encoder(build_encoder("vit-tiny-2", bands, 64), run / f"{stem}.safetensors",
                     {"backbone": "vit-tiny-2", "in_chans": bands, "img_size": 64,
                      "method": "fusedmim"})
    s = finetune(chips, "segmentation", tmp_path / "rgbdsm", encoder=str(run), inputs="rgb+dsm",
                 steps=1, batch_size=2, head_features=16, freeze_encoder=True)
    assert s["config"]["in_chans"] == 4 and s["config"]["split"] == 3
    from rsgeo.models.backbones import load_encoder
    from rsgeo.tasks.bundle import load_task_model

    net, *_ = load_task_model(tmp_path / "rgbdsm" / "best.ckpt")
    dsm_enc, _ = load_encoder(run / "encoder_dsm.safetensors")
    for a, b in zip(net.encoder.encoders[1].state_dict().values(), dsm_enc.state_dict().values()):
        torch.testing.assert_close(a, b)             # frozen: still the fusedmim DSM encoder
    with pytest.raises(InputError, match="fusedmim run folder"):
        finetune(chips, "segmentation", tmp_path / "x", encoder=str(run / "encoder_rgb.safetensors"),
                 inputs="rgb+dsm")


def test_a_fusedmim_run_feeds_one_input_with_its_branch(chips, tmp_path):
    """A fusedmim run folder as --encoder for RGB (or DSM) input loads that branch's
    encoder (was refused as a malformed Hugging Face folder); inputs it has no branch for
    are refused naming the run and the inputs it can feed."""
    from rsgeo.models.backbones import build_encoder, load_encoder, save_encoder
    from rsgeo.tasks.bundle import load_task_model

    run = tmp_path / "fused"
    run.mkdir()
    for seed, (stem, modality, bands) in enumerate((("encoder_rgb", "rgb", 3),
                                                    ("encoder_dsm", "dsm", 1))):
        torch.manual_seed(seed)
        save_encoder(build_encoder("vit-tiny-2", bands, 64), run / f"{stem}.safetensors",
                     {"backbone": "vit-tiny-2", "in_chans": bands, "img_size": 64,
                      "method": "fusedmim", "modality": modality})
    for inputs, task, stem in (("rgb", "height", "encoder_rgb"),
                               ("dsm", "segmentation", "encoder_dsm")):
        s = finetune(chips, task, tmp_path / inputs, encoder=str(run), inputs=inputs, steps=1,
                     batch_size=2, head_features=16, freeze_encoder=True)
        assert s["config"]["backbone"] == "vit-tiny-2" and s["config"]["split"] is None
        net, _, meta = load_task_model(tmp_path / inputs / "best.ckpt")
        enc, _ = load_encoder(run / f"{stem}.safetensors")
        got = net.encoder.encoders[0].state_dict()
        for k, v in enc.state_dict().items():             # frozen: still the fusedmim branch
            torch.testing.assert_close(got[k], v)
        assert meta["encoder"]["method"] == "fusedmim"
    with pytest.raises(InputError, match=r"fusedmim run .*--inputs ndsm.*rgb\+dsm"):
        finetune(chips, "segmentation", tmp_path / "x", encoder=str(run), inputs="ndsm")
    assert not (tmp_path / "x").exists()


def test_bad_inputs(chips, tmp_path):
    with pytest.raises(InputError, match="--backbone"):
        finetune(chips, "height", tmp_path / "a")
    with pytest.raises(InputError, match="unknown task"):
        finetune(chips, "depth", tmp_path / "b", backbone="vit-tiny-2")
    with pytest.raises(InputError, match="train-size"):
        finetune(chips, "height", tmp_path / "c", backbone="vit-tiny-2", train_size=10_000)
    with pytest.raises(InputError, match="CUDA"):
        finetune(chips, "height", tmp_path / "d", backbone="vit-tiny-2", device="cuda")


def test_class_counts_are_checked_before_the_run_folder(chips, tmp_path):
    """Class weights of another length than the classes, and --num-classes below the
    dataset's class ids (9 classes here), ended in torch errors after the run folder was
    claimed; now one InputError first and no folder."""
    bad = [({"class_weights": [1.0, 2.0]}, "segmentation", "--class-weights has 2 value.*9 classes"),
           ({"num_classes": 3}, "segmentation", "--num-classes 3 .*up to 8.*9 or more"),
           ({"num_classes": 4, "aux_landcover": True}, "height", "--num-classes 4"),
           ({"class_weights": [-1.0] + [1.0] * 8}, "classification", "non-negative")]
    for kw, task, match in bad:
        with pytest.raises(InputError, match=match):
            finetune(chips, task, tmp_path / "r", backbone="vit-tiny-2", steps=1,
                     batch_size=2, head_features=16, **kw)
        assert not (tmp_path / "r").exists(), kw
    s = finetune(chips, "segmentation", tmp_path / "ok", backbone="vit-tiny-2", steps=1,
                 batch_size=2, head_features=16, num_classes=10, class_weights=[1.0] * 10)
    assert s["config"]["num_classes"] == 10           # more classes than labels: fine


def test_num_classes_is_checked_against_the_label_chips_when_no_classes_are_listed(
        tmp_path, cli):
    """A dataset.json without classes (``prepare --labels`` without ``--classes``) let a
    --num-classes below the label ids through: torch's "Target 3 is out of bounds" (exit 1)
    after the run folder was made, also for the height task's land-cover head. Now the ids
    come from prepare's stats.json record, else a scan of the label shards, and the run is
    refused first (exit 2, one line, no folder)."""
    from tests.test_registry_tasks import write_chips

    chips = write_chips(tmp_path / "chips")               # labels 0..3
    info = json.loads((chips / "dataset.json").read_text())
    (chips / "dataset.json").write_text(json.dumps({**info, "classes": None}))
    run = tmp_path / "run"
    base = ("finetune", chips, "--backbone", "vit-tiny-2", "--steps", 1, "--batch-size", 2,
            "-o", run)
    for args, msg in (
            (("--task", "segmentation", "--num-classes", 2),
             "--num-classes 2 is below the class ids in the dataset's label chips (up to 3"),
            (("--task", "classification", "--num-classes", 3), "give --num-classes 4 or more"),
            (("--task", "height", "--aux-landcover", "--num-classes", 2), "--num-classes 2"),
            (("--task", "segmentation"), "pass --num-classes (4 or more")):
        code, _, err = cli(*base, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and msg in err, (args, err)
        assert not run.exists(), args
    with pytest.raises(InputError, match="up to 3"):      # the library checks it too
        finetune(chips, "segmentation", run, backbone="vit-tiny-2", num_classes=2, steps=1)
    assert not run.exists()
    stats = json.loads((chips / "stats.json").read_text())  # prepare's record is read
    stats["sources"]["city"]["labels"] = {"ids": [0, 6], "pixels": [10, 1]}
    (chips / "stats.json").write_text(json.dumps(stats))
    code, _, err = cli(*base, "--task", "segmentation", "--num-classes", 4)
    assert code == 2 and "(up to 6;" in err, err


def test_class_weights_are_refused_where_the_loss_takes_none(tmp_path, cli):
    """--class-weights was silently ignored by the height and change losses (SmoothL1,
    binary cross-entropy); the task registry now says which losses take them
    (``TaskSpec.weighted_loss``) and any other task refuses them before a run folder."""
    from rsgeo.tasks import get_task, task_names
    from tests.test_registry_tasks import write_chips

    chips = write_chips(tmp_path / "chips")
    assert [t for t in task_names() if get_task(t).weighted_loss] == [
        "segmentation", "classification"]
    for task in ("height", "change"):
        code, _, err = cli("finetune", chips, "--task", task, "--backbone", "vit-tiny-2",
                           "--class-weights", "1,2", "-o", tmp_path / "r")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"--class-weights has no effect on --task {task}" in err, err
        with pytest.raises(InputError, match=f"no effect on --task {task}"):
            finetune(chips, task, tmp_path / "r", backbone="vit-tiny-2", class_weights=[1.0, 2.0])
        assert not (tmp_path / "r").exists()


def test_resume_refuses_other_class_weights_or_validation_chips(tmp_path, cli):
    """--class-weights and --val-dataset shape the run: config.yaml records them and
    --resume refuses a change, as it does for --photometric (both were accepted)."""
    from tests.test_registry_tasks import write_chips

    import pandas as pd

    chips, other = write_chips(tmp_path / "chips"), write_chips(tmp_path / "other")
    pd.read_parquet(other / "manifest.parquet").assign(split="val").to_parquet(
        other / "manifest.parquet")                           # --val-dataset reads its val split
    run = ["finetune", chips, "--task", "segmentation", "--backbone", "vit-tiny-2", "--steps", 1,
           "--batch-size", 2, "-o", tmp_path / "run", "--class-weights", "1,1,1,2"]
    code, _, err = cli(*run)
    assert code == 0, err
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "class_weights:\n  - 1.0\n" in saved and "val_dataset: null" in saved
    for args, key in ((("--class-weights", "1,1,1,9"), "class_weights"),
                      (("--val-dataset", other), "val_dataset"),
                      (("--photometric", 0.5), "photometric")):
        code, _, err = cli(*run, *args, "--resume")
        assert code == 2 and f"extra.{key}" in err and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "run" / "config.yaml").read_text() == saved
    code, _, err = cli(*run[:-2], "--resume")                 # weights left out: a change too
    assert code == 2 and "extra.class_weights" in err, err
    code, _, err = cli(*run, "--resume")                      # the same run: accepted
    assert code == 0, err


@pytest.mark.slow
def test_cli_end_to_end_on_a_prepared_dataset(tmp_path, cli):
    """synth -> prepare -> finetune -> export -> predict-height, through the CLI."""
    from rsgeo.cli.app import COMMANDS

    if "prepare" not in COMMANDS:
        pytest.skip("rsgeo prepare not in yet")
    assert cli("synth", "-o", tmp_path / "city", "--size", 256, "--scenes", 2)[0] == 0
    code, _, err = cli("prepare", tmp_path / "city", "-o", tmp_path / "chips", "--size", 64,
                       "--stride", 64)
    assert code == 0, err
    code, out, err = cli("finetune", tmp_path / "chips", "--task", "height", "--backbone",
                         "vit-tiny-2", "--steps", 4, "--batch-size", 4, "-o", tmp_path / "run")
    assert code == 0, err
    assert cli("export", tmp_path / "run" / "best.ckpt", "-o", tmp_path / "m.onnx")[0] == 0
    code, out, err = cli("finetune", tmp_path / "chips", "--task", "height", "--backbone",
                         "vit-tiny-2", "--steps", 2, "--batch-size", 2, "--adapt-to",
                         tmp_path / "chips", "--encoder-lr-scale", 0.1, "-o", tmp_path / "ada",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["aux_classes"] == 9
    code, _, err = cli("predict-height", tmp_path / "city" / "city_000_pre_rgb.tif", "-m",
                       tmp_path / "m.onnx", "-o", tmp_path / "h.tif")
    assert code == 0, err


def test_land_cover_auxiliary_head(chips, tmp_path):
    s = finetune(chips, "height", tmp_path / "aux", backbone="vit-tiny-2", steps=3, batch_size=4,
                 head_features=16, aux_landcover=True, encoder_lr_scale=0.1)
    assert s["config"]["aux_classes"] == 9 and 0 <= s["best"]["landcover_miou"] <= 1
    rec = [json.loads(l) for l in (tmp_path / "aux" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rec if r.get("kind") != "val"]
    assert "landcover_loss" in train[0] and "height_loss" in train[0]
    with pytest.raises(InputError, match="--task height"):
        finetune(chips, "segmentation", tmp_path / "x", backbone="vit-tiny-2", aux_landcover=True)


def test_adaptation_parts():
    from rsgeo.finetune.adapt import AdaptModule, class_mix_mask, photometric, structure_classes
    from rsgeo.tasks.bundle import build_task_model

    assert structure_classes({"1": "bareland", "5": "trees", "8": "buildings"}) == [5, 8]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    a = photometric(x, torch.Generator().manual_seed(1))
    assert not torch.allclose(a, x)
    torch.testing.assert_close(a, photometric(x, torch.Generator().manual_seed(1)))
    labels = torch.tensor([1, 2, 3, 255]).repeat_interleave(64).view(1, 16, 16)
    m = class_mix_mask(labels, g)
    picked = torch.unique(labels[m[:, 0] > 0])
    assert len(picked) == 2 and 255 not in picked       # ceil(3 / 2) of the present classes

    torch.manual_seed(0)
    net = build_task_model({"task": "height", "backbone": "vit-tiny-2", "in_chans": 3,
                            "img_size": 32, "head_features": 16, "aux_classes": 9})
    mod = AdaptModule(net, [5, 8], feat_weight=0.0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)                                   # the student moves on
    before = [p.clone() for p in mod.teacher.parameters()]
    mod.set_progress(9, 100)                              # a = min(1 - 1/10, 0.99) = 0.9
    for t0, t1, s in zip(before, mod.teacher.parameters(), net.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s)
    mod.set_progress(0, 100)                              # a = 0: the teacher is the student
    for t, s in zip(mod.teacher.parameters(), net.parameters()):
        torch.testing.assert_close(t, s)
    # ground mask: pseudo heights are 0 wherever the pseudo class is not tree/building
    with torch.no_grad():
        net.aux.out[-1].weight.zero_()
        net.aux.out[-1].bias.copy_(torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 50.0]))  # all 'building'
    mod.set_progress(0, 1)
    h, cls, w_h, w_s = mod.pseudo_labels(torch.randn(2, 3, 32, 32), g)
    assert (cls == 8).all() and w_s == 1 and (h > 0).all()
    mod.ground_classes = torch.tensor([5])                # now nothing counts as a structure
    h, *_ = mod.pseudo_labels(torch.randn(2, 3, 32, 32), g)
    assert (h == 0).all()


def test_adapt_to_unlabelled_target(chips, tmp_path):
    target = SynthChips(n_scenes=1, size=128, chip=64, seed=7)
    for item in target.items:                     # another "sensor": darker, warmer, no labels
        item["rgb"] = item["rgb"] * 0.7 + torch.tensor([0.3, 0.0, -0.3]).view(3, 1, 1)
        for k in ("ndsm", "labels", "change", "post_rgb"):
            item.pop(k)
    target.modalities = ("rgb",)
    s = finetune(chips, "height", tmp_path / "ada", encoder="random", backbone="vit-tiny-2",
                 steps=4, batch_size=4, head_features=16, adapt_to=target,
                 adapt={"ground_classes": [5, 8], "feat_weight": 1.0}, log_every=1)
    recs = [json.loads(l) for l in (tmp_path / "ada" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r.get("kind") != "val"]
    assert len(train) == 4 and all(np.isfinite(r["loss"]) for r in train)
    assert all(0 <= r["w_h"] <= 1 and 0 <= r["w_s"] <= 1 and "target_loss" in r for r in train)
    from rsgeo.tasks.bundle import load_task_model

    net, cfg, _ = load_task_model(tmp_path / "ada" / "best.ckpt")
    assert cfg["aux_classes"] == 9 and s["config"]["aux_classes"] == 9
    with pytest.raises(InputError, match="tree and building"):
        finetune(chips, "height", tmp_path / "b", backbone="vit-tiny-2", adapt_to=target)
