"""Synthetic-to-real heights: a model trained only on ``rsgeo synth`` cities, scored on real rasters.

Pipeline (library calls, as the CLI runs them):

1. ``rsgeo synth``: ``--scenes`` cities of ``--size`` px at ``--gsd`` m (default 0.5, the
   real references' grid), styles cycling through ``--styles`` (default low, mid,
   courtyard, informal, terraced), domain-randomised (``--randomize``, default on: sun,
   palettes, textures, relief, trees, haze, blur, noise, JPEG, the ortho's tone curve);
   each scene draws its own domain, so more scenes are more domains at no training cost;
2. ``rsgeo prepare``: ``--chip`` px chips (90 % train, 10 % validation);
3. ``rsgeo finetune --task height``: a random-init ``--backbone`` trained ``--steps`` steps
   (batch ``--batch-size``, lr ``--lr``, per-sample colour jitter and blur of strength
   ``--photometric``, best checkpoint on the synthetic validation chips); with
   ``--adapt-to-real``, RS3DAda-style adaptation toward the *unlabelled* RGB of the three
   real sites (their images only, never their heights; labelled as such in the output);
4. :func:`real_heights.score_real`: predict-height on IGN Montpellier (0.2 m, resampled to the
   model's GSD and back), Zurich and the LiDAR HD village, scored against their LiDAR nDSMs.

Printed: the settings, the time of each stage, ``uptime`` before and after, the synthetic
validation score, the per-site table (F1^HE at delta < 1.25, precision, recall, MAE, RMSE,
delta1, building pixels) with the checkpoint's recommended tile (twice the crop up to
256 px) and again with each of ``--tiles`` (default: the crop and 256 px, the old
default), and the constant-height baselines of :mod:`real_heights` (0 m and 7 m). Without
the real-data folder (``--realdata``) the script says so and exits 0 before training.

    python benchmarks/synth_to_real.py [--scenes 32] [--size 384] [--steps 3000] [--device cpu]
        [--backbone vit-tiny-4] [--chip 64] [--photometric 0.4] [--no-randomize]
        [--adapt-to-real] [--tiles 64 256] [--seeds 0 1 2] [--work DIR]

``--seeds`` trains one model per seed (each its own synthetic city, chip split and
training) and ends with the mean ± sd over them and the seeds' models scored as one
ensemble (``predict-height -m A -m B ...``, heights averaged); ``--jobs`` seeds train at
once, each in its own process with its share of the cores (default: the cores, at most 4,
on CPU; 1 on CUDA), each seed's tables printed when it finishes. One seed of the defaults
took 11-15 minutes on 2 CPU cores shared with other training jobs (load 2-4): data 0.5 min,
training 10-13 min (3000 steps), scoring 1 min. At the earlier default of 300 steps the models were
under-trained (synthetic validation F1^HE 0.22-0.34 against 0.44-0.52 at 3000).
CUDA, larger: ``--device cuda --scenes 128 --size 768 --steps 6000 --batch-size 32``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from concurrent.futures import as_completed
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import executor, mean_sd, plan_jobs  # noqa: E402
from real_heights import (DEFAULT_REALDATA, SITES, available_sites, constant_scores,  # noqa: E402
                          score_real, table, uptime)

from rsgeo.data.prepare import prepare  # noqa: E402
from rsgeo.data.sources import SceneInput, from_synth_dir  # noqa: E402
from rsgeo.finetune import finetune  # noqa: E402
from rsgeo.synth import LANDCOVER, write_scenes  # noqa: E402
from rsgeo.tasks.bundle import load_task_model  # noqa: E402

STYLES = ("low", "mid", "courtyard", "informal", "terraced")


def make_city(folder: Path, scenes: int, size: int, gsd: float, styles, randomize: bool,
              seed: int) -> Path:
    """``scenes`` synthetic scenes (seeds ``seed``...), style ``styles[i % len]`` each."""
    for i in range(scenes):
        write_scenes(folder, size=size, gsd=gsd, style=styles[i % len(styles)], scenes=1,
                     seed=seed + i, randomize=randomize, footprints=False, prefix="city")
    return folder


def real_target_chips(realdata: Path, out: Path, chip: int, gsd: float) -> Path:
    """Unlabelled chips of the real sites' RGB images only (at ``gsd``), for --adapt-to."""
    scenes = [SceneInput(rgb=realdata / SITES[s][0], source="real")
              for s in available_sites(realdata)]
    prepare(scenes, out, size=chip, stride=chip // 2, gsd=gsd, split=(1.0, 0.0, 0.0),
            max_nodata=0.5)
    return out


