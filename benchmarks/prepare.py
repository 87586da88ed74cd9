"""Benchmark ``prepare``: chips/s and peak RSS on generated RGB + DSM pairs of two sizes.

Each size runs in a fresh process so its peak RSS is its own (goal: RSS must not grow
with raster size; chips are read window by window).

    python benchmarks/prepare.py [--sizes 4096 8192] [--size 224] [--workers 2]
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

sys.path.insert(0, str(Path(__file__).parent))
from raster_pipeline import make_rgb  # noqa: E402


def make_dsm(path: Path, size: int) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    prof = dict(driver="GTiff", width=size, height=size, count=1, dtype="float32",
                crs="EPSG:32631", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5e6), tiled=True,
                compress="deflate", zlevel=1, nodata=-9999, bigtiff="IF_SAFER")
    xx = np.arange(size, dtype=np.float32)
    with rasterio.open(path, "w", **prof) as dst:
        for r in range(0, size, 1024):
            h = min(1024, size - r)
            yy = np.arange(r, r + h, dtype=np.float32)[:, None]
            blocks = ((yy // 40 + xx // 40) % 3 == 0) * 9.0
            dst.write((50 + 0.001 * yy + blocks).astype(np.float32)[None], window=Window(0, r, size, h))


def child(rgb: str, dsm: str, out: str, size: int, workers: int) -> None:
    from rsgeo.data.prepare import prepare
    from rsgeo.data.sources import SceneInput

    t0 = time.perf_counter()
    s = prepare([SceneInput(rgb=Path(rgb), dsm=Path(dsm), source="bench")], out, size=size,
                workers=workers)
    dt = time.perf_counter() - t0
    n = sum(v for v in s["bench"].values() if type(v) is int) - s["bench"]["scenes"]  # statuses
    print(json.dumps({"chips": n, "kept": s["bench"].get("kept", 0), "seconds": dt,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        a, b, c, s, w = args.child
        child(a, b, c, int(s), int(w))
        return
    rss = {}
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-prepare-") as tmp:
        for size in args.sizes:
            d = Path(tmp) / str(size)
            d.mkdir()
            make_rgb(d / "rgb.tif", size)
            make_dsm(d / "dsm.tif", size)
            out = subprocess.run([sys.executable, __file__, "--child", str(d / "rgb.tif"),
                                  str(d / "dsm.tif"), str(d / "ds"), str(args.size),
                                  str(args.workers)], capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rss[size] = r["peak_rss_mb"]
            print(f"{size}² RGB + DSM -> {r['chips']} chips of {args.size} px ({r['kept']} kept) "
                  f"in {r['seconds']:.1f} s = {r['chips'] / r['seconds']:.0f} chips/s, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (workers {args.workers})", flush=True)
    if len(rss) > 1:
        a, b = min(rss), max(rss)
        print(f"peak RSS {b}² / {a}² = {rss[b] / rss[a]:.2f} (should stay ~1: memory independent of size)")


if __name__ == "__main__":
    main()
