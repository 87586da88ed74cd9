"""Benchmark: footprints on *real* imagery from a segmentation model trained on synthetic data.

A segmentation model (random-init ``--backbone``, default vit-tiny-4) is fine-tuned on chips
of synthetic cities (``rsgeo synth --gsd 0.5``; with ``--randomize`` domain-randomised:
sun, palettes, textures and style drawn per city, GSD held at 0.5 m) for ``--steps`` and
twice as many steps.
Each model is applied as ``rsgeo footprints IMAGE -m MODEL`` does (library functions:
:func:`rsgeo.damage.buildings.model_buildings` -> :func:`rsgeo.footprints.footprints`;
``--gsd auto``, i.e. inputs are resampled to the model's 0.5 m and back) to:

- a held-out synthetic city (seed 100, not randomised): reference = its true footprints;
- SpaceNet 4 Atlanta (0.5 m pan, uint16 11-bit, percentile stretch, band replicated to
  RGB): reference = its 43 SpaceNet polygons;
- Open Cities Accra (2 cm RGBA drone tile in EPSG:4326; alpha band as valid mask):
  reference = its building mask traced to polygons;
- Montpellier IGN (0.2 m RGB ortho): reference = the LiDAR class-6 (building) mask,
  0.5 m, traced to polygons (LiDAR-derived, not surveyed outlines).

Delft (AHN3 + BGT) has no RGB ortho, so an RGB model cannot be applied there: listed as
skipped. Printed: one table row per dataset and model: input GSD (m) and whether it was
resampled, model steps, footprint F1 / precision / recall (SpaceNet matching, IoU >= 0.5,
:func:`rsgeo.metrics.footprints.score_footprints`), building IoU (probability >= 0.5 against
the reference rasterised on the input grid), and ``uptime`` before and after. No threshold:
the figures are what they are. Without the real-data folder (``--realdata``, default
``../shared/realdata`` beside the project) the script says so and exits 0.

    python benchmarks/footprints_real.py [--steps 400] [--size 512] [--scenes 3] [--randomize]
        [--device cpu|cuda] [--batch-size 8] [--backbone vit-tiny-4] [--work DIR]
        [--realdata DIR]

The default (N = 400) takes 6-10 minutes on 2 shared CPU cores; ``--device cuda --size 1024
--scenes 8 --steps 3000`` is a fairer GPU budget. The models are small and see only
synthetic cities: expect low real-data figures; the point is an honest number.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_segmentation import ROOT, rsgeo, uptime  # noqa: E402

sys.path.insert(0, str(ROOT))
from rsgeo.damage.buildings import model_buildings  # noqa: E402
from rsgeo.footprints import footprints  # noqa: E402
from rsgeo.io.raster import Grid, ground_gsd  # noqa: E402

MIN_AREA = 10.0  # m², as benchmarks/predict_segmentation.py
# name -> (image relative to --realdata, predict kwargs, reference, reference kind)
REAL = {
    "spacenet-atlanta (pan, 11-bit)": (
        "spacenet-atlanta-solaris/sn4_atlanta_pan_0p5m_733601_3725139.tif", {},
        "spacenet-atlanta-solaris/sn4_atlanta_building_footprints_epsg32616.geojson", "vector"),
    "opencities-accra (RGBA, EPSG:4326)": (
        "opencities-accra/665946_tile_920.tif", {},
        "opencities-accra/665946_tile_920_mask.tif", "mask"),
    "montpellier-ign (RGB 0.2 m, LiDAR mask)": (
        "montpellier-ign/ortho_rgb_0p2m_770550_6277600.tif", {},
        "montpellier-ign/derived_from_lidar/buildingmask_lidar_0p5m_770550_6277600.tif", "mask"),
}
SKIPPED = {"delft-ahn3-bgt": "no RGB/pan image of the area (LiDAR and footprints only)"}


def reference(path: Path, kind: str, work: Path):
    """The reference footprints as a GeoDataFrame: a vector file as is, a mask traced
    with :func:`rsgeo.footprints.footprints` (pixel outlines, no regularisation)."""
    import geopandas as gpd

    if kind == "mask":
        out = work / f"ref_{path.stem}.gpkg"
        footprints(path, out, regularise=False, overwrite=True)
        path = out
    return gpd.read_file(path)


def building_iou(prob_path: Path, band: int, ref) -> float:
    """IoU of (probability >= 0.5) and the reference polygons burnt on the probability grid,
    over the valid (finite, not nodata) pixels."""
    import rasterio
    from rasterio.features import rasterize

    with rasterio.open(prob_path) as src:
        p = src.read(band)
        valid = np.isfinite(p) if src.nodata is None or np.isnan(src.nodata) else (
            np.isfinite(p) & (p != src.nodata))
        geoms = [g for g in ref.to_crs(src.crs).geometry if g is not None and not g.is_empty]
        truth = rasterize(((g, 1) for g in geoms), out_shape=p.shape, transform=src.transform,
                          fill=0, dtype="uint8").astype(bool) if geoms else np.zeros(p.shape, bool)
    pred = (p >= 0.5) & valid
    truth &= valid
    return float((pred & truth).sum() / max((pred | truth).sum(), 1))


def evaluate(image: Path, ref, model: Path, work: Path, device: str, tag: str) -> dict:
    """Footprints of ``image`` from ``model`` (as ``rsgeo footprints -m``) scored on ``ref``."""
    import geopandas as gpd
    import rasterio

    from rsgeo.metrics.footprints import score_footprints

    sub = work / tag
    sub.mkdir(parents=True, exist_ok=True)
    with rasterio.open(image) as src:
        in_gsd = ground_gsd(Grid.of(src))
    found = model_buildings(image, model, sub, device=device)
    out = sub / "buildings.gpkg"
    footprints(found["probabilities"], out, band=found["band"], min_area=MIN_AREA,
               overwrite=True)
    pred = gpd.read_file(out)
    s = score_footprints(pred, ref.to_crs(pred.crs), iou=0.5)
    return {"gsd_m": round(in_gsd, 3), "resampled": bool(found["predict"].get("resampled")),
            "predicted": len(pred), "reference": len(ref),
            **{k: round(float(s[k]), 3) for k in ("f1", "precision", "recall")},
            "iou": round(building_iou(found["probabilities"], found["band"], ref), 3)}


def train(work: Path, a, steps: int) -> Path:
    run = work / f"seg_{steps}"
    rsgeo("finetune", work / "chips", "--task", "segmentation", "--encoder", "random",
          "--backbone", a.backbone, "--steps", steps, "--batch-size", a.batch_size,
          "--device", a.device, "-o", run, "--overwrite")
    return run / "best.ckpt"


def print_table(rows: list[dict]) -> None:
    head = f"{'dataset':42s} {'GSD m':>6s} {'resamp':>6s} {'steps':>5s} {'F1':>6s} " \
           f"{'prec':>6s} {'recall':>6s} {'IoU':>6s} {'pred/ref':>9s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['dataset']:42s} {r['gsd_m']:6.3f} {'yes' if r['resampled'] else 'no':>6s} "
              f"{r['steps']:5d} {r['f1']:6.3f} {r['precision']:6.3f} {r['recall']:6.3f} "
              f"{r['iou']:6.3f} {r['predicted']:>4d}/{r['reference']:<4d}")
    for name, why in SKIPPED.items():
        print(f"{name:42s} skipped: {why}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=400, help="N: models at N and 2N steps")
    ap.add_argument("--size", type=int, default=512, help="synthetic city size (px)")
    ap.add_argument("--scenes", type=int, default=3, help="synthetic training cities")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ap.add_argument("--randomize", action=argparse.BooleanOptionalAction, default=False,
                    help="domain-randomised training cities (--randomize) or plain ones "
                    "(default: they transferred better at this budget, see the README)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    a = ap.parse_args(argv)
    if not a.realdata.is_dir():
        print(f"skipped: no real-data folder at {a.realdata} (pass --realdata DIR)")
        return
    logging.basicConfig(level=logging.ERROR)
    print(f"before: {uptime()}", flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rsgeo("synth", "-o", work / "train", "--size", a.size, "--scenes", a.scenes, "--seed", 0,
              *(["--randomize"] if a.randomize else []), "--gsd", 0.5, "--overwrite")
        rsgeo("synth", "-o", work / "test", "--size", a.size, "--scenes", 1, "--seed", 100,
              "--overwrite")
        rsgeo("prepare", work / "train", "-o", work / "chips", "--size", 64, "--overwrite")
        sets = {"synthetic held-out city (seed 100)": (
            next((work / "test").glob("*_pre_rgb.tif")),
            reference(next((work / "test").glob("*_footprints.gpkg")), "vector", work))}
        for name, (img, _, ref, kind) in REAL.items():
            if (a.realdata / img).exists() and (a.realdata / ref).exists():
                sets[name] = (a.realdata / img, reference(a.realdata / ref, kind, work))
            else:
                SKIPPED[name] = f"{img} or {ref} not found"
        rows = []
        for steps in (a.steps, 2 * a.steps):
            model = train(work, a, steps)
            for i, (name, (img, ref)) in enumerate(sets.items()):
                r = evaluate(img, ref, model, work, a.device, f"s{steps}_{i}")
                rows.append({"dataset": name, "steps": steps, **r})
                print(json.dumps(rows[-1]), flush=True)
    kind = "randomised" if a.randomize else "plain (not randomised)"
    print(f"\nsegmentation model: {a.backbone}, random init, {a.scenes} {kind} synthetic "
          f"cities of {a.size} px at 0.5 m, 64 px chips, batch {a.batch_size}, {a.device}; "
          f"footprints min area {MIN_AREA:g} m², F1 at IoU 0.5")
    print_table(sorted(rows, key=lambda r: (list(sets).index(r["dataset"]), r["steps"])))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; after: {uptime()}", flush=True)


if __name__ == "__main__":
    main()
