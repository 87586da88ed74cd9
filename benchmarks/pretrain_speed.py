"""MAE vs SelectiveMAE: training throughput and peak memory with the same encoder and batch.

    .venv/bin/python benchmarks/pretrain_speed.py [--backbone vit_small_patch16_224]
        [--batch 16] [--size 224] [--steps 6] [--device cpu|cuda]

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
import time


def run_one(args) -> dict:
    import torch

    from rsgeo.data.hog import hog_energy
    from rsgeo.methods import build_method
    from rsgeo.train.logging import max_mem_mb

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_method(args.only, args.backbone, args.size).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 3, args.size, args.size).cumsum(-1) / 10
    batch = {"rgb": x.to(device), "hog": hog_energy(x).to(device),
             "seed": torch.arange(args.batch, dtype=torch.int64)}

    def step():
        loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return {"method": args.only, "img_per_s": args.batch * args.steps / dt,
            "s_per_step": dt / args.steps, "peak_mem_mb": max_mem_mb(device)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        print(json.dumps(run_one(args)))
        return
    rows = {}
    for method in ("mae", "selectivemae"):
        cmd = [sys.executable, __file__, "--only", method] + [
            f"--{k}={v}" for k, v in vars(args).items() if k != "only"]
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
