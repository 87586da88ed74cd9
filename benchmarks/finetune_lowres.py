"""Experiment: does pretraining help height fine-tuning with few labels (--train-size 50)?

On the synthetic city: pretrain an encoder (MIM, no labels) on every training chip, then
fine-tune a height model (DPT head) on a fixed, seeded subset of ``--train-size`` labelled
chips, once from the pretrained encoder and once from a random one (same backbone, steps,
learning rate, seeds), and validate both on chips of held-out scenes. Prints F1^HE, MAE,
RMSE and delta1 of the best validation checkpoint per run, then the mean over seeds.

With ``--adapt``: a second city (another layout style, with the imagery of another
"sensor": darker, warmer, lower contrast) is the target; plain source fine-tuning is
compared with ``--adapt-to`` target (RS3DAda-style), both with the land-cover auxiliary
head and the pretrained encoder, both validated on held-out target chips.

    python benchmarks/finetune_lowres.py [--pretrain-steps 400] [--finetune-steps 300]
        [--train-size 50] [--seeds 0 1] [--method mae] [--backbone vit-tiny-4] [--adapt]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from common import synth_chips

KEYS = ("f1he_1", "mae", "rmse", "delta1")


def other_sensor(folder: Path) -> None:
    """Recolour a city's images in place: darker, warmer, lower contrast (another sensor)."""
    import rasterio

    for tif in folder.glob("*_rgb.tif"):
        with rasterio.open(tif, "r+") as ds:
            rgb = ds.read().astype(np.float32)
            gain = np.array([1.0, 0.85, 0.7], np.float32)[:, None, None]
            rgb = (rgb - rgb.mean()) * 0.8 + rgb.mean()          # lower contrast
            ds.write(np.clip(rgb * gain * 0.8 + 10, 0, 255).astype(np.uint8))


def city(root: Path, name: str, scenes: int, size: int, chip: int, seed: int, style: str,
         split, shift: bool = False) -> Path:
    """Synthetic scenes -> a chip dataset; ``shift`` recolours the images (another sensor)."""
    return synth_chips(root, name, scenes=scenes, size=size, chip=chip, seed=seed, split=split,
                       style=style, recolour=other_sensor if shift else None)


def run(chips, out: Path, val, *, encoder, backbone, steps, train_size, seed, batch, lr,
        adapt_to=None, aux=False) -> dict:
    from rsgeo.finetune import finetune

    t0 = time.perf_counter()
    s = finetune(chips, "height", out, encoder=encoder, backbone=backbone, steps=steps,
                 batch_size=batch, lr=lr, train_size=train_size, seed=seed, head_features=32,
                 val_dataset=val, adapt_to=adapt_to, aux_landcover=aux, log_every=25,
                 device="cpu")
    return {**{k: float(s["best"][k]) for k in KEYS}, "seconds": time.perf_counter() - t0,
            "best_step": s["best_step"]}


def report(title: str, rows: dict[str, list[dict]]) -> None:
    print(f"\n{title}")
    print(f"{'run':<22}{'seed':>5}{'F1^HE':>8}{'MAE m':>8}{'RMSE m':>8}{'delta1':>8}{'s':>7}")
    for name, rs in rows.items():
        for seed, r in enumerate(rs):
            print(f"{name:<22}{seed:>5}{r['f1he_1']:>8.3f}{r['mae']:>8.2f}{r['rmse']:>8.2f}"
                  f"{r['delta1']:>8.3f}{r['seconds']:>7.0f}")
    for name, rs in rows.items():
        m = {k: np.mean([r[k] for r in rs]) for k in KEYS}
        print(f"{name + ' (mean)':<27}{m['f1he_1']:>8.3f}{m['mae']:>8.2f}{m['rmse']:>8.2f}"
              f"{m['delta1']:>8.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--method", default="mae")
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--pretrain-steps", type=int, default=400)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--train-size", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--adapt", action="store_true", help="also the --adapt-to experiment")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="rsgeo-lowres-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        train = city(root, "train", args.scenes, args.size, args.chip, 0, "mid", (1.0, 0.0, 0.0))
        val = city(root, "val", 1, args.size, args.chip, 100, "mid", (0.0, 1.0, 0.0))
        print(f"data: {time.perf_counter() - t0:.0f} s")

        from rsgeo.pretrain import pretrain

        t0 = time.perf_counter()
        pre = pretrain(train, args.method, args.backbone, root / "pretrain",
                       steps=args.pretrain_steps, batch_size=4 * args.batch_size, seed=0,
                       lr=args.pretrain_lr,
                       device="cpu", log_every=50, decoder_dim=128, decoder_depth=2,
                       decoder_heads=4)
        encoder = pre["encoders"]["encoder"]
        print(f"pretrain {args.method} {args.backbone}: {args.pretrain_steps} steps, "
              f"{time.perf_counter() - t0:.0f} s, final loss {pre['loss']:.4f}")

        common = dict(backbone=args.backbone, steps=args.finetune_steps,
                      train_size=args.train_size, batch=args.batch_size, lr=args.lr)
        rows = {f"{args.method} init": [], "random init": []}
        for seed in args.seeds:
            rows[f"{args.method} init"].append(run(train, root / f"ft_pre_{seed}", val,
                                                   encoder=encoder, seed=seed, **common))
            rows["random init"].append(run(train, root / f"ft_rand_{seed}", val,
                                           encoder="random", seed=seed, **common))
        report(f"height fine-tuning on {args.train_size} labelled {args.chip}-px chips, "
               f"{args.finetune_steps} steps, validated on a held-out scene", rows)

        if args.adapt:
            target = city(root, "target", args.scenes, args.size, args.chip, 200, "low",
                          (0.7, 0.3, 0.0), shift=True)
            rows = {"source only": [], "--adapt-to target": []}
            for seed in args.seeds:
                rows["source only"].append(run(train, root / f"src_{seed}", target,
                                               encoder=encoder, seed=seed, aux=True, **common))
                rows["--adapt-to target"].append(run(train, root / f"ada_{seed}", target,
                                                     encoder=encoder, seed=seed,
                                                     adapt_to=target, **common))
            report("domain shift (low-rise city, other sensor), validated on target val chips",
                   rows)
        print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}}))


if __name__ == "__main__":
    main()
