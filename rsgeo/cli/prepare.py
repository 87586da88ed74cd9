"""``rsgeo prepare``: large RGB + DSM rasters -> a chip dataset (docs/chip-dataset.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.options import Json, Output, Overwrite, Scale, Workers
from rsgeo.cli.options import Bands, LabelMap, MaxPixels


def _path(help: str):
    return typer.Option(help=help)


@app.command("prepare")
def prepare_cmd(
    synth_dir: Annotated[Optional[Path], typer.Argument(help="A folder written by rsgeo synth.")] = None,
    output: Output = Path("chips"),
    rgb: Annotated[Optional[Path], typer.Option("--rgb", help="RGB image (one scene).")] = None,
    post_rgb: Annotated[Optional[Path], typer.Option("--post-rgb", help="Post-event image.")] = None,
    dsm: Annotated[Optional[Path], typer.Option("--dsm", help="Surface model (m).")] = None,
    dtm: Annotated[Optional[Path], typer.Option("--dtm", help="Terrain model (m): nDSM = DSM - DTM.")] = None,
    ndsm: Annotated[Optional[Path], typer.Option("--ndsm", help="Height above ground (m).")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Land-cover class raster.")] = None,
    change: Annotated[Optional[Path], typer.Option("--change", help="Building change mask.")] = None,
    footprints: Annotated[Optional[Path], typer.Option("--footprints", help="Building polygons (rasterised).")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="Source name (city); default: the RGB stem.")] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="CSV/YAML, one row per scene.")] = None,
    size: Annotated[int, typer.Option("--size", help="Chip size px (multiple of 32).")] = 224,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Chip stride px (default: size).")] = None,
    max_nodata: Annotated[float, typer.Option("--max-nodata", help="Drop chips with more nodata.")] = 0.1,
    dedup_distance: Annotated[int, typer.Option("--dedup-distance", min=0, help="Hamming bits of dHash (0 disables).")] = 4,
    split: Annotated[str, typer.Option("--split", help="train,val,test shares.")] = "0.9,0.1,0",
    gsd: Annotated[Optional[float], typer.Option("--gsd", help="Resample to this GSD (m) in the RGB's CRS.")] = None,
    bands: Bands = None,
    scale: Scale = "percentile",
    label_map: LabelMap = None,
    max_pixels: MaxPixels = None,
    ndsm_from_dsm: Annotated[bool, typer.Option("--ndsm-from-dsm", help="Ground-filter the DSM (dsm2dtm) for the nDSM.")] = False,
    classes: Annotated[Optional[Path], typer.Option("--classes", help="JSON {id: name} or {id: {name, values: [mask values]}}; other label values are an error.")] = None,
    preview: Annotated[Optional[Path], typer.Option("--preview", help="PNG mosaic of random chips.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    workers: Workers = 0,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Cut aligned training chips (RGB, nDSM, labels, change, footprints) with a manifest,
    per-source statistics, de-duplication and HOG scores into the dataset folder OUTPUT;
    new sources are appended to an existing dataset. Without --rgb, --dsm or --ndsm alone
    gives DSM-only chips (for finetune --modalities dsm/ndsm)."""
    from rsgeo.data.prepare import prepare
    from rsgeo.data.sources import SceneInput, from_pairs, from_synth_dir
    from rsgeo.errors import InputError
    from rsgeo.io.bands import parse_bands
    from rsgeo.io.labels import read_classes
    from rsgeo.jsonout import dumps

    single = rgb or ndsm or dsm  # one scene: RGB, or DSM-only
    given = [x for x in (synth_dir, single, pairs) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one of: a synth folder, --rgb or --dsm/--ndsm (one "
                         "scene) or --pairs")
    class_map, label_map = read_classes(classes, label_map)
    if synth_dir is not None:
        if not synth_dir.is_dir():
            raise InputError("not a folder", synth_dir)
        scenes = from_synth_dir(synth_dir)
        if class_map is None:
            from rsgeo.synth import LANDCOVER

            class_map = dict(LANDCOVER)
    elif pairs is not None:
        scenes = from_pairs(pairs)
    else:
        scenes = [SceneInput(rgb=rgb, source=source or single.stem, post_rgb=post_rgb, dsm=dsm,
                             dtm=dtm, ndsm=ndsm, labels=labels, change=change,
                             footprints=footprints)]
    band_idx = parse_bands(bands)
    try:
        shares = tuple(float(x) for x in split.split(","))
    except ValueError:
        raise InputError("--split takes comma-separated numbers") from None
    if band_idx is not None and len(band_idx) != 3:
        raise InputError(f"--bands needs three 1-based band indexes for RGB chips, got {bands}")
    summary = prepare(scenes, output, size=size, stride=stride, max_nodata=max_nodata,
                      dedup_distance=dedup_distance, split=shares, gsd=gsd, bands=band_idx,
                      ndsm_from_dsm=ndsm_from_dsm, classes=class_map, workers=workers,
                      overwrite=overwrite, preview=preview, seed=seed, scale=scale,
                      label_map=label_map)
    if json_out:
        typer.echo(dumps(summary))
        return
    _print_table(summary, output)


def _print_table(summary: dict, output: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"chips in {output}")
    for col in ("source", "scenes", "kept", "nodata", "duplicate", "small"):
        table.add_column(col, justify="right" if col != "source" else "left")
    for src, s in summary.items():
        if s.get("skipped"):
            table.add_row(src, "already in the dataset: skipped (--overwrite redoes it)")
            continue
        table.add_row(src, *(str(s.get(k, 0)) for k in ("scenes", "kept", "nodata", "duplicate",
                                                         "small")))
    Console().print(table)
