"""Benchmark ``rsgeo predict`` for segmentation: buildings mapped over a held-out city.

A segmentation model (random-init ``--backbone``, default vit-tiny-4) is fine-tuned on
chips of a synthetic city (``rsgeo synth`` + ``prepare``) for ``--steps`` steps and again
for twice as many; each is mapped over a *held-out* synthetic city (another seed) with
``rsgeo predict --probabilities`` (the streaming pipeline, blended probabilities), and the
building probability band (land-cover class 8) is traced with ``rsgeo footprints``.
Printed per model: building IoU of the class raster (class 8 vs the true land cover),
SpaceNet footprint F1 at IoU 0.5 against the true footprints, predict Mpx/s, and the
machine load (``uptime``) before and after; then a table with the two models side by side
(one column per budget). Everything runs through the CLI, as a user would.

    python benchmarks/predict_segmentation.py [--size 512] [--steps 150] [--device cpu|cuda]
        [--batch-size 8] [--backbone vit-tiny-4] [--work DIR]

Numbers depend on the budget: on a CPU the default is a small run (a few minutes on an
idle 2-core machine), not a good model; ``--device cuda --size 1024 --steps 2000`` is a
fairer GPU run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUILDING = 8  # land-cover class of rsgeo synth


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def rsgeo(*args) -> str:
    """Run ``rsgeo ARGS`` (this checkout) and return its stdout; fail loudly."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "rsgeo", "-q", *map(str, args)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"rsgeo {' '.join(map(str, args))} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def building_iou(classes: Path, landcover: Path) -> float:
    import rasterio

    with rasterio.open(classes) as c, rasterio.open(landcover) as t:
        pred, true = c.read(1), t.read(1)
    ok = pred != 255
    p, g = (pred == BUILDING) & ok, (true == BUILDING) & ok
    return float((p & g).sum() / max((p | g).sum(), 1))


def footprint_f1(pred: Path, ref: Path) -> dict:
    import geopandas as gpd

    from rsgeo.metrics.footprints import score_footprints

    s = score_footprints(gpd.read_file(pred), gpd.read_file(ref), iou=0.5)
    return {k: round(float(s[k]), 3) for k in ("precision", "recall", "f1")}


def evaluate_model(run: Path, city: dict, work: Path, device: str) -> dict:
    out = work / f"{run.name}_lc.tif"
    line = rsgeo("predict", city["rgb"], "-m", run / "best.ckpt", "-o", out, "--probabilities",
                 "--device", device, "--overwrite", "--json").splitlines()[0]
    pred = json.loads(line)
    fp = work / f"{run.name}_buildings.gpkg"
    rsgeo("footprints", work / f"{run.name}_lc_probabilities.tif", "--band", BUILDING + 1,
          "--min-area", 10, "-o", fp, "--overwrite")
    return {"building_iou": round(building_iou(out, city["landcover"]), 3),
            **footprint_f1(fp, city["footprints"]), "predict_mpx_per_s": pred["mpx_per_s"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--work", type=Path, default=None)
    a = ap.parse_args(argv)
    print(f"before: {uptime()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rsgeo("synth", "-o", work / "train", "--size", a.size, "--scenes", 2, "--seed", 0,
              "--overwrite")
        rsgeo("synth", "-o", work / "test", "--size", a.size, "--scenes", 1, "--seed", 100,
              "--overwrite")
        rsgeo("prepare", work / "train", "-o", work / "chips", "--size", 64, "--overwrite")
        city = {k: next((work / "test").glob(f"*_{s}")) for k, s in (
            ("rgb", "pre_rgb.tif"), ("landcover", "landcover.tif"),
            ("footprints", "footprints.gpkg"))}
        rows = []
        for steps in (a.steps, 2 * a.steps):
            run = work / f"seg_{steps}"
            t0 = time.perf_counter()
            rsgeo("finetune", work / "chips", "--task", "segmentation", "--encoder", "random",
                  "--backbone", a.backbone, "--steps", steps, "--batch-size", a.batch_size,
                  "--device", a.device, "-o", run, "--overwrite")
            train_s = time.perf_counter() - t0
            r = evaluate_model(run, city, work, a.device)
            rows.append({"steps": steps, "train_seconds": round(train_s, 1), **r,
                         "size": a.size, "backbone": a.backbone, "device": a.device})
            print(json.dumps(rows[-1]), flush=True)
    print()
    print_table(rows)
    print(f"after: {uptime()}", flush=True)


def print_table(rows: list[dict]) -> None:
    """The models side by side: one column per training budget (N and 2N steps)."""
    metrics = (("building IoU", "building_iou", ".3f"), ("footprint F1 (IoU 0.5)", "f1", ".3f"),
               ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
               ("train s", "train_seconds", ".0f"), ("predict Mpx/s", "predict_mpx_per_s", ".3g"))
    cols = [f"{r['steps']} steps" for r in rows]
    print(f"{'held-out synthetic city':24s}" + "".join(f"{c:>14s}" for c in cols))
    for label, key, fmt in metrics:
        print(f"{label:24s}" + "".join(f"{format(r[key], fmt):>14s}" for r in rows))


if __name__ == "__main__":
    main()
