"""``rsgeo doctor``: versions, devices and threads of this installation."""

from __future__ import annotations

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import Json, emit


@app.command("doctor", epilog=examples(
    'rsgeo doctor',
    'rsgeo doctor --json | jq .torch.cuda_available'))
def doctor_cmd(json_out: Json = False):
    """Show what rsgeo runs on: its version and Python's, torch (CUDA build, the GPUs it
    sees, bf16 on the CPU), ONNX Runtime (providers; an NVIDIA driver for CUDA), rasterio
    with GDAL and PROJ, shapely with GEOS, pyogrio, geopandas, pyproj, and the threads it
    will use. Paste it into bug reports."""
    from rsgeo.doctor import report  # lazy: imports torch and onnxruntime

    r = report()

    def human() -> None:
        t, o, g = r["torch"], r["onnxruntime"], r["geo"]
        gpus = ", ".join(t.get("devices") or []) or "none"
        lines = [f"rsgeo {r['rsgeo']}, Python {r['python']} on {r['platform']}",
                 f"numpy {r['numpy']}, timm {r['timm']}",
                 f"torch {t['version']} (CUDA build {t.get('cuda_build')}; GPUs: {gpus}; "
                 f"CPU bf16: {'yes' if t.get('cpu_bf16') else 'no'}; {t.get('threads')} threads)",
                 f"onnxruntime {o['version']} (providers: {', '.join(o.get('providers') or [])}; "
                 f"NVIDIA driver: {'yes' if o.get('nvidia_driver') else 'no'})",
                 f"rasterio {g.get('rasterio')} (GDAL {g.get('gdal')}, PROJ {g.get('proj')}), "
                 f"shapely {g.get('shapely')} (GEOS {g.get('geos')}), pyogrio {g.get('pyogrio')}, "
                 f"geopandas {g.get('geopandas')}, pyproj {g.get('pyproj')}",
                 "threads: " + ", ".join(f"{k} {v}" for k, v in r["threads"].items())]
        for line in lines:
            typer.echo(line)

    emit(r, json_out, human)
