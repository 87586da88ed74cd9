"""``evaluate``: a prediction against a reference, as flat metric dicts.

Rasters (heights in metres, class maps, change masks) are two files or two folders whose
rasters are paired by file name; they stream in row strips through the raster core, so
memory does not depend on raster size (``--protocol synrs3d`` reads each image whole, as
the published code does on its 512 px tiles). Grids must match, or PRED is resampled onto
REF's grid with ``align`` (``nearest`` or ``bilinear``); nodata in either raster is
excluded (rsgeo protocol). Footprints are two vector files (any OGR format, GeoParquet)
or two SpaceNet CSVs, scored with :mod:`rsgeo.metrics.footprints`.

Checks before scoring (``InputError``, exit 2, naming the file): a raster without a valid
pixel (all nodata or NaN); for heights (rsgeo protocol) values are read in metres (band
scale/offset and units, :mod:`rsgeo.io.heights`; integer heights without a unit or scale
are warned about, once per file), and absolute elevations (unless
``absolute``) and heights above ``max_height`` are refused; footprints that are not
polygons (points, lines) are refused, never dropped.

Returns ``{"summary": {...flat keys...}, "images": [{"image": name, ...}, ...]}``.
"""

from __future__ import annotations

import csv
import io
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError
from rsgeo.io.heights import (HeightUnits, STREAM_SAMPLE, check_heights, check_max_height,
                              predicted_by_rsgeo, units_of, warn_integer_heights)
from rsgeo.io.labels import read_classes, recode
from rsgeo.io.polygons import require_polygons
from rsgeo.io.raster import Grid, align_to, check_same_grid, open_raster, valid_mask
from rsgeo.io.buffers import ArrayPool
from rsgeo.io.reader import default_threads, read_strips
from rsgeo.io.vector import DRIVERS, read_vector
from rsgeo.jsonout import dumps
from rsgeo.metrics.footprints import read_spacenet_csv, score_footprints
from rsgeo.metrics.height import HeightAccumulator
from rsgeo.metrics.segmentation import ConfusionMatrix
from rsgeo.metrics.synrs3d import Synrs3dAverager

TASKS = ("height", "segmentation", "change", "footprints")
CHUNK = 65536  # pixels per metric update (cache-sized)
GROUP = 8      # pieces per metrics job (about 0.5 Mpx): several jobs per strip
RASTER_EXT = {".tif", ".tiff", ".vrt", ".img", ".png", ".jpg", ".jp2"}


VECTOR_SUFFIXES = (*DRIVERS, ".shp", ".csv")


def _refuse_vectors(task: str, *paths) -> None:
    """A polygon file or SpaceNet CSV given to a raster task (``--task`` left at height): say
    which task scores it, rather than that GDAL cannot read it as a raster."""
    for p in map(Path, paths):
        if p.is_file() and p.suffix.lower() in VECTOR_SUFFIXES:
            raise InputError(f"is a vector file, but --task {task} scores rasters; footprints "
                             "are scored with --task footprints", p)


