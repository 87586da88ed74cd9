"""SIGTERM/SIGINT during training: stop at a step boundary, save, exit 143/130, resume exactly.

The CLI tests send a real signal to a real ``rsgeo`` process once its metrics show training
started; the engine tests signal the test process itself from a step hook.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rsgeo.train.config import TrainConfig
from rsgeo.train.engine import Trainer
from rsgeo.train.logging import read_metrics
from rsgeo.train.stop import StopSignals, TrainingInterrupted

ROOT = Path(__file__).resolve().parents[1]


def write_chips(root, n=24, size=64, n_val=4):
    """A chip dataset (docs/chip-dataset.md): rgb, ndsm, hog; ``n_val`` chips in ``val``."""
    from rsgeo.data.hog import hog_energy

    rng = np.random.default_rng(0)
    shard = root / "shards" / "city"
    shard.mkdir(parents=True)
    rgb = np.clip(rng.normal(120, 40, (n, 3, size, size)).cumsum(-1) / 8 + 60, 0, 255).astype(np.uint8)
    ndsm = (rgb.astype(np.float32).mean(1, keepdims=True) - 60) / 10
    arrays = {"rgb": rgb, "ndsm": ndsm.astype(np.float32),
              "hog": hog_energy(torch.from_numpy(rgb)).numpy().astype(np.float32)}
    for name, arr in arrays.items():
        np.save(shard / f"{name}.npy", arr)
    stats = {"rgb": {"mean": rgb.mean((0, 2, 3)).tolist(), "std": rgb.std((0, 2, 3)).tolist(),
                     "count": int(rgb[:, 0].size)},
             "ndsm": {"mean": [float(ndsm.mean())], "std": [float(ndsm.std())],
                      "count": int(ndsm.size)}}
    (root / "stats.json").write_text(json.dumps({"sources": {"city": stats}}))
    (root / "dataset.json").write_text(json.dumps({
        "format": "rsgeo-chips", "version": 1, "chip_size": size, "hog_patch": 16,
        "modalities": ["rgb", "ndsm"], "classes": None, "sources": ["city"]}))
    rows = [dict(chip_id=f"city_{i}", source="city", split="val" if i < n_val else "train",
                 scene="city.tif", row_off=0, col_off=i * size, height=size, width=size,
                 minx=0.0, miny=0.0, maxx=1.0, maxy=1.0, crs="EPSG:32633",
                 nodata_fraction=0.0, hash=i, status="kept", index=i) for i in range(n)]
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


def start(args, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "rsgeo", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for_training(proc, metrics: Path, limit=300.0):
    """Block until ``metrics`` holds a training record (the run is inside its loop)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before training: {proc.stderr.read()[-2000:]}")
        if metrics.is_file() and any('"loss"' in line for line in metrics.read_text().splitlines()):
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no training record appeared")


def stopped(proc, run: Path, code: int, total: int):
    """Checks after the signal: exit code, one-line message, a loadable mid-run checkpoint."""
    out, err = proc.communicate(timeout=300)  # a hang guard, not a timing test
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "exited unexpectedly" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert signal.Signals(code - 128).name in last and "--resume" in last and "last.pt" in last
    ckpt = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert 1 <= ckpt["step"] < total, "the signal must stop the run before its end"
    assert {"model", "optimizer", "rng", "samples_done"} <= set(ckpt)
    return ckpt["step"]


def train_losses(run: Path):
    return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "kind" not in r]


