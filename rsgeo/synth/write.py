"""Write synthetic scenes to disk: GeoTIFFs, a footprints GeoPackage, JSON, a PNG preview."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError
from rsgeo.io.atomic import all_or_nothing, atomic_path, check_output
from rsgeo.io.vector import write_vector
from rsgeo.io.writer import write_array
from rsgeo.synth.preview import save_preview
from rsgeo.synth.scene import Scene, check_options, generate_scene
from rsgeo.viz import LANDCOVER_COLORS

SUFFIXES = ("pre_rgb.tif", "post_rgb.tif", "pre_ndsm.tif", "post_ndsm.tif", "dsm.tif", "dtm.tif",
            "landcover.tif", "change.tif", "footprints.gpkg", "scene.json")


def write_scenes(out_dir: str | os.PathLike, size: int = 1024, gsd: float | None = None,
                 style: str | None = None, scenes: int = 1, destroyed: float = 0.3, seed: int = 0,
                 preview: bool = False, overwrite: bool = False, prefix: str = "city",
                 progress=None, footprints: bool = True,
                 randomize: bool = False) -> list[dict[str, Path]]:
    """Generate ``scenes`` scenes (seeds ``seed``, ``seed+1``, ...) into ``out_dir``.

    ``gsd`` / ``style`` / ``randomize``: as in :func:`rsgeo.synth.generate_scene` (defaults
    0.5 m and ``"mid"``; with ``randomize`` each scene draws the ones not given).

    Returns one dict per scene mapping a kind (``pre_rgb``, ``footprints``, ...) to its path.
    Existing files are refused unless ``overwrite`` (checked before any work).
    ``footprints=False`` writes rasters and JSON only (no vector stack needed: pyogrio).
    """
    check_options(size, gsd, style, destroyed, seed)
    if scenes < 1:
        raise InputError(f"--scenes must be at least 1, got {scenes}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a folder", out)
    stems = [f"{prefix}_{seed + i:03d}" for i in range(scenes)]
    for stem in stems:  # overwrite guard up front: never half a scene set
        for suf in SUFFIXES + (("preview.png",) if preview else ()):
            if footprints or suf != "footprints.gpkg":
                check_output(out / f"{stem}_{suf}", overwrite)
    written = []
    with all_or_nothing():  # a failure or Ctrl-C/SIGTERM publishes no scene, replaces nothing
        for i, stem in enumerate(stems):
            scene = generate_scene(size, gsd, style, destroyed, seed + i, randomize=randomize)
            written.append(write_scene(scene, out, stem, overwrite=overwrite, preview=preview,
                                       footprints=footprints))
            if progress:
                progress(1)
    return written


def write_scene(scene: Scene, out: Path, stem: str, overwrite: bool = False,
                preview: bool = False, footprints: bool = True) -> dict[str, Path]:
    g = scene.grid
    paths = {k.rsplit(".", 1)[0]: out / f"{stem}_{k}" for k in SUFFIXES
             if footprints or k != "footprints.gpkg"}
    tags = {"generator": "rsgeo synth", "seed": scene.meta["seed"]}
    m = dict(overwrite=overwrite, tags=tags)
    write_array(paths["pre_rgb"], scene.pre_rgb, g, co={"PHOTOMETRIC": "RGB"}, **m)
    write_array(paths["post_rgb"], scene.post_rgb, g, co={"PHOTOMETRIC": "RGB"}, **m)
    for key, arr, desc in (("pre_ndsm", scene.pre_ndsm, "height above ground, pre-event"),
                           ("post_ndsm", scene.post_ndsm, "height above ground, post-event"),
                           ("dsm", scene.dsm, "surface elevation, pre-event"),
                           ("dtm", scene.dtm, "terrain elevation")):
        write_array(paths[key], arr.astype(np.float32), g, nodata=-9999.0, units="metre",
                    band_descriptions=[desc], **m)
    write_array(paths["landcover"], scene.landcover, g, nodata=0,
                band_descriptions=["land cover (SynRS3D ids 1-8)"],
                colormap={k: (*v, 255) for k, v in LANDCOVER_COLORS.items()}, **m)
    write_array(paths["change"], scene.change, g, band_descriptions=["building change (0/1)"], **m)
    if footprints:
        write_vector(scene.footprints, paths["footprints"], overwrite=overwrite,
                     layer="footprints")
    meta = dict(scene.meta, files={k: p.name for k, p in paths.items()})
    with atomic_path(paths["scene"], overwrite) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    if preview:
        paths["preview"] = save_preview(scene, out / f"{stem}_preview.png", overwrite)
    return paths
