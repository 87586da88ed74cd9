"""``rsgeo prepare``: large RGB + DSM rasters -> a chip dataset (docs/chip-dataset.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import (DIR, FILE, Bands, Json, LabelMap, MaxPixels, Overwrite, Scale, Seed,
                               Workers, emit, output_option, print_table)
from rsgeo.data.sources import gather_scenes, synth_classes
from rsgeo.io.labels import read_classes


def _numbers(kind, count: int | None = None):
    """A callback: ``"a,b,c"`` -> a tuple of ``kind`` (``count`` of them when given)."""
    def parse(value: Optional[str]):
        if value is None:
            return None
        try:
            out = tuple(kind(x) for x in value.split(","))
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not comma-separated numbers") from None
        if count is not None and len(out) != count:
            raise typer.BadParameter(f"{value!r}: give {count} numbers")
        return out
    return parse


@app.command("prepare", epilog=examples(
    'rsgeo prepare data/synth -o chips/ --size 64',
    'rsgeo prepare --rgb ortho.tif --dsm dsm.tif --ndsm-from-dsm -o chips/',
    'rsgeo prepare --pairs scenes.csv -o chips/ --size 64 --json'))
def prepare_cmd(
    synth_dir: Annotated[Optional[Path], typer.Argument(help="A folder written by rsgeo synth.")] = None,
    output: output_option("Chip dataset folder (created if missing; a new --source is appended "
                          "to an existing dataset).", DIR) = Path("chips"),
    rgb: Annotated[Optional[Path], typer.Option("--rgb", help="RGB image (one scene).")] = None,
    post_rgb: Annotated[Optional[Path], typer.Option("--post-rgb", help="Post-event image.")] = None,
    dsm: Annotated[Optional[Path], typer.Option("--dsm", help="Surface model (m).")] = None,
    dtm: Annotated[Optional[Path], typer.Option("--dtm", help="Terrain model (m): nDSM = DSM - DTM.")] = None,
    ndsm: Annotated[Optional[Path], typer.Option("--ndsm", help="Height above ground (m).")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Land-cover class raster.")] = None,
    change: Annotated[Optional[Path], typer.Option("--change", help="Building change mask.")] = None,
    footprints: Annotated[Optional[Path], typer.Option("--footprints", help="Input building polygons (any OGR format, or GeoParquet named .parquet), rasterised into a buildings chip band.")] = None,
    source: Annotated[Optional[str], typer.Option("--source", help="Source name (city); default: the RGB stem.")] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="CSV/YAML, one row per scene.")] = None,
    size: Annotated[int, typer.Option("--size", help="Chip size px (multiple of 32).")] = 224,
    stride: Annotated[Optional[int], typer.Option("--stride", help="Chip stride px (default: size).")] = None,
    max_nodata: Annotated[float, typer.Option("--max-nodata", help="Drop chips whose share of nodata pixels (0-1) is above this.")] = 0.1,
    dedup_distance: Annotated[int, typer.Option("--dedup-distance", min=0, help="Hamming bits of dHash (0 disables).")] = 4,
    split: Annotated[str, typer.Option("--split", callback=_numbers(float), help="train,val,test shares.")] = "0.9,0.1,0",
    gsd: Annotated[Optional[float], typer.Option("--gsd", help="Ground sampling distance of the chips in metres per pixel: every raster is resampled to it in the CRS of the RGB (else the nDSM or DSM) (default: its own).")] = None,
    bands: Bands = None,
    scale: Scale = "percentile",
    label_map: LabelMap = None,
    max_pixels: MaxPixels = None,
    ndsm_from_dsm: Annotated[bool, typer.Option("--ndsm-from-dsm", help="Ground-filter the DSM (dsm2dtm) for the nDSM.")] = False,
    ndsm_dtype: Annotated[Optional[str], typer.Option("--ndsm-dtype", help="Storage of nDSM chips: float16 (half the bytes per training sample; under 1 cm rounding below 32 m) or float32 (default: float16 for a new dataset, the dataset's own when extending one).")] = None,
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Land-cover class names of --labels: JSON {id: name} or {id: {name, values: [mask values]}}, or id,name lines; other label values are an error (default for a synth folder: its classes).")] = None,
    preview: Annotated[Optional[Path], typer.Option("--preview", metavar=FILE, help="PNG mosaic of random chips.")] = None,
    seed: Seed = 0,
    workers: Workers = 0,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Cut aligned training chips (RGB, nDSM, labels, change, footprints) with a manifest,
    per-source statistics, de-duplication and HOG scores into the dataset folder OUTPUT;
    new sources are appended to an existing dataset. Without --rgb, --dsm or --ndsm alone
    gives DSM-only chips (for finetune --modalities dsm/ndsm)."""
    from rsgeo.data.prepare import prepare  # lazy: keep rsgeo --help fast

    scenes = gather_scenes(synth_dir, rgb, pairs, source=source, post_rgb=post_rgb, dsm=dsm,
                           dtm=dtm, ndsm=ndsm, labels=labels, change=change,
                           footprints=footprints)
    class_map, label_map = read_classes(classes, label_map)
    if class_map is None and synth_dir is not None:
        class_map = synth_classes(synth_dir)
    summary = prepare(scenes, output, size=size, stride=stride, max_nodata=max_nodata,
                      dedup_distance=dedup_distance, split=split, gsd=gsd, bands=bands,
                      ndsm_from_dsm=ndsm_from_dsm, classes=class_map, workers=workers,
                      overwrite=overwrite, preview=preview, seed=seed, scale=scale,
                      label_map=label_map, ndsm_dtype=ndsm_dtype)
    emit(summary, json_out, lambda: print_table(
        f"chips in {output}", ("source", "scenes", "kept", "nodata", "duplicate", "small"),
        [(src, "already in the dataset: skipped (--overwrite redoes it)") if s.get("skipped")
         else (src, *(s.get(k, 0) for k in ("scenes", "kept", "nodata", "duplicate", "small")))
         for src, s in summary.items()]))