def evaluate(pred, ref, *, task: str = "height", protocol: str = "rsgeo",
             align: str | None = None, nodata: float | None = None, classes=None,
             ignore_index: int | None = None, iou: float = 0.5, min_area: float | None = None,
             confidence: str | None = None, by: str | None = None, strip_rows: int = 512,
             absolute: bool = False, max_height: float = 1000.0, label_map=None) -> dict:
    """Score ``pred`` against ``ref`` (paths); see the module docstring.

    ``classes``: a classes file (:func:`rsgeo.io.labels.read_classes`: JSON or ``id,name``
    lines; a JSON entry's ``values`` recode REF's mask values). ``label_map``
    (segmentation, change): ``{value: class id}`` or ``--label-map`` texts recoding REF's
    mask values first, over the file's ``values`` (:mod:`rsgeo.io.labels`).
    """

    max_height = check_max_height(max_height)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    if protocol not in ("rsgeo", "synrs3d"):
        raise InputError(f"--protocol must be rsgeo or synrs3d, got {protocol!r}")
    if ignore_index is not None and task not in ("segmentation", "change"):
        raise InputError(f"--ignore-index skips reference values of class maps (--task "
                         f"segmentation or change), not {task}"
                         + ("; heights skip their nodata (--nodata)" if task == "height" else ""))
    if task == "footprints":
        return _footprints(Path(pred), Path(ref), iou, min_area, confidence, by)
    _refuse_vectors(task, pred, ref)
    pairs = pair_rasters(Path(pred), Path(ref))
    if task == "height" and protocol == "synrs3d":
        return _synrs3d(pairs, align)
    names, lmap = read_classes(classes, label_map)
    if task == "segmentation":
        _check_unique_names(names, classes)
    if task == "height":  # --label-map and a classes file's values recode masks only
        lmap = None
    images, total = [], _accumulator(task, names, ignore_index)
    warned: set = set()   # integer heights without a unit: one warning per file
    for p, r in pairs:
        acc = _accumulator(task, names, ignore_index)
        n_valid = 0
        checks = PairCheck(p, r, heights=task == "height", aligned=align is not None)
        spec = _Spec(task, names, ignore_index, lmap, checks, warned)
        for part in _scored(p, r, align, nodata, strip_rows, spec):  # in stream order
            checks.merge(part.samples)
            n_valid += part.n_valid
            if task == "height":
                for stats in part.stats:
                    acc.add_stats(stats)
            else:
                acc.matrix += part.stats.matrix
        checks.finish(absolute=absolute, max_height=max_height)
        if n_valid == 0:
            raise InputError(f"no valid pixel in common with {r} (nodata everywhere?)", p)
        if task == "height":
            acc.end_image()
            total.merge(acc)
        else:
            total.matrix += acc.matrix
        images.append({"image": p.name, **_result(acc, task, names)})
    return {"summary": {"n_images": len(pairs), **_result(total, task, names)},
            "images": images}


def _check_unique_names(names: dict | None, path) -> None:
    """Per-class keys are ``iou_<name>``: two ids of one name would write one key twice,
    the second hiding the first while mIoU still averages both."""
    seen: dict[str, int] = {}
    for i in sorted(names or {}):
        if names[i] in seen:
            raise InputError(f"class name {names[i]!r} is given to ids {seen[names[i]]} and {i}: "
                             "per-class scores are keyed by name; give each class its own",
                             path)
        seen[names[i]] = i


def render(result: dict, fmt: str) -> str:
    """An :func:`evaluate` result as text: ``json`` (the flat summary, one line) or ``csv``
    (one row per image, then ``ALL`` with the summary)."""
    summary = result["summary"]
    if fmt == "json":
        return dumps(summary) + "\n"
    if fmt != "csv":
        raise ValueError(f"format {fmt!r}: json or csv")
    rows = result["images"] + [{"image": "ALL", **summary}]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def pair_rasters(pred: Path, ref: Path) -> list[tuple[Path, Path]]:
    for p in (pred, ref):
        if not p.exists():
            raise InputError("no such file or folder", p)
    if pred.is_dir() != ref.is_dir():
        raise InputError("PRED and REF must both be files or both be folders", pred)
    if not pred.is_dir():
        return [(pred, ref)]

    def listing(d: Path):
        return {f.name: f for f in d.iterdir() if f.suffix.lower() in RASTER_EXT}

    a, b = listing(pred), listing(ref)
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if only_a or only_b:
        raise InputError("rasters without a partner: "
                         + "; ".join(x for x in (f"only in {pred}: {', '.join(only_a)}" if only_a else "",
                                                 f"only in {ref}: {', '.join(only_b)}" if only_b else "")
                                     if x), pred)
    if not a:
        raise InputError("no rasters in this folder", pred)
    return [(a[n], b[n]) for n in sorted(a)]


