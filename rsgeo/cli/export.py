"""``rsgeo export RUN/best.ckpt -o model.onnx``: a verified, self-describing ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import FILE, Json, Overwrite, emit, output_option


@app.command("export", epilog=examples(
    'rsgeo export runs/height/best.ckpt -o height.onnx',
    'rsgeo export runs/seg -o seg.onnx --json'))
def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="Task checkpoint (RUN/best.ckpt) or run folder from rsgeo finetune.")],
    output: output_option("ONNX model file to write (.onnx).", FILE),
    atol: Annotated[float, typer.Option("--atol", min=0.0, help="Allowed ORT vs torch difference.")] = 1e-3,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Export a task model to ONNX (dynamic batch and size, metadata inside), checked against
    torch with ONNX Runtime before the file is written."""
    from rsgeo.cli import preflight  # lazy: task and method registries; --help stays fast

    preflight.export(checkpoint, output, overwrite=overwrite)  # answered before torch loads
    from rsgeo.infer.export import export_onnx  # lazy: keep rsgeo --help fast

    r = export_onnx(checkpoint, output, overwrite=overwrite, atol=atol)
    emit(r, json_out, f"{r['output']}: {r['task']} model, {r['bands']} bands, ORT vs torch max "
                      f"diff {r['max_abs_diff']:.2e}")
