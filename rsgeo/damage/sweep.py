"""The strip-wise sweep behind :func:`rsgeo.damage.damage_map` (heights already resolved)."""

from __future__ import annotations

import logging
import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rasterio import features
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from rsgeo.io.components import StripComponents
from rsgeo.damage.stats import GRADE_NAMES, ObjectStats, grade_index
from rsgeo.io.buildings import Footprints, load_buildings
from rsgeo.io.heights import (MAX_HEIGHT_M, check_heights, predicted_by_rsgeo, require_valid,
                              sample, sample_plan, units_of)
from rsgeo.io.raster import (Grid, align_to, check_overlap, open_raster, pixel_area_m2,
                             valid_mask)
from rsgeo.io.reader import read_strips
from rsgeo.io.atomic import all_or_nothing
from rsgeo.io.vector import write_vector
from rsgeo.io.windows import strips
from rsgeo.io.writer import HEIGHT_NODATA, class_tags, open_output, write_categories
from rsgeo.progress import progress
from rsgeo.viz import DAMAGE_COLORS

log = logging.getLogger("rsgeo.damage")
#: the classes of OUT.tif (255: nodata); its colour table is rsgeo.viz.DAMAGE_COLORS
CLASS_NAMES = {0: "no structure", 1: "intact", 2: "minor", 3: "major", 4: "destroyed",
               255: "nodata"}


def damage_tags(threshold: float) -> dict:
    """The class raster's tags: ``class_<i>`` names and ``classes`` (JSON), as ``predict``
    writes them, ``units`` and the threshold."""
    return {"threshold_m": threshold, **class_tags(CLASS_NAMES)}


def loss_path(out: Path) -> Path:
    """``OUT_loss.tif`` next to the class raster ``OUT.tif``: the float32 height loss."""
    return out.with_name(f"{out.stem}_loss{out.suffix}")


@dataclass
class HeightInputs:
    """PRE, POST[, DTM] opened, on PRE's grid, with their units (see :func:`open_inputs`)."""

    grid: Grid
    raws: list           # as given (POST and DTM on their own grids)
    aligned: list        # on PRE's grid
    units: list          # HeightUnits, same order
    names: list[str]
    resampled: bool      # POST was resampled onto PRE's grid

    def strips(self, strip_rows: int):
        """``(window, pre, post, valid)`` strip by strip: float32 metres above ground (the
        DTM subtracted when given), every raster read in parallel."""
        for win, arrs in read_strips(self.aligned, strip_rows):
            ok = valid_mask(arrs[0], self.aligned[0].nodata)
            for a, ds in zip(arrs[1:], self.aligned[1:]):
                ok &= valid_mask(a, ds.nodata)
            pre, post = (u.to_metres(a).astype(np.float32, copy=False)
                         for u, a in zip(self.units[:2], arrs[:2]))
            if len(arrs) == 3:
                ground = self.units[2].to_metres(arrs[2]).astype(np.float32, copy=False)
                pre, post = pre - ground, post - ground
            yield win, pre, post, ok


def open_inputs(es: ExitStack, pre_h: Path, post_h: Path, dtm: Path | None,
                names: tuple[str, str]) -> HeightInputs:
    """Open the height rasters into ``es``; POST and DTM are resampled (bilinear) onto
    PRE's grid when they differ, with a warning; no overlap is an InputError."""
    raws = [es.enter_context(open_raster(pre_h, bands=1, purpose="pre-event height raster")),
            es.enter_context(open_raster(post_h, bands=1, purpose="post-event height raster"))]
    all_names = list(names)
    if dtm is not None:
        raws.append(es.enter_context(open_raster(dtm, bands=1, purpose="terrain model (DTM)")))
        all_names.append(str(dtm))
    grid = Grid.of(raws[0])
    aligned = [raws[0]]
    for raw, name in zip(raws[1:], all_names[1:]):
        check_overlap(grid, Grid.of(raw), names[0], name)
    units = [units_of(raw, name) for raw, name in zip(raws, all_names)]
    for raw, name in zip(raws[1:], all_names[1:]):
        if not Grid.of(raw).same_as(grid):
            log.warning("%s: resampled (bilinear) onto the grid of %s (%s)", name, names[0],
                        grid.describe())
        aligned.append(es.enter_context(align_to(raw, grid, "bilinear")))
    return HeightInputs(grid, raws, aligned, units, all_names,
                        resampled=not Grid.of(raws[1]).same_as(grid))


