"""Study: does masked-image pretraining pay off when only a few chips are labelled?

Grid: initialisation (``random``, ``mae``, ``selectivemae``, ``ctxmim``, ``fusedmim``'s RGB
encoder, ``--external PATH``) x labelled chips (``--labels``, default 10 50 200) x seeds
(default 0 1 2). Every initialisation is fine-tuned with the SAME recipe (steps, batch,
learning rates, encoder lr scale, layer decay); only the starting encoder differs.

Data (all synthetic, ``rsgeo synth --randomize``: sun, palettes, haze, blur, noise, JPEG,
GSD 0.2-1.0 m, building styles drawn per scene):

- pool: ``--pool-scenes`` scenes cut into chips. Pretraining sees every pool chip's RGB,
  without labels (fusedmim also sees each chip's DSM: height data, said so in the table).
  Fine-tuning sees a seeded subset of N pool chips with their nDSM labels (the same N chips
  for every initialisation at a given seed).
- held-out city: ``--val-scenes`` scenes with other seeds, never seen by pretraining or
  fine-tuning. Each fine-tuned model is scored once, after its last step (no checkpoint
  picked on the held-out city): F1^HE (delta < 1.25), MAE (m), delta1.
- real rasters (``--realdata DIR``, skipped when absent): each fine-tuned model is scored
  by ``real_heights.score_real`` (IGN Montpellier, Zurich, LiDAR HD village).

Defaults: the recipe measured in the README (vit-tiny-4, 16 pool scenes of 512 px in 64-px
chips, pretraining 1500 steps x 64 at lr 1.5e-3, fine-tuning 300 steps x 8 at head lr 5e-4,
encoder lr scale 1, layer decay 0.75). ``--jobs`` pretraining runs and cells run at once
(default: the cores, at most 4, on CPU; 1 on CUDA), each in its own process with its share
of the cores. The whole default grid with ``--realdata`` took 27 min 20 s on 2 cores (2
jobs of 1 thread, load 1.5-2.3: pretraining 174-667 s a method, cells 25-31 s plus about
30 s of real-raster scoring).

``--pretrain-chip 128`` pretrains on the pool's scenes cut into 128 px chips (64 tokens for
a ViT/16 instead of 16; fine-tuning stays on ``--chip``, the position grid resampled);
``--head-steps N`` gives every cell finetune's LP-FT head-only first N steps. Both are off
by default: on the demo's data neither made pretraining pay off (README, ``rsgeo demo``).

Each initialisation is pretrained once per ``--pretrain-seeds`` seed (default: once, seed
0) and reused for every cell; the table pools the pretraining runs, and the gains are
printed pooled and per run (the pretraining run is a spread of its own: README). With
``--work DIR`` every finished cell is appended to ``DIR/cells.jsonl`` and a rerun with the
same settings skips it (resumable); each cell is printed as it finishes, with the load
average.

    python benchmarks/low_label.py --work /tmp/lowlab                      # CPU defaults
    python benchmarks/low_label.py --inits random mae --labels 50          # one column
    python benchmarks/low_label.py --device cuda --pool-scenes 64 --pretrain-steps 6000 \\
        --finetune-steps 1000 --work out/lowlab                            # a GPU run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, wait
from pathlib import Path

import numpy as np

from rsgeo.finetune import finetune
from rsgeo.pretrain import pretrain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import executor, job_threads, mean_sd, plan_jobs, synth_chips  # noqa: E402

KEYS = ("f1he_1", "mae", "delta1")
METHODS = ("mae", "selectivemae", "ctxmim", "fusedmim")
SEEN = {"random": "nothing", "mae": "pool RGB", "selectivemae": "pool RGB",
        "ctxmim": "pool RGB", "fusedmim": "pool RGB + DSM", "external": "its own data"}
# settings that change the numbers (the --work folder is refused for other values)
STUDY_KEYS = ("pool_scenes", "val_scenes", "size", "chip", "backbone", "pretrain_steps",
              "pretrain_batch", "pretrain_lr", "finetune_steps", "batch_size", "lr",
              "encoder_lr_scale", "layer_decay", "head_features", "external")
# later settings: part of the id only when not at these values (older --work folders stay valid)
LATER_KEYS = {"pretrain_chip": None, "head_steps": 0}
NOT_PRETRAINED = ("random", "external")  # starts this study does not pretrain


def load() -> str:
    """The 1-minute load average, for the log lines."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def city(root: Path, name: str, scenes: int, size: int, chip: int, seed: int, split,
         suffix: str = "") -> Path:
    """``scenes`` randomised synthetic scenes (seeds ``seed``...) -> a chip folder
    ``NAME_chips{suffix}`` (cached; the scenes are written once for every chip size)."""
    return synth_chips(root, name, scenes=scenes, size=size, chip=chip, seed=seed, split=split,
                       randomize=True, footprints=False, cached=True, suffix=suffix)


