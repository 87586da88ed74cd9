"""The training engine on a toy regression task (CPU, seconds)."""


import pytest
import torch
from torch import nn

from rsgeo.errors import InputError
from rsgeo.train.config import TrainConfig
from rsgeo.train.engine import Trainer
from rsgeo.train.logging import read_metrics
from rsgeo.train.sampler import ShardedSampler
from rsgeo.train.schedule import lr_at


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ (torch.arange(8.0) / 8) + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        self.progress = []

    def set_progress(self, step, total):
        self.progress.append((step, total))

    def forward(self, batch):
        loss = ((self.net(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        return loss, {"mse": loss.detach()}


def cfg(**kw):
    base = dict(steps=12, batch_size=8, lr=0.05, warmup=2, log_every=1, ckpt_every=4,
                clip_grad=10.0, weight_decay=0.0)
    return TrainConfig(**{**base, **kw})


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    model = Regressor()
    out = Trainer(model, Pairs(), cfg(steps=24), tmp_path / "run").fit()
    rec = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rec] == list(range(1, 25))
    assert {"step", "epoch", "loss", "lr", "img_per_s", "max_mem_mb", "mse"} <= set(rec[0])
    assert rec[-1]["loss"] < 0.2 * rec[0]["loss"]
    assert rec[8]["epoch"] == 1 and rec[7]["epoch"] == 0     # 64 samples / 8 = 8 steps an epoch
    assert out["step"] == 24 and out["steps_per_epoch"] == 8
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert "batch_size: 8" in (tmp_path / "run" / "config.yaml").read_text()
    assert model.progress[0] == (0, 24) and model.progress[-1] == (23, 24)


def test_adamw_is_fused_on_cpu(tmp_path):
    # one kernel over all parameters: the per-tensor loop cost a fifth of a CPU step
    t = Trainer(Regressor(), Pairs(), cfg(steps=2), tmp_path / "run")
    assert t.optimizer.defaults["fused"] is True


def test_accumulation_matches_one_big_batch(tmp_path):
    a = Trainer(Regressor(), Pairs(), cfg(steps=5), tmp_path / "a").fit()
    b = Trainer(Regressor(), Pairs(), cfg(steps=5, accum_steps=4), tmp_path / "b").fit()
    ra, rb = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], rel=1e-5)
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_killed_run_resumes_to_the_same_losses(tmp_path):
    Trainer(Regressor(), Pairs(), cfg(), tmp_path / "full").fit()

    def kill(trainer, step, record):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(Regressor(), Pairs(), cfg(), tmp_path / "cut", on_step_end=kill).fit()
    # the last checkpoint is step 4; records 5-6 are dropped and redone
    Trainer(Regressor(), Pairs(), cfg(), tmp_path / "cut", resume=True).fit()
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["step"] for r in cut] == list(range(1, 13))
    assert [r["loss"] for r in cut] == [r["loss"] for r in full]
    assert [r["lr"] for r in cut] == [r["lr"] for r in full]


def test_resume_refuses_a_different_config(tmp_path):
    Trainer(Regressor(), Pairs(), cfg(steps=4), tmp_path / "run").fit()
    with pytest.raises(InputError, match="different config.*lr"):
        Trainer(Regressor(), Pairs(), cfg(steps=4, lr=0.5), tmp_path / "run", resume=True).fit()
    with pytest.raises(InputError, match="no checkpoint"):
        Trainer(Regressor(), Pairs(), cfg(), tmp_path / "other", resume=True).fit()


def test_bad_settings_are_input_errors(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="larger than the dataset"):
        Trainer(Regressor(), Pairs(16), cfg(batch_size=32), tmp_path)
    with pytest.raises(InputError, match="multiple"):
        Trainer(Regressor(), Pairs(), cfg(batch_size=8, accum_steps=3), tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="CUDA is not available"):
        Trainer(Regressor(), Pairs(), cfg(device="cuda"), tmp_path)
    with pytest.raises(InputError, match="fp16 needs CUDA"):
        Trainer(Regressor(), Pairs(), cfg(precision="fp16"), tmp_path)


def test_bf16_autocast_on_cpu_trains(tmp_path):
    Trainer(Regressor(), Pairs(), cfg(steps=16, precision="bf16"), tmp_path).fit()
    rec = read_metrics(tmp_path / "metrics.jsonl")
    assert rec[-1]["loss"] < 0.5 * rec[0]["loss"]


def test_validation_hook_is_logged_every_epoch(tmp_path):
    calls = []

    def validate(trainer, epoch):
        calls.append(epoch)
        return {"val_loss": 1.5}

    Trainer(Regressor(), Pairs(), cfg(steps=16), tmp_path, on_epoch_end=validate).fit()
    val = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r.get("kind") == "val"]
    assert calls == [1, 2] and [r["step"] for r in val] == [8, 16]


def test_schedule_warms_up_then_follows_the_cosine():
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10, min_lr=0.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10, min_lr=0.1) == pytest.approx(0.1)


def test_sampler_shards_the_single_process_order():
    one = ShardedSampler(20, 1, 0, seed=3)
    two = [ShardedSampler(20, 2, r, seed=3) for r in range(2)]
    for s in [one, *two]:
        s.set_epoch(1)
    order = one.order()
    assert sorted(two[0].order() + two[1].order()) == list(range(20))
    # global batch k of 4 = two local batches of 2
    assert set(two[0].order()[:2] + two[1].order()[:2]) == set(order[:4])
    two[0].set_start(6)
    assert list(two[0]) == two[0].order()[6:] and len(two[0]) == 4