class PairCheck:
    """The plausibility rules of :mod:`rsgeo.io.heights` applied to a pair as it streams.

    Whether each raster has a valid pixel is exact; for heights, the statistics come from
    every k-th pixel of REF's grid (every pixel up to ``STREAM_SAMPLE``, 1 Mpx): no second
    read of either raster.
    """

    def __init__(self, pred: Path, ref: Path, *, heights: bool, aligned: bool):
        self.paths, self.heights, self.aligned = (pred, ref), heights, aligned
        self.any = [False, False]
        self.kept: list[list[np.ndarray]] = [[], []]
        self.predicted = [False, False]
        with open_raster(ref, require_crs=False) as ds:
            self.step = max(1, -(-ds.height * ds.width // STREAM_SAMPLE))
        if heights:
            for i, path in enumerate(self.paths):
                with open_raster(path, require_crs=False) as ds:
                    self.predicted[i] = predicted_by_rsgeo(ds)

    def sample(self, pv, rv, okp, okr, offset: int) -> list[tuple]:
        """What :meth:`merge` needs of one streamed piece (2-D values, metres for heights,
        and each raster's valid mask, None: all valid) starting at pixel ``offset`` of the
        stream. Changes nothing: pieces may be sampled in any thread, in any order."""
        start = (-offset) % self.step
        out = []
        for i, (v, ok) in enumerate(((pv, okp), (rv, okr))):
            found = self.any[i] or _any_valid(v, ok)
            vals = None
            if self.heights:
                vals = v.reshape(-1)[start::self.step]
                if ok is not None:
                    vals = vals[ok.reshape(-1)[start::self.step]]
                vals = vals[np.isfinite(vals)] if vals.dtype.kind == "f" else vals
            out.append((found, vals))
        return out

    def merge(self, samples: list[list[tuple]]) -> None:
        """Add the :meth:`sample` of each piece, in stream order."""
        for piece in samples:
            for i, (found, vals) in enumerate(piece):
                self.any[i] = self.any[i] or found
                if vals is not None:
                    self.kept[i].append(vals)

    def finish(self, *, absolute: bool, max_height: float) -> None:
        """Raise ``InputError`` naming the file that has no valid pixel or implausible heights."""

        for i, path in enumerate(self.paths):
            if not self.any[i]:
                where = " on REF's grid" if i == 0 and self.aligned else ""
                raise InputError(f"no valid pixel{where} (all nodata or NaN): nothing to measure",
                                 path)
        if not self.heights:
            return
        for i, path in enumerate(self.paths):
            check_heights(np.concatenate(self.kept[i]), path,
                          absolute=absolute or self.predicted[i], max_height=max_height,
                          way_through="--absolute")


def _any_valid(v: np.ndarray, ok: np.ndarray | None) -> bool:
    """Whether ``v`` has a finite value where ``ok`` (None: everywhere)."""
    if v.dtype.kind != "f":
        return bool(ok is None or ok.any())
    fin = np.isfinite(v)
    return bool((fin if ok is None else fin & ok).any())


@dataclass(frozen=True)
class Prep:
    """How a piece of a streamed pair becomes values and valid masks.

    ``valid`` excludes nodata, and non-finite values unless ``finite`` is False (the height
    accumulator drops those itself). With ``metres``, values are heights converted with
    each file's band scale/offset and units (float32, or float64 as read).
    """

    pred_nodata: float | None
    ref_nodata: float | None
    pred_units: HeightUnits
    ref_units: HeightUnits
    finite: bool
    metres: bool

    def piece(self, p: np.ndarray, r: np.ndarray) -> tuple:
        """``(pred, ref, pred valid, ref valid)`` of 2-D raw pieces."""
        okp, okr = _valid(p, self.pred_nodata, self.finite), _valid(r, self.ref_nodata,
                                                                     self.finite)
        if self.metres:
            p, r = self.pred_units.to_metres(p), self.ref_units.to_metres(r)
        return p, r, okp, okr


def check_pair_grids(pds, rds, pred: Path, ref: Path, align: str | None) -> None:
    """PRED's grid must be REF's, or (``align``) PRED is resampled onto it. Grids that
    differ need both CRSs: a raster without one would be read as if in the other's CRS.
    Rasters without CRS on one grid are scored pixel for pixel (benchmark tiles often have
    none)."""
    if align not in (None, "nearest", "bilinear"):
        raise InputError(f"--align must be nearest or bilinear, got {align!r}")
    if Grid.of(pds).same_as(Grid.of(rds)):
        return
    for ds, path in ((pds, pred), (rds, ref)):
        if ds.crs is None:
            other = ref if path == pred else pred
            raise InputError(f"has no CRS and its grid is not {other}'s: it cannot be aligned "
                             "(assign a CRS, e.g. `gdal_edit -a_srs EPSG:32633`)", path)
    if align is None:
        check_same_grid(rds, pds, ref, pred)


def stream_pair(pred: Path, ref: Path, align: str | None, nodata: float | None, rows: int,
                finite: bool = True, metres: bool = False, pool: ArrayPool | None = None,
                warned: set | None = None):
    """Yield ``(offset, pred strip, ref strip, prep)``: full-width raw strips on REF's grid.

    ``metres``: heights, in metres; an integer raster without a length unit or scale gets
    the warning of :func:`rsgeo.io.heights.warn_integer_heights`, once per file in
    ``warned`` (the files already told of, shared by a run's pairs; None: every time).

    ``offset`` is the index of the strip's first pixel; ``prep`` (a :class:`Prep`) turns
    pieces of the strips into values and valid masks. Both rasters are decoded in parallel
    pieces, a few strips ahead of the consumer (:func:`rsgeo.io.reader.read_strips`; with
    ``pool``, give the strips back to it when done).
    """

    with open_raster(pred, bands=1, purpose="prediction raster", require_crs=False) as pds, \
            open_raster(ref, bands=1, purpose="reference raster", require_crs=False) as rds:
        grid = Grid.of(rds)
        check_pair_grids(pds, rds, pred, ref, align)
        pu, ru = ((units_of(pds, pred), units_of(rds, ref)) if metres
                  else (HeightUnits(), HeightUnits()))
        for ds, path in ((pds, pred), (rds, ref)) if metres else ():
            if warned is None or Path(path).resolve() not in warned:
                warn_integer_heights(ds, path)
                if warned is not None:
                    warned.add(Path(path).resolve())
        with align_to(pds, grid, align or "nearest") as src:
            prep = Prep(nodata if nodata is not None else src.nodata,
                        nodata if nodata is not None else rds.nodata, pu, ru, finite, metres)
            for win, (pv, rv) in read_strips([src, rds], rows, pool=pool):
                yield int(win.row_off) * grid.width, pv, rv, prep


@dataclass(frozen=True)
class _Spec:
    """What scoring a piece needs besides its pixels."""

    task: str
    names: dict | None
    ignore_index: int | None
    lmap: dict | None
    checks: PairCheck
    warned: set | None = None   # files told of integer heights without a unit


@dataclass
class _Part:
    """A group of pieces scored: ``stats`` (height: :meth:`HeightAccumulator.window_stats`
    tuples in order; else a confusion matrix), pixels valid in both, the checks' samples."""

    stats: object
    n_valid: int
    samples: list


_calc = threading.local()  # each metrics thread's accumulator (work buffers only)


def _score_group(pieces: list, prep: Prep, spec: _Spec) -> _Part:
    """Score ``[(offset, pred piece, ref piece)]`` (raw 2-D pieces) in a metrics thread."""
    if spec.task == "height":
        return _score_heights(pieces, prep, spec.checks)
    stats = _accumulator(spec.task, spec.names, spec.ignore_index)
    n_valid, samples = 0, []
    for offset, pv, rv in pieces:
        pv, rv, okp, okr = prep.piece(pv, rv)
        if spec.lmap:
            rv, named = recode(rv, spec.lmap)
            okr = okr | named
        ok = okp & okr
        samples.append(spec.checks.sample(pv, rv, okp, okr, offset))
        n_valid += int(np.count_nonzero(ok))
        _update(stats, spec.task, pv, rv, ok, spec.ignore_index, spec.checks.paths, spec.names)
    return _Part(stats, n_valid, samples)


def _score_heights(pieces: list, prep: Prep, checks: PairCheck) -> _Part:
    """:func:`_score_group` for heights: :meth:`HeightAccumulator.window_stats` of each piece.

    A piece without nodata (the usual case) passes no masks: the accumulator's fast path
    then needs no mask pass at all."""
    calc = getattr(_calc, "acc", None)
    if calc is None:
        calc = _calc.acc = HeightAccumulator()
    stats, n_valid, samples = [], 0, []
    for offset, pv, rv in pieces:
        okp, okr = _holes(pv, prep.pred_nodata), _holes(rv, prep.ref_nodata)
        pv, rv = prep.pred_units.to_metres(pv), prep.ref_units.to_metres(rv)
        ok = okp if okr is None else okr if okp is None else okp & okr
        samples.append(checks.sample(pv, rv, okp, okr, offset))
        n_valid += pv.size if ok is None else int(np.count_nonzero(ok))
        stats.extend(calc.window_stats(pv, rv, ok))
    return _Part(stats, n_valid, samples)


def _holes(a: np.ndarray, nodata) -> np.ndarray | None:
    """``a != nodata`` where ``a`` holds ``nodata`` somewhere, else None (every pixel valid;
    non-finite values are left to the caller)."""
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return None
    if not np.count_nonzero(a == nodata):
        return None
    return a != nodata


def _scored(pred: Path, ref: Path, align, nodata, rows: int, spec: _Spec):
    """Yield the :class:`_Part` of each group of pieces of the pair, in stream order.

    Pieces are cache-sized (:data:`CHUNK` pixels); groups of :data:`GROUP` pieces are
    scored by a pool of :func:`~rsgeo.io.reader.default_threads` threads while the next
    strips are decoded, at most two groups per thread ahead (memory stays a few strips).
    Adding the parts in order gives the same totals, bit for bit, for any thread count.
    """
    threads = default_threads()
    pending: deque = deque()  # (future, strips to give back once it is done)
    strips = ArrayPool(keep=8)  # strip buffers reused: no fresh pages for every strip

    def done():
        fut, arrays = pending.popleft()
        part = fut.result()
        for a in arrays:
            strips.give(a)
        return part

    with ThreadPoolExecutor(threads, thread_name_prefix="rsgeo-metrics") as pool:
        try:
            for offset, pv, rv, prep in stream_pair(pred, ref, align, nodata, rows,
                                                    finite=spec.task != "height",
                                                    metres=spec.task == "height", pool=strips,
                                                    warned=spec.warned):
                width = pv.shape[1]
                sub = max(1, CHUNK // width)
                pieces = [(offset + a * width, pv[a:a + sub], rv[a:a + sub])
                          for a in range(0, pv.shape[0], sub)]
                for i in range(0, len(pieces), GROUP):
                    last = i + GROUP >= len(pieces)
                    pending.append((pool.submit(_score_group, pieces[i:i + GROUP], prep, spec),
                                    (pv, rv) if last else ()))
                    while len(pending) > 2 * threads:
                        yield done()
            while pending:
                yield done()
        finally:
            for fut, _ in pending:
                fut.cancel()


def _valid(a: np.ndarray, nodata, finite: bool) -> np.ndarray:
    """:func:`valid_mask` of a 2-D piece, optionally without the finiteness test."""
    if finite:
        return valid_mask(a, nodata)
    if nodata is None or (isinstance(nodata, float) and np.isnan(nodata)):
        return np.ones(a.shape, bool)
    return a != nodata


def _accumulator(task, names, ignore_index):
    if task == "height":
        return HeightAccumulator()
    if task == "change":
        return ConfusionMatrix(2, ignore_index=None)
    k = (max(names) + 1) if names else 256
    return ConfusionMatrix(k, ignore_index=None)


def _update(acc, task, pv, rv, ok, ignore_index, paths=(None, None), names=None) -> None:
    """Add one piece to ``acc``; ``paths`` (PRED, REF) name the file in the errors.

    With ``names`` (the classes file), an id that is not listed is refused like one beyond
    the largest: ids in a gap of the list (0 when the list starts at 1) would be counted in
    the matrix, then dropped with their rows and columns, and a wrong prediction of them
    would be no error at all."""
    if task == "height":
        acc.update_window(pv, rv, ok)
        return
    if ignore_index is not None:
        ok = ok & (rv != ignore_index)
    if task == "change":
        acc.update((pv[ok] != 0).astype(np.int64), (rv[ok] != 0).astype(np.int64))
        return
    for v, what, path in ((pv, "prediction", paths[0]), (rv, "reference", paths[1])):
        if np.dtype(v.dtype).kind == "f":
            x = v[ok]
            frac = x[np.mod(x, 1) != 0]
            if frac.size:  # a cast would truncate them into class ids
                raise InputError(f"segmentation {what} holds non-integer values (e.g. "
                                 f"{frac[0].item():g}); is this a class map?", path)
    p, r = pv[ok].astype(np.int64), rv[ok].astype(np.int64)
    k = acc.k
    listed = np.zeros(k, bool)
    listed[list(names) if names else slice(None)] = True
    for v, path in ((p, paths[0]), (r, paths[1])):
        bad = (v < 0) | (v >= k)
        bad[~bad] = ~listed[v[~bad]]
        if bad.any():
            vals = np.unique(v[bad])[:10].tolist()
            hint = ("list them in the classes file" if names else "pass --classes") + (
                ", or --ignore-index" if path == paths[1] or not names else "")
            raise InputError(f"class ids {vals} are not in the class list ({hint})", path)
    acc.update(p, r)


def _result(acc, task, names) -> dict:
    if task == "height":
        return acc.result()
    if task == "change":
        return acc.change_result()

    m = acc.matrix
    if names is None:  # the classes present in reference or prediction
        present = np.nonzero(m.sum(0) + m.sum(1))[0]
        sub = ConfusionMatrix(len(present))
        sub.matrix = m[np.ix_(present, present)]
        return sub.result([str(i) for i in present])
    ids = sorted(names)
    sub = ConfusionMatrix(len(ids))
    sub.matrix = m[np.ix_(ids, ids)]
    return sub.result([names[i] for i in ids])


def _synrs3d(pairs, align) -> dict:
    avg = Synrs3dAverager()
    images = []
    for p, r in pairs:
        with open_raster(p, bands=1, require_crs=False) as pds, \
                open_raster(r, bands=1, require_crs=False) as rds:
            check_pair_grids(pds, rds, p, r, align)
            with align_to(pds, Grid.of(rds), align or "nearest") as src:
                m = avg.update(src.read(1), rds.read(1))
        images.append({"image": p.name, **{(k if g == "whole" else f"{k}_{g}"): v
                                           for g, vals in m.items() for k, v in vals.items()}})
    return {"summary": avg.result(), "images": images}


def _footprints(pred: Path, ref: Path, iou, min_area, confidence, by) -> dict:
    if not 0 < iou < 1:
        raise InputError(f"--iou must be in (0, 1), got {iou}")
    if min_area is not None and not min_area >= 0:
        raise InputError(f"--min-area must be an area >= 0, got {min_area:g}")
    csv = [p.suffix.lower() == ".csv" for p in (pred, ref)]
    if all(csv):
        for p in (pred, ref):
            if not p.is_file():
                raise InputError("no such file", p)
        frames = []
        for p in (pred, ref):
            try:
                frames.append(read_spacenet_csv(p))
            except KeyError as e:
                raise InputError(f"not a SpaceNet CSV (needs ImageId, PolygonWKT_Pix; no {e})",
                                 p) from None
            except ValueError as e:  # pandas parser errors too
                raise InputError(f"not a readable SpaceNet CSV ({str(e).strip()[:160]})",
                                 p) from None
        a, b = frames
        for g, p in ((a, pred), (b, ref)):
            require_polygons(g, p, "footprints")
        by = by or "ImageId"            # SpaceNet matches buildings within each image
        min_area = 20.0 if min_area is None else min_area
    elif any(csv):
        raise InputError("both inputs must be SpaceNet CSVs, or both vector files", pred)
    else:
        a, b = read_vector(pred, "prediction footprints file"), read_vector(ref, "reference footprints file")
        for g, p in ((a, pred), (b, ref)):
            if len(g) == 0:
                raise InputError("vector layer is empty", p)
            require_polygons(g, p, "footprints")
        if (a.crs is None) != (b.crs is None):
            which = pred if a.crs is None else ref
            raise InputError("has no CRS while the other file has one; assign a CRS", which)
        if a.crs is not None and a.crs != b.crs:
            a = a.to_crs(b.crs)
        min_area = 0.0 if min_area is None else min_area
    for name, g in (("confidence", confidence), ("by", by)):
        if g and g not in a.columns:
            raise InputError(f"--{name} field {g!r} not in the prediction's columns", pred)
    if by and by not in b.columns:
        raise InputError(f"--by field {by!r} not in the reference's columns", ref)
    r = score_footprints(a, b, iou=iou, min_area=min_area, confidence=confidence, by=by)
    groups = r.pop("groups", [])
    return {"summary": r, "images": [{"image": g.pop(by), **g} for g in groups]}
