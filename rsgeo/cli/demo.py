"""``rsgeo demo``: synth -> prepare -> pretrain -> finetune -> export -> predict -> damage -> evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (DIR, Device, DeviceChoice, Json, Overwrite, Seed, emit, output_option,
                               print_table)


@app.command("demo", epilog=examples(
    'rsgeo demo -o demo/ --quick',
    'rsgeo demo -o demo/ --json | jq .metrics'))
def demo_cmd(
    output: output_option("Folder for every output.", DIR) = Path("rsgeo-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small and fast (about 40 s on 2 idle CPU cores).")] = False,
    device: Device = DeviceChoice.auto,
    seed: Seed = 0,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Run the main job end to end on a synthetic city and write a report: heights predicted
    from RGB by a freshly pretrained and fine-tuned model, a damage map, and their scores."""
    from rsgeo.demo import run_demo  # lazy: keep rsgeo --help fast

    echo = (lambda *_: None) if json_out else typer.echo
    s = run_demo(output, quick=quick, device=device.value, seed=seed, overwrite=overwrite,
                 log=echo)

    def human():
        print_table(f"rsgeo demo ({s['total_seconds']:.0f} s)", ("metric", "value"),
                    [(k, f"{v:.3f}" if isinstance(v, float) else v)
                     for k, v in s["metrics"].items()])
        for k, v in s["files"].items():
            typer.echo(f"{k}: {v}")

    emit(s, json_out, human)
