"""Pretraining learning-rate rules at a small batch: start and end loss of the demo's recipe.

Prepares the quick demo's training city (rsgeo.demo: 2 synthetic scenes of 512 px, pre- and
post-event chips of 64 px), then pretrains the demo's SelectiveMAE vit-tiny-4 (its own
decoder, masking and warm-up, rsgeo.demo.PRETRAIN) with the same steps, batch and seed
under each learning rate::

    .venv/bin/python benchmarks/pretrain_lr.py [--steps 100] [--batch 16]
        [--lrs linear sqrt 1e-3] [--device cpu|cuda] [--size 512] [--scenes 2]

``linear``: blr x batch / 256 (the rule before; 3.1e-6 at batch 16), ``sqrt``: the rule
``rsgeo pretrain`` uses now below batch 256 (blr x sqrt(batch / 256)), numbers: a fixed
``--lr``. Prints per rule the lr, the loss of the first step, the mean loss of the last 10
steps, the fall in %, the seconds and the load (``os.getloadavg``, as ``uptime``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lrs", nargs="+", default=["linear", "sqrt", "1e-3"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from rsgeo.data.prepare import prepare
    from rsgeo.demo import PRETRAIN, training_scenes
    from rsgeo.methods import registry
    from rsgeo.pretrain import pretrain
    from rsgeo.synth import LANDCOVER, write_scenes

    spec = registry.get("selectivemae")
    recipe = {k: v for k, v in PRETRAIN.items() if k != "lr"}
    scale = spec.scale(spec.parse({k: v for k, v in recipe.items()
                                   if k in registry.option_names()}))
    rules = {"linear": spec.blr * args.batch / 256 * scale,
             "sqrt": spec.blr * math.sqrt(args.batch / 256) * scale}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_scenes(tmp / "city", size=args.size, scenes=args.scenes, seed=args.seed)
        prepare(training_scenes(tmp / "city"), tmp / "chips", size=64, classes=dict(LANDCOVER),
                seed=args.seed)
        print(f"selectivemae vit-tiny-4, {args.steps} steps, batch {args.batch}, "
              f"device {args.device}; load {os.getloadavg()[0]:.2f}")
        for name in args.lrs:
            lr = rules[name] if name in rules else float(name)
            t0 = time.perf_counter()
            s = pretrain(tmp / "chips", "selectivemae", "vit-tiny-4", tmp / f"run-{name}",
                         steps=args.steps, batch_size=args.batch, device=args.device,
                         seed=args.seed, log_every=1, lr=lr, **recipe)
            losses = [json.loads(line)["loss"] for line in
                      (Path(s["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
            start, end = losses[0], sum(losses[-10:]) / len(losses[-10:])
            print(f"{name:>8}: lr {lr:.3g}  loss {start:.3f} (step 1) -> {end:.3f} (last 10) "
                  f"({100 * (start - end) / start:.1f} % lower)  "
                  f"{time.perf_counter() - t0:.0f} s  load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
