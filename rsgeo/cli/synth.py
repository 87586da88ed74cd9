"""``rsgeo synth``: write procedural pre/post-event cities (the embedded default data)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import Output, Overwrite, Seed
from rsgeo.progress import progress


class Style(str, Enum):
    low = "low"
    mid = "mid"
    high = "high"


@app.command("synth")
def synth(
    output: Output,
    size: Annotated[int, typer.Option("--size", help="Scene width and height in pixels.")] = 1024,
    gsd: Annotated[float, typer.Option("--gsd", help="Ground sampling distance of the scenes, metres per pixel.")] = 0.5,
    style: Annotated[Style, typer.Option("--style", help="Building density style.")] = Style.mid,
    scenes: Annotated[int, typer.Option("--scenes", help="Number of scenes (seeds seed, seed+1, ...).")] = 1,
    destroyed: Annotated[float, typer.Option("--destroyed", help="Share of buildings destroyed in the post scene.")] = 0.3,
    seed: Seed = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write a PNG contact sheet per scene.")] = False,
    overwrite: Overwrite = False,
):
    """Generate synthetic georeferenced pre/post-event cities (RGB, DSM/DTM/nDSM, land cover,
    change mask, footprints with damage grades) into the folder OUTPUT."""
    from rsgeo.synth import write_scenes  # lazy: keep rsgeo --help fast

    with progress(scenes, "synth", unit="scenes") as bar:
        written = write_scenes(output, size=size, gsd=gsd, style=style.value, scenes=scenes,
                               destroyed=destroyed, seed=seed, preview=preview,
                               overwrite=overwrite, progress=bar.advance)
    for paths in written:
        stem = paths["scene"].name[: -len("_scene.json")]
        typer.echo(f"{output}/{stem}_*: {len(paths)} files"
                   + (f" (preview {paths['preview']})" if "preview" in paths else ""))
