"""Model files are data: a crafted pickle is refused before any of it runs."""

from __future__ import annotations

import builtins

import pytest
import torch

from rsgeo.errors import InputError
from rsgeo.tasks.bundle import load_task_model
from rsgeo.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state


class _Evil:
    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):  # unpickling this calls open(target, "w"): it creates a file
        return (builtins.open, (self.target, "w"))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "model.ckpt"
    torch.save({"format": "rsgeo-task", "payload": _Evil(marker)}, path)
    return path, marker


def test_crafted_checkpoint_is_refused_without_running(evil):
    path, marker = evil
    for load in (load_task_model, load_checkpoint):
        with pytest.raises(InputError, match="refusing to load"):
            load(path)
    assert not marker.exists()


def test_cli_refuses_crafted_model_files(evil, cli, tmp_path, raster_factory):
    import numpy as np

    path, marker = evil
    img = raster_factory(np.zeros((3, 32, 32), np.uint8))
    for args in (("predict-height", img, "-m", path, "-o", tmp_path / "h.tif"),
                 ("export", path, "-o", tmp_path / "m.onnx")):
        code, _, err = cli(*args)
        assert code == 2 and "refusing to load" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


def test_checkpoint_round_trip_restores_rng(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    save_checkpoint(tmp_path / "c.pt", rng=state, step=3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_numpy_values_in_bundles_are_saved_loadable(tmp_path):
    import math

    import numpy as np

    from rsgeo.tasks.bundle import save_task_model

    net = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c.pt", score=np.float64(0.5), arr=np.arange(3), nodata=math.nan)
    c = load_checkpoint(tmp_path / "c.pt")
    assert c["score"] == 0.5 and c["arr"].tolist() == [0, 1, 2] and math.isnan(c["nodata"])
    save_task_model(net, {"task": "height"}, {"val": {"f1": np.float32(0.25)}}, tmp_path / "m.ckpt")
    from rsgeo.train.checkpoint import safe_load

    assert safe_load(tmp_path / "m.ckpt", "bundle")["meta"]["val"]["f1"] == 0.25


def test_finetune_resume_refuses_a_crafted_checkpoint(cli, tmp_path):
    import json
    import shutil

    from tests.test_pretrain_cli import write_chips

    chips = write_chips(tmp_path / "chips", n=4, size=32)
    shard = chips / "shards" / "city"
    shutil.copy(shard / "dsm.npy", shard / "ndsm.npy")             # a height label
    info = json.loads((chips / "dataset.json").read_text())
    info["modalities"].append("ndsm")
    (chips / "dataset.json").write_text(json.dumps(info))
    stats = json.loads((chips / "stats.json").read_text())
    stats["sources"]["city"]["ndsm"] = stats["sources"]["city"]["dsm"]
    (chips / "stats.json").write_text(json.dumps(stats))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".rsgeo.json").write_text(json.dumps({"kind": "finetune"}))
    marker = tmp_path / "pwned.txt"
    torch.save({"step": 3, "payload": _Evil(marker)}, run / "checkpoints" / "last.pt")
    code, _, err = cli("finetune", chips, "--task", "height", "-o", run, "--resume", "--encoder",
                       "random", "--backbone", "vit-tiny-4")
    assert code == 2 and "refusing to load" in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()
