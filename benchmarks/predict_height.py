"""Benchmark predict-height: end-to-end vs the bare model, memory vs raster size, fp32 vs bf16.

1. Throughput: a SIZE² RGB GeoTIFF through ``predict_height_file`` (ONNX Runtime, CPU)
   versus the bare model on exactly the same tiles (same batches, no I/O, no blending).
   Goal: end-to-end / bare >= 0.90.
2. Peak RSS of the whole predict step for two raster sizes, each in a fresh process.
   Goal: large / small <= 1.25 (memory grows with width, not area).
3. torch backend fp32 vs bf16 autocast on this CPU.

    python benchmarks/predict_height.py [--size 2048] [--rss-sizes 2048 8192] [--backbone vit-tiny-4]
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


def make_model(d: Path, backbone: str, tile: int) -> tuple[Path, Path]:
    import torch

    from rsgeo.infer.export import export_onnx
    from rsgeo.models.task import build_task_model, save_task_model

    torch.manual_seed(0)
    cfg = {"task": "height", "backbone": backbone, "in_chans": 3, "img_size": tile,
           "head": "dpt", "head_features": 64}
    meta = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
            "std": [50.0] * 3, "gsd": 0.5, "tile": tile, "overlap": tile // 8, "units": "m",
            "nodata": -9999}
    ckpt = d / "model.ckpt"
    save_task_model(build_task_model(cfg), cfg, meta, ckpt)
    onnx = d / "model.onnx"
    export_onnx(ckpt, onnx)
    return ckpt, onnx


def bare_model_mpx(model_path: Path, image: Path, batch: int) -> float:
    """Mpx/s of the model alone on the tiles predict-height would read."""
    from rsgeo.infer.predict import load_model
    from rsgeo.io.pipeline import iter_batches
    from rsgeo.io.raster import open_raster
    from rsgeo.io.windows import TileGrid

    run, meta, _ = load_model(model_path)
    tile, overlap = int(meta["tile"]), int(meta["overlap"])
    with open_raster(image) as ds:
        tiles = TileGrid(ds.height, ds.width, tile, overlap)
        batches = [b.data for b in iter_batches(ds, tiles, batch, prefetch=False)]
        mpx = ds.width * ds.height / 1e6
    mean, std = np.float32(120), np.float32(50)
    t0 = time.perf_counter()
    for b in batches:
        run((b - mean) / std)
    return mpx / (time.perf_counter() - t0)


def child(model: str, image: str, out: str, batch: int, precision: str) -> None:
    from rsgeo.infer.predict import predict_height_file

    r = predict_height_file(image, model, out, batch_size=batch, precision=precision,
                            overwrite=True)
    r["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(r))


def peak_rss_mb() -> float:
    """This process's peak resident set (MB): ``VmHWM`` of /proc/self/status.

    Not ``getrusage(...).ru_maxrss``: Linux keeps that across ``execve``, so a child started
    by this (torch-importing, model-exporting) parent would report the parent's peak.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--rss-sizes", type=int, nargs=2, default=[2048, 8192])
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        m, img, out, batch, precision = args.child
        child(m, img, out, int(batch), precision)
        return
    with tempfile.TemporaryDirectory(prefix="rsgeo-bench-predict-") as tmp:
        d = Path(tmp)
        ckpt, onnx = make_model(d, args.backbone, args.tile)
        img = d / "img.tif"
        make_rgb(img, args.size)
        bare = bare_model_mpx(onnx, img, args.batch_size)
        r = run_child(onnx, img, d / "h.tif", args.batch_size, "fp32")
        print(f"{args.size}² RGB, {args.backbone} + DPT, tile {args.tile}, ONNX Runtime CPU: "
              f"end-to-end {r['mpx_per_s']:.2f} Mpx/s, bare model {bare:.2f} Mpx/s, "
              f"ratio {r['mpx_per_s'] / bare:.2f} (goal >= 0.90)")
        for prec in ("fp32", "bf16"):
            r = run_child(ckpt, img, d / f"t_{prec}.tif", args.batch_size, prec)
            print(f"torch backend {prec}: {r['mpx_per_s']:.2f} Mpx/s")
        rss = {}
        for size in args.rss_sizes:
            big = d / f"img_{size}.tif"
            make_rgb(big, size)
            r = run_child(onnx, big, d / f"h_{size}.tif", args.batch_size, "fp32")
            rss[size] = r["peak_rss_mb"]
            print(f"{size}²: {r['mpx_per_s']:.2f} Mpx/s, peak RSS {rss[size]:.0f} MB")
            big.unlink()
        a, b = args.rss_sizes
        print(f"peak RSS {b}² / {a}² = {rss[b] / rss[a]:.2f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
