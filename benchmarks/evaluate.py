"""Benchmark height evaluation against rasterio reading the same pair, side by side.

Writes a SIZE² float32 prediction/reference pair (tiled 256, DEFLATE level 1, as GDAL
writes by default), then in fresh child processes, alternating:

- ``read``: plain rasterio reading both rasters in full-width 512-row strips, nothing
  else, with ``GDAL_NUM_THREADS=THREADS`` (and with 1 thread, for reference);
- ``evaluate``: ``rsgeo.evaluate.evaluate`` end to end (parallel strip reads + metrics).

- ``read`` again with ``GDAL_CACHEMAX=32`` (MB), the block cache rsgeo's streaming reads
  use (:mod:`rsgeo.io`), so the cache's share of the difference shows.

The three run ``--repeat`` times (default 3), alternating, so all see the same load. It
prints the median Mpx/s of each, the median of evaluate / read-with-all-threads over the
repeats (goal >= 0.9) with its range, and the median CPU-time ratio (read CPU / evaluate
CPU: the number to trust when other work shares the cores), then the metric accumulator
alone on in-memory data.

    python benchmarks/evaluate.py [--size 8192] [--threads 16] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
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


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def child(kind: str, pred: Path, ref: Path, threads: int) -> dict:
    if kind == "read32":  # before rasterio starts GDAL, as rsgeo.io does
        os.environ["GDAL_CACHEMAX"] = "32"
    c0, t0 = cpu(), time.perf_counter()
    if kind == "evaluate":
        from rsgeo.evaluate import evaluate

        os.environ["RSGEO_IO_THREADS"] = str(threads)
        s = evaluate(pred, ref)["summary"]
        extra = {"mae": s["mae"]}
    else:
        import rasterio
        from rasterio.windows import Window

        with rasterio.Env(GDAL_NUM_THREADS=str(threads)), rasterio.open(pred) as a, \
                rasterio.open(ref) as b:
            for r in range(0, a.height, 512):
                w = Window(0, r, a.width, min(512, a.height - r))
                a.read(1, window=w)
                b.read(1, window=w)
        extra = {}
    return {"seconds": time.perf_counter() - t0, "cpu": cpu() - c0, **extra}


def report(runs: list[dict], kinds, mpx: float, args) -> None:
    """Print medians over the alternating rounds ``runs`` ({(kind, threads): result})."""
    def rate(k):
        return float(np.median([mpx / r[k]["seconds"] for r in runs]))

    rd, ev, rd1, rd32 = kinds
    ratio = [r[rd]["seconds"] / r[ev]["seconds"] for r in runs]
    ratio32 = [r[rd32]["seconds"] / r[ev]["seconds"] for r in runs]
    cpu_ratio = float(np.median([r[rd]["cpu"] / r[ev]["cpu"] for r in runs]))
    cpu32 = float(np.median([r[rd32]["cpu"] / r[ev]["cpu"] for r in runs]))
    print(f"{args.size}² float32 DEFLATE pair: rasterio read-only {rate(rd):.1f} Mpx/s "
          f"({args.threads} threads), {rate(rd1):.1f} Mpx/s (1 thread), {rate(rd32):.1f} "
          f"Mpx/s ({args.threads} threads, GDAL_CACHEMAX=32); evaluate end to end "
          f"{rate(ev):.1f} Mpx/s = {np.median(ratio):.2f} of read-only (median of "
          f"{len(ratio)}, {min(ratio):.2f}-{max(ratio):.2f}; goal >= 0.9; CPU-time ratio "
          f"{cpu_ratio:.2f}), {np.median(ratio32):.2f} of read-only with the same cache "
          f"(CPU-time ratio {cpu32:.2f}); mae {runs[0][ev]['mae']:.3f}; {load()}", flush=True)


def spawn(kind, threads, pred, ref) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(pred), str(ref),
                          "--threads", str(threads)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds (medians)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, pred, ref = args.child
        print(json.dumps(child(kind, Path(pred), Path(ref), args.threads)))
        return
    from rsgeo.metrics.height import HeightAccumulator

    mpx = args.size ** 2 / 1e6
    print(f"{os.cpu_count()} CPUs, threads={args.threads}; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-eval-") as tmp:
        pred, ref = write_pair(Path(tmp), args.size)
        kinds = (("read", args.threads), ("evaluate", args.threads), ("read", 1),
                 ("read32", args.threads))
        runs = [{k: spawn(*k, pred, ref) for k in kinds}
                for _ in range(args.repeat)]
        report(runs, kinds, mpx, args)
    rng = np.random.default_rng(1)
    ref_a = np.where(rng.random((2048, 2048)) < 0.5, 0, 10).astype(np.float32)
    pred_a = ref_a + rng.normal(0, 1, ref_a.shape).astype(np.float32)
    acc = HeightAccumulator()
    t0, c0 = time.perf_counter(), time.thread_time()
    for _ in range(4):
        for r in range(0, 2048, 512):
            acc.update_window(pred_a[r:r + 512], ref_a[r:r + 512])
        acc.end_image()
    dt, dc = time.perf_counter() - t0, time.thread_time() - c0
    print(f"accumulator alone (one thread): {4 * 2048 * 2048 / 1e6 / dt:.1f} Mpx/s wall, "
          f"{4 * 2048 * 2048 / 1e6 / dc:.1f} Mpx/s of CPU time")


if __name__ == "__main__":
    main()
