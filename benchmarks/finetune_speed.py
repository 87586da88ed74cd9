"""Fine-tuning on few labels: wall time and the share of it spent validating.

Synthetic city -> chips -> ``finetune`` (height, random ``--backbone``) on a fixed subset of
``--train-size`` labelled chips for ``--steps`` steps, validating on the val split at the
default cadence (about ten times a run, and at the end). With ``--compare-epoch`` a second
run validates after every epoch (``--val-every`` = steps per epoch), the cadence rsgeo used
before: with 50 chips and batch 8 that is every 6 steps. Prints wall time, steps/s,
validation seconds and share (goal: under 25 %), threads/workers, and the load average.

    python benchmarks/finetune_speed.py [--train-size 50] [--steps 300] [--batch-size 8]
        [--backbone vit-tiny-4] [--workers 0] [--device cpu] [--compare-epoch]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import rsgeo  # noqa: F401  (before torch: OpenMP threads wait passively, rsgeo.train.threads)
from common import synth_chips


def chips(root: Path, scenes: int, size: int, chip: int, seed: int) -> Path:
    return synth_chips(root, "city", scenes=scenes, size=size, chip=chip, seed=seed,
                       split=(0.9, 0.1, 0.0), footprints=False)  # prepare's default


def run(data: Path, out: Path, a, val_every=None) -> dict:
    from rsgeo.finetune import finetune

    t0 = time.perf_counter()
    s = finetune(data, "height", out, backbone=a.backbone, steps=a.steps,
                 batch_size=a.batch_size, lr=5e-4, train_size=a.train_size, device=a.device,
                 seed=0, head_features=32, workers=a.workers, val_every=val_every,
                 precision=a.precision, overwrite=True)
    s["call_seconds"] = time.perf_counter() - t0
    val = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()
           if '"kind": "val"' in x]
    s["validations"] = len(val)
    return s


def show(name: str, s: dict) -> None:
    print(f"{name:<26} {s['seconds']:7.1f} s  {s['step'] / s['seconds']:6.2f} steps/s  "
          f"{s['validations']:3d} validations  {s['val_seconds']:6.2f} s validating  "
          f"= {100 * s['val_share']:5.1f} % of wall  (threads {s['threads']}, "
          f"workers {s['workers']}; best f1he_1 {s['best']['f1he_1']:.3f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=50)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="scene size px")
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--compare-epoch", action="store_true",
                    help="also validate after every epoch (the old cadence)")
    a = ap.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = chips(root, a.scenes, a.size, a.chip, 0)
        print(f"fine-tuning height: --train-size {a.train_size} --steps {a.steps} --batch-size "
              f"{a.batch_size} {a.backbone} on {a.device} (torch {torch.__version__}, "
              f"{len(os.sched_getaffinity(0))} cores, OMP_WAIT_POLICY="
              f"{os.environ.get('OMP_WAIT_POLICY')}); load before {os.getloadavg()[0]:.2f}")
        s = run(data, root / "run", a)
        show("validate ~10x (default)", s)
        if a.compare_epoch:
            per_epoch = max(1, a.train_size // a.batch_size)
            e = run(data, root / "epoch", a, val_every=per_epoch)
            show(f"validate every epoch ({per_epoch})", e)
        print(f"load after {os.getloadavg()[0]:.2f} (1-min average, {len(os.sched_getaffinity(0))} cores)")
        print(f"goal: validation under 25 % of wall time -> "
              f"{'met' if s['val_share'] < 0.25 else 'NOT met'} ({100 * s['val_share']:.1f} %)")


if __name__ == "__main__":
    main()
