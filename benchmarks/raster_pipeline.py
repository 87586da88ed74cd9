"""Benchmark the streaming raster engine against the I/O ceiling measured in the same run.

For each height codec (DEFLATE, ZSTD, LERC_ZSTD) and each kind of content (``noisy``:
uint8 RGB with per-pixel noise, so the heights are noisy floats; ``smooth``: the same scene
without noise), two child processes run side by side on the same SIZE² uint8 RGB GeoTIFF:

- ``pipeline``: ``rsgeo.io.pipeline.run_tiled`` with an identity model (heights = band 1
  x 0.05 m as float32; tiles delivered as uint8, ``dtype=None``), tile 512, overlap 64,
  blended and written as float32 heights with the codec;
- ``ceiling``: plain rasterio, no model and no blending: decode the input in full-width
  strips (``GDAL_NUM_THREADS``, one strip read ahead in a thread) and encode the same
  heights (the pipeline's output, memory-mapped from a raw .npy: the very same numbers,
  blending rounding included) with the same codec and ``NUM_THREADS``.

Each configuration runs ``--repeat`` times (default 3), pipeline and ceiling alternating,
so both see the same load; it prints the median Mpx/s of both, the median of the per-pair
ratios (goal >= 0.8) with their range, and the median ratio of their CPU times (ceiling /
pipeline: what the ratio would be on idle cores when both are CPU-bound, the number to
trust when other work shares the machine), the output size, then the peak RSS of the
pipeline at two sizes (goal: largest / smallest <= 1.25). Every run is a fresh process
(its own peak RSS); ``uptime`` load is printed next to the numbers.

    python benchmarks/raster_pipeline.py                       # 8192², 3 codecs x 2 contents
    python benchmarks/raster_pipeline.py --threads 16 --size 16384 --rss-sizes 4096 16384
    python benchmarks/raster_pipeline.py --codecs zstd --content noisy --skip-rss
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from common import peak_rss_mb

SCALE = np.float32(0.05)  # identity "model": metres per input grey level


def make_rgb(path: Path, size: int, noisy: bool = True) -> None:
    """A SIZE² uint8 RGB GeoTIFF (tiled 256, DEFLATE), written in strips."""
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
            img = np.broadcast_to(base, (3, h, size))
            if noisy:
                img = img + rng.integers(0, 24, (3, h, size), dtype=np.uint8)
            dst.write(img.astype(np.uint8), window=Window(0, r, size, h))


def _profile(ds, codec: str, threads: int) -> dict:
    from rsgeo.io.raster import Grid
    from rsgeo.io.writer import HEIGHT_NODATA, gtiff_profile, height_co

    co = height_co(codec, None, {"NUM_THREADS": str(threads)})
    return gtiff_profile(Grid.of(ds), 1, "float32", HEIGHT_NODATA, co)


def run_pipeline(src: Path, dst: Path, codec: str, threads: int, tile: int, overlap: int,
                 batch: int) -> dict:
    import rasterio

    from rsgeo.io.pipeline import run_tiled
    from rsgeo.io.raster import open_raster

    def model(x: np.ndarray) -> np.ndarray:  # uint8 in, float32 heights out, one pass
        return np.multiply(x[:, :1], SCALE, dtype=np.float32)

    t0 = time.perf_counter()
    with open_raster(src) as ds, rasterio.open(dst, "w", **_profile(ds, codec, threads)) as out:
        tiles = run_tiled(ds, out, model, tile=tile, overlap=overlap, batch_size=batch,
                          dtype=None, threads=threads)
        mpx = ds.width * ds.height / 1e6
    return {"seconds": time.perf_counter() - t0, "mpx": mpx, "tiles": len(tiles)}


def run_ceiling(src: Path, dst: Path, codec: str, threads: int, heights: Path) -> dict:
    """Decode + encode only: full-width strips, one read ahead, GDAL threads both ways.

    The encoded values are the pipeline's own output (``heights``, a raw .npy read through
    a memory map), so both runs compress exactly the same numbers.
    """
    import rasterio
    from rasterio.windows import Window

    out_h = np.load(heights, mmap_mode="r")
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_NUM_THREADS=str(threads)), rasterio.open(src) as ds, \
            rasterio.open(dst, "w", **_profile(ds, codec, threads)) as out:
        H, W = ds.height, ds.width
        wins = [Window(0, r, W, min(256, H - r)) for r in range(0, H, 256)]
        box: dict = {}

        def read(i):
            box[i] = ds.read(window=wins[i])

        th = threading.Thread(target=read, args=(0,))
        th.start()
        for i, w in enumerate(wins):
            th.join()
            data = box.pop(i)
            if i + 1 < len(wins):
                th = threading.Thread(target=read, args=(i + 1,))
                th.start()
            del data  # decoded, as the pipeline must; the values written are its output
            r0 = int(w.row_off)
            out.write(np.ascontiguousarray(out_h[r0:r0 + int(w.height)])[None], window=w)
        mpx = H * W / 1e6
    return {"seconds": time.perf_counter() - t0, "mpx": mpx}


def child(args) -> None:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    args.cpu0 = ru.ru_utime + ru.ru_stime  # imports excluded
    kind, src, dst = args.child
    src, dst = Path(src), Path(dst)
    if kind == "pipeline":
        r = run_pipeline(src, dst, args.codec, args.threads, args.tile, args.overlap,
                         args.batch_size)
    else:
        r = run_ceiling(src, dst, args.codec, args.threads, Path(args.heights))
    r["mpx_per_s"] = r["mpx"] / r["seconds"]
    ru = resource.getrusage(resource.RUSAGE_SELF)
    r["peak_rss_mb"] = peak_rss_mb()  # before the .npy copy below
    r["cpu_seconds"] = ru.ru_utime + ru.ru_stime - args.cpu0
    r["bytes"] = dst.stat().st_size
    if kind == "pipeline" and args.heights:  # keep the output for the ceiling run
        import rasterio

        with rasterio.open(dst) as ds:
            np.save(args.heights, ds.read(1))
    dst.unlink()
    print(json.dumps(r))


def spawn(kind: str, src: Path, dst: Path, codec: str, args, heights: Path | None = None
          ) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, str(src), str(dst), "--codec", codec,
           *(["--heights", str(heights)] if heights else []),
           "--threads", str(args.threads), "--tile", str(args.tile),
           "--overlap", str(args.overlap), "--batch-size", str(args.batch_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def compare(src: Path, tmp: Path, content: str, codec: str, mpx: float, args) -> dict:
    """``--repeat`` pipeline/ceiling pairs, alternating; prints and returns the medians."""
    heights = tmp / "heights.npy"
    runs = []
    for i in range(args.repeat):  # the first pipeline run keeps its output for the ceiling
        p = spawn("pipeline", src, tmp / "pipeline.tif", codec, args, heights if i == 0 else None)
        c = spawn("ceiling", src, tmp / "ceiling.tif", codec, args, heights)
        runs.append((p, c))
    heights.unlink()
    ratios = [c["seconds"] / p["seconds"] for p, c in runs]
    cpu = float(np.median([c["cpu_seconds"] / p["cpu_seconds"] for p, c in runs]))
    p_rate = float(np.median([p["mpx_per_s"] for p, _ in runs]))
    c_rate = float(np.median([c["mpx_per_s"] for _, c in runs]))
    p, c = runs[0]
    med = float(np.median(ratios))
    print(f"{args.size}² {content:6s} {codec:9s}: ceiling {c_rate:6.1f} Mpx/s, pipeline "
          f"{p_rate:6.1f} Mpx/s, ratio {med:.2f} (median of {len(ratios)}, "
          f"{min(ratios):.2f}-{max(ratios):.2f}; CPU time ratio {cpu:.2f}); output "
          f"{p['bytes'] / mpx / 1e6 * 8:.2f} bit/px ({p['bytes'] / 2 ** 20:.0f} MB, "
          f"ceiling's {c['bytes'] / 2 ** 20:.0f} MB); {load()}", flush=True)
    return {"ratio": med, "cpu_ratio": cpu, "pipeline": p_rate, "ceiling": c_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="pipeline vs ceiling size (px)")
    ap.add_argument("--codecs", nargs="+", default=["deflate", "zstd", "lerc_zstd"])
    ap.add_argument("--content", nargs="+", default=["noisy", "smooth"])
    ap.add_argument("--rss-sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="reader threads and GDAL compression/decoding threads")
    ap.add_argument("--repeat", type=int, default=3,
                    help="pipeline/ceiling pairs per configuration (median reported)")
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--overlap", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--codec", default="zstd", help=argparse.SUPPRESS)
    ap.add_argument("--heights", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "SRC", "DST"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    from rsgeo.io.writer import HEIGHT_CODEC

    print(f"{os.cpu_count()} CPUs, threads={args.threads}, tile {args.tile} overlap "
          f"{args.overlap}, default codec {HEIGHT_CODEC}; {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-") as tmp:
        tmp = Path(tmp)
        mpx = args.size ** 2 / 1e6
        for content in args.content:
            src = tmp / f"rgb_{content}.tif"
            make_rgb(src, args.size, content == "noisy")
            for codec in args.codecs:
                compare(src, tmp, content, codec, mpx, args)
            src.unlink()
        if args.skip_rss:
            return
        rss = {}
        for size in args.rss_sizes:
            src = tmp / f"rgb_{size}.tif"
            make_rgb(src, size, True)
            r = spawn("pipeline", src, tmp / "out.tif", HEIGHT_CODEC, args)
            rss[size] = r["peak_rss_mb"]
            print(f"{size}² noisy {HEIGHT_CODEC}: {r['mpx_per_s']:.1f} Mpx/s, peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB; {load()}", flush=True)
            src.unlink()
        if len(rss) > 1:
            lo, hi = min(rss), max(rss)
            print(f"peak RSS {hi}² / {lo}² = {rss[hi] / rss[lo]:.2f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
