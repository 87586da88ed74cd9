"""What storing nDSM chips as float16 (``prepare``'s default) costs in accuracy.

    .venv/bin/python benchmarks/height_dtype.py [NDSM.tif ...] [--scenes 3] [--size 512]

For each nDSM (the given rasters, else synthetic ``rsgeo synth`` scenes of the three styles)
prints the rounding of float16 against float32 (max and RMS error in cm, largest height),
then the height metrics (:mod:`rsgeo.metrics.height`: MAE, RMSE, delta1, F1^HE at
eta = 1.25) of a stand-in prediction scored against the float32 and against the float16
reference, and their difference. The stand-in is the reference blurred (sigma 2 px) plus
0.5 m of noise, a prediction with metre-level errors like a trained model's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from rsgeo.data.prepare import stored_heights
from rsgeo.metrics.height import HeightAccumulator

KEYS = ("mae", "rmse", "delta1", "f1he_1")


def read_heights(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        a = ds.read(1).astype(np.float32)
        if ds.nodata is not None and not np.isnan(ds.nodata):
            a[a == ds.nodata] = np.nan
    return a


def synthetic(scenes: int, size: int) -> list[tuple[str, np.ndarray]]:
    from rsgeo.synth.write import write_scenes

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for style in ("low", "mid", "high"):
            for p in write_scenes(Path(tmp) / style, size=size, style=style, scenes=scenes,
                                  footprints=False):
                out.append((f"synth {style} {p['pre_ndsm'].stem}", read_heights(p["pre_ndsm"])))
    return out


def stand_in(ref: np.ndarray, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(np.nan_to_num(ref), 2.0)
    return (x + rng.normal(0, 0.5, ref.shape)).astype(np.float32)


def scores(pred, ref) -> dict:
    acc = HeightAccumulator()
    acc.update(pred, ref, np.isfinite(ref))
    return {k: acc.result()[k] for k in KEYS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rasters", nargs="*", type=Path, help="nDSM GeoTIFFs (metres)")
    ap.add_argument("--scenes", type=int, default=2, help="synthetic scenes per style")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    items = [(p.name, read_heights(p)) for p in args.rasters] or synthetic(args.scenes, args.size)
    print(f"{'nDSM':36s} {'max m':>7s} {'max err cm':>10s} {'rms err cm':>10s}   "
          + "   ".join(f"{k} f32 / f16" for k in KEYS))
    worst = {k: 0.0 for k in KEYS}
    for name, ref in items:
        half = stored_heights(ref, "float16").astype(np.float32)
        ok = np.isfinite(ref)
        err = np.abs(half - ref)[ok]
        pred = stand_in(ref)
        a, b = scores(pred, ref), scores(pred, half)
        for k in KEYS:
            worst[k] = max(worst[k], abs(a[k] - b[k]))
        cells = "   ".join(f"{a[k]:.4f} / {b[k]:.4f}" for k in KEYS)
        print(f"{name[:36]:36s} {np.nanmax(ref):7.1f} {100 * err.max():10.2f} "
              f"{100 * np.sqrt((err ** 2).mean()):10.3f}   {cells}")
    print("largest metric change f32 -> f16: "
          + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
