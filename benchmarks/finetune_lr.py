"""Fine-tuning learning rates on the quick demo's recipe: lr and layer-wise decay, held-out F1^HE.

Prepares the quick demo's training city (rsgeo.demo: 2 synthetic scenes of 512 px, pre- and
post-event chips of 64 px) and a held-out city (1 scene, another seed), pretrains the demo's
SelectiveMAE vit-tiny-4 encoder once (rsgeo.demo.PRETRAIN), then fine-tunes heights from it
on ``--labels`` chips for ``--steps`` steps per setting and seed, validating once at the end
on the held-out city::

    .venv/bin/python benchmarks/finetune_lr.py [--settings 5e-4:1 5e-4:0.75 1e-4:1]
        [--seeds 0 1] [--steps 250] [--labels 50] [--batch 8] [--device cpu|cuda]

A setting is ``LR:LAYER_DECAY``. Prints per setting F1^HE (delta < 1.25) and MAE (m), mean
and sd over the seeds, the seconds per run and the load (``os.getloadavg``, as ``uptime``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["5e-4:1", "5e-4:0.75", "1e-4:1"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--labels", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--pretrain-steps", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from rsgeo.data.prepare import prepare
    from rsgeo.demo import FINETUNE, PRETRAIN, training_scenes
    from rsgeo.finetune import finetune
    from rsgeo.pretrain import pretrain
    from rsgeo.synth import LANDCOVER, write_scenes

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_scenes(tmp / "city", size=512, scenes=2, seed=0)
        write_scenes(tmp / "held", size=384, scenes=1, seed=100, prefix="test")
        prepare(training_scenes(tmp / "city"), tmp / "chips", size=64, classes=dict(LANDCOVER))
        prepare(training_scenes(tmp / "held")[:1], tmp / "val", size=64, classes=dict(LANDCOVER))
        pre = pretrain(tmp / "chips", "selectivemae", "vit-tiny-4", tmp / "pre",
                       steps=args.pretrain_steps, batch_size=2 * args.batch, device=args.device,
                       **PRETRAIN)
        encoder = pre["encoders"]["encoder"]
        print(f"encoder: {args.pretrain_steps} pretraining steps; fine-tuning {args.steps} steps, "
              f"{args.labels} labels, batch {args.batch}, device {args.device}; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
        for setting in args.settings:
            lr, decay = (float(v) for v in setting.split(":"))
            f1, mae, secs = [], [], []
            for seed in args.seeds:
                t0 = time.perf_counter()
                s = finetune(tmp / "chips", "height", tmp / f"ft-{setting}-{seed}",
                             encoder=encoder, steps=args.steps, batch_size=args.batch,
                             train_size=args.labels, seed=seed, device=args.device,
                             val_dataset=tmp / "val", val_split="train", val_every=0,
                             head_features=FINETUNE["head_features"], lr=lr,
                             layer_decay=decay)
                secs.append(time.perf_counter() - t0)
                f1.append(s["best"]["f1he_1"])
                mae.append(s["best"]["mae"])
            sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
            print(f"lr {lr:g} layer-decay {decay:g}: F1^HE {statistics.mean(f1):.3f} +- "
                  f"{sd(f1):.3f}, MAE {statistics.mean(mae):.2f} +- {sd(mae):.2f} m "
                  f"({len(f1)} seeds, {statistics.mean(secs):.0f} s a run, "
                  f"load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
