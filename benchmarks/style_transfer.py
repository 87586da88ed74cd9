"""Source style transfer (FDA / histogram matching): its speed and its effect on --adapt-to.

Speed: :class:`rsgeo.train.style.StyleTransfer` (p = 1) on a ``[B, 3, crop, crop]`` uint8
batch on ``--device``, per method, in chips/s (median of ``--repeats``).

With ``--experiment``: a source city and a target city (another layout style, imagery of
another "sensor": darker, warmer, lower contrast; ``finetune_lowres.city``); height
fine-tuning on ``--train-size`` labelled source chips, ``--adapt-to`` the target with
``--style`` none / fda / hm / both (``--styles``), validated on held-out target chips.
Prints F1^HE, MAE, RMSE and delta1 of the best checkpoint per run and the mean over seeds.

    python benchmarks/style_transfer.py [--device cpu] [--batch 16] [--crop 64]
        [--experiment] [--styles none both] [--seeds 0 1] [--steps 150] [--encoder random]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_lowres import KEYS, city, report  # noqa: E402  (a sibling script)

from rsgeo.train.style import StyleTransfer  # noqa: E402


def speed(device: str, batch: int, crop: int, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    src = (torch.rand(batch, 3, crop, crop, generator=g) * 255).to(torch.uint8).to(device)
    ref = (torch.rand(batch, 3, crop, crop, generator=g) * 255).to(torch.uint8).to(device)
    seeds = torch.arange(batch, dtype=torch.int64, device=device)
    print(f"style transfer of {batch} x 3 x {crop} x {crop} uint8 on {device} "
          f"(load {os.getloadavg()[0]:.1f}, {torch.get_num_threads()} threads)")
    for style in ("fda", "hm", "both"):
        st = StyleTransfer(style, p=1.0, beta=0.05)
        times = []
        for _ in range(repeats + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            st(src, ref, seeds)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        t = statistics.median(times[1:])
        print(f"  {style:<5} {1e3 * t:8.2f} ms/batch  {batch / t:10.0f} chips/s")


def run(chips, out: Path, val, *, style, encoder, backbone, steps, train_size, seed, batch,
        lr, device) -> dict:
    from rsgeo.finetune import finetune

    t0 = time.perf_counter()
    s = finetune(chips, "height", out, encoder=encoder, backbone=backbone, steps=steps,
                 batch_size=batch, lr=lr, train_size=train_size, seed=seed, head_features=32,
                 val_dataset=val, adapt_to=None if style == "source only" else val,
                 adapt=None if style == "source only" else {"style": style},
                 aux_landcover=True, log_every=25, device=device)
    return {**{k: float(s["best"][k]) for k in KEYS}, "seconds": time.perf_counter() - t0,
            "best_step": s["best_step"]}


def experiment(args) -> None:
    with tempfile.TemporaryDirectory(prefix="rsgeo-style-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        train = city(root, "train", args.scenes, args.size, args.chip, 0, "mid", (1.0, 0.0, 0.0))
        target = city(root, "target", args.scenes, args.size, args.chip, 200, "low",
                      (0.7, 0.3, 0.0), shift=True)
        print(f"data: {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f}")
        rows = {("--style " + s if s != "source only" else s): [] for s in args.styles}
        for seed in args.seeds:
            for s in args.styles:
                key = "--style " + s if s != "source only" else s
                rows[key].append(run(train, root / f"{s.replace(' ', '_')}_{seed}", target,
                                     style=s, encoder=args.encoder, backbone=args.backbone,
                                     steps=args.steps, train_size=args.train_size, seed=seed,
                                     batch=args.batch_size, lr=args.lr, device=args.device))
        report(f"--adapt-to a shifted city, {args.train_size} labelled {args.chip}-px source "
               f"chips, {args.steps} steps, {args.encoder} {args.backbone}, validated on target "
               f"val chips (load {os.getloadavg()[0]:.1f} at the end)", rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16, help="speed: chips per batch")
    ap.add_argument("--crop", type=int, default=64, help="speed: chip side px")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--experiment", action="store_true")
    ap.add_argument("--styles", nargs="+", default=["none", "both"],
                    help="none, fda, hm, both, 'source only'")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--encoder", default="random")
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--train-size", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    speed(args.device, args.batch, args.crop, args.repeats)
    if args.experiment:
        experiment(args)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}}))


if __name__ == "__main__":
    main()
