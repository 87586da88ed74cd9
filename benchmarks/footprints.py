"""Benchmark ``rsgeo footprints``: tracing speed and footprint F1, synthetic and real.

1. A synthetic city (``rsgeo synth``, SIZE² at GSD): footprints from the true building
   mask (land cover 8) and from a noisy probability raster (the mask blurred by 1 px plus
   Gaussian noise, thresholded at 0.5), each with pixel outlines and regularised ones;
   printed: Mpx/s of the tracing and of the whole run, SpaceNet F1 at IoU 0.5 against the
   true footprints, mean IoU of the matched buildings, vertices per building. With the
   ``buildingregulariser`` package importable, its outlines from the same traced polygons
   are scored beside ours.
2. Real data (``--realdata``, default ``../shared/realdata`` beside the repository; skipped
   cleanly when absent): Delft (AHN3 LiDAR, 0.5 m) against the 160 official BGT
   footprints, from (a) the BGT footprints burned into a raster (a round trip: tracing
   only), (b) the LiDAR building-class mask and (c) a thresholded nDSM (> 2.5 m). These are
   not predictions of a model: they show what tracing and regularisation do with real
   masks. BGT covers only the central blocks, so only traced polygons whose centre lies in
   the reference's extent are scored. Accra (2 cm drone mask in EPSG:4326): count and
   geodesic area only (geographic CRS handling; no independent reference).

    python benchmarks/footprints.py [--size 2048] [--gsd 0.5] [--strip-rows 1024] [--workers N]

Footprints run on the CPU (no model); ``--device`` is accepted so one GPU script can pass
it to every benchmark. The machine load (``uptime``) is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def quality(pred, ref) -> dict:
    """F1 (SpaceNet, IoU 0.5), mean IoU of the matched pairs, vertices per polygon."""
    import shapely

    from rsgeo.metrics.footprints import score_footprints

    s = score_footprints(pred, ref, iou=0.5)
    geoms, refs = pred.geometry.to_numpy(), ref.geometry.to_numpy()
    tree = shapely.STRtree(refs)
    ious = []
    for g in geoms:
        cand = tree.query(g)
        if len(cand):
            inter = shapely.area(shapely.intersection(refs[cand], g))
            iou = (inter / shapely.area(shapely.union(refs[cand], g))).max()
            if iou > 0.5:
                ious.append(iou)
    verts = float(np.mean(shapely.get_num_coordinates(geoms) - 1)) if len(geoms) else 0.0
    return {"f1": s["f1"], "tp": s["tp"], "fp": s["fp"], "fn": s["fn"],
            "miou": float(np.mean(ious)) if ious else 0.0, "verts": verts}


def line(name: str, q: dict, extra: str = "") -> None:
    print(f"  {name:<34} F1 {q['f1']:.3f} (tp {q['tp']}, fp {q['fp']}, fn {q['fn']})  "
          f"matched IoU {q['miou']:.3f}  vertices {q['verts']:.1f}  {extra}")


def run(src, out, ref, name, **kw):
    from rsgeo.footprints import footprints
    from rsgeo.io.vector import read_vector

    s = footprints(src, out, overwrite=True, **kw)
    pred = read_vector(out)
    mpx = s["megapixels"]
    line(name, quality(pred, ref), f"{mpx / s['trace_seconds']:.1f} Mpx/s tracing, "
         f"{mpx / s['seconds']:.1f} Mpx/s in all ({s['seconds']:.2f} s)")
    return pred


def building_regulariser(raw, ref, tolerance: float) -> None:
    """Score the ``buildingregulariser`` package on our traced pixel outlines."""
    try:
        from buildingregulariser import regularize_geodataframe
    except ImportError:
        print("  buildingregulariser: not installed (pip install buildingregulariser to compare)")
        return
    t = time.perf_counter()
    out = regularize_geodataframe(raw[["geometry"]], parallel_threshold=tolerance,
                                  simplify_tolerance=tolerance, num_cores=1)
    dt = time.perf_counter() - t
    line("buildingregulariser 0.2 (1 core)", quality(out, ref),
         f"{len(raw) / dt:.0f} buildings/s regularising")


def synthetic(args, tmp: Path) -> None:
    from scipy import ndimage

    from rsgeo.synth import generate_scene
    from tests.conftest import make_raster

    t = time.perf_counter()
    s = generate_scene(args.size, args.gsd, args.style, 0.3, seed=args.seed)
    print(f"synthetic city {args.size}² px at {args.gsd} m ({args.style}, seed {args.seed}): "
          f"{len(s.footprints)} buildings, generated in {time.perf_counter() - t:.1f} s")
    mask = (s.landcover == 8).astype(np.uint8)
    lc = make_raster(tmp / "landcover.tif", s.landcover.astype(np.uint8), crs=s.grid.crs,
                     transform=s.grid.transform)
    rng = np.random.default_rng(args.seed)
    prob = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
    prob = np.clip(prob + rng.normal(0, 0.1, prob.shape), 0, 1).astype(np.float32)
    pr = make_raster(tmp / "prob.tif", prob, crs=s.grid.crs, transform=s.grid.transform)
    ref = s.footprints
    tol = args.gsd
    kw = dict(strip_rows=args.strip_rows, workers=args.workers)
    print("from the true building mask (land cover 8):")
    raw = run(lc, tmp / "raw.gpkg", ref, "pixel outlines", classes=(8,), regularise=False, **kw)
    run(lc, tmp / "reg.gpkg", ref, "regularised (rsgeo)", classes=(8,), **kw)
    building_regulariser(raw, ref, tol)
    print("from a noisy probability raster (blur 1 px + noise 0.1, threshold 0.5, min 5 m²):")
    raw = run(pr, tmp / "praw.gpkg", ref, "pixel outlines", regularise=False, min_area=5, **kw)
    run(pr, tmp / "preg.gpkg", ref, "regularised (rsgeo)", min_area=5, **kw)
    building_regulariser(raw, ref, tol)


def delft(root: Path, tmp: Path, strip_rows: int) -> None:
    import rasterio
    import shapely

    from rsgeo.io.vector import read_vector
    from tests.conftest import make_raster

    d = root / "delft-ahn3-bgt"
    if not d.is_dir():
        print("Delft: not present, skipped")
        return
    ref = read_vector(d / "bgt_pand_buildings_epsg28992.geojson")
    extent = shapely.box(*ref.total_bounds)
    merged = shapely.get_parts(shapely.union_all(ref.geometry.to_numpy(), grid_size=0.01))
    blocks = type(ref)(geometry=merged, crs=ref.crs)
    print(f"Delft AHN3 (0.5 m) vs {len(ref)} BGT footprints and, right, vs the {len(blocks)} "
          "blocks they form where they touch (a mask cannot split touching buildings); "
          "traced polygons centred in the reference extent:")
    with rasterio.open(d / "derived_from_lidar" / "delft_ndsm.tif") as ds:
        ndsm, nd = ds.read(1), ds.nodata
        above = np.where(ndsm == nd, 255, ndsm > 2.5).astype(np.uint8)
        thr = make_raster(tmp / "ndsm_gt_2p5.tif", above, crs=ds.crs, transform=ds.transform,
                          nodata=255)
    sources = [("BGT burned 0.5 m (round trip)", d / "derived_from_lidar" / "bgt_footprints_0p5m.tif"),
               ("LiDAR building class mask", d / "derived_from_lidar" / "delft_buildingmask_lidar.tif"),
               ("nDSM > 2.5 m", thr)]
    for name, src in sources:
        for reg in (False, True):
            out = tmp / f"delft_{reg}.gpkg"
            from rsgeo.footprints import footprints

            footprints(src, out, overwrite=True, regularise=reg, min_area=5.0,
                       strip_rows=strip_rows)
            pred = read_vector(out)
            pred = pred[shapely.contains(extent, pred.geometry.centroid.to_numpy())]
            b = quality(pred, blocks)
            line(f"{name}{', regularised' if reg else ''}", quality(pred, ref),
                 f"| blocks F1 {b['f1']:.3f}, matched IoU {b['miou']:.3f}")


def accra(root: Path, tmp: Path) -> None:
    from rsgeo.footprints import footprints

    src = root / "opencities-accra" / "665946_tile_920_mask.tif"
    if not src.exists():
        print("Accra: not present, skipped")
        return
    s = footprints(src, tmp / "accra.gpkg", overwrite=True, min_area=1.0)
    print(f"Accra drone mask (EPSG:4326, {s['pixel_size_m'][0] * 100:.1f} cm px): "
          f"{s['features']} buildings, {s['building_area_m2']:.0f} m² geodesic, "
          f"{s['seconds']:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--gsd", type=float, default=0.5)
    ap.add_argument("--style", default="mid")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--strip-rows", type=int, default=1024)
    ap.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata")
    ap.add_argument("--workers", type=int, default=0, help="regularisation processes")
    ap.add_argument("--device", default="cpu", help="accepted; footprints need no device")
    args = ap.parse_args()
    print(uptime())
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        synthetic(args, tmp)
        if args.realdata.is_dir():
            delft(args.realdata, tmp, args.strip_rows)
            accra(args.realdata, tmp)
        else:
            print(f"real data: {args.realdata} not present, skipped")
    print(uptime())


if __name__ == "__main__":
    main()