def run(pre_h: Path, post_h: Path, out: Path, fp_out: Path, *, buildings, threshold: float,
        min_height: float, min_area: float, grades: dict, overwrite: bool, strip_rows: int,
        co: dict | None, names: tuple[str, str], loss_co: dict | None = None,
        dtm: Path | None = None, absolute: bool = False, max_height: float = MAX_HEIGHT_M,
        predicted: bool = False) -> dict:
    """Sweep PRE/POST height rasters (DSMs when ``dtm`` is given) into the damage outputs.

    Heights are read in metres (:func:`rsgeo.io.heights.units_of`) and checked first
    (:func:`check_inputs`); ``predicted`` heights skip the absolute-elevation test. The
    outputs are published together once the last is written, or none of them
    (:func:`rsgeo.io.atomic.all_or_nothing`): a failed vector write leaves no rasters.
    """
    with all_or_nothing(), ExitStack() as es:
        hin = open_inputs(es, pre_h, post_h, dtm, names)
        checks = check_inputs(hin.raws, hin.aligned, hin.units, hin.names,
                              absolute=absolute or predicted, max_height=max_height,
                              has_dtm=dtm is not None)
        grid = hin.grid
        px_area = pixel_area_m2(grid)
        bld = load_buildings(buildings, grid, "they are not graded") \
            if buildings is not None else None
        sweep = Sweep(hin, bld, strip_rows, threshold, min_height, grades, px_area)
        if bld is None:
            sweep.find_regions(math.ceil(min_area / px_area) if min_area > 0 else 0)
        write_rasters(sweep, out, threshold, co=co, loss_co=loss_co, overwrite=overwrite)
        es.close()   # the inputs are read: close them before the vectors are built
        table = sweep.stats.finish()
        gdf = (graded_buildings(bld, table) if bld is not None
               else regions_frame(sweep.pieces, table, grid.crs))
        write_vector(gdf, fp_out, overwrite=overwrite)
    graded = gdf["grade"].value_counts().to_dict()   # ungraded buildings hold no grade
    coverage = bld.coverage_counts(gdf) if bld is not None else {}
    return {
        "pre": names[0], "post": names[1], "post_resampled": bool(hin.resampled),
        "dtm": str(dtm) if dtm is not None else None,
        "heights": checks,
        "mode": "buildings" if bld is not None else "regions", "features": int(len(gdf)),
        "by_grade": {g: int(graded.get(g, 0)) for g in GRADE_NAMES},
        **coverage,
        "damaged_area_m2": round(float(sweep.damaged_px) * px_area, 2),
        "structure_area_m2": round(float(sweep.structure_px) * px_area, 2),
        "lost_volume_m3": round(sweep.lost_volume, 1),
        "pixel_area_m2": px_area,
    }


def write_rasters(sweep: "Sweep", out: Path, threshold: float, *, co: dict | None,
                  loss_co: dict | None, overwrite: bool) -> None:
    """The class raster ``out`` (with its colour table and GDAL side file of class names)
    and the height loss ``OUT_loss.tif``, from the second pass of ``sweep``."""
    grid = sweep.hin.grid
    with open_output(out, grid, dtype="uint8", nodata=255, units="class", co=co,
                     overwrite=overwrite, band_descriptions=["damage class"],
                     tags=damage_tags(threshold)) as cls_dst, \
            open_output(loss_path(out), grid, dtype="float32", nodata=HEIGHT_NODATA,
                        units="metre", co=loss_co or co, overwrite=overwrite,
                        band_descriptions=["height loss (pre - post)"],
                        tags={"threshold_m": threshold, "units": "metre"}) as loss_dst:
        cls_dst.write_colormap(1, DAMAGE_COLORS)
        sweep.write_maps(cls_dst, loss_dst)
    write_categories(out, {k: v for k, v in CLASS_NAMES.items() if k != 255}, DAMAGE_COLORS)


