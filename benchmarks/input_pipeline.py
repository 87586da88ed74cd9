"""Input-pipeline throughput: the real training loop with a near-free model, new vs old path.

    .venv/bin/python benchmarks/input_pipeline.py [--workers 2] [--batch 256] [--crop 224]
        [--steps 12] [--warmup 3] [--device cpu|cuda] [--data DIR] [--skip-old]

Runs :class:`rsgeo.train.engine.Trainer` (AdamW, schedule, logging, checkpoint at the end)
on chips it prepares itself (``rsgeo synth`` scenes -> ``rsgeo prepare``, 256-px chips,
cached under ``--data``, default a folder in the temp dir), with a model that costs next
to nothing but draws the masks a method draws: so what is timed is reading, cropping,
flipping, collation, transfer, the per-batch stage (normalisation, valid masks) and mask
sampling; the DataLoader workers build whole batches into reused shared-memory buffers
(``PretrainView.get_batch``, :mod:`rsgeo.data.pool`). Two workloads:

- ``rgb``: MAE's random masking of the RGB crops;
- ``rgb+ndsm+hog``: RGB + nDSM (valid mask) + stored HOG scores, SelectiveMAE's selection
  (HOG top-k, random completion, HOG-ranked targets excluding the visible set).

Each is measured for the current pipeline and for "today's" (the pipeline before issue
11, kept in this file: pandas row lookup and float normalisation per sample, torch flips,
a torch.Generator per sample for masks), through the same Trainer. Prints img/s over the
steps after ``--warmup`` but the last (which also stops the workers and saves), with the
machine's load average (before, then 1/5/15 min after), and the CPU time per image of all
processes (main + workers) over the whole run.
On a CPU-only machine the per-batch stage (float conversion and normalisation of the whole
batch) runs on the CPU too and is memory-bound; the "to device" column leaves it out,
which is what the host pays when a GPU trains.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from rsgeo.methods.masking import index_mask, random_masking, top_k, uniform


# --------------------------------------------------------------------------- data
def prepare_chips(root: Path, scenes: int, scene_size: int) -> Path:
    """Synthetic scenes -> a chip dataset with rgb, dsm, ndsm and hog (cached by folder):
    256-px chips every 64 px (169 per 1024-px scene), two sources."""
    from rsgeo.data.prepare import prepare
    from rsgeo.data.sources import SceneInput
    from rsgeo.synth.write import write_scenes

    ds = root / f"chips-v3-{scenes}x{scene_size}"  # v3: float16 nDSM (prepare default)
    if (ds / "dataset.json").is_file():
        return ds
    t0 = time.perf_counter()
    paths = write_scenes(root / f"scenes-{scenes}x{scene_size}", size=scene_size,
                         scenes=scenes, overwrite=True, footprints=False)
    inputs = [SceneInput(rgb=p["pre_rgb"], ndsm=p["pre_ndsm"], dsm=p["dsm"], source=f"s{i % 2}")
              for i, p in enumerate(paths)]
    prepare(inputs, ds, size=256, stride=64, max_nodata=1.0, dedup_distance=0,
            split=(1, 0, 0), workers=min(os.cpu_count() or 1, 8), overwrite=True)
    print(f"prepared {ds} in {time.perf_counter() - t0:.0f} s")
    return ds


class OldChipDataset(Dataset):
    """Today's ChipDataset: a pandas row per item, float conversion, per-sample norm."""

    def __init__(self, root, modalities):
        import pandas as pd

        self.root, self.modalities = Path(root), tuple(modalities)
        m = pd.read_parquet(self.root / "manifest.parquet")
        m = m[(m["status"] == "kept") & (m["split"] == "train")]
        self.rows = m[["source", "index", "chip_id"]].reset_index(drop=True)
        self.stats = json.loads((self.root / "stats.json").read_text())["sources"]
        self._maps = {}

    def __len__(self):
        return len(self.rows)

    def _shard(self, src, mod):
        if (src, mod) not in self._maps:
            self._maps[src, mod] = np.load(self.root / "shards" / src / f"{mod}.npy", mmap_mode="r")
        return self._maps[src, mod]

    def __getitem__(self, i):
        row = self.rows.iloc[int(i)]
        src, idx = row["source"], int(row["index"])
        out = {"source": src, "chip_id": row["chip_id"]}
        for mod in self.modalities:
            t = torch.from_numpy(np.array(self._shard(src, mod)[idx]).astype(np.float32))
            st = self.stats.get(src, {}).get(mod)
            if mod == "rgb" and st:
                mean = torch.tensor(st["mean"], dtype=torch.float32)[:, None, None]
                std = torch.tensor(st["std"], dtype=torch.float32)[:, None, None]
                t = (t - mean) / std.clamp_min(1e-6)
            out[mod] = t
        return out


