"""Default MAE / SelectiveMAE decoders per backbone: parameters, checkpoint size, img/s.

For each backbone and method, with the method's default options (what ``rsgeo pretrain``
uses when no ``--decoder-*`` flag is given): encoder and decoder parameter counts, the
size of a training checkpoint (model + AdamW state, as ``checkpoints/last.pt`` holds it,
in MB) and optimiser steps per second on random images::

    .venv/bin/python benchmarks/decoder_size.py [--backbones vit-tiny-4 vit-tiny-2]
        [--methods mae selectivemae] [--size 64] [--batch 8] [--steps 5] [--device cpu]

Run it with another checkout on ``PYTHONPATH`` to compare its defaults. Prints one JSON
line per (backbone, method) and the machine load.
"""

from __future__ import annotations

import argparse
import io
import json
import os

from step_timer import random_pretrain_batch, time_steps


def measure(method: str, backbone: str, args) -> dict:
    # lazy: torch (and rsgeo modules that import it); `--help` stays fast
    import torch

    from rsgeo.methods import build_method

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_method(method, backbone, args.size).to(device)
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    batch = random_pretrain_batch(args.batch, args.size, device)
    dt, opt = time_steps(model, batch, args.steps, warmup=1)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buf)
    return {"backbone": backbone, "method": method, "decoder_dim": model.decoder.norm.normalized_shape[0],
            "decoder_blocks": len(model.decoder.blocks), "encoder_params": enc,
            "decoder_params": dec, "checkpoint_mb": round(buf.tell() / 1e6, 1),
            "img_per_s": round(args.batch * args.steps / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["vit-tiny-4", "vit-tiny-2"])
    ap.add_argument("--methods", nargs="+", default=["mae", "selectivemae"])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(json.dumps({"load": os.getloadavg()[0], "size": args.size, "batch": args.batch,
                      "device": args.device}))
    for backbone in args.backbones:
        for method in args.methods:
            print(json.dumps(measure(method, backbone, args)), flush=True)


if __name__ == "__main__":
    main()
