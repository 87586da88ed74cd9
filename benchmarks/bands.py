"""Benchmark the band choice (``--bands``): what reading through the /vsimem VRT costs.

For a SIZE² uint8 image (DEFLATE, 256 blocks) in four layouts, reads every pixel in strips
with the engine's parallel reader (``rsgeo.io.reader.read_strips``, the path evaluate and
damage-map use; predict-height's tiles come from the same decoder), and optionally runs
``predict_height_files`` end to end with a small random height model:

- ``rgb``: a 3-band RGB file, read directly (the baseline);
- ``bgr``: the same pixels as BGR, read with ``--bands 3,2,1`` (plain VRT sources);
- ``rgba``: RGBA, alpha as valid mask (VRT sources honouring the mask, UInt16 output);
- ``pan``: 1 band replicated to three.

    python benchmarks/bands.py [--size 4096] [--predict] [--device cpu|cuda]
        [--backbone vit-tiny-2] [--tile 256] [--batch-size 16]

Prints Mpx/s per layout, the ratio to ``rgb`` and the machine load (``uptime``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write(path: Path, data: np.ndarray, alpha: bool = False) -> Path:
    import rasterio
    from affine import Affine

    kw = dict(photometric="RGB", alpha="YES") if alpha else {}
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="uint8", crs="EPSG:32633",
                       transform=Affine(0.5, 0, 500000, 0, -0.5, 4100000), tiled=True,
                       blockxsize=256, blockysize=256, compress="deflate", **kw) as dst:
        dst.write(data)
    return path


def make_inputs(folder: Path, size: int) -> dict:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    base = (120 + 60 * np.sin(yy / 37.0) * np.cos(xx / 29.0)).astype(np.float32)
    rgb = np.clip(base[None] + rng.integers(0, 30, (3, size, size)), 0, 255).astype(np.uint8)
    alpha = np.full((1, size, size), 255, np.uint8)
    alpha[:, : size // 8] = 0
    return {"rgb": (write(folder / "rgb.tif", rgb), None),
            "bgr": (write(folder / "bgr.tif", rgb[::-1].copy()), (3, 2, 1)),
            "rgba": (write(folder / "rgba.tif", np.concatenate([rgb, alpha]), alpha=True), None),
            "pan": (write(folder / "pan.tif", rgb[:1].copy()), None)}


def read_rate(path: Path, bands) -> float:
    from rsgeo.io.bands import open_image
    from rsgeo.io.reader import read_strips

    t0 = time.perf_counter()
    with open_image(path, bands=bands, warn=False) as (ds, _):
        n = 0
        for _, (a,) in read_strips([ds], 512):
            n += a.shape[-1] * a.shape[-2]
    return n / 1e6 / (time.perf_counter() - t0)


def predict_rate(path: Path, bands, model: Path, out: Path, args) -> float:
    from rsgeo.infer.predict import predict_height_files

    r = predict_height_files([path], model, [out], tile=args.tile, batch_size=args.batch_size,
                             device=args.device, bands=bands, overwrite=True)
    return r["files"][0]["mpx_per_s"]


def make_model(folder: Path, backbone: str) -> Path:
    import torch

    from rsgeo.tasks.bundle import build_task_model, save_task_model

    cfg = {"task": "height", "backbone": backbone, "in_chans": 3, "img_size": 64,
           "head": "dpt", "head_features": 32}
    meta = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
            "std": [50.0] * 3, "gsd": 0.5, "tile": 256, "overlap": 32, "units": "m",
            "nodata": -9999}
    torch.manual_seed(0)
    path = folder / "model.ckpt"
    save_task_model(build_task_model(cfg), cfg, meta, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=2, help="best of N reads")
    ap.add_argument("--predict", action="store_true", help="also predict-height end to end")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="vit-tiny-2")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rsgeo-bands-") as tmp:
        folder = Path(tmp)
        inputs = make_inputs(folder, args.size)
        model = make_model(folder, args.backbone) if args.predict else None
        result = {"size": args.size, "load": os.getloadavg()[0], "read_mpx_s": {},
                  "predict_mpx_s": {}}
        for name, (path, bands) in inputs.items():
            result["read_mpx_s"][name] = round(max(read_rate(path, bands)
                                                   for _ in range(args.repeat)), 1)
            if model is not None:
                result["predict_mpx_s"][name] = round(predict_rate(
                    path, bands, model, folder / f"{name}_h.tif", args), 2)
        base = result["read_mpx_s"]["rgb"]
        result["read_vs_rgb"] = {k: round(v / base, 2) for k, v in result["read_mpx_s"].items()}
        result["load_after"] = os.getloadavg()[0]
        print(json.dumps(result))


if __name__ == "__main__":
    main()
