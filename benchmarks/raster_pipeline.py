"""Benchmark the streaming raster core: read -> identity "model" -> blended write.

Generates a large RGB GeoTIFF (in strips, so generation itself stays small), then pushes it
through ``rsgeo.io.pipeline.run_tiled`` with a model that returns the band mean, and prints
throughput (Mpx/s of input raster) and the pipeline's peak RSS. Each size runs in a fresh
child process so its peak RSS is its own.

    python benchmarks/raster_pipeline.py                 # 4096² and 8192²
    python benchmarks/raster_pipeline.py --sizes 4096 16384
    python benchmarks/raster_pipeline.py --tile 512 --overlap 64 --batch-size 8

Goals (2 CPU cores): >= 20 Mpx/s; peak RSS at 16384² within 1.25x of 4096².
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_rgb(path: Path, size: int) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                   crs="EPSG:32631", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5e6), tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", zlevel=1,
                   num_threads="ALL_CPUS", bigtiff="IF_SAFER")
    rng = np.random.default_rng(0)
    xx = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            yy = np.arange(r, r + h, dtype=np.float32)[:, None]
            base = 120 + 60 * np.sin(yy / 97.0) * np.cos(xx / 131.0)
            noise = rng.integers(0, 24, (3, h, size), dtype=np.uint8)
            dst.write((base[None] + noise).astype(np.uint8), window=Window(0, r, size, h))


def run_once(src: Path, dst: Path, tile: int, overlap: int, batch: int) -> dict:
    from rsgeo.io.pipeline import run_tiled
    from rsgeo.io.raster import Grid, open_raster
    from rsgeo.io.writer import open_output

    def model(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=1, keepdims=True)

    t0 = time.perf_counter()
    with open_raster(src) as ds, open_output(dst, Grid.of(ds), overwrite=True) as out:
        tiles = run_tiled(ds, out, model, tile=tile, overlap=overlap, batch_size=batch)
        mpx = ds.width * ds.height / 1e6
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mpx": mpx, "seconds": dt, "mpx_per_s": mpx / dt, "tiles": len(tiles),
            "peak_rss_mb": rss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", nargs=2, metavar=("SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        res = run_once(Path(args.child[0]), Path(args.child[1]), args.tile, args.overlap,
                       args.batch_size)
        print(json.dumps(res))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-") as tmp:
        for size in args.sizes:
            src, dst = Path(tmp) / f"rgb_{size}.tif", Path(tmp) / f"out_{size}.tif"
            t0 = time.perf_counter()
            make_rgb(src, size)
            gen = time.perf_counter() - t0
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(src), str(dst), "--tile", str(args.tile),
                 "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)],
                check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results[size] = r
            print(f"{size}x{size} RGB -> float32 heights: {r['mpx']:.1f} Mpx in {r['seconds']:.2f} s"
                  f" = {r['mpx_per_s']:.1f} Mpx/s, {r['tiles']} tiles of {args.tile} px"
                  f" (overlap {args.overlap}), peak RSS {r['peak_rss_mb']:.0f} MB"
                  f" (input generated in {gen:.1f} s)", flush=True)
            src.unlink()
            dst.unlink()
    if len(results) > 1:
        small, large = min(results), max(results)
        ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
        print(f"peak RSS {large}² / {small}² = {ratio:.2f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