class OldPretrainView(Dataset):
    """Today's PretrainView: default_rng per sample, torch flips, valid masks per sample."""

    def __init__(self, base, modalities, crop, seed=0, p=16):
        self.base, self.modalities, self.crop, self.seed, self.p, self.epoch = \
            base, modalities, crop, seed, p, 0

    def __len__(self):
        return len(self.base)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        sample = self.base[i]
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        H, W = sample[self.modalities[0]].shape[-2:]
        c, p = self.crop, self.p
        oy = int(rng.integers(0, (H - c) // p + 1)) * p
        ox = int(rng.integers(0, (W - c) // p + 1)) * p
        hflip, vflip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)

        def view(t):
            t = t[..., oy:oy + c, ox:ox + c]
            t = t.flip(-1) if hflip else t
            return (t.flip(-2) if vflip else t).contiguous()

        out = {}
        for m in self.modalities:
            t = view(sample[m].float())
            if t.shape[0] == 1:
                valid = torch.isfinite(t)
                out[f"{m}_valid"] = valid.float()
                t = torch.where(valid, t, torch.zeros_like(t))
            out[m] = t
        if "hog" in sample:
            g = sample["hog"].view(1, H // p, W // p)[..., oy // p:(oy + c) // p, ox // p:(ox + c) // p]
            g = g.flip(-1) if hflip else g
            out["hog"] = (g.flip(-2) if vflip else g).reshape(-1).contiguous()
        out["seed"] = torch.tensor(int(rng.integers(0, 2**62)), dtype=torch.int64)
        return out


def old_uniform(batch, n, stream, like):
    """Today's mask draws: one torch.Generator per sample, on the host."""
    out = torch.empty(like.shape[0], n)
    g = torch.Generator()
    for i, s in enumerate(batch["seed"].tolist()):
        g.manual_seed((int(s) ^ (stream * 0x9E3779B97F4A7C15)) & (2**63 - 1))
        out[i] = torch.rand(n, generator=g)
    return out.to(like.device)


# --------------------------------------------------------------------------- model
class Probe(nn.Module):
    """A near-free 'method': draws the masks, touches the inputs, one parameter."""

    def __init__(self, selective: bool, old: bool, patch: int = 16):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.selective, self.draw, self.patch = selective, old_uniform if old else uniform, patch

    def forward(self, batch):
        x = batch["rgb"]
        L = (x.shape[-2] // self.patch) * (x.shape[-1] // self.patch)
        if not self.selective:                                    # MAE
            _, mask, _ = random_masking(self.draw(batch, L, 0, x), L // 4)
            touch = x[:, :, 0, 0].float().mean()
        else:                                                     # SelectiveMAE selection
            scores = batch["hog"].float()
            init = top_k(scores, max(int(L * 0.15) // 2, 1))
            noise = self.draw(batch, L, 2, x).masked_fill(index_mask(init, L), 2.0)
            visible = torch.cat([init, torch.topk(-noise, int(L * 0.15) - init.shape[1]).indices], 1)
            targets = top_k(scores, int(L * 0.25), exclude=index_mask(visible, L))
            mask = index_mask(targets, L).float()
            h = batch["ndsm"][:, 0, 0, 0].float()
            valid = batch["ndsm_valid"][:, 0, 0, 0] if "ndsm_valid" in batch \
                else torch.isfinite(h).float()                     # stage left out
            touch = x[:, :, 0, 0].float().mean() + h.nan_to_num().mean() + valid.mean()
        loss = (self.w * (touch + mask.mean())) ** 2
        return loss, {"masked": mask.mean().detach()}


# --------------------------------------------------------------------------- runs
def run(args, data: Path, workload: str, old: bool, stage: bool = True) -> float:
    """img/s of one configuration; ``stage=False`` leaves out the per-batch stage (the
    batch as stored reaches the model, which draws the masks from it)."""
    from rsgeo.data.dataset import ChipDataset
    from rsgeo.train.augment import PretrainView
    from rsgeo.train.config import TrainConfig
    from rsgeo.train.engine import Trainer

    mods = ("rgb",) if workload == "rgb" else ("rgb", "ndsm")
    if old:
        view = OldPretrainView(OldChipDataset(data, mods + ("hog",)), mods, args.crop)
    else:
        view = PretrainView(ChipDataset(data, modalities=mods + ("hog",)), mods, crop=args.crop)
    cfg = TrainConfig(steps=args.warmup + args.steps, batch_size=args.batch, lr=1e-3,
                      workers=args.workers, device=args.device, log_every=10,
                      ckpt_every=10**9, warmup=0, seed=0)
    times = []
    model = Probe(workload != "rgb", old)
    cpu0 = _cpu_seconds()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model, view, cfg, Path(tmp) / "run",
                          batch_transform=None if stage else (lambda b: b),
                          on_step_end=lambda t, step, rec: times.append(time.perf_counter()))
        trainer.fit()
        trainer.close_loader()   # workers joined: their CPU time is in RUSAGE_CHILDREN
    cpu = _cpu_seconds() - cpu0
    # the last step also shuts the workers down and writes the checkpoint: not timed
    timed = args.steps - 1
    return (args.batch * timed / (times[args.warmup + timed - 1] - times[args.warmup - 1]),
            cpu / (args.batch * (args.warmup + args.steps)) * 1e6)


def _cpu_seconds() -> float:
    """CPU time of this process and its joined children (DataLoader workers), seconds."""
    import resource

    t = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        t += r.ru_utime + r.ru_stime
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20, help="steps after --warmup (all but the "
                    "last timed)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "rsgeo-bench-input")
    ap.add_argument("--scenes", type=int, default=4, help="1024-px synthetic scenes to chip")
    ap.add_argument("--scene-size", type=int, default=1024)
    ap.add_argument("--skip-old", action="store_true", help="only the current pipeline")
    ap.add_argument("--workloads", nargs="+", default=["rgb", "rgb+ndsm+hog"])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads of the training process (default 1: the "
                         "model is near-free, as when a GPU computes; more threads spin and "
                         "take cores from the workers)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.warmup < 1 or args.steps < 2:
        ap.error("--warmup must be at least 1 and --steps at least 2")
    args.data.mkdir(parents=True, exist_ok=True)
    data = prepare_chips(args.data, args.scenes, args.scene_size)
    n = len(json.loads((data / "stats.json").read_text())["sources"])
    print(f"chips: {data} ({n} sources); batch {args.batch}, crop {args.crop}, "
          f"--workers {args.workers}, {args.device}, torch threads {torch.get_num_threads()} "
          f"(workers: 1), {os.cpu_count()} cores")
    print("img/s: 'now' = the current pipeline with its per-batch stage on the device; "
          "'to device' = the same without that stage (what the host pays per sample when "
          "the stage runs on a GPU); 'today' = the pipeline before issue 11. In brackets: "
          "CPU microseconds per image over the whole run (all processes, worker start included), "
          "which depends less on other load than img/s does")
    print(f"{'workload':14s} {'now':>13s} {'to device':>13s} {'today':>13s} {'now/today':>10s}"
          f"  load (1/5/15 min)")
    small = argparse.Namespace(**{**vars(args), "batch": 8, "steps": 2, "warmup": 1, "workers": 0})
    for old in (False, True):  # imports and first-touch costs outside the measurements
        run(small, data, args.workloads[-1], old=old)
    for w in args.workloads:
        load0 = os.getloadavg()[0]
        new, new_cpu = run(args, data, w, old=False)
        bare, bare_cpu = run(args, data, w, old=False, stage=False)
        before, before_cpu = (float("nan"),) * 2 if args.skip_old else run(args, data, w, old=True)
        load = " ".join(f"{v:.2f}" for v in (load0, *os.getloadavg()))
        cell = [f"{a:5.0f} ({b:5.0f})" for a, b in ((new, new_cpu), (bare, bare_cpu),
                                                   (before, before_cpu))]
        print(f"{w:14s} {cell[0]:>13s} {cell[1]:>13s} {cell[2]:>13s} {new / before:10.1f}  {load}",
              flush=True)


if __name__ == "__main__":
    main()