class Sweep:
    """The two passes over the strips: damaged regions (without footprints), then the
    class and loss rasters with per-object statistics."""

    def __init__(self, hin: HeightInputs, bld, strip_rows: int, threshold: float,
                 min_height: float, grades: dict, px_area: float):
        self.hin, self.bld, self.strip_rows = hin, bld, strip_rows
        self.threshold, self.min_height, self.grades = threshold, min_height, grades
        self.px_area = px_area
        self.n_strips = len(list(strips(hin.grid.height, hin.grid.width, strip_rows)))
        self.comps, self.min_px = None, 0
        self.pieces: dict[int, list] = {}
        self.lost_volume = self.damaged_px = self.structure_px = 0.0
        self.stats = None if bld is None else ObjectStats(bld.last_row, px_area, threshold,
                                                          grades)

    def structure(self, win, pre, ok):
        """(building ids or None, structure mask) of a strip."""
        if self.bld is None:
            return None, ok & (pre > self.min_height)
        ids = self.bld.rasterize(win, window_transform(win, self.hin.grid.transform))
        return ids, ok & (ids > 0).any(0)     # ids: [layers, h, w] (overlapping footprints)

    def find_regions(self, min_px: int) -> None:
        """Pass 1: connected damaged regions across strips (regions below ``min_px`` pixels
        are dropped in pass 2)."""
        self.comps, self.min_px = StripComponents(), min_px
        with progress(self.n_strips, "damage: regions", unit="strips") as bar:
            for win, pre, post, ok in self.hin.strips(self.strip_rows):
                _, struct = self.structure(win, pre, ok)
                self.comps.add(struct & (pre - post > self.threshold), int(win.row_off))
                bar.advance()
        self.comps.finish()
        self.stats = ObjectStats(self.comps.root_last_row, self.px_area, self.threshold,
                                 self.grades)

    def write_maps(self, cls_dst, loss_dst) -> None:
        """Pass 2: classes and loss strip by strip; statistics of buildings or regions."""
        with progress(self.n_strips, "damage: map", unit="strips") as bar:
            for win, pre, post, ok in self.hin.strips(self.strip_rows):
                ids, struct = self.structure(win, pre, ok)
                loss = pre - post
                classes = np.zeros(loss.shape, np.uint8)   # grades only where structures are
                classes[struct] = 1 + grade_index(loss[struct], pre[struct], self.grades)
                classes[~ok] = 255
                cls_dst.write(classes[None], window=win)
                loss[~ok] = HEIGHT_NODATA
                loss_dst.write(loss[None], window=win)
                self.structure_px += np.count_nonzero(struct)
                self.lost_volume += float(np.maximum(loss[struct], 0).sum()) * self.px_area
                self._add_objects(win, ids, struct & (loss > self.threshold), ok, pre, post)
                bar.advance()

    def _add_objects(self, win, ids, damaged, ok, pre, post) -> None:
        end = int(win.row_off + win.height)
        if self.comps is not None:
            regions = self.comps.relabel(damaged, self.min_px)
            sel = regions > 0
            self.damaged_px += np.count_nonzero(sel)
            self.stats.add(regions[sel], pre[sel], post[sel], end)
            _polygonise(regions, win, self.hin.grid, self.pieces)
        else:
            self.damaged_px += np.count_nonzero(damaged)
            sel = (ids > 0) & ok                  # every layer: each footprint all its pixels
            self.stats.add(ids[sel].astype(np.int64), np.broadcast_to(pre, ids.shape)[sel],
                           np.broadcast_to(post, ids.shape)[sel], end)