@pytest.mark.slow
def test_sigterm_during_pretrain_saves_exits_143_and_resumes(tmp_path, cli):
    chips = write_chips(tmp_path / "chips", n_val=0)
    small = tmp_path / "small.yaml"  # a small decoder keeps the test fast
    small.write_text("decoder_dim: 32\ndecoder_depth: 1\ndecoder_heads: 2\n")
    total = 24
    args = ["pretrain", chips, "--method", "mae", "--backbone", "vit-tiny-4", "--steps", total,
            "--batch-size", 4, "--lr", "1e-3", "--log-every", 1, "--ckpt-every", 1000,
            "--config", small]
    proc = start([*args, "-o", tmp_path / "cut"])
    wait_for_training(proc, tmp_path / "cut" / "metrics.jsonl")
    proc.send_signal(signal.SIGTERM)
    step = stopped(proc, tmp_path / "cut", 143, total)
    assert not (tmp_path / "cut" / "encoder.safetensors").exists()
    assert [s for s, _ in train_losses(tmp_path / "cut")] == list(range(1, step + 1))

    code, out, err = cli(*args, "-o", tmp_path / "cut", "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == total
    assert cli(*args, "-o", tmp_path / "full")[0] == 0
    cut, full = train_losses(tmp_path / "cut"), train_losses(tmp_path / "full")
    assert [s for s, _ in cut] == [s for s, _ in full] == list(range(1, total + 1))
    assert [v for _, v in cut] == pytest.approx([v for _, v in full], rel=1e-4)


@pytest.mark.slow
def test_sigterm_to_finetune_with_workers_stops_cleanly_and_resumes(tmp_path, cli):
    """SIGTERM to the whole process group (as a scheduler sends it): workers ignore it."""
    chips = write_chips(tmp_path / "chips")
    total = 24
    args = ["finetune", chips, "--task", "height", "--backbone", "vit-tiny-4", "--steps", total,
            "--batch-size", 4, "--lr", "1e-3", "--workers", 2, "--log-every", 1,
            "--val-every", 4, "--ckpt-every", 1000]
    proc = start([*args, "-o", tmp_path / "cut"], start_new_session=True)
    wait_for_training(proc, tmp_path / "cut" / "metrics.jsonl")
    os.killpg(proc.pid, signal.SIGTERM)
    step = stopped(proc, tmp_path / "cut", 143, total)

    code, out, err = cli(*args, "-o", tmp_path / "cut", "--resume", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["step"] == total and s["loss"] is not None and s["best"] is not None
    assert cli(*args, "-o", tmp_path / "full")[0] == 0
    cut, full = train_losses(tmp_path / "cut"), train_losses(tmp_path / "full")
    assert [s for s, _ in cut] == [s for s, _ in full] == list(range(1, total + 1))
    assert [v for _, v in cut] == pytest.approx([v for _, v in full], rel=1e-4)
    val = [r["step"] for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if r.get("kind")]
    assert val == list(range(4, total + 1, 4)), f"validations {val} (stopped at {step})"

    # a finished run resumed: nothing to do, and strict JSON (no NaN loss)
    code, out, err = cli(*args, "-o", tmp_path / "cut", "--resume", "--json")
    assert code == 0, err
    again = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert again["step"] == total and again["loss"] == pytest.approx(s["loss"])


def test_resume_names_the_wrong_kind_of_folder_before_torch_loads(tmp_path, cli):
    """A pretrain run given to finetune --resume (and the reverse), a chip dataset, an empty
    or a missing folder: one line saying what the folder is, exit 2, nothing loaded or
    written. (A pretrain run given to finetune was refused only after the data and model
    were built, as "--resume with a different config (extra.aux_landcover: ...)".)"""
    from rsgeo.io.atomic import write_marker

    chips = write_chips(tmp_path / "chips")
    write_marker(chips, "chips")
    runs = {}
    for kind in ("pretrain", "finetune"):
        runs[kind] = tmp_path / kind
        (runs[kind] / "checkpoints").mkdir(parents=True)
        (runs[kind] / "checkpoints" / "last.pt").write_bytes(b"not loaded")
        write_marker(runs[kind], kind)
    (tmp_path / "empty").mkdir()
    ft = ["finetune", chips, "--task", "height", "--backbone", "vit-tiny-4", "--resume", "-o"]
    pt = ["pretrain", chips, "--method", "mae", "--backbone", "vit-tiny-4", "--resume", "-o"]
    cases = [(ft, runs["pretrain"], "this is a pretrain run, not a finetune run"),
             (pt, runs["finetune"], "this is a finetune run, not a pretrain run"),
             (ft, chips, "this is a chip dataset (rsgeo prepare), not a finetune run"),
             (pt, tmp_path / "empty", "no checkpoint in this run folder"),
             (ft, tmp_path / "missing", "no such run folder")]
    for args, out, says in cases:
        before = sorted(p.name for p in out.rglob("*")) if out.exists() else None
        code, _, err = cli(*args, out)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{out}: --resume: {says}" in err, err
        assert (sorted(p.name for p in out.rglob("*")) if out.exists() else None) == before


# ---------------------------------------------------------------- engine, in process
class Pairs(torch.utils.data.Dataset):
    def __init__(self, n=32):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x @ (torch.arange(8.0) / 8)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class Regressor(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(16, 1))

    def forward(self, batch):
        loss = ((self.net(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        return loss, {}


def cfg(**kw):
    return TrainConfig(**{**dict(steps=12, batch_size=8, lr=0.05, warmup=2, log_every=1,
                                 ckpt_every=100, weight_decay=0.0), **kw})


def test_sigint_in_the_engine_stops_after_the_step_and_resumes(tmp_path):
    """The reference run never validates; the cut run validates every step with a hook that
    draws random numbers, while dropout draws from the same generator: the losses match
    only if validation leaves the training RNG alone and resume restores it."""
    def validate(trainer):
        torch.rand(100)                       # isolated: the training RNG stream is unchanged
        return {"score": float(trainer.step)}

    Trainer(Regressor(), Pairs(), cfg(), tmp_path / "full").fit()

    def kill(trainer, step, record):
        if step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as e:
        Trainer(Regressor(), Pairs(), cfg(), tmp_path / "cut", on_validate=validate,
                on_step_end=kill).fit()
    assert e.value.exit_code == 130 and "SIGINT" in str(e.value) and "step 5/12" in str(e.value)
    assert signal.getsignal(signal.SIGINT) is before          # handlers restored
    ckpt = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 5
    s = Trainer(Regressor(), Pairs(), cfg(), tmp_path / "cut", resume=True,
                on_validate=validate).fit()
    full = read_metrics(tmp_path / "full" / "metrics.jsonl")
    cut = read_metrics(tmp_path / "cut" / "metrics.jsonl")
    assert [r["loss"] for r in cut if "kind" not in r] == [r["loss"] for r in full if "kind" not in r]
    # about ten validations a run (here: every step), the last one at the end
    assert [r["step"] for r in cut if r.get("kind") == "val"] == list(range(1, 13))
    assert 0 <= s["val_share"] <= 1 and s["val_seconds"] >= 0


def test_val_every_and_the_final_validation(tmp_path):
    steps = []
    s = Trainer(Regressor(), Pairs(), cfg(steps=10, val_every=4), tmp_path / "a",
                on_validate=lambda t: steps.append(t.step) or {"v": 1.0}).fit()
    assert steps == [4, 8, 10] and s["val_share"] > 0
    steps.clear()
    Trainer(Regressor(), Pairs(), cfg(steps=10, val_every=0), tmp_path / "b",
            on_validate=lambda t: steps.append(t.step) or {"v": 1.0}).fit()
    assert steps == [10]
    steps.clear()
    Trainer(Regressor(), Pairs(), cfg(steps=40), tmp_path / "c",
            on_validate=lambda t: steps.append(t.step) or None).fit()
    assert steps == list(range(4, 41, 4))


def test_stop_signals_flag_in_the_main_process_only():
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and stop.agreed()
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):        # a second Ctrl-C: at once
            os.kill(os.getpid(), signal.SIGINT)
    r, w = os.pipe()
    with StopSignals() as stop:
        pid = os.fork()
        if pid == 0:  # a forked child (a DataLoader worker) survives the signal
            os.close(r)
            os.kill(os.getpid(), signal.SIGTERM)
            os.write(w, b"alive")
            os._exit(0)
        os.close(w)
        assert os.read(r, 16) == b"alive"
        os.waitpid(pid, 0)
        assert not stop.requested


DDP_SCRIPT = '''
import json, os, signal, sys, torch
sys.path.insert(0, os.environ["TESTS"])
from test_preemption import Pairs, Regressor, cfg
from rsgeo.train.engine import Trainer
from rsgeo.train.stop import TrainingInterrupted

rank = int(os.environ["RANK"])

def kill(trainer, step, record):          # only rank 1 is signalled
    if rank == 1 and step == 3:
        os.kill(os.getpid(), signal.SIGTERM)

try:
    Trainer(Regressor(), Pairs(), cfg(device="cpu"), sys.argv[1], on_step_end=kill).fit()
    result = {"stopped": None}
except TrainingInterrupted as e:
    result = {"stopped": e.signum, "code": e.exit_code}
result["step"] = int(torch.load(os.path.join(sys.argv[1], "checkpoints", "last.pt"),
                                weights_only=False)["step"])
with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
    json.dump(result, f)
'''


@pytest.mark.slow
def test_torchrun_ranks_agree_on_the_stop_step(tmp_path):
    """One rank gets SIGTERM at step 3: both stop after step 3 (an all-reduced flag)."""
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed")
    script = tmp_path / "stop.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TESTS": str(Path(__file__).parent),
           "PYTHONPATH": str(ROOT)}
    p = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script),
                        str(tmp_path / "run")], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    ranks = [json.loads((tmp_path / "run" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"stopped": signal.SIGTERM, "code": 143, "step": 3}] * 2


# ------------------------------------------------ run files a kill can leave half-written
def torn_write_text(monkeypatch):
    """``Path.write_text`` that writes the first 10 characters and is then killed."""
    real = Path.write_text

    def torn(self, data, *args, **kw):
        real(self, data[:10], *args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", torn)
    return lambda: monkeypatch.setattr(Path, "write_text", real)


def test_metrics_rewrite_on_resume_is_atomic_and_drops_a_torn_last_line(tmp_path, monkeypatch):
    """--resume rewrites metrics.jsonl without the records past the checkpoint: a kill then
    left it truncated (written in place), and a line torn by a kill while it was appended
    made every later --resume fail with 'JSONDecodeError' (exit 1)."""
    from rsgeo.errors import InputError
    from rsgeo.train.logging import MetricsLog

    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for s in range(1, 5):
        log.write({"step": s, "loss": float(s)})
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')                     # killed while appending step 5
    log.truncate_after(3)
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3] and log.last_loss(3) == 3.0
    restore = torn_write_text(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        log.truncate_after(2)                          # killed while rewriting
    restore()
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(InputError, match="metrics.jsonl: damaged: line 2 is not JSON"):
        log.truncate_after(2)


def keeper_parts(tmp_path, monkeypatch):
    """A segmentation BestKeeper whose scoring and model files are stubs, and a trainer."""
    from types import SimpleNamespace

    import rsgeo.finetune as ft
    from rsgeo.tasks import get_task

    monkeypatch.setattr(ft, "ValSet", lambda *a: "cache")
    monkeypatch.setattr(ft, "evaluate_view", lambda *a, **k: {"miou": 0.2, "oa": 0.6})
    monkeypatch.setattr(ft, "save_task_model", lambda *a, **k: None)
    monkeypatch.setattr(ft, "save_val_preview", lambda *a, **k: None)
    model = SimpleNamespace(config={}, meta={}, num_classes=3)
    trainer = SimpleNamespace(info=SimpleNamespace(is_main=True), device="cpu", micro=2,
                              step=4, model=SimpleNamespace(net=None))
    return (lambda: ft.BestKeeper(get_task("segmentation"), None, tmp_path, model, True)), trainer


def test_best_json_survives_a_kill_while_written_and_a_damaged_one_is_named(tmp_path,
                                                                              monkeypatch):
    """best.json (the best score so far, read by --resume) was written in place: a kill
    while writing it left a torn file, and --resume then failed with 'JSONDecodeError'
    (exit 1, no file named)."""
    from rsgeo.errors import InputError

    best = {"step": 2, "miou": 0.1, "oa": 0.5}
    (tmp_path / "best.json").write_text(json.dumps(best))
    keeper, trainer = keeper_parts(tmp_path, monkeypatch)
    k = keeper()
    assert k.step == 2 and k.metrics == {"miou": 0.1, "oa": 0.5}
    restore = torn_write_text(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        k(trainer)                                     # a better score, killed while saved
    restore()
    assert json.loads((tmp_path / "best.json").read_text()) == best
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]
    assert k(trainer) == {"miou": 0.2, "oa": 0.6}
    assert json.loads((tmp_path / "best.json").read_text()) == {"step": 4, "miou": 0.2, "oa": 0.6}
    for damaged in ('{"step": 4, "mi', "", "[1, 2]", '{"step": 4}'):
        (tmp_path / "best.json").write_text(damaged)
        with pytest.raises(InputError, match=r"best.json: damaged \(not the JSON record of "
                                             r"best.ckpt's miou\)"):
            keeper()


def test_resume_removes_the_temporary_files_a_kill_while_saving_left(tmp_path):
    """SIGKILL while a checkpoint is written (a preemption's grace period running out) left
    the temporary file, as large as the checkpoint, beside last.pt; every such kill added
    one and no resume removed them (measured: 43 MB each for vit-tiny-4 + UperNet)."""
    run = tmp_path / "run"
    Trainer(Regressor(), Pairs(), cfg(steps=4, ckpt_every=2), run).fit()
    left = [run / "checkpoints" / ".last.tmp-0123abcd.pt", run / ".best.tmp-89abcdef.json"]
    keep = [run / "checkpoints" / "notes.tmp-01234567.txt", run / ".keep.tmp-x.pt"]
    for p in left + keep:
        p.write_bytes(b"partial")
    Trainer(Regressor(), Pairs(), cfg(steps=4, ckpt_every=2), run, resume=True).fit()
    assert not any(p.exists() for p in left) and all(p.exists() for p in keep)


@pytest.mark.slow
def test_a_signal_during_the_final_validation_of_a_resumed_run_stops_it(synth_chips, tmp_path,
                                                                       cli, monkeypatch):
    """A finished run resumed with its final validation still to do (a checkpoint that does
    not record it, as those written before last_val_step was stored): a SIGTERM during that
    validation was swallowed (StopSignals only set its flag, nobody looked again) and the
    run exited 0. Now it exits 143 with the line, its checkpoint recording the validation
    that finished, best.json agreeing with best.ckpt; --resume then has nothing to do."""
    import rsgeo.finetune as ft
    from rsgeo.tasks.bundle import load_task_model

    run = tmp_path / "run"
    args = ["finetune", synth_chips, "--task", "height", "--backbone", "vit-tiny-2", "--steps", 2,
            "--batch-size", 2, "--crop", 32, "--val-every", 0, "-o", run]
    code, _, err = cli(*args)
    assert code == 0, err
    last = run / "checkpoints" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    del ckpt["last_val_step"]
    torch.save(ckpt, last)
    vals = lambda: [r["step"] for r in read_metrics(run / "metrics.jsonl") if r.get("kind")]  # noqa: E731
    assert vals() == [2]

    real = ft.evaluate_view

    def signalled(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(ft, "evaluate_view", signalled)
    code, _, err = cli(*args, "--resume")
    assert code == 143, err
    assert err.strip().splitlines()[-1] == (
        f"rsgeo: SIGTERM: stopped at step 2/2, saved {last} (run the same command with "
        "--resume to continue)")
    assert vals() == [2, 2]                          # the validation ran to its end ...
    ckpt = torch.load(last, weights_only=False)
    assert ckpt["step"] == 2 and ckpt["last_val_step"] == 2  # ... and the checkpoint says so
    best = json.loads((run / "best.json").read_text())
    meta = load_task_model(run / "best.ckpt")[2]
    assert best["step"] == meta["step"] and best["rmse"] == pytest.approx(meta["val"]["rmse"])
    assert not [p for p in run.rglob(".*.tmp-*")]

    monkeypatch.setattr(ft, "evaluate_view", real)
    code, out, err = cli(*args, "--resume", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == 2 and vals() == [2, 2]  # nothing left to do
