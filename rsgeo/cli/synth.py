"""``rsgeo synth``: write procedural pre/post-event cities (the embedded default data)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import DIR, Overwrite, Seed, output_option
from rsgeo.progress import progress


class Style(str, Enum):
    low = "low"
    mid = "mid"
    high = "high"
    informal = "informal"
    industrial = "industrial"
    courtyard = "courtyard"
    terraced = "terraced"


@app.command("synth", epilog=examples(
    'rsgeo synth -o data/synth --size 1024 --scenes 2 --preview',
    'rsgeo synth -o city --size 512 --style terraced --randomize --seed 7'))
def synth(
    output: output_option("Folder for the scenes (created if missing).", DIR),
    size: Annotated[int, typer.Option("--size", help="Scene width and height in pixels.")] = 1024,
    gsd: Annotated[Optional[float], typer.Option(
        "--gsd", help="Ground sampling distance, m/px (default 0.5; with --randomize drawn "
                      "per scene in 0.2-1.0).", show_default=False)] = None,
    style: Annotated[Optional[Style], typer.Option(
        "--style", help="Building style (default mid; with --randomize drawn per scene).",
        show_default=False)] = None,
    scenes: Annotated[int, typer.Option("--scenes", help="Number of scenes (seeds seed, seed+1, ...).")] = 1,
    destroyed: Annotated[float, typer.Option("--destroyed", help="Share of buildings destroyed in the post scene.")] = 0.3,
    seed: Seed = 0,
    preview: Annotated[bool, typer.Option("--preview", help="Also write a PNG contact sheet per scene.")] = False,
    randomize: Annotated[bool, typer.Option(
        "--randomize", help="Domain randomisation: draw sun, roof/ground palettes, textures, "
                            "terrain relief, trees, haze, blur, noise, JPEG quality (and GSD/style "
                            "when not given) from each scene's seed; recorded in _scene.json.")] = False,
    overwrite: Overwrite = False,
):
    """Generate synthetic georeferenced pre/post-event cities (RGB, DSM/DTM/nDSM, land cover,
    change mask, footprints with damage grades) into the folder OUTPUT."""
    from rsgeo.synth import write_scenes  # lazy: keep rsgeo --help fast

    with progress(scenes, "synth", unit="scenes") as bar:
        written = write_scenes(output, size=size, gsd=gsd, style=style and style.value,
                               scenes=scenes, destroyed=destroyed, seed=seed, preview=preview,
                               overwrite=overwrite, progress=bar.advance, randomize=randomize)
    for paths in written:
        stem = paths["scene"].name[: -len("_scene.json")]
        typer.echo(f"{output}/{stem}_*: {len(paths)} files"
                   + (f" (preview {paths['preview']})" if "preview" in paths else ""))