def check_inputs(raws, aligned, units, names, *, absolute: bool, max_height: float,
                 has_dtm: bool) -> dict:
    """Refuse inputs that would give silent wrong answers (see :mod:`rsgeo.io.heights`).

    Args:
        raws: the opened PRE, POST[, DTM] datasets as given (an all-nodata file is named).
        aligned: the same on PRE's grid; a sample of them, in metres (minus the DTM when
            ``has_dtm``), is checked for absolute elevations (not for rsgeo's own predicted
            heights) and ``max_height``.
        units, names: :class:`~rsgeo.io.heights.HeightUnits` and display names, same order.

    Returns:
        ``{"pre": {"units", "p2_m", "max_m"}, "post": {...}[, "dtm": {"units"}],
        "absolute": bool, "max_height_m": float}`` (p2/max of heights above ground, m).
    """
    plan = sample_plan(aligned[0])       # the same pixels of every raster on PRE's grid
    metres = []
    for raw, ds, u, name in zip(raws, aligned, units, names):
        if raw is not ds:
            _, ok = sample(raw, raw.nodata, sample_plan(raw), name)
            require_valid(raw, raw.nodata, name, ok)
        a, ok = sample(ds, ds.nodata, plan, name)
        require_valid(ds, ds.nodata, name, ok, where=" where it overlaps PRE")
        metres.append((u.to_metres(a), ok))
    if has_dtm:
        ground, gok = metres[2]
        metres = [(v - ground, ok & gok) for v, ok in metres[:2]]
    hint = "--dtm DTM.tif (subtracted from both dates) or --absolute"
    out = {role: {"units": u.note} for role, u in zip(("pre", "post", "dtm"), units)}
    for (v, ok), name, role, raw in zip(metres[:2], names, ("pre", "post"), raws):
        exempt = absolute or (not has_dtm and predicted_by_rsgeo(raw))
        out[role].update(check_heights(v[ok], name, absolute=exempt, max_height=max_height,
                                       way_through=hint))
    return {**out, "absolute": bool(absolute), "max_height_m": max_height}


def _polygonise(regions: np.ndarray, win: Window, grid: Grid, pieces: dict) -> None:
    from shapely.geometry import shape

    if not regions.any():
        return
    lab = regions.astype(np.int32)
    for geom, value in features.shapes(lab, mask=lab > 0, connectivity=4,
                                       transform=window_transform(win, grid.transform)):
        pieces.setdefault(int(value), []).append(shape(geom))


def regions_frame(pieces: dict, table: dict, crs):
    """One polygon per damaged region (pieces from different strips unioned)."""
    import geopandas as gpd
    import shapely

    ids = np.array(sorted(pieces), dtype=np.int64)
    geoms = [parts[0] if len(parts) == 1 else shapely.union_all(parts)
             for parts in (pieces[i] for i in ids)]
    pos = np.searchsorted(table["id"], ids)
    cols = {k: v[pos] for k, v in table.items() if k not in ("id", "grade_index")}
    frame = gpd.GeoDataFrame({"region_id": np.arange(1, len(ids) + 1), **cols,
                              "grade": np.array(GRADE_NAMES)[table["grade_index"][pos]]},
                             geometry=geoms, crs=crs)
    return frame




def graded_buildings(bld: Footprints, table: dict):
    """The footprints with the statistics of ``table`` and ``grade`` (none where not
    graded) before ``coverage``."""
    gdf = bld.with_stats({k: v for k, v in table.items() if k != "grade_index"})
    pos, found = bld.rows_of(table["id"])
    grade = np.full(len(bld.ids), None, dtype=object)
    if found.any():
        grade[found] = np.array(GRADE_NAMES)[table["grade_index"][pos[found]]]
    gdf.insert(gdf.columns.get_loc("coverage"), "grade", grade)
    return gdf
