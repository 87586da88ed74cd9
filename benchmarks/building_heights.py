"""Benchmark ``building_heights`` on a large generated nDSM with many buildings.

Generates a SIZE² nDSM (default 10000², about 20,000 flat-roofed buildings; the generator of
``benchmarks/damage_map.py``) and its footprints, then times ``rsgeo building-heights``'s
library call (read the raster in strips, rasterise the footprints per strip, exact
per-building percentiles, write the GeoPackage) in a fresh process, with its peak RSS, and
checks the answer: every building measured, its 95th percentile and median equal to its
roof height.

    python benchmarks/building_heights.py [--size 10000] [--spacing 70] [--strip-rows 1024]
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

from common import peak_rss_mb


def child(d: Path, strip_rows: int) -> None:
    from rsgeo.footprints.heights import building_heights

    t0 = time.perf_counter()
    s = building_heights(d / "pre.tif", d / "footprints.gpkg", d / "heights.gpkg",
                         strip_rows=strip_rows, overwrite=True)
    s["wall"] = time.perf_counter() - t0
    s["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(s))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10000)
    ap.add_argument("--spacing", type=int, default=70)
    ap.add_argument("--strip-rows", type=int, default=1024)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(Path(args.child), args.strip_rows)
        return
    import geopandas as gpd
    from damage_map import generate

    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-heights-") as tmp:
        d = Path(tmp)
        n, _ = generate(d, args.size, args.spacing)
        print(f"{args.size}² nDSM, {n} buildings; load "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()), flush=True)
        out = subprocess.run([sys.executable, __file__, "--child", str(d), "--strip-rows",
                              str(args.strip_rows)], check=True, capture_output=True, text=True)
        s = json.loads(out.stdout.strip().splitlines()[-1])
        g = gpd.read_file(d / "heights.gpkg")
        exact = bool((g["height_m"] == g["height_median_m"]).all() and s["measured"] == n)
        mpx = args.size ** 2 / 1e6
        print(f"building-heights: {s['wall']:.2f} s ({mpx / s['wall']:.0f} Mpx/s, "
              f"{n / s['wall']:.0f} buildings/s), peak RSS {s['peak_rss_mb']:.0f} MB; "
              f"{s['measured']} of {n} measured, flat roofs exact: {exact}; load "
              + " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
