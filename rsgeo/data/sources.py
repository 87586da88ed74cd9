"""What ``prepare`` reads: scenes (an RGB raster and/or heights, optional labels, footprints).

Three ways in: single-scene options (``--rgb --dsm ...``), a pairs file (CSV or YAML, one
row per scene, paths relative to the file), or a folder written by ``rsgeo synth``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from rsgeo.errors import InputError

COLUMNS = ("rgb", "post_rgb", "dsm", "dtm", "ndsm", "labels", "change", "footprints",
           "source", "split")


@dataclass
class SceneInput:
    """One scene: an RGB image and/or heights (DSM-only scenes have no ``rgb``)."""

    rgb: Path | None
    source: str
    split: str | None = None
    post_rgb: Path | None = None
    dsm: Path | None = None
    dtm: Path | None = None
    ndsm: Path | None = None
    labels: Path | None = None
    change: Path | None = None
    footprints: Path | None = None

    @property
    def reference(self) -> Path:
        """The raster whose grid the chips follow: the RGB, else the nDSM or DSM."""
        ref = self.rgb or self.ndsm or self.dsm
        if ref is None:
            raise InputError(f"scene of source {self.source!r} has neither an RGB image nor "
                             "heights (--rgb, --dsm or --ndsm)")
        return Path(ref)

    def files(self) -> dict[str, Path]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("source", "split") and getattr(self, f.name) is not None}


def from_synth_dir(folder: Path) -> list[SceneInput]:
    """Every scene of a ``rsgeo synth`` folder (one source named after the folder)."""
    scenes = []
    for meta in sorted(folder.glob("*_scene.json")):
        stem = meta.name[: -len("_scene.json")]
        f = {k: folder / f"{stem}_{suffix}" for k, suffix in (
            ("rgb", "pre_rgb.tif"), ("post_rgb", "post_rgb.tif"), ("ndsm", "pre_ndsm.tif"),
            ("dsm", "dsm.tif"), ("labels", "landcover.tif"), ("change", "change.tif"),
            ("footprints", "footprints.gpkg"))}
        if not f["footprints"].exists():  # optional: synth(footprints=False)
            f["footprints"] = None
        missing = [p.name for p in f.values() if p is not None and not p.exists()]
        if missing:
            raise InputError(f"synth scene {stem} lacks {', '.join(missing)}", folder)
        scenes.append(SceneInput(source=folder.resolve().name, **f))
    if not scenes:
        raise InputError("no *_scene.json here: not a folder written by `rsgeo synth`", folder)
    return scenes


def synth_classes(folder: Path) -> dict[int, str]:
    """The land-cover classes ``{id: name}`` a ``rsgeo synth`` folder declares (scene JSON)."""
    for meta in sorted(Path(folder).glob("*_scene.json")):
        classes = json.loads(meta.read_text()).get("landcover_classes")
        if classes:
            return {int(k): str(v) for k, v in classes.items()}
    raise InputError("no *_scene.json with landcover_classes: not a folder written by "
                     "`rsgeo synth`", folder)


def gather_scenes(synth_dir: Path | None = None, rgb: Path | None = None,
                  pairs: Path | None = None, *, source: str | None = None,
                  **files) -> list[SceneInput]:
    """The scenes of exactly one of: a synth folder, one scene (with ``files``: post_rgb,
    dsm, dtm, ndsm, labels, change, footprints; an ``rgb``, or for DSM-only chips just a
    ``dsm`` or ``ndsm``; source default: the stem of the RGB, else nDSM, else DSM) or a
    ``pairs`` CSV/YAML."""
    single = rgb or files.get("ndsm") or files.get("dsm")  # one scene: RGB, or DSM-only
    given = [x for x in (synth_dir, single, pairs) if x is not None]
    if len(given) != 1:
        raise InputError("give exactly one of: a synth folder, --rgb or --dsm/--ndsm (one "
                         "scene) or --pairs")
    extra = ([f"--{k.replace('_', '-')}" for k, v in files.items() if v is not None]
             + (["--source"] if source is not None else []))
    if single is None and extra:  # a synth folder or --pairs names each scene's files
        raise InputError(f"{', '.join(extra)} describe{'s' if len(extra) == 1 else ''} one "
                         "scene given by --rgb (or --dsm/--ndsm); with a synth folder or "
                         "--pairs each scene's files and source come from it (pairs columns: "
                         f"{', '.join(COLUMNS)})")
    if synth_dir is not None:
        if not Path(synth_dir).is_dir():
            raise InputError("not a folder", synth_dir)
        return from_synth_dir(Path(synth_dir))
    if pairs is not None:
        return from_pairs(Path(pairs))
    return [SceneInput(rgb=Path(rgb) if rgb else None, source=source or Path(single).stem,
                       **files)]


def from_pairs(path: Path) -> list[SceneInput]:
    """Scenes from a CSV or YAML list (columns: rgb, dsm, dtm, ndsm, labels, change,
    footprints, post_rgb, source, split); relative paths are relative to the file."""
    if path.is_dir():
        raise InputError("is a folder, expected a pairs CSV or YAML file (a folder written "
                         "by rsgeo synth is given without --pairs: rsgeo prepare FOLDER)", path)
    if not path.is_file():
        raise InputError("no such pairs file", path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        rows = yaml.safe_load(path.read_text())
        if isinstance(rows, dict):
            rows = rows.get("scenes", [])
    else:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    if not rows or not isinstance(rows, list):
        raise InputError("pairs file lists no scenes", path)
    out = []
    for i, row in enumerate(rows, start=1):
        unknown = sorted(set(row) - set(COLUMNS))
        if unknown:
            raise InputError(f"row {i}: unknown column(s) {', '.join(unknown)}; use "
                             f"{', '.join(COLUMNS)}", path)
        if not (row.get("rgb") or row.get("dsm") or row.get("ndsm")):
            raise InputError(f"row {i} has no rgb (nor dsm/ndsm for DSM-only chips)", path)
        kw = {k: (path.parent / v if not os.path.isabs(v) else Path(v))
              for k, v in row.items() if v and k not in ("source", "split")}
        rgb = kw.pop("rgb", None)
        ref = rgb or kw.get("ndsm") or kw["dsm"]
        out.append(SceneInput(rgb=rgb, source=row.get("source") or ref.stem,
                              split=row.get("split") or None, **kw))
    return out


def check_source_name(name: str) -> str:
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise InputError(f"source name {name!r} must be a plain folder name")
    return name
