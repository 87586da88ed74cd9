"""The training input pipeline: stored dtypes out of the workers, the batch stage on the
device, and samples/masks that depend only on (seed, epoch, index)."""

import json
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from rsgeo.data.dataset import ChipDataset
from rsgeo.finetune.data import TaskView
from rsgeo.methods.masking import random_masking, uniform
from rsgeo.train.augment import PretrainView
from rsgeo.train.config import TrainConfig
from rsgeo.train.engine import Trainer
from rsgeo.train.sampler import EpochBatched, EpochBatches, ShardedSampler, whole_batch
from rsgeo.train.seeds import (batch_generator, draw, draws, mix64, sample_seed, sample_seeds,
                               uniform_from_seeds)
from rsgeo.train.workers import loader_options


def write_chips(root, n=6, size=64):
    """Two sources with different statistics; nDSM stored as float16 with NaNs."""
    from rsgeo.data.hog import hog_energy

    rng = np.random.default_rng(0)
    stats, rows = {}, []
    for s, (src, level) in enumerate((("a", 60), ("b", 160))):
        d = root / "shards" / src
        d.mkdir(parents=True)
        rgb = np.clip(rng.normal(level, 30, (n, 3, size, size)), 0, 255).astype(np.uint8)
        ndsm = (rgb[:, :1] / 20).astype(np.float16)
        ndsm[:, 0, :3, :5] = np.nan
        labels = (rgb[:, :1] // 64).astype(np.uint8)
        hog = hog_energy(torch.from_numpy(rgb)).numpy().astype(np.float32)
        for name, arr in (("rgb", rgb), ("ndsm", ndsm), ("labels", labels), ("hog", hog)):
            np.save(d / f"{name}.npy", arr)
        stats[src] = {"rgb": {"mean": rgb.mean((0, 2, 3)).tolist(),
                              "std": rgb.std((0, 2, 3)).tolist(), "count": n * size * size}}
        rows += [{"chip_id": f"{src}/{i}", "source": src, "split": "train", "status": "kept",
                  "index": i} for i in range(n)]
    (root / "stats.json").write_text(json.dumps({"sources": stats}))
    (root / "dataset.json").write_text(json.dumps({
        "format": "rsgeo-chips", "version": 1, "chip_size": size, "hog_patch": 16,
        "modalities": ["rgb", "ndsm", "labels", "hog"], "classes": {"0": "a", "3": "b"},
        "sources": ["a", "b"]}))
    pd.DataFrame(rows).to_parquet(root / "manifest.parquet")
    return root


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chips(tmp_path_factory.mktemp("loader") / "chips")


def test_python_and_torch_hashes_agree():
    seeds = [0, 1, 2**61 + 12345, sample_seed(7, 3, 11)]
    got = uniform_from_seeds(torch.tensor(seeds), 5, stream=2)
    G = 0x9E3779B97F4A7C15
    for b, s in enumerate(seeds):
        key = mix64(s + 2 * G + G)
        want = [(mix64(key + j * G) >> 40) / 2**24 for j in range(1, 6)]
        assert got[b].tolist() == want
    assert 0 <= sample_seed(1, 2, 3) < 2**62 and sample_seed(1, 2, 3) != sample_seed(1, 3, 2)
    idx = np.array([0, 3, 11, 2**40 + 5])                       # the numpy (batch) version
    for seed, epoch in ((0, 0), (7, 3), (2**61, 99)):
        s = sample_seeds(seed, epoch, idx)
        assert s.tolist() == [sample_seed(seed, epoch, int(i)) for i in idx]
        n = np.array([1, 2, 5, 9])
        assert draws(s, 2, n).tolist() == [draw(int(x), 2, int(m)) for x, m in zip(s, n)]


def test_chip_dataset_returns_samples_as_stored(chips):
    ds = ChipDataset(chips, modalities=("rgb", "ndsm", "labels", "hog"))
    s = ds[7]                                                    # source b, chip 1
    assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape == (3, 64, 64)
    assert s["ndsm"].dtype == torch.float16 and s["ndsm"].shape == (1, 64, 64)
    assert torch.isnan(s["ndsm"][0, :3, :5]).all()
    assert s["labels"].dtype == torch.uint8 and s["labels"].shape == (64, 64)
    assert s["hog"].dtype == torch.float32 and s["hog"].shape == (16,)
    assert (s["source"], s["chip_id"], s["source_id"]) == ("b", "b/1", 1)
    old = ChipDataset(chips, modalities=("rgb", "labels"), normalize=True)[7]
    st = json.loads((chips / "stats.json").read_text())["sources"]["b"]["rgb"]
    want = (s["rgb"].float() - torch.tensor(st["mean"])[:, None, None]) / \
        torch.tensor(st["std"])[:, None, None]
    assert old["rgb"].dtype == torch.float32 and torch.allclose(old["rgb"], want, atol=1e-5)
    assert old["labels"].dtype == torch.int64
    win = ds.read(7, "rgb", (8, 16, 32, 32), hflip=True, vflip=True)
    assert np.array_equal(win, s["rgb"].numpy()[:, 8:40, 16:48][:, ::-1, ::-1])
    for mod, flips in (("rgb", (True, False)), ("ndsm", (True, True)), ("labels", (True, False))):
        out = np.empty(ds.sample_shape(mod, 24), ds.stored_dtype(mod))
        ds.read_into(out, 7, mod, (16, 8, 24, 24), *flips)
        assert np.array_equal(out, ds.read(7, mod, (16, 8, 24, 24), *flips), equal_nan=True)
        assert np.array_equal(out[..., ::-1], s[mod].numpy()[..., 16:40, 8:32][
            ..., ::-1 if flips[1] else 1, :], equal_nan=True)


class AsStored(torch.utils.data.Dataset):
    """The same chips through the generic (``__getitem__``) path of the views."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


def test_pretrain_view_batch_stage(chips):
    mods = ("rgb", "ndsm")
    raw = ChipDataset(chips, modalities=mods + ("hog",))
    view = PretrainView(raw, mods, crop=32, seed=3)
    view.set_epoch(2)
    s = view[4]
    assert s["rgb"].dtype == torch.uint8 and s["rgb"].shape == (3, 32, 32)
    assert s["ndsm"].dtype == torch.float16 and s["hog"].shape == (4,)
    batch = view.on_device(default_collate([view[i] for i in range(len(view))]))
    assert batch["rgb"].dtype == torch.float32 and batch["seed"].dtype == torch.int64
    assert batch["ndsm_valid"].dtype == torch.float32
    assert torch.equal(batch["ndsm_valid"] == 0, torch.isnan(
        default_collate([view[i] for i in range(len(view))])["ndsm"]))
    assert torch.isfinite(batch["ndsm"]).all()
    # per-source normalisation: each source's pixels come out near mean 0, std 1
    for src in (0, 1):
        x = batch["rgb"][batch["source_id"] == src]
        assert abs(float(x.mean())) < 0.2 and abs(float(x.std()) - 1) < 0.2
    # the generic path (old float samples, torch slicing) gives the same views and HOG
    old = PretrainView(AsStored(ChipDataset(chips, modalities=mods + ("hog",),
                                            normalize=True)), mods, crop=32, seed=3)
    old.set_epoch(2)
    ref = old.on_device(default_collate([old[i] for i in range(len(old))]))
    assert torch.allclose(ref["rgb"], batch["rgb"], atol=1e-4)
    assert torch.equal(ref["hog"], batch["hog"]) and torch.equal(ref["seed"], batch["seed"])
    assert torch.equal(ref["ndsm"], batch["ndsm"])


def test_whole_batches_equal_collated_samples_also_in_a_worker(chips):
    mods = ("rgb", "ndsm", "labels")
    view = PretrainView(ChipDataset(chips, modalities=mods + ("hog",)), mods, crop=32, seed=4)
    keys = [(1, i) for i in (5, 0, 11, 7, 7)]
    view.set_epoch(1)
    want = default_collate([view[i] for _, i in keys])
    loader = DataLoader(EpochBatched(view), batch_sampler=[keys], collate_fn=whole_batch,
                        num_workers=1)
    view.set_epoch(0)  # the epoch travels with the keys
    for got in (EpochBatched(view).__getitems__(keys), next(iter(loader))):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
            assert torch.equal(got[k].nan_to_num(), v.nan_to_num()), k
    assert got["rgb"].is_shared() and got["labels"].shape == (5, 32, 32)
    with pytest.raises(ValueError, match="mixes epochs"):
        EpochBatched(view).__getitems__([(0, 1), (1, 2)])


def test_task_view_batch_stage(chips):
    ds = ChipDataset(chips, modalities=("rgb", "ndsm", "labels"))
    view = TaskView(ds, "height", "rgb+ndsm", crop=32, aux=True, seed=1)
    s = view[2]
    assert s["in_rgb"].dtype == torch.uint8 and s["target"].dtype == torch.float16
    assert s["labels"].dtype == torch.uint8 and s["labels"].shape == (32, 32)
    b = view.on_device(default_collate([view[i] for i in range(4)]))
    assert b["x"].shape == (4, 4, 32, 32) and b["x"].dtype == torch.float32
    assert torch.isfinite(b["x"]).all() and b["target"].dtype == torch.float32
    assert b["labels"].dtype == torch.int64 and "in_rgb" not in b
    one = view.sample(2)
    assert torch.equal(one["x"], b["x"][2])
    cls = TaskView(ds, "classification", "rgb", train=False).sample(0)
    lab = ds[0]["labels"].numpy()
    assert int(cls["target"]) == int(np.bincount(lab.ravel()).argmax())


class Recorder(torch.nn.Module):
    """Near-free model that records each sample's view checksum and MAE mask."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, batch):
        x = batch["rgb"]
        _, mask, _ = random_masking(uniform(batch, 4, 0, x), 1)
        for k in range(len(x)):
            self.seen.append((int(batch["seed"][k]), round(float(x[k].double().sum()), 3),
                              tuple(mask[k].tolist()), tuple(batch["hog"][k].tolist())))
        return (self.w * x.mean()) ** 2 + self.w.sum() * 0, {}


def run(chips, out, workers, steps=6, resume=False, kill_at=None, device="cpu"):
    ds = ChipDataset(chips, modalities=("rgb", "hog"))
    view = PretrainView(ds, ("rgb",), crop=32, seed=5)
    model = Recorder()
    cfg = TrainConfig(steps=steps, batch_size=4, lr=1e-3, workers=workers, ckpt_every=1,
                      log_every=1, device=device, warmup=0)

    def kill(trainer, step, record):
        if step == kill_at:
            raise KeyboardInterrupt

    t = Trainer(model, view, cfg, out, resume=resume, on_step_end=kill)
    try:
        t.fit()
    finally:
        t.close_loader()
    return model.seen


def test_views_and_masks_are_the_same_for_any_workers_epochs_and_resume(chips, tmp_path):
    base = run(chips, tmp_path / "w0", workers=0, steps=9)   # 12 chips / 4 = 3 epochs
    assert len(base) == 36 and len({s[0] for s in base}) == 36   # a new draw every epoch
    assert run(chips, tmp_path / "w2", workers=2, steps=9) == base
    with pytest.raises(KeyboardInterrupt):
        run(chips, tmp_path / "cut", workers=2, steps=9, kill_at=4)
    assert run(chips, tmp_path / "cut", workers=2, steps=9, resume=True) == base[16:]


@pytest.mark.cuda
def test_batch_stage_and_masks_on_cuda_match_the_cpu(chips, tmp_path):
    view = PretrainView(ChipDataset(chips, modalities=("rgb", "ndsm", "hog")), ("rgb", "ndsm"),
                        crop=32, seed=3)
    raw = default_collate([view[i] for i in range(len(view))])
    cpu = view.on_device(dict(raw))
    gpu = view.on_device({k: v.cuda() for k, v in raw.items()})
    for k in cpu:
        assert torch.allclose(cpu[k].double(), gpu[k].cpu().double(), atol=1e-5), k
    for stream in (0, 3):
        assert torch.equal(uniform(gpu, 49, stream, gpu["rgb"]).cpu(),
                           uniform(cpu, 49, stream, cpu["rgb"]))
    # pinned memory, non-blocking copies, workers: the same views and masks as on the CPU
    base = run(chips, tmp_path / "cpu", workers=0, steps=3)
    assert run(chips, tmp_path / "gpu", workers=2, steps=3, device="cuda") == base


def test_epoch_batches_follow_the_sampler():
    s = ShardedSampler(10, 1, 0, seed=2)
    got = list(EpochBatches(s, 2, 4, epoch=0, start=4, n_batches=5))
    orders = []
    for e in (0, 1, 2):
        s.set_epoch(e)
        orders.append(s.order())
    # epoch 0 from sample 4: one whole step (4 of the 6 left); epochs 1, 2: two steps each
    want = [orders[0][4:6], orders[0][6:8], orders[1][0:2], orders[1][2:4], orders[1][4:6]]
    assert [[i for _, i in b] for b in got] == want
    assert [b[0][0] for b in got] == [0, 0, 1, 1, 1]


class WorkerState(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch.tensor([signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
                             signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                             torch.get_num_threads() == 1])


def test_workers_ignore_signals_and_use_one_thread():
    opts = loader_options(1, pin_memory=False)
    assert opts["persistent_workers"] and opts["prefetch_factor"] >= 2
    assert next(iter(DataLoader(WorkerState(), batch_size=2, **opts))).all()


def test_batch_generator_depends_on_the_batch_seeds_only():
    seeds = torch.tensor(sample_seeds(3, 1, np.arange(8)), dtype=torch.int64)
    a = torch.rand(5, generator=batch_generator(seeds))
    assert torch.equal(a, torch.rand(5, generator=batch_generator(seeds.clone())))
    assert not torch.equal(a, torch.rand(5, generator=batch_generator(seeds + 1)))
    big = torch.full((64,), 2**62 - 1, dtype=torch.int64)  # sums past 2**63 wrap, never fail
    torch.rand(1, generator=batch_generator(big))
