"""Height models on *real* rasters: IGN Montpellier, Zurich and a LiDAR HD village.

:func:`score_real` runs a height model as ``rsgeo predict-height IMAGE -m MODEL`` does
(:func:`rsgeo.infer.predict.predict_height_file`: the streaming pipeline, the model's own
input normalisation, and ``gsd="auto"``: an input whose GSD is more than 5 % off the
model's training GSD is resampled to it and the heights resampled back onto the input
grid, e.g. Montpellier's 0.2 m ortho for a model trained at 0.5 m), then scores the
heights against the site's LiDAR nDSM with :func:`rsgeo.evaluate.evaluate` (rsgeo
protocol: on the reference's grid, the prediction resampled onto it bilinearly, nodata of
either raster excluded). Each site is also scored on its LiDAR building pixels only
(``*_bldg`` keys: the reference with every non-building pixel set to nodata).

| site | image | reference (0.5 m) |
|---|---|---|
| ``montpellier`` | IGN BD ORTHO RGB, 0.2 m, 50 m x 50 m | IGN's own nDSM (DHM) |
| ``zurich`` | RGB ortho 0.5 m, lake shore | nDSM from LiDAR (lake = nodata) |
| ``village`` | RGB from coloured LiDAR points, 0.5 m | nDSM from the same LiDAR |

As a script it prints one row per site (F1^HE at delta < 1.25, MAE, RMSE, delta1, the
building-pixel F1^HE and MAE, the height scale: the median of predicted / LiDAR height over
the building pixels above 2 m, whether the input was resampled) and the machine's load, and
the same rows for constant "models" that see no image (``--constant``, default 0 and 7 m):
on Montpellier's 50 m tile, where 57 % of the pixels stand above 1 m and most of them near
the 6-7 m roofs, 7 m everywhere already scores F1^HE 0.46, so read F1^HE beside MAE / RMSE
and these baselines. Without the real-data folder (``--realdata``, default ``../shared/realdata`` beside
the project) it says so and exits 0.

    python benchmarks/real_heights.py MODEL [MODEL ...] [--realdata DIR] [--device cpu|cuda]
        [--json]

Several MODELs are scored as one ensemble (``predict-height -m A -m B``: heights averaged).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from rsgeo.evaluate import evaluate  # noqa: E402
from rsgeo.infer.predict import predict_height_file  # noqa: E402

DEFAULT_REALDATA = ROOT.parent / "shared" / "realdata"
# site -> (RGB image, nDSM reference, LiDAR building mask), relative to the real-data folder
SITES = {
    "montpellier": ("montpellier-ign/ortho_rgb_0p2m_770550_6277600.tif",
                    "montpellier-ign/ign_dhm_ndsm_0p5m_770550_6277600.tif",
                    "montpellier-ign/derived_from_lidar/buildingmask_lidar_0p5m_770550_6277600.tif"),
    "zurich": ("zurich-detectree/ortho_rgb_0p5m.tif",
               "zurich-detectree/derived_from_lidar/zh_ndsm.tif",
               "zurich-detectree/derived_from_lidar/zh_buildingmask_lidar.tif"),
    "village": ("lidarhd-colorized-village/derived_from_lidar/vil_rgb_from_point_colors_0p5m.tif",
                "lidarhd-colorized-village/derived_from_lidar/vil_ndsm.tif",
                "lidarhd-colorized-village/derived_from_lidar/vil_buildingmask_lidar.tif"),
}
KEYS = ("f1he_1", "precision_1", "recall_1", "mae", "rmse", "delta1")


def available_sites(realdata_dir) -> list[str]:
    """The sites whose three files are all under ``realdata_dir`` (empty when it is absent)."""
    root = Path(realdata_dir)
    return [s for s, files in SITES.items() if all((root / f).is_file() for f in files)]


def building_reference(ref: Path, mask: Path, out: Path) -> Path:
    """``ref`` with every pixel outside ``mask`` (value 1) set to ``ref``'s nodata, as a new
    GeoTIFF ``out`` on the same grid (float32, metres); both rasters share one grid."""
    import rasterio  # lazy: heavy third-party

    with rasterio.open(ref) as r, rasterio.open(mask) as m:
        if (r.width, r.height, r.transform) != (m.width, m.height, m.transform):
            raise ValueError(f"{mask} is not on the grid of {ref}")
        nodata = r.nodata if r.nodata is not None else -9999.0
        h = r.read(1).astype(np.float32)
        h[m.read(1) != 1] = nodata
        profile = dict(r.profile, dtype="float32", nodata=nodata, count=1)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(h, 1)
    return out


def height_scale(pred: Path, ref_buildings: Path, above: float = 2.0) -> float:
    """Median of predicted / reference height over the reference's pixels above ``above``
    metres (``ref_buildings``: building pixels only), the prediction resampled bilinearly
    onto the reference's grid: 1.0 for a model whose building heights are right on the
    whole, 0.5 when it halves them (NaN without such pixels)."""
    from rsgeo.io.raster import Grid, align_to, open_raster  # lazy: heavy (rasterio)

    with open_raster(ref_buildings) as r, open_raster(pred) as p, \
            align_to(p, Grid.of(r), "bilinear", nodata=-9999.0) as v:
        g, h = r.read(1).astype(np.float64), v.read(1).astype(np.float64)
        ok = (g > above) & (h != -9999.0) & np.isfinite(h)
        if r.nodata is not None:
            ok &= g != r.nodata
    return float(np.median(h[ok] / g[ok])) if ok.any() else float("nan")


def score_site(model_path, image: Path, ref: Path, mask: Path, work: Path,
               device: str = "cpu", **predict_kwargs) -> dict:
    """Predict heights on ``image`` with ``model_path`` and score them against ``ref``
    (all pixels) and against its building pixels (keys ``*_bldg``); see the module doc."""
    work.mkdir(parents=True, exist_ok=True)
    pred = work / "height.tif"
    t0 = time.perf_counter()
    info = predict_height_file(image, model_path, pred, device=device, overwrite=True,
                               **predict_kwargs)
    seconds = time.perf_counter() - t0
    whole = evaluate(pred, ref, task="height", align="bilinear")["summary"]
    bref = building_reference(ref, mask, work / "ref_buildings.tif")
    bldg = evaluate(pred, bref, task="height", align="bilinear")["summary"]
    out = {k: float(whole[k]) for k in KEYS}
    out.update({f"{k}_bldg": float(bldg[k]) for k in ("f1he_1", "mae", "rmse")})
    out["scale_bldg"] = height_scale(pred, bref)
    out.update(n_pixels=int(whole["n_pixels"]), n_bldg=int(bldg["n_pixels"]),
               resampled=bool(info.get("resampled", False)), predict_s=round(seconds, 2),
               height_median=info.get("height_median"), height_max=info.get("height_max"))
    return out


def score_real(model_path, realdata_dir=DEFAULT_REALDATA, device: str = "cpu",
               sites=None, **predict_kwargs) -> dict[str, dict]:
    """Score a height model on every available real site.

    Args:
        model_path: a height task checkpoint (.ckpt) or ONNX export; a list of them: their
            ensemble (heights averaged, as ``predict-height -m A -m B``).
        realdata_dir: the real-data folder; absent or missing files: those sites are skipped.
        device: where the model runs (``cpu``, ``cuda``, ``auto``).
        sites: names from :data:`SITES` (default: all available).
        predict_kwargs: passed to :func:`rsgeo.infer.predict.predict_height_file`
            (``gsd``, ``tile``, ``overlap``, ``batch_size``, ``scale``, ...).

    Returns:
        ``{site: {f1he_1, precision_1, recall_1, mae, rmse, delta1, f1he_1_bldg, mae_bldg,
        rmse_bldg, scale_bldg, n_pixels, n_bldg, resampled, predict_s, height_median,
        height_max}}``
        (heights in metres, shares in [0, 1]).
    """
    root = Path(realdata_dir)
    names = [s for s in (sites or SITES) if s in available_sites(root)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="rsgeo-real-") as tmp:
        for site in names:
            image, ref, mask = (root / f for f in SITES[site])
            results[site] = score_site(model_path, image, ref, mask, Path(tmp) / site,
                                       device=device, **predict_kwargs)
    return results


def constant_scores(value: float, realdata_dir=DEFAULT_REALDATA, sites=None) -> dict[str, dict]:
    """The scores of a model that predicts ``value`` metres everywhere (a baseline that sees
    no image): a constant raster on each site's reference grid, scored as :func:`score_site`
    scores (keys as :func:`score_real`, without the prediction's own fields)."""
    import rasterio  # lazy: heavy third-party

    root = Path(realdata_dir)
    results = {}
    with tempfile.TemporaryDirectory(prefix="rsgeo-real-") as tmp:
        for site in [s for s in (sites or SITES) if s in available_sites(root)]:
            _, ref, mask = (root / f for f in SITES[site])
            pred = Path(tmp) / f"{site}_constant.tif"
            with rasterio.open(ref) as r:
                profile = dict(r.profile, dtype="float32", nodata=-9999.0, count=1)
                shape = (r.height, r.width)
            with rasterio.open(pred, "w", **profile) as dst:
                dst.write(np.full(shape, value, np.float32), 1)
            whole = evaluate(pred, ref, task="height", absolute=True)["summary"]
            bref = building_reference(ref, mask, Path(tmp) / f"{site}_ref_buildings.tif")
            bldg = evaluate(pred, bref, task="height", absolute=True)["summary"]
            results[site] = {**{k: float(whole[k]) for k in KEYS},
                             **{f"{k}_bldg": float(bldg[k]) for k in ("f1he_1", "mae", "rmse")},
                             "n_pixels": int(whole["n_pixels"]), "n_bldg": int(bldg["n_pixels"]),
                             "resampled": False}
    return results


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def table(results: dict[str, dict]) -> str:
    """The per-site results as a fixed-width text table."""
    lines = [f"{'site':<13}{'F1^HE':>7}{'prec':>7}{'rec':>7}{'MAE m':>7}{'RMSE m':>8}"
             f"{'delta1':>8}{'F1 bldg':>9}{'MAE bldg':>9}{'scale':>7}{'resampled':>10}"]
    for site, r in results.items():
        lines.append(f"{site:<13}{r['f1he_1']:>7.3f}{r['precision_1']:>7.3f}{r['recall_1']:>7.3f}"
                     f"{r['mae']:>7.2f}{r['rmse']:>8.2f}{r['delta1']:>8.3f}"
                     f"{r['f1he_1_bldg']:>9.3f}{r['mae_bldg']:>9.2f}"
                     f"{r.get('scale_bldg', float('nan')):>7.2f}{str(r['resampled']):>10}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, nargs="+",
                    help="height model (.ckpt or .onnx); several: their ensemble")
    ap.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gsd", default="auto", help="auto, native or metres per pixel")
    ap.add_argument("--tile", type=int, help="tile px (default: the model's recommendation)")
    ap.add_argument("--overlap", type=int, help="tile overlap px (default: the model's)")
    ap.add_argument("--constant", type=float, nargs="*", default=[0.0, 7.0],
                    help="also score models that predict these heights (m) everywhere")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args(argv)
    if not available_sites(args.realdata):
        print(f"no real-data sites under {args.realdata}: nothing to score")
        return 0
    print(f"before: {uptime()}")
    results = score_real(args.model, args.realdata, device=args.device, gsd=args.gsd,
                         tile=args.tile, overlap=args.overlap)
    print(f"height model {' + '.join(map(str, args.model))} on real rasters (F1^HE at delta < 1.25, rsgeo protocol)")
    print(table(results))
    for value in args.constant:
        print(f"baseline: {value:g} m everywhere (no image)")
        print(table(constant_scores(value, args.realdata)))
    print(f"after: {uptime()}")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