def start_name(init: str, pretrain_seed: int = 0) -> str:
    """A start's name in the work folder: ``init``, or ``init_pN`` for pretraining seed N > 0."""
    return init if pretrain_seed == 0 else f"{init}_p{pretrain_seed}"


def pretrain_seeds(init: str, args) -> list[int]:
    """The pretraining seeds of ``init``: ``--pretrain-seeds``, or [0] for a start that is
    not pretrained here (random, external)."""
    return [0] if init in NOT_PRETRAINED else list(args.pretrain_seeds)


def pretrained(init: str, pool: Path, work: Path, args, pretrain_seed: int = 0) -> tuple[str, dict]:
    """The encoder to start from for ``init`` and what its pretraining did (cached in work).

    ``pool``: the chips pretraining reads (the pool cut at ``--pretrain-chip`` when given);
    ``pretrain_seed``: the pretraining run's seed (its model init, masks, chip order)."""
    if init == "random":
        return "random", {}
    if init == "external":
        return str(args.external), {"source": str(args.external)}
    name = start_name(init, pretrain_seed)
    run, info = work / f"pretrain_{name}", pretrain_record(work, name)
    if not info.is_file():
        t0 = time.perf_counter()
        s = pretrain(pool, init, args.backbone, run, steps=args.pretrain_steps, seed=pretrain_seed,
                     batch_size=args.pretrain_batch, lr=args.pretrain_lr, device=args.device,
                     workers=args.workers, precision=args.precision, log_every=10,
                     ckpt_every=10**9, overwrite=True)
        losses = [json.loads(line)["loss"] for line in open(run / "metrics.jsonl")
                  if '"loss"' in line]
        rec = {"steps": s["step"], "lr": s["lr"], "loss_start": losses[0],
               "loss_end": losses[-1], "seconds": round(time.perf_counter() - t0, 1),
               "encoder": s["encoders"].get("encoder_rgb", s["encoders"].get("encoder"))}
        info.write_text(json.dumps(rec))
        print(f"pretrain {name}: {rec['steps']} steps, lr {rec['lr']:.2g}, loss "
              f"{rec['loss_start']:.3f} -> {rec['loss_end']:.3f}, {rec['seconds']:.0f} s, "
              f"load {load()}", flush=True)
    rec = json.loads(info.read_text())
    return rec["encoder"], rec


def pretrain_record(work: Path, start: str) -> Path:
    """What the pretraining of ``start`` (:func:`start_name`) did; written once it is done."""
    return work / f"pretrain_{start}.json"


def cell(init: str, encoder: str, n: int, seed: int, pool: Path, held: Path, work: Path,
         args, pretrain_seed: int = 0) -> dict:
    """Fine-tune from ``encoder`` on ``n`` labelled pool chips; scores on the held-out city."""
    out = cell_dir(work, start_name(init, pretrain_seed), n, seed)
    t0 = time.perf_counter()
    s = finetune(pool, "height", out, encoder=encoder,
                 backbone=args.backbone if encoder == "random" else None,
                 steps=args.finetune_steps, batch_size=min(args.batch_size, n), lr=args.lr,
                 encoder_lr_scale=args.encoder_lr_scale, train_size=n, seed=seed,
                 head_features=args.head_features, val_dataset=held, val_every=0,
                 head_steps=args.head_steps,
                 device=args.device, workers=args.workers, precision=args.precision,
                 layer_decay=args.layer_decay, log_every=50, overwrite=True)
    return {"init": init, "pretrain_seed": pretrain_seed, "labels": n, "seed": seed,
            **{k: float(s["best"][k]) for k in KEYS},
            "seconds": round(time.perf_counter() - t0, 1), "load": load()}


