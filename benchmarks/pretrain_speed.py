"""Pretraining throughput and peak memory per method, with the same encoder and batch.

CPU (default): MAE vs SelectiveMAE on random images, model steps only::

    .venv/bin/python benchmarks/pretrain_speed.py [--backbone vit_small_patch16_224]
        [--batch 16] [--size 224] [--steps 6]

CUDA (``--device cuda``): all five methods through the real pipeline (``rsgeo.pretrain``:
chips prepared from synthetic scenes, ChipDataset, PretrainView, DataLoader workers, the
Trainer with its per-batch stage and per-batch masks), ``vit_base_patch16_224``, bf16,
batch 256, ``--workers`` (default: cores - 2, at most 12)::

    python benchmarks/pretrain_speed.py --device cuda [--steps 30] [--warmup 5]
        [--methods mae simmim selectivemae ctxmim fusedmim] [--compile] [--data DIR]

img/s over ``--steps`` steps after ``--warmup`` (the GPU synchronised at both ends), and
the CUDA allocator's peak over those steps. Goals on one H200: MAE >= 3,000 img/s and
SelectiveMAE >= 2.0x MAE.

The CPU mode:
Each method runs in its own process (clean peak memory): a few warm-up steps, then timed
optimiser steps (forward, backward, AdamW) on random normalised images with stored HOG
scores, as the chip dataset provides them. Both use an 8-block, 512-wide decoder (MAE:
self-attention over all tokens; SelectiveMAE: cross-attention from its 25 % targets).
Peak memory: CUDA allocator peak on GPU, peak RSS of the process on CPU. Prints img/s,
peak memory and the SelectiveMAE / MAE ratios (paper: ~2.1x faster; goal here >= 2.0x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from step_timer import random_pretrain_batch, time_steps


def run_one(args) -> dict:
    import torch

    from rsgeo.methods import build_method
    from rsgeo.train.logging import max_mem_mb

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_method(args.only, args.backbone, args.size).to(device)
    batch = random_pretrain_batch(args.batch, args.size, device)
    dt, _ = time_steps(model, batch, args.steps, warmup=args.warmup)
    return {"method": args.only, "img_per_s": args.batch * args.steps / dt,
            "s_per_step": dt / args.steps, "peak_mem_mb": max_mem_mb(device)}


def run_pipeline(args) -> dict:
    """One method through ``rsgeo.pretrain`` on the prepared chips (its own process)."""
    import tempfile

    import torch

    from rsgeo.pretrain import pretrain
    from rsgeo.train.logging import max_mem_mb

    device = torch.device(args.device)
    marks = {}

    def on_step_end(trainer, step, record):
        if step in (args.warmup, args.warmup + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks[step] = time.perf_counter()
            if step == args.warmup and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            elif step != args.warmup:
                marks["peak"] = max_mem_mb(device)

    with tempfile.TemporaryDirectory() as tmp:
        pretrain(str(args.data), args.only, args.backbone, Path(tmp) / "run",
                 steps=args.warmup + args.steps + 1, batch_size=args.batch, crop=args.size,
                 precision=args.precision, device=args.device, workers=args.workers,
                 compile=args.compile, log_every=10**6, ckpt_every=10**9, warmup=0.1,
                 on_step_end=on_step_end)
    dt = marks[args.warmup + args.steps] - marks[args.warmup]
    return {"method": args.only, "img_per_s": args.batch * args.steps / dt,
            "s_per_step": dt / args.steps, "peak_mem_mb": marks["peak"]}


def main_cuda(args) -> None:
    import os

    sys.path.insert(0, str(Path(__file__).parent))
    from input_pipeline import prepare_chips

    t0 = time.perf_counter()
    args.data.mkdir(parents=True, exist_ok=True)
    data = prepare_chips(args.data, args.scenes, 1024)
    print(f"chips ready in {time.perf_counter() - t0:.0f} s: {data}", flush=True)
    print(f"{args.backbone}, batch {args.batch}, {args.size} px, {args.precision}, "
          f"--workers {args.workers}, {args.steps} timed steps after {args.warmup}"
          f"{', torch.compile' if args.compile else ''}; load {os.getloadavg()[0]:.2f}")
    print(f"{'method':14s} {'img/s':>8s} {'s/step':>8s} {'peak GB':>8s}", flush=True)
    rows = {}
    for method in args.methods:
        cmd = [sys.executable, __file__, "--only", method, "--data", str(data)] + [
            f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("only", "methods", "data", "compile", "pipeline")]
        cmd += (["--compile"] if args.compile else []) + (["--pipeline"] if args.pipeline else [])
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if p.returncode:
            print(f"{method:14s} failed: {p.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        r = rows[method] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{method:14s} {r['img_per_s']:8.0f} {r['s_per_step']:8.3f} "
              f"{r['peak_mem_mb'] / 1024:8.1f}", flush=True)
    if "mae" in rows and "selectivemae" in rows:
        a, b = rows["mae"]["img_per_s"], rows["selectivemae"]["img_per_s"]
        print(f"mae {a:.0f} img/s (goal >= 3000); selectivemae / mae: {b / a:.2f}x (goal >= 2.0x)")
    print(f"total {time.perf_counter() - t0:.0f} s")


def main() -> None:
    import os

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--device", default="cpu")
    pre.add_argument("--pipeline", action="store_true")
    known = pre.parse_known_args()[0]
    cuda = known.device.startswith("cuda")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pipeline", action="store_true",
                    help="the CUDA mode's five-method pipeline run on any device (a check)")
    cuda = cuda or known.pipeline
    ap.add_argument("--backbone", default="vit_base_patch16_224" if cuda else "vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=256 if cuda else 16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=30 if cuda else 6)
    ap.add_argument("--warmup", type=int, default=5 if cuda else 2)
    ap.add_argument("--precision", default="bf16", help="CUDA mode: fp32, bf16 or fp16")
    ap.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 4) - 2)))
    ap.add_argument("--methods", nargs="+", default=["mae", "simmim", "selectivemae", "ctxmim",
                                                     "fusedmim"])
    ap.add_argument("--compile", action="store_true", help="CUDA mode: torch.compile the model")
    ap.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "rsgeo-bench-input")
    ap.add_argument("--scenes", type=int, default=8, help="CUDA mode: 1024-px scenes to chip")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(run_pipeline(args) if cuda else run_one(args)))
        return
    if cuda:
        main_cuda(args)
        return
    rows = {}
    for method in ("mae", "selectivemae"):
        cmd = [sys.executable, __file__, "--only", method] + [
            f"--{k}={getattr(args, k)}" for k in ("backbone", "batch", "size", "steps",
                                                  "warmup", "device")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows[method] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.backbone}, batch {args.batch}, {args.size} px, {args.device}, "
          f"{args.steps} timed steps")
    print(f"{'method':14s} {'img/s':>8s} {'s/step':>8s} {'peak MB':>9s}")
    for r in rows.values():
        print(f"{r['method']:14s} {r['img_per_s']:8.2f} {r['s_per_step']:8.3f} {r['peak_mem_mb']:9.0f}")
    a, b = rows["mae"], rows["selectivemae"]
    print(f"speed-up selectivemae / mae: {b['img_per_s'] / a['img_per_s']:.2f}x "
          f"(goal >= 2.0x); memory ratio: {b['peak_mem_mb'] / a['peak_mem_mb']:.2f}")


if __name__ == "__main__":
    main()
