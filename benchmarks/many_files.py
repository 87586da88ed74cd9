"""Benchmark the per-file cost of predict-height over a folder of many small rasters.

A user with 5,000 city tiles runs one ``rsgeo predict-height FOLDER -o OUT``: one model load
and one pipeline for every file. With a fast model (a GPU) what each file costs besides the
model -- opening and checking it, creating and publishing its output, thread and GDAL/PROJ
set-up -- decides the throughput. This runs ``predict_height_files`` (the command's library
path) over ``--files`` uint8 RGB GeoTIFFs of ``--size``² with a near-free model (heights =
band 1 x 0.05 m, normalised on the host as ONNX Runtime's CPU path does), twice, and prints
the wall time per file and the throughput, with the ``uptime`` load.

    python benchmarks/many_files.py                        # 1,000 x 64² and 30 x 1024²
    python benchmarks/many_files.py --files 100 --size 1024
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def make_tiles(folder: Path, n: int, size: int) -> list[Path]:
    """``n`` uint8 RGB GeoTIFFs of ``size``² (tiled when large enough), side by side."""
    import rasterio
    from affine import Affine

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = (120 + 60 * np.sin(yy / 37.0) * np.cos(xx / 53.0)).astype(np.uint8)
    paths = []
    for k in range(n):
        p = folder / f"t{k:05d}.tif"
        tiled = dict(tiled=True, blockxsize=256, blockysize=256) if size >= 256 else {}
        with rasterio.open(p, "w", driver="GTiff", width=size, height=size, count=3,
                           dtype="uint8", crs="EPSG:32631", compress="deflate",
                           transform=Affine(0.5, 0, 5e5 + size * 0.5 * (k % 50), 0, -0.5,
                                            5e6 - size * 0.5 * (k // 50)), **tiled) as ds:
            img = base[None] + rng.integers(0, 8, (3, size, size), dtype=np.uint8)
            ds.write(img)
        paths.append(p)
    return paths


def run(paths: list[Path], out: Path) -> dict:
    from rsgeo.infer.predict import predict_height_files
    from rsgeo.infer.session import HostRunner

    runner = HostRunner(lambda x: x[:, :1] * np.float32(0.05))
    meta = {"task": "height", "tile": 256, "overlap": 32, "mean": [0.0] * 3,
            "std": [1.0] * 3, "stride": 16}
    outs = [out / f"{p.stem}_height.tif" for p in paths]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    predict_height_files(paths, "identity", outs, runner=(runner, meta, {"in_chans": 3}),
                         batch_size=16, overwrite=True, gsd="native")
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"seconds": dt, "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="*", default=[1000, 30])
    ap.add_argument("--size", type=int, nargs="*", default=[64, 1024])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if len(args.files) != len(args.size):
        ap.error("give one --size per --files")
    print(f"# {os.cpu_count()} CPUs, load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-many-") as tmp:
        for n, size in zip(args.files, args.size):
            paths = make_tiles(Path(tmp) / f"in{size}", n, size)
            for _ in range(args.repeat):
                r = run(paths, Path(tmp) / f"out{size}")
                mpx = n * size * size / 1e6
                print(f"{n} x {size}²: {r['seconds']:.2f} s, {1000 * r['seconds'] / n:.1f} ms "
                      f"per file, {mpx / r['seconds']:.1f} Mpx/s, CPU {r['cpu']:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