def cell_dir(work: Path, start: str, n: int, seed: int) -> Path:
    """A cell's fine-tuning run (``best.ckpt``: the model after its last step); ``start``:
    :func:`start_name`."""
    return work / "finetune" / f"{start}_n{n}_s{seed}"


def score_real_rasters(model, args) -> dict:
    """``real_heights.score_real`` on the model: {raster: {metric: value}} (a sibling script)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_heights import score_real  # noqa: E402  (benchmarks/real_heights.py)

    return score_real(str(model), args.realdata, device=args.device)


def study_settings(args) -> dict:
    """The settings that change the numbers (:data:`STUDY_KEYS`, :data:`LATER_KEYS` when set)."""
    later = {k: str(getattr(args, k)) for k, v in LATER_KEYS.items() if getattr(args, k) != v}
    return {**{k: str(getattr(args, k)) for k in STUDY_KEYS}, **later}


def settings_id(args) -> str:
    blob = json.dumps(study_settings(args), sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def open_work(work: Path, args) -> dict:
    """Finished cells of an earlier run with the same settings:
    {(init, pretrain seed, n, seed): row}."""
    work.mkdir(parents=True, exist_ok=True)
    tag = work / "settings.json"
    sid = settings_id(args)
    if tag.is_file() and json.loads(tag.read_text())["id"] != sid:
        sys.exit(f"{work}: made with other settings ({tag}); use another --work folder")
    tag.write_text(json.dumps({"id": sid, **study_settings(args)}))
    done = {}
    if (work / "cells.jsonl").is_file():
        for line in open(work / "cells.jsonl"):
            r = json.loads(line)
            done[(r["init"], r.get("pretrain_seed", 0), r["labels"], r["seed"])] = r
    return done


def cell_job(key: tuple, encoder: str, row: dict | None, pool: Path, held: Path, work: Path,
             args) -> dict:
    """The row of the cell ``key`` (init, pretrain seed, labels, seed): fine-tuned and scored
    when ``row`` is None, then scored on the real rasters (``--realdata``) when it was not yet."""
    init, pseed, n, seed = key
    if row is None:
        row = cell(init, encoder, n, seed, pool, held, work, args, pseed)
    if args.realdata and "real" not in row:  # also for cells run without it
        ckpt = cell_dir(work, start_name(init, pseed), n, seed) / "best.ckpt"
        row = {**row, "real": score_real_rasters(ckpt, args)}
    return row


def run_study(args) -> tuple[list[dict], dict]:
    """The grid: (cells in grid order, pretraining records by init).

    Pretraining runs and cells run ``plan_jobs`` at a time (separate processes, each with
    its share of the cores); a cell starts as soon as its encoder is pretrained, and each
    prints as it finishes and is appended to ``cells.jsonl`` by this process."""
    work = Path(args.work)
    done = open_work(work, args)
    t0 = time.perf_counter()
    pool = city(work, "pool", args.pool_scenes, args.size, args.chip, 0, (1.0, 0.0, 0.0))
    held = city(work, "heldout", args.val_scenes, args.size, args.chip, 1000, (0.0, 1.0, 0.0))
    unlab = pool if not args.pretrain_chip or args.pretrain_chip == args.chip else city(
        work, "pool", args.pool_scenes, args.size, args.pretrain_chip, 0, (1.0, 0.0, 0.0),
        suffix=str(args.pretrain_chip))
    print(f"data: {time.perf_counter() - t0:.0f} s ({pool}, {held})", flush=True)
    inits = list(args.inits) + (["external"] if args.external else [])
    grid = [(init, pseed, n, seed) for init in inits for pseed in pretrain_seeds(init, args)
            for n in args.labels for seed in args.seeds]
    jobs = plan_jobs(args.jobs, args.device)
    print(f"{jobs} job(s) at once" + (f", {job_threads(jobs)} torch thread(s) "
          "each" if jobs > 1 else ""), flush=True)
    ex = executor(jobs)
    rows, pre, pending = {}, {}, {}

    def submit_cells(start: tuple, encoder: str) -> None:
        for key in (k for k in grid if k[:2] == start):
            row = done.get(key)
            if row is not None and (not args.realdata or "real" in row):
                rows[key] = row
                report(row, fresh=False)
            else:
                fut = ex.submit(cell_job, key, encoder, row, pool, held, work, args)
                pending[fut] = ("cell", key)

    try:
        for start in dict.fromkeys(k[:2] for k in grid):  # (init, pretrain seed)
            init, pseed = start
            name = start_name(init, pseed)
            if init in NOT_PRETRAINED or pretrain_record(work, name).is_file():
                encoder, pre[name] = pretrained(init, unlab, work, args, pseed)  # nothing to train
                submit_cells(start, encoder)
            else:
                fut = ex.submit(pretrained, init, unlab, work, args, pseed)
                pending[fut] = ("pretrain", start)
        while pending:
            finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                kind, key = pending.pop(fut)
                if kind == "pretrain":
                    encoder, pre[start_name(*key)] = fut.result()
                    submit_cells(key, encoder)
                else:
                    rows[key] = fut.result()
                    report(rows[key], fresh=True, work=work)
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown()
    return [rows[k] for k in grid], pre


def report(row: dict, fresh: bool, work: Path | None = None) -> None:
    """Print a cell; a fresh one is appended to ``cells.jsonl`` (its last line wins)."""
    if fresh:
        with open(work / "cells.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"cell {start_name(row['init'], row.get('pretrain_seed', 0)):<15} n={row['labels']:<4} "
          f"seed={row['seed']} F1^HE "
          f"{row['f1he_1']:.3f} MAE {row['mae']:.2f} m d1 {row['delta1']:.3f} "
          f"{row['seconds']:.0f} s load {row['load']}", flush=True)
    for site, m in (row.get("real") or {}).items():
        print(f"  real {site:<12} F1^HE {m['f1he_1']:.3f} MAE {m['mae']:.2f} m "
              f"d1 {m['delta1']:.3f}", flush=True)


def table(rows: list[dict], pre: dict, labels, value=lambda r, k: r[k]) -> str:
    """Markdown: one line per initialisation, F1^HE / MAE / delta1 mean ± sd per label count."""
    head = "| init (pretraining saw) | " + " | ".join(
        f"{n} labels: F1^HE / MAE m / δ1" for n in labels) + " |"
    lines = [head, "|" + " --- |" * (len(labels) + 1)]
    for init in dict.fromkeys(r["init"] for r in rows):
        p = pre.get(init) or {}
        loss = (f", loss {p['loss_start']:.2f}->{p['loss_end']:.2f}"
                if "loss_start" in p else "")
        cells = []
        for n in labels:
            rs = [r for r in rows if r["init"] == init and r["labels"] == n]
            cells.append(" / ".join(mean_sd([value(r, k) for r in rs]) for k in KEYS)
                         + f" (n={len(rs)})" if rs else "-")
        runs = len({r.get("pretrain_seed", 0) for r in rows if r["init"] == init})
        loss += f", {runs} pretraining runs" if runs > 1 else ""
        lines.append(f"| {init} ({SEEN[init]}{loss}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gains(rows: list[dict], labels, key: str = "f1he_1") -> str:
    """Each initialisation's gain over random init in ``key``, paired by seed (points x100).

    The same seed draws the same labelled chips for every initialisation, so the per-seed
    difference removes the chip draw's share of the spread; mean ± sd over the shared seeds
    (and pretraining runs). With several pretraining runs, each run's gain follows."""
    base = {(r["labels"], r["seed"]): r[key] for r in rows if r["init"] == "random"}
    lines = []
    for init in dict.fromkeys(r["init"] for r in rows if r["init"] != "random"):
        mine = [r for r in rows if r["init"] == init]
        pseeds = sorted({r.get("pretrain_seed", 0) for r in mine})
        groups = [(init, mine)] if len(pseeds) == 1 else (
            [(f"{init} ({len(pseeds)} pretraining runs)", mine)]
            + [(f"{init} pretraining seed {p}", [r for r in mine if r.get("pretrain_seed", 0) == p])
               for p in pseeds])
        for name, rs in groups:
            parts = []
            for n in labels:
                d = [100 * (r[key] - base[n, r["seed"]]) for r in rs
                     if r["labels"] == n and (n, r["seed"]) in base]
                if d:
                    v = np.asarray(d)
                    sd = v.std(ddof=1) if len(v) > 1 else 0.0
                    parts.append(f"{n} labels {v.mean():+.1f} ± {sd:.1f} (n={len(v)})")
            if parts:
                lines.append(f"{name} - random, F1^HE points paired by seed: " + "; ".join(parts))
    return "\n".join(lines)


