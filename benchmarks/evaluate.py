"""Benchmark height metrics: a SIZE² float32 prediction/reference pair through ``evaluate``
(strip-wise reads + the streaming accumulator), and the accumulator alone on in-memory data.

    python benchmarks/evaluate.py [--size 8192]

Goal (2 CPU cores): >= 50 Mpx/s for height metrics.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_pair(d: Path, size: int) -> tuple[Path, Path]:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    prof = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32",
                crs="EPSG:32631", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5e6), tiled=True,
                compress="deflate", zlevel=1, nodata=-9999, bigtiff="IF_SAFER",
                num_threads="ALL_CPUS")
    rng = np.random.default_rng(0)
    paths = d / "pred.tif", d / "ref.tif"
    with rasterio.open(paths[0], "w", **prof) as p, rasterio.open(paths[1], "w", **prof) as r:
        xx = np.arange(size)
        for top in range(0, size, 1024):
            h = min(1024, size - top)
            yy = np.arange(top, top + h)[:, None]
            ref = (((yy // 30 + xx // 30) % 3 == 0) * 12.0).astype(np.float32)
            pred = np.clip(ref + rng.normal(0, 1, (h, size)).astype(np.float32), 0, None)
            r.write(ref[None], window=Window(0, top, size, h))
            p.write(pred[None], window=Window(0, top, size, h))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8192)
    args = ap.parse_args()
    from rsgeo.evaluate import evaluate
    from rsgeo.metrics.height import HeightAccumulator

    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-eval-") as tmp:
        pred, ref = write_pair(Path(tmp), args.size)
        mpx = args.size ** 2 / 1e6
        t0 = time.perf_counter()
        s = evaluate(pred, ref)["summary"]
        dt = time.perf_counter() - t0
        print(f"evaluate {args.size}² height pair (read + metrics): {dt:.2f} s = {mpx / dt:.1f} Mpx/s "
              f"(f1he_1 {s['f1he_1']:.3f}, mae {s['mae']:.3f})")
    rng = np.random.default_rng(1)
    ref = np.where(rng.random((2048, 2048)) < 0.5, 0, 10).astype(np.float32)
    pred = ref + rng.normal(0, 1, ref.shape).astype(np.float32)
    acc = HeightAccumulator()
    t0 = time.perf_counter()
    for _ in range(4):
        for r in range(0, 2048, 512):
            acc.update_window(pred[r:r + 512], ref[r:r + 512])
        acc.end_image()
    dt = time.perf_counter() - t0
    print(f"accumulator alone: {4 * 2048 * 2048 / 1e6 / dt:.1f} Mpx/s")


if __name__ == "__main__":
    main()
