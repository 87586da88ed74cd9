"""The task registry: a toy task registered here (no other file changed) shows up in
`rsgeo finetune --help` and trains through the CLI; heads and inputs a task does not take
are refused (exit 2, one line) instead of being ignored."""

import json

import numpy as np
import pytest
import torch

from rsgeo.tasks import INPUTS, Layer, TaskSpec, Writer, get_task, register, task_names, unregister
from rsgeo.tasks.losses import class_loss
from rsgeo.tasks.scores import LabelScore
from tests.conftest import write_chip_dataset


# --- the toy task: "bright roof" segmentation, 2 classes from the RGB chip itself ----------

def bright_target(rgb, crop):
    """Class 1 where the pixel's mean RGB is above 128 (``rgb [3, c, c]`` uint8)."""
    return (rgb.reshape(3, crop, crop).astype(np.float32).mean(0) > 128).astype(np.int64)


def bright_build(encoder, config):
    from rsgeo.models.networks import dpt_model

    return dpt_model(encoder, 2, int(config.get("head_features", 64)))


def bright_loss(net, batch, class_weights=None):
    return class_loss(net(batch["x"]), batch["target"], class_weights=class_weights), {}


def bright_predict(net, batch):
    return net(batch["x"]).argmax(1)


BRIGHT = TaskSpec(
    name="bright-roof", summary="toy: bright pixels", target="rgb", inputs=("rgb",),
    heads=("dpt",), out_channels=lambda config: 2, build=bright_build, loss=bright_loss,
    predict=bright_predict,
    accumulator=lambda k, net: LabelScore(2, bright_predict,
                                          lambda m: {"bright_iou": m.result()["miou"]}),
    score="bright_iou", make_target=bright_target,
    writer=Writer("raster", "softmax-argmax", (Layer("bright", "uint8", "class", "bright"),)))


@pytest.fixture
def bright_task():
    register(BRIGHT)
    try:
        yield BRIGHT
    finally:
        unregister(BRIGHT.name)
    assert BRIGHT.name not in task_names()


def write_chips(root, n=8, size=64):
    """A tiny chip dataset in the documented format: rgb, ndsm and labels, one source."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    arrays = {"rgb": rgb, "ndsm": (rgb[:, :1] / 20).astype(np.float32),
              "labels": (rgb[:, 0] // 64).astype(np.uint8)}
    return write_chip_dataset(root, arrays, classes={str(i): f"c{i}" for i in range(4)}, gsd=0.5)


@pytest.fixture
def chips(tmp_path):
    return write_chips(tmp_path / "chips")


TRAIN = ("--backbone", "vit-tiny-2", "--steps", 2, "--batch-size", 2, "--val-every", 0)


def test_builtin_tasks_are_registered():
    assert task_names()[:4] == ("height", "segmentation", "change", "classification")
    assert get_task("segmentation").default_head == "upernet"
    assert get_task("change").export_inputs == ("pre", "post")
    from rsgeo.io.writer import HEIGHT_NODATA

    assert get_task("height").writer.layers[0].nodata == HEIGHT_NODATA


@pytest.mark.slow
def test_a_registered_toy_task_is_listed_and_trains_through_the_cli(bright_task, chips,
                                                                     tmp_path, cli):
    code, out, _ = cli("finetune", "--help")
    assert code == 0 and "bright-roof" in " ".join(out.split())
    code, out, err = cli("finetune", chips, "--task", "bright-roof", *TRAIN, "-o",
                         tmp_path / "run", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["step"] == 2 and s["config"]["task"] == "bright-roof"
    assert s["config"]["head"] == "dpt" and 0 <= s["best"]["bright_iou"] <= 1
    from rsgeo.tasks.bundle import load_task_model

    net, cfg, meta = load_task_model(tmp_path / "run" / "best.ckpt")
    assert meta["task"] == "bright-roof" and meta["units"] == "class"
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    code, out, err = cli("finetune", chips, "--task", "bright-roof", "--head", "upernet", *TRAIN,
                         "-o", tmp_path / "bad")
    assert code == 2 and "bright-roof" in err and "allowed: dpt" in err


def test_after_unregistering_the_toy_task_is_gone(chips, tmp_path, cli):
    register(BRIGHT)
    unregister(BRIGHT.name)
    code, out, _ = cli("finetune", "--help")
    assert code == 0 and "bright-roof" not in out
    code, _, err = cli("finetune", chips, "--task", "bright-roof", *TRAIN, "-o", tmp_path / "r")
    assert code == 2 and "unknown task 'bright-roof'" in err and "height" in err


def test_an_unsupported_head_is_an_error_naming_the_task_and_its_heads(chips, tmp_path, cli):
    code, _, err = cli("finetune", chips, "--task", "height", "--head", "upernet", *TRAIN,
                       "-o", tmp_path / "h")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--task height" in err and "allowed: dpt" in err
    assert not (tmp_path / "h").exists()                   # refused before anything is written
    code, _, err = cli("finetune", chips, "--task", "classification", "--head", "dpt", *TRAIN,
                       "-o", tmp_path / "c")
    assert code == 2 and "allowed: linear" in err


@pytest.mark.slow
def test_rgb_ndsm_inputs(chips, tmp_path, cli):
    """height learns nDSM, so it refuses nDSM as an input; segmentation takes rgb+ndsm."""
    code, _, err = cli("finetune", chips, "--task", "height", "--inputs", "rgb+ndsm", *TRAIN,
                       "-o", tmp_path / "h")
    assert code == 2 and "its target is ndsm" in err and "rgb, dsm, rgb+dsm" in err
    code, out, err = cli("finetune", chips, "--task", "segmentation", "--inputs", "rgb+ndsm",
                         "--head", "dpt", *TRAIN, "-o", tmp_path / "s", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["config"]["in_chans"] == 4 and s["config"]["split"] == 3
    assert s["config"]["head"] == "dpt" and s["config"]["num_classes"] == 4
    from rsgeo.tasks.bundle import load_task_model

    net, cfg, meta = load_task_model(tmp_path / "s" / "best.ckpt")
    assert meta["bands"] == ["red", "green", "blue", "ndsm"] and len(net.encoder.encoders) == 2


def test_registry_refuses_malformed_specs():
    from dataclasses import replace

    with pytest.raises(ValueError, match="already registered"):
        register(get_task("height"))
    with pytest.raises(ValueError, match="heads and inputs"):
        register(replace(BRIGHT, inputs=("rgb+nir",)))
    with pytest.raises(ValueError, match="one export input"):
        register(replace(BRIGHT, export_inputs=("a", "b")))
    assert BRIGHT.name not in task_names() and "rgb+ndsm" in INPUTS


def test_build_task_model_refuses_a_head_the_task_does_not_take():
    from rsgeo.errors import InputError
    from rsgeo.tasks.bundle import build_task_model

    cfg = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32,
           "head_features": 8}
    with pytest.raises(InputError, match=r"--task height \(allowed: dpt\)"):
        build_task_model({**cfg, "head": "upernet"})
    # classification checkpoints written before the registry record head "dpt": still load
    net = build_task_model({**cfg, "task": "classification", "head": "dpt", "num_classes": 3})
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