def train(chips: Path, run: Path, args, target: Path | None, seed: int) -> dict:
    """Fine-tune the height model (random init) on the synthetic chips."""
    adapt = {"style": args.style} if target is not None and args.style else None
    return finetune(chips, "height", run, encoder="random", backbone=args.backbone,
                    steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    seed=seed, head_features=args.head_features, device=args.device,
                    aux_landcover=args.aux_landcover, adapt_to=target, adapt=adapt,
                    photometric=args.photometric,
                    log_every=max(args.steps // 10, 1), overwrite=True)


def run(args, root: Path, seed: int) -> dict:
    """One seed (synthetic city, chip split and training): prints its tables, returns its
    results (the JSON line)."""
    t = {}
    t0 = time.perf_counter()
    city = make_city(root / "synth", args.scenes, args.size, args.gsd, args.styles,
                     args.randomize, seed)
    chips = root / "chips"
    prepare(from_synth_dir(city), chips, size=args.chip, classes=dict(LANDCOVER),
            split=(0.9, 0.1, 0.0), seed=seed, overwrite=True)
    target = real_target_chips(args.realdata, root / "target", args.chip, args.gsd) \
        if args.adapt_to_real else None
    t["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = train(chips, root / "run", args, target, seed)
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = score_real(summary["checkpoint"], args.realdata, device=args.device)
    by_tile = {tile: score_real(summary["checkpoint"], args.realdata, device=args.device,
                                tile=tile, overlap=tile // 2) for tile in args.tiles}
    t["score"] = time.perf_counter() - t0
    best = summary["best"]
    print(f"\nseed {seed}, synthetic validation (best step {summary['best_step']}): F1^HE "
          f"{best['f1he_1']:.3f}, MAE {best['mae']:.2f} m, RMSE {best['rmse']:.2f} m")
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
          + f" (total {sum(t.values()) / 60:.1f} min)")
    print("\nreal rasters, model trained only on rsgeo synth"
          + (" + unlabelled real RGB (--adapt-to-real)" if target is not None else "")
          + f" (the checkpoint's recommended tile, {recommended_tile(summary['checkpoint'])} px)")
    print(table(results))
    for tile, res in by_tile.items():
        print(f"\nthe same model with --tile {tile} --overlap {tile // 2} "
              f"({tile / args.chip:g} x its {args.chip} px training crop)")
        print(table(res))
    baselines = {v: constant_scores(v, args.realdata) for v in (0.0, 7.0)}
    for v, res in baselines.items():
        print(f"\nbaseline: {v:g} m everywhere (no image)")
        print(table(res))
    record = {"seed": seed, "checkpoint": str(summary["checkpoint"]), "results": results,
              "results_by_tile": by_tile,
              "baselines": baselines, "synthetic_val": best, "seconds": t,
              "torch_threads": summary["threads"],
              "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(record), flush=True)
    return record


def run_buffered(args, root: Path, seed: int) -> tuple[str, dict]:
    """:func:`run` in a worker process: (what it printed, its record), for the parent to
    print when the seed is done (seeds running at once would interleave their tables)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        record = run(args, root, seed)
    return buf.getvalue(), record


def seed_summary(records: list[dict]) -> str:
    """Per site, mean ± sd over the seeds of F1^HE, MAE, RMSE and building-pixel F1^HE at
    the recommended tile, and the synthetic validation F1^HE (text table)."""
    lines = [f"{'site':<13}{'F1^HE':>16}{'MAE m':>16}{'RMSE m':>16}{'F1 bldg':>16}"
             f"{'scale':>16}"]
    for site in records[0]["results"]:
        rs = [r["results"][site] for r in records if site in r["results"]]
        lines.append(f"{site:<13}" + "".join(f"{mean_sd([x[k] for x in rs]):>16}" for k in (
            "f1he_1", "mae", "rmse", "f1he_1_bldg", "scale_bldg")))
    val = mean_sd([r["synthetic_val"]["f1he_1"] for r in records])
    lines.append(f"{'synthetic val':<13}{val:>16}")
    return "\n".join(lines)


def recommended_tile(checkpoint) -> int:
    """The tile (px) a task checkpoint recommends to predict-height (its bundle meta)."""
    return int(load_task_model(checkpoint)[2]["tile"])


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=32)
    ap.add_argument("--size", type=int, default=384, help="scene side, px")
    ap.add_argument("--gsd", type=float, default=0.5, help="training GSD, m/px")
    ap.add_argument("--styles", nargs="+", default=list(STYLES))
    ap.add_argument("--no-randomize", dest="randomize", action="store_false")
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--tiles", type=int, nargs="*", default=None,
                    help="also score with these predict tiles, px (default: --chip and 256)")
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--head-features", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--photometric", type=float, default=0.4,
                    help="per-sample colour jitter / blur strength on the synthetic inputs")
    ap.add_argument("--aux-landcover", action="store_true")
    ap.add_argument("--adapt-to-real", action="store_true",
                    help="RS3DAda-style adaptation to the real sites' unlabelled RGB")
    ap.add_argument("--style", default="both", help="source style transfer with --adapt-to-real")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="one model per seed (its own synthetic city, split and training); "
                         "with several, the mean ± sd over them is printed at the end")
    ap.add_argument("--jobs", type=int, help="seeds trained at once, each in its own process "
                    "(default: the cores, at most 4, on CPU; 1 on CUDA)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    ap.add_argument("--work", type=Path, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error(f"--jobs {args.jobs}: use 1 or more")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.tiles is None:
        args.tiles = [args.chip, 256]
    if not available_sites(args.realdata):
        print(f"no real-data sites under {args.realdata}: nothing to score")
        return 0
    print(f"settings: {vars(args)}")
    print(f"before: {uptime()}")
    with tempfile.TemporaryDirectory(prefix="rsgeo-s2r-") as tmp:
        root = args.work or Path(tmp)
        jobs = min(plan_jobs(args.jobs, args.device), len(args.seeds))
        ex, futures = executor(jobs), {}
        try:
            for seed in args.seeds:
                folder = root / f"seed{seed}" if len(args.seeds) > 1 else root
                folder.mkdir(parents=True, exist_ok=True)
                fut = ex.submit(run if jobs == 1 else run_buffered, args, folder, seed)
                futures[fut] = seed
            done = {}
            for fut in as_completed(futures):
                record = fut.result()
                if jobs > 1:  # (what the worker printed, its record)
                    text, record = record
                    print(text, end="", flush=True)
                done[futures[fut]] = record
        finally:
            ex.shutdown(cancel_futures=True)
        records = [done[seed] for seed in args.seeds]
        if len(records) > 1:
            print(f"\nmean ± sd over seeds {', '.join(map(str, args.seeds))} (recommended tile)")
            print(seed_summary(records))
            ensemble = score_real([r["checkpoint"] for r in records], args.realdata,
                                  device=args.device)
            print(f"\nthe {len(records)} seeds' models as one ensemble (predict-height -m ... "
                  "-m ...: heights averaged; recommended tile)")
            print(table(ensemble))
            print(json.dumps({"ensemble": ensemble, "seeds": args.seeds}), flush=True)
    print(f"after: {uptime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
