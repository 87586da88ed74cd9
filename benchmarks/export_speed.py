"""How long `rsgeo export` takes with each exporter (TorchScript tracing vs dynamo).

Builds a height model (random weights; the cost does not depend on them) or takes a
checkpoint, exports it with each exporter in a fresh process (torch and timm imported before
the clock starts; each exporter pays for its own modules, as the CLI does) and prints the export's wall and CPU seconds,
the ORT-vs-torch difference of the verified file and the load. Export runs on the CPU;
``--device`` is accepted for the lead's GPU script and only recorded.

    python benchmarks/export_speed.py [--backbone vit-tiny-4] [--checkpoint best.ckpt] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from rsgeo.infer.export import export_onnx
import rsgeo.tasks.bundle  # torch + timm (+ torchvision): imported before the clock starts
t, c = time.perf_counter(), time.process_time()
s = export_onnx(sys.argv[1], sys.argv[2], exporter=sys.argv[3], overwrite=True)
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c,
                  "exporter": s["exporter"], "diff": s["max_abs_diff"]}))
"""


def make_checkpoint(folder: Path, backbone: str, img_size: int) -> Path:
    import torch

    from rsgeo.tasks.bundle import build_task_model, save_task_model

    torch.manual_seed(0)
    cfg = {"task": "height", "backbone": backbone, "in_chans": 3, "img_size": img_size,
           "head_features": 32}
    meta = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
            "std": [50.0] * 3, "gsd": 0.5, "tile": 2 * img_size, "overlap": img_size // 4,
            "units": "m", "nodata": -9999}
    path = folder / "model.ckpt"
    save_task_model(build_task_model(cfg), cfg, meta, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="vit-tiny-4")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--checkpoint", type=Path, help="a task checkpoint (default: build one)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--exporters", nargs="+", default=["torchscript", "dynamo"])
    ap.add_argument("--device", default="cpu", help="recorded only: export runs on the CPU")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint or make_checkpoint(Path(tmp), args.backbone, args.img_size)
        for i in range(args.runs):
            for exporter in args.exporters:
                load = os.getloadavg()[0]
                out = subprocess.run([sys.executable, "-c", CHILD, str(ckpt),
                                      str(Path(tmp) / "m.onnx"), exporter],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"run {i + 1} {exporter:<11} export {r['wall']:6.2f} s wall, "
                      f"{r['cpu']:6.2f} s CPU, ORT vs torch {r['diff']:.1e} "
                      f"(wrote: {r['exporter']}; load {load:.1f}; {args.device})", flush=True)


if __name__ == "__main__":
    main()