def real_tables(rows: list[dict], pre: dict, labels) -> str:
    """One table per real raster (rows that were scored on real data)."""
    scored = [r for r in rows if r.get("real")]
    names = dict.fromkeys(k for r in scored for k in r["real"])
    return "\n\n".join(f"real: {name}\n" + table(
        [r for r in scored if name in r["real"]], pre, labels,
        value=lambda r, k, name=name: r["real"][name][k]) for name in names)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inits", nargs="+", default=["random", *METHODS],
                    choices=["random", *METHODS])
    ap.add_argument("--external", type=Path, help="an encoder checkpoint (any layout "
                    "`finetune --encoder` reads): adds the 'external' row; skipped if not given")
    ap.add_argument("--labels", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="fine-tuning seeds (each draws its own labelled chips)")
    ap.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0],
                    help="pretraining runs per method (each its own seed); every cell is "
                         "fine-tuned from each")
    ap.add_argument("--pool-scenes", type=int, default=16)
    ap.add_argument("--val-scenes", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="scene side (px)")
    ap.add_argument("--chip", type=int, default=64)
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--pretrain-batch", type=int, default=64)
    ap.add_argument("--pretrain-lr", type=float, default=1.5e-3)
    ap.add_argument("--pretrain-chip", type=int, help="pretrain on the pool cut into chips of "
                    "this size (px; default --chip); fine-tuning resamples the position grid")
    ap.add_argument("--finetune-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-4, help="head learning rate")
    ap.add_argument("--encoder-lr-scale", type=float, default=1.0)
    ap.add_argument("--layer-decay", type=float, default=0.75,
                    help="finetune's layer-wise lr decay (1: off)")
    ap.add_argument("--head-features", type=int, default=32)
    ap.add_argument("--head-steps", type=int, default=0,
                    help="finetune's LP-FT head-only first steps (0: off)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, help="pretraining runs and cells at once, each in its "
                    "own process with its share of the cores (default: the cores, at most 4, "
                    "on CPU; 1 on CUDA)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--realdata", type=Path, help="real height rasters (skipped when absent)")
    ap.add_argument("--work", type=Path, help="work folder, kept and resumable "
                    "(default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error(f"--jobs {args.jobs}: use 1 or more")
    if args.realdata and not args.realdata.is_dir():
        print(f"--realdata {args.realdata}: not found, real rasters skipped", flush=True)
        args.realdata = None
    return args


def main(argv=None) -> None:
    args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="rsgeo-lowlabel-") as tmp:
        args.work = args.work or Path(tmp)
        t0 = time.perf_counter()
        rows, pre = run_study(args)
        print(f"\nheight on a held-out randomised synthetic city ({args.val_scenes} scenes), "
              f"{args.backbone}, {args.finetune_steps} fine-tuning steps, mean ± sd over "
              f"seeds {args.seeds}; wall {time.perf_counter() - t0:.0f} s, load {load()}")
        print(table(rows, pre, args.labels))
        print(gains(rows, args.labels))
        if args.realdata:
            print("\n" + real_tables(rows, pre, args.labels))
        print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}}))


if __name__ == "__main__":
    main()
