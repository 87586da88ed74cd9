"""``prepare``: large rasters -> aligned chips, manifest, per-source statistics (docs/chip-dataset.md).

Per scene, every raster is aligned onto the RGB grid (or the RGB's CRS at ``gsd``) with
explicit resampling (bilinear for heights and images, nearest for labels); footprints are
rasterised onto it; nDSM comes from the scene's nDSM, or DSM - DTM, or DSM minus a DTM
from the dsm2dtm ground filter (``ndsm_from_dsm``). Label and change rasters are read once,
up front (:func:`_plan_scenes`: checked, and their class ids kept for the chips within
:data:`LABEL_KEEP_BYTES`). Windows are read one chip at a time
(memory bounded whatever the raster size), in parallel threads (``workers``), and judged
in order: too much nodata -> ``nodata``; a dHash within ``dedup_distance`` bits of a kept
chip -> ``duplicate``; else ``kept`` and appended to the source's shards with its
per-patch HOG energy. Statistics merge over kept chips' valid pixels.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from rsgeo.data.dedup import HashIndex, dhash
from rsgeo.data.hog import hog_energy_numpy
from rsgeo.data.preview import save_mosaic
from rsgeo.data.shards import ShardWriter
from rsgeo.data.sources import SceneInput, check_source_name
from rsgeo.data.stats import BandStats, LabelCounts
from rsgeo.errors import InputError, OutputWriteError, first_line
from rsgeo.io.atomic import atomic_path, claim_folder, replacing
from rsgeo.io.bands import choose_bands, open_image, parse_bands
from rsgeo.io.buildings import footprints_outside, report_outside
from rsgeo.io.heights import require_valid, sample, sample_plan
from rsgeo.io.labels import IGNORE, check_label_raster, parse_label_map, recode
from rsgeo.io.limits import check_pixels
from rsgeo.io.polygons import require_polygons
from rsgeo.io.raster import (Grid, align_to, check_overlap, ground_gsd, open_raster, valid_mask,
                             work_grid)
from rsgeo.io.stretch import image_stretch, parse_scale
from rsgeo.io.vector import read_vector
from rsgeo.io.windows import offsets
from rsgeo.progress import progress

log = logging.getLogger("rsgeo.prepare")
IMAGES = ("rgb", "post_rgb")
HEIGHTS = ("dsm", "ndsm")
LABELS = ("labels", "change")
HEIGHT_DTYPES = ("float16", "float32")
STORED = {"dsm": "float32", "ndsm": "float32", "hog": "float32"}  # others: uint8
#: bytes of checked label and change rasters (uint8 class ids on the chip grid) kept in
#: memory for their chips, in all; a raster beyond it is read again while chipping
LABEL_KEEP_BYTES = 1 << 28


def prepare(scenes: list[SceneInput], out, *, size: int = 224, stride: int | None = None,
            max_nodata: float = 0.1, dedup_distance: int = 4, split=(0.9, 0.1, 0.0),
            gsd: float | None = None, bands: tuple[int, int, int] | str | None = None,
            ndsm_from_dsm: bool = False, classes: dict[int, str] | None = None,
            workers: int = 0, overwrite: bool = False, preview=None, seed: int = 0,
            scale="percentile", label_map=None, ndsm_dtype: str | None = None) -> dict:
    """Write (or extend) the chip dataset ``out``; returns a summary per source.

    ``scale``: how image values become 0-255 uint8 chips (:mod:`rsgeo.io.stretch`, the
    rule prediction uses too): ``percentile`` (default), ``bitdepth``, ``none``, or MIN,MAX.
    ``bands``: image bands (1-based) for the RGB chips (:mod:`rsgeo.io.bands`: default RGBA
    -> RGB with alpha as mask, 1 band replicated). ``label_map``: ``{value: class id}`` for
    label and change masks (:mod:`rsgeo.io.labels`), e.g. ``{255: 1}`` for 0/255 masks.
    Scenes without RGB (DSM-only) follow their nDSM's or DSM's grid.
    ``ndsm_dtype``: how nDSM chips are stored, ``float16`` (half the bytes to read per
    training sample; at most 0.8 cm rounding below 32 m, 1.6 cm below 64 m, see
    docs/chip-dataset.md) or ``float32``; default: float16 for a new dataset, the dataset's
    own for one being extended (recorded in ``dataset.json``'s ``dtypes``). DSM chips
    (absolute elevations) stay float32.
    """
    if ndsm_dtype not in (None, *HEIGHT_DTYPES):
        raise InputError(f"--ndsm-dtype must be {' or '.join(HEIGHT_DTYPES)}, got {ndsm_dtype}")
    label_map = parse_label_map(label_map)
    bands = parse_bands(bands)
    if bands is not None and len(bands) != 3:
        raise InputError(f"--bands needs three 1-based band indexes for RGB chips, got "
                         f"{','.join(map(str, bands))}")
    scale = parse_scale(scale) if isinstance(scale, (str, type(None))) else tuple(scale)
    stride = size if stride is None else stride  # 0 is no stride, not the default
    if size % 32 or size < 32:
        raise InputError(f"--size must be a positive multiple of 32 (HOG and encoders), got {size}")
    if stride <= 0:
        raise InputError(f"--stride must be positive, got {stride}")
    if not 0 <= max_nodata <= 1:
        raise InputError(f"--max-nodata must be in [0, 1], got {max_nodata}")
    if gsd is not None and not 0.005 <= gsd <= 1000:
        raise InputError(f"--gsd must be in [0.005, 1000] m/px, got {gsd}")
    split = _check_split(split)
    out = Path(out)
    by_source: dict[str, list[SceneInput]] = {}
    for s in scenes:
        by_source.setdefault(check_source_name(s.source), []).append(s)
    # every input checked before the output folder is made
    chosen = {src: _validate(group, bands) for src, group in by_source.items()}
    plans = _plan_scenes(by_source, gsd, label_map, classes)
    if stride > size:
        _warn_gaps([grid for plan in plans.values() for grid, _ in plan], size, stride)
    with replacing(out), _removed_on_input_error(out):  # replacing: see claim_folder
        return _prepare_sources(by_source, chosen, plans, out, size, stride, max_nodata,
                                dedup_distance, split, gsd, bands, ndsm_from_dsm, classes,
                                workers, overwrite, preview, seed, scale, label_map,
                                ndsm_dtype)


def _covered(n: int, size: int, stride: int) -> int:
    """Pixels of an axis of ``n`` px inside at least one chip (starts: :func:`offsets`)."""
    covered = end = 0
    for o in offsets(n, size, stride):
        stop = min(o + size, n)
        covered += max(0, stop - max(o, end))
        end = max(end, stop)
    return covered


def _warn_gaps(grids: list[Grid], size: int, stride: int) -> None:
    """One warning giving the share of the scenes' pixels that no chip covers (a stride
    above the chip size leaves gaps between chips); none when there is no gap."""
    total = sum(g.width * g.height for g in grids)
    inside = sum(_covered(g.height, size, stride) * _covered(g.width, size, stride)
                 for g in grids)
    if not total or inside >= total:
        return
    share = 1 - inside / total
    pct = f"{100 * share:.0f}%" if share >= 0.005 else "under 1%"
    log.warning("--stride %d > --size %d: %s of the input pixels are in no chip (gaps "
                "between chips; a stride of at most the size covers them)", stride, size, pct)


@contextmanager
def _removed_on_input_error(out: Path):
    """A dataset folder this run created is removed again when the input turns out bad,
    the run is stopped (Ctrl-C, SIGTERM: no half dataset is left to look finished) or its
    writing failed (disk full: the space it took comes back).

    Other failures (a crash) leave it with its marker, so the rerun accepts it.
    """
    created = not out.exists()
    try:
        yield
    except (InputError, OutputWriteError, KeyboardInterrupt):
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _prepare_sources(by_source, chosen, plans, out, size, stride, max_nodata, dedup_distance,
                     split, gsd, bands, ndsm_from_dsm, classes, workers, overwrite, preview,
                     seed, scale, label_map, ndsm_dtype=None) -> dict:
    """The chips of every source into ``out`` (created or extended); ``chosen``: each
    source's band choice from :func:`_validate`; ``plans``: its scenes' from
    :func:`_plan_scenes`."""
    info, manifest = _open_dataset(out, size, overwrite)
    dtypes = {"ndsm": _ndsm_dtype(out, info, ndsm_dtype)}
    summary = {}
    for src, group in by_source.items():
        plan = plans.pop(src)   # its kept class ids are let go once the source is done
        if manifest is not None and src in set(manifest["source"]):
            if not overwrite and finished(info, src):
                log.warning("%s: source already in %s, skipped (--overwrite redoes it)", src, out)
                summary[src] = {"skipped": True}
                continue
            if not finished(info, src):
                log.warning("%s: left unfinished in %s by an interrupted prepare: redone",
                            src, out)
            info, manifest = _drop_source(out, info, manifest, src)
        with progress(None, f"prepare {src}", unit="chips") as bar:
            rows, stats, mods = _run_source(group, out, size, stride, max_nodata,
                                            dedup_distance, split, plan, bands, ndsm_from_dsm,
                                            workers, seed, bar, scale, label_map, dtypes)
        manifest = _append_rows(out, manifest, rows)
        _update_stats(out, src, stats)
        info = _update_info(out, info, src, mods, classes, size, group, gsd, dtypes)
        counts = {}
        for r in rows:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        summary[src] = {"scenes": len(group), **counts,
                        **({"input_bands": chosen[src]} if chosen[src] else {})}
    if preview:
        save_mosaic(out, Path(preview), seed=seed, overwrite=overwrite)
    return summary


def _check_split(split) -> tuple[float, float, float]:
    s = tuple(float(x) for x in split) + (0.0,) * (3 - len(split))
    if len(s) != 3 or min(s) < 0 or abs(sum(s) - 1) > 1e-6:
        raise InputError(f"--split needs train,val,test shares summing to 1, got {split}")
    return s


def _ndsm_dtype(out: Path, info: dict | None, asked: str | None) -> str:
    """The nDSM storage dtype: ``asked`` (default float16) for a new dataset; an existing
    dataset keeps its own (float32 when it predates the ``dtypes`` record)."""
    if info is None:
        return asked or "float16"
    have = info.get("dtypes", {}).get("ndsm", "float32")
    if asked is not None and asked != have:
        raise InputError(f"the dataset stores nDSM chips as {have}; extend it with "
                         f"--ndsm-dtype {have} (or write a new dataset)", out)
    return have


def _open_dataset(out: Path, size: int, overwrite: bool):
    import pandas as pd

    if not (out / "dataset.json").is_file():
        # new, empty, or left by a killed run (its marker lets --overwrite start it afresh)
        claim_folder(out, "chips", overwrite=overwrite)
        return None, None
    info = json.loads((out / "dataset.json").read_text())
    if info.get("chip_size") != size:
        raise InputError(f"existing dataset has {info.get('chip_size')} px chips, not {size}", out)
    return info, pd.read_parquet(out / "manifest.parquet")


def _validate(group: list[SceneInput], bands) -> dict[str, str]:
    """Check every file of ``group``; the band choice (tag) of each image kind."""
    chosen: dict[str, str] = {}
    for s in group:
        s.reference  # noqa: B018 - raises for a scene without RGB and heights
        if s.dtm is not None and s.dsm is None:  # the nDSM is DSM - DTM: a DTM alone is nothing
            raise InputError("--dtm needs --dsm (nDSM = DSM - DTM)" + (
                "; --ndsm is already heights above ground" if s.ndsm else ""), s.dtm)
        for key, path in s.files().items():
            if key == "footprints":
                _check_footprints(read_vector(path, "footprints file"), path, s.reference)
                continue
            with open_raster(path, purpose=f"{key} raster") as ds:
                if key in IMAGES:
                    chosen.setdefault(key, choose_bands(ds, path, 3, bands).tag())
                elif ds.count != 1:
                    raise InputError(f"{key} raster must have 1 band, has {ds.count}", path)
                if ds.nodata is not None or ds.dtypes[0].startswith("float"):
                    _, ok = sample(ds, ds.nodata, sample_plan(ds), path)  # all nodata: an error
                    require_valid(ds, ds.nodata, path, ok)
    return chosen


def _plan_scenes(by_source: dict, gsd, label_map, classes) -> dict[str, list[tuple]]:
    """Each source's scenes as ``(chip grid, {key: class ids})``, before the dataset folder
    is touched: every scene's grid worked out (its rasters' overlap checked) and its label
    and change rasters checked (:func:`_check_labels`), the class ids read kept for the
    chips within :data:`LABEL_KEEP_BYTES` in all."""
    budget = LABEL_KEEP_BYTES
    plans: dict[str, list[tuple]] = {}
    for src, group in by_source.items():
        plans[src] = []
        for s in group:
            grid = _scene_grid(s, gsd)
            kept = _check_labels(s, grid, label_map, classes, budget)
            budget -= sum(a.nbytes for a in kept.values())
            plans[src].append((grid, kept))
    return plans


def _check_labels(s: SceneInput, grid: Grid, label_map, classes,
                  budget: int = 0) -> dict[str, np.ndarray]:
    """Refuse label and change rasters whose values are not class ids (or not in
    ``classes``) before the dataset folder is touched: a whole pass over each, in strips,
    on the chip grid (nearest, as chips read it), so a stray value anywhere is found
    before a chip is cut -- not after minutes of chips, nor after ``--overwrite`` dropped
    the source's old chips.

    Returns the class ids that pass read of each raster (uint8 on ``grid``, as chips store
    them) while they fit in ``budget`` bytes: the chips are cut from them, so such a raster
    is read once."""
    kept = {}
    for key in (k for k in LABELS if k in s.files()):
        path = s.files()[key]
        with open_raster(path) as raw, align_to(raw, grid, "nearest") as ds:
            ids = check_label_raster(ds, path, key, label_map,
                                     classes if key == "labels" else None,
                                     keep=grid.width * grid.height <= budget)
        if ids is not None:
            kept[key] = ids
            budget -= ids.nbytes
    return kept


def _check_footprints(gdf, path, reference) -> None:
    """Polygons with a CRS, at least one on the scene's raster when there are any (all
    outside: a wrong CRS or zone, which gave all-zero building chips); a warning for
    some outside."""
    import shapely

    require_polygons(gdf, path, "footprints")
    if gdf.crs is None:
        raise InputError("footprints have no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:...)", path)
    geoms = gdf.geometry.to_numpy()
    gdf = gdf[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    if len(gdf):  # an empty layer: a scene without buildings
        with open_raster(reference) as ds:
            grid = Grid.of(ds)
        report_outside(footprints_outside(gdf, grid), path, gdf.crs, grid.crs,
                       "their buildings are not in any chip")


class _Reader:
    """Opens the aligned datasets of one scene for one batch of windows.

    rasterio handles are neither thread-safe nor closable from another thread (their GDAL
    environment is thread-local), so each worker opens, reads a batch of chips and closes
    in the same thread.
    """

    def __init__(self, scene: SceneInput, grid: Grid, files: dict, bands, scale="percentile",
                 label_map=None, kept: dict | None = None):
        self.scene, self.grid, self.files, self.bands = scene, grid, files, bands
        self.label_map = label_map
        self.kept = kept or {}   # {key: class ids} of label rasters read by their check
        self.stretches: dict = {}
        from rasterio.errors import RasterioIOError

        try:
            with ExitStack() as stack:  # input scaling from a decimated read, once per scene
                for key in IMAGES:
                    if key in files:
                        self.stretches[key] = image_stretch(stack.enter_context(open_image(
                            files[key], bands=bands, warn=False))[0], scale)
        except RasterioIOError as e:
            raise _read_error(e, files) from None

    def read(self, wins, fn) -> list:
        from rasterio.errors import RasterioIOError

        try:
            with ExitStack() as stack:
                ds = {}
                for key, path in self.files.items():
                    if key in self.kept:   # sliced from the ids its check read
                        ds[key] = self.kept[key]
                        continue
                    raw = stack.enter_context(open_image(path, bands=self.bands, warn=False))[0] \
                        if key in IMAGES else stack.enter_context(open_raster(path))
                    rs = "nearest" if key in LABELS else "bilinear"
                    ds[key] = stack.enter_context(align_to(raw, self.grid, rs))
                return [fn(ds, rc) for rc in wins]
        except RasterioIOError as e:
            raise _read_error(e, self.files) from None

    def stretch(self, key: str):
        return self.stretches[key]


def _read_error(e: Exception, files: dict) -> InputError:
    """A GDAL read failure as one line naming the file it happened in (GDAL's message does)."""
    cause = e.__cause__ or e
    text = first_line(cause, 120)
    path = next((p for p in files.values() if Path(p).name in text), next(iter(files.values())))
    return InputError(f"read failed, the file is damaged or truncated ({text})", path)


def _ordered_map(fn, items, workers: int, batch: int = 16):
    """``fn`` over batches of ``items`` in threads, results in order, bounded in flight."""
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    if workers <= 0:
        for b in batches:
            yield from fn(b)
        return
    from collections import deque

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for b in batches:
            pending.append(pool.submit(fn, b))
            if len(pending) >= 2 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def _scene_grid(scene: SceneInput, gsd: float | None) -> Grid:
    with open_raster(scene.reference, purpose="RGB image" if scene.rgb else "height raster") as ds:
        grid = Grid.of(ds)
    if gsd:
        grid = work_grid(grid, ground_gsd(grid), gsd)
        check_pixels(grid.width, grid.height, scene.reference, f"grid at {gsd:g} m/px")
    for key, path in scene.files().items():
        if key == "footprints" or Path(path) == scene.reference:
            continue
        with open_raster(path) as ds:
            check_overlap(grid, Grid.of(ds), scene.reference, path)
    return grid


def _run_source(group, out, size, stride, max_nodata, dedup_distance, split, plan, bands,
                ndsm_from_dsm, workers, seed, bar, scale="percentile", label_map=None,
                dtypes=None):
    src = group[0].source
    tmp_dir = out / "shards" / f".{src}.tmp"
    final_dir = out / "shards" / src
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    writers: dict[str, ShardWriter] = {}
    stats: dict[str, BandStats | LabelCounts] = {}
    index = HashIndex(dedup_distance)
    rows, mods = [], set()
    grids = [grid for grid, _ in plan]
    bar.update(total=sum(len(offsets(g.height, size, stride)) * len(offsets(g.width, size, stride))
                         for g in grids))
    try:
        with tempfile.TemporaryDirectory(prefix=".rsgeo-dtm-", dir=out) as work:
            for scene, (grid, kept) in zip(group, plan):
                files = _scene_files(scene, ndsm_from_dsm, Path(work))
                mods |= set(files) | ({"buildings"} if scene.footprints else set())
                mods |= {"ndsm"} if "dtm" in files else set()
                reader = _Reader(scene, grid, files, bands, scale, label_map, kept)
                fp = _footprints(scene.footprints, grid) if scene.footprints else None
                wins = [(r, c) for r in offsets(grid.height, size, stride)
                        for c in offsets(grid.width, size, stride)]
                small = grid.height < size or grid.width < size

                def read_batch(batch):
                    if small:  # the scene is smaller than one chip: nothing to read
                        return [{"nodata_fraction": 1.0, "hash": 0} for _ in batch]
                    return _add_hog(reader.read(batch, lambda ds, rc: _read_chip(
                        reader, ds, rc, size, fp, grid)))

                for (r, c), chip in zip(wins, _ordered_map(read_batch, wins, workers)):
                    row = _row(scene, grid, r, c, size, split, seed)
                    row["nodata_fraction"] = chip["nodata_fraction"]
                    row["hash"] = np.uint64(chip["hash"]).astype(np.int64)
                    if small:
                        row["status"] = "small"
                    elif chip["nodata_fraction"] > max_nodata:
                        row["status"] = "nodata"
                    elif index.near(chip["hash"]):
                        row["status"] = "duplicate"
                    else:
                        index.add(chip["hash"])
                        row["status"] = "kept"
                        row["index"] = _append(writers, stats, tmp_dir, chip, dtypes or {})
                    rows.append(row)
                    bar.advance(1)
        for w in writers.values():
            w.finish()
        if not any(r["status"] == "kept" for r in rows):
            raise InputError("no chip kept (all nodata, too small or duplicates); check the "
                             "inputs or --max-nodata", group[0].reference)
        shutil.rmtree(final_dir, ignore_errors=True)
        tmp_dir.rename(final_dir)
    except BaseException:
        for w in writers.values():
            w.abort()
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return rows, {k: v.result() for k, v in stats.items()}, sorted(mods - {"dtm", "footprints"})


def _scene_files(scene: SceneInput, ndsm_from_dsm: bool, work: Path) -> dict:
    files = {k: v for k, v in scene.files().items() if k != "footprints"}
    if "ndsm" not in files and "dsm" in files and "dtm" not in files and ndsm_from_dsm:
        from dsm2dtm import generate_dtm_file

        dtm = work / f"{scene.reference.stem}_dtm.tif"
        log.info("%s: ground filter (dsm2dtm) for the nDSM", files["dsm"])
        generate_dtm_file(files["dsm"], dtm)
        files["dtm"] = dtm
    return files


def _footprints(path, grid: Grid):
    from shapely import STRtree

    gdf = read_vector(path, "footprints file")
    if gdf.crs is None:
        raise InputError("footprints have no CRS", path)
    if grid.crs is not None and gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    geoms = gdf.geometry.to_numpy()
    return geoms, STRtree(geoms)


def _read_chip(reader: _Reader, ds: dict, rc, size, fp, grid: Grid) -> dict:
    from rasterio import features
    from rasterio.windows import Window, transform

    r, c = rc
    win = Window(c, r, size, size)
    out = {}
    valid = np.ones((size, size), bool)
    for key, d in ds.items():
        if isinstance(d, np.ndarray):   # a label raster's class ids, read by its check
            out[key] = d[None, r:r + size, c:c + size].copy()
            continue
        a = d.read(window=win)
        ok = valid_mask(a, d.nodata)
        if key in IMAGES:
            out[key] = reader.stretch(key).apply_uint8(a)
            if key == "rgb":
                valid &= ok
        elif key in ("dsm", "dtm", "ndsm"):
            out[key] = np.where(ok, a[0], np.nan).astype(np.float32)[None]
        else:
            # values checked up front (_check_labels): here only nodata -> ignore
            raw, named = recode(a[0], reader.label_map)
            out[key] = np.where(ok | named, raw, IGNORE).astype(np.uint8)[None]
    if "dtm" in out:
        base = out.pop("dtm")
        if "ndsm" not in out and "dsm" in out:
            out["ndsm"] = np.clip(out["dsm"] - base, 0, None)
    if fp is not None:
        geoms, tree = fp
        hit = tree.query(_box(_chip_bounds(grid, r, c, size)))
        burn = features.rasterize(((g, 1) for g in geoms[hit]), out_shape=(size, size),
                                  transform=transform(win, grid.transform), dtype="uint8") \
            if len(hit) else np.zeros((size, size), np.uint8)
        out["buildings"] = burn[None]
    if "ndsm" in out:
        valid &= np.isfinite(out["ndsm"][0])
    if "rgb" not in out and "dsm" in out:  # DSM-only: the heights decide what is valid
        valid &= np.isfinite(out["dsm"][0])
    base = out["rgb"] if "rgb" in out else _height_image(out.get("ndsm", out.get("dsm")))
    return {"arrays": out, "valid": valid, "nodata_fraction": float(1 - valid.mean()),
            "hash": dhash(base), "base": base}


HOG_PIXELS = 1 << 16  # chip pixels per HOG call: its arrays take about 150 bytes a pixel


def _add_hog(chips: list[dict]) -> list[dict]:
    """Each chip's HOG energy per patch (``arrays["hog"]``, from its ``base`` image), computed
    for up to :data:`HOG_PIXELS` pixels of chips at once: one chip at a time, the per-call
    overhead cost 8 ms a 64 px chip, a third of ``prepare``'s time."""
    read = [c for c in chips if "base" in c]  # not the placeholders of too-small scenes
    if not read:
        return chips
    h, w = read[0]["base"].shape[-2:]
    step = max(1, HOG_PIXELS // (h * w))
    for i in range(0, len(read), step):
        part = read[i:i + step]
        energy = hog_energy_numpy(np.stack([c.pop("base") for c in part]))
        for c, e in zip(part, energy):
            c["arrays"]["hog"] = e
    return chips


def _height_image(h: np.ndarray) -> np.ndarray:
    """A ``[1, H, W]`` float32 height chip as a uint8 image (its own min..max -> 0..255,
    nodata 0) for HOG scores and de-duplication of DSM-only chips."""
    ok = np.isfinite(h)
    if not ok.any():
        return np.zeros(h.shape, np.uint8)
    lo, hi = float(h[ok].min()), float(h[ok].max())
    x = (np.where(ok, h, lo) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _box(b):
    from shapely import box

    return box(*b)


def stored_heights(a: np.ndarray, dtype) -> np.ndarray:
    """A float32 height chip in its storage ``dtype``; float16 keeps 11 significant bits
    (rounding error at most 2**-12 of the value) and holds +-65,504 m: heights beyond
    that become NaN (nodata) instead of infinity."""
    dtype = np.dtype(dtype)
    if dtype == a.dtype:
        return a
    big = np.abs(a) > np.finfo(dtype).max
    return np.where(big, np.nan, a).astype(dtype) if big.any() else a.astype(dtype)


def _append(writers, stats, tmp_dir: Path, chip, dtypes: dict) -> int:
    """Append one kept chip to its source's shards (heights in ``dtypes[key]``, default
    float32) and to the statistics (of the stored values; label and change chips: pixels
    per id); returns its shard index."""
    idx = None
    for key, a in chip["arrays"].items():
        if key in dtypes:
            a = stored_heights(a, dtypes[key])
        if key not in writers:
            final = tmp_dir.with_name(tmp_dir.name[1:-len(".tmp")])  # .SRC.tmp -> SRC
            writers[key] = ShardWriter(tmp_dir / f"{key}.npy", a.shape, a.dtype,
                                       shown=final / f"{key}.npy")
        idx = writers[key].append(a)
        if key in IMAGES or key in HEIGHTS:
            stats.setdefault(key, BandStats(a.shape[0])).add(
                a, chip["valid"] if key in IMAGES else None)
        elif key in LABELS:  # the ids present: finetune checks --num-classes against them
            stats.setdefault(key, LabelCounts()).add(a)
    return idx


def _chip_bounds(grid: Grid, r: int, c: int, size: int) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of the chip at row ``r``, column ``c``: all four corners, so
    rotated grids get their true extent (rasterio's window bounds take two)."""
    from rasterio.windows import Window, transform

    return Grid(grid.crs, transform(Window(c, r, size, size), grid.transform), size, size).bounds


def _row(scene: SceneInput, grid: Grid, r: int, c: int, size: int, split, seed) -> dict:
    chip_id = f"{scene.source}/{scene.reference.stem}/{r}_{c}"
    if scene.split:
        sp = scene.split
    else:
        u = zlib.crc32(f"{seed}:{chip_id}".encode()) / 2 ** 32
        sp = "train" if u < split[0] else ("val" if u < split[0] + split[1] else "test")
    b = _chip_bounds(grid, r, c, size)
    return {"chip_id": chip_id, "source": scene.source, "split": sp, "scene": str(scene.reference),
            "row_off": r, "col_off": c, "height": size, "width": size, "minx": b[0],
            "miny": b[1], "maxx": b[2], "maxy": b[3],
            "crs": grid.crs.to_string() if grid.crs else "", "index": -1}


def _append_rows(out: Path, manifest, rows):
    import pandas as pd

    new = pd.DataFrame(rows)
    m = new if manifest is None else pd.concat([manifest, new], ignore_index=True)
    with atomic_path(out / "manifest.parquet", overwrite=True) as tmp:
        m.to_parquet(tmp, index=False)
    return m


def finished(info: dict | None, src: str) -> bool:
    """Whether ``src`` was committed: ``dataset.json`` lists it (written last for a source,
    after its shards, manifest rows and statistics; a dataset without the list predates it)."""
    return info is not None and ("sources" not in info or src in info["sources"])


def _drop_source(out: Path, info: dict, manifest, src: str):
    """Remove ``src`` from the dataset, in the order that leaves no reader trusting a part
    of it when killed: uncommitted in ``dataset.json``, then its manifest rows, its
    statistics, and last its shards. Returns the new ``(info, manifest)``."""
    if src in info.get("sources", ()):
        info = {**info, "sources": [s for s in info["sources"] if s != src]}
        _write_json(out / "dataset.json", info)
    manifest = manifest[manifest["source"] != src].reset_index(drop=True)
    with atomic_path(out / "manifest.parquet", overwrite=True) as tmp:
        manifest.to_parquet(tmp, index=False)
    _update_stats(out, src, None)
    shutil.rmtree(out / "shards" / src, ignore_errors=True)
    return info, manifest


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _update_stats(out: Path, src: str, stats: dict | None) -> None:
    """Set (None: remove) ``src``'s statistics in ``stats.json``."""
    path = out / "stats.json"
    data = json.loads(path.read_text()) if path.is_file() else {"sources": {}}
    if stats is None and src not in data["sources"]:
        return
    if stats is None:
        del data["sources"][src]
    else:
        data["sources"][src] = stats
    _write_json(path, data)


def _update_info(out: Path, info, src, mods, classes, size, group, gsd, dtypes=None) -> dict:
    info = info or {"format": "rsgeo-chips", "version": 1, "chip_size": size, "hog_patch": 16,
                    "modalities": [], "classes": None, "sources": []}
    info["modalities"] = sorted(set(info["modalities"]) | set(mods) | {"hog"})
    info["dtypes"] = {**{m: STORED.get(m, "uint8") for m in info["modalities"]},
                      **{m: d for m, d in (dtypes or {}).items() if m in info["modalities"]},
                      **{m: d for m, d in info.get("dtypes", {}).items()
                         if m in info["modalities"]}}
    info["sources"] = sorted(set(info["sources"]) | {src})
    if classes:
        info["classes"] = {str(k): v for k, v in classes.items()}
    if "gsd" not in info:
        with open_raster(group[0].reference) as ds:
            info["gsd"] = round(gsd or ground_gsd(Grid.of(ds)), 4)
    _write_json(out / "dataset.json", info)  # last: commits the source (see finished)
    return info
