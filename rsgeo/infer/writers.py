"""What ``rsgeo predict`` writes for each task, chosen by the model's task name (:data:`WRITERS`).

The pipeline (:mod:`rsgeo.infer.predict`) turns every tile's model output into *scores*
(``scores``: heights as they are, softmax probabilities, the sigmoid change probability),
blends the scores of overlapping tiles (raised-cosine weights) and hands finished block
rows, ``(K, h, w)`` float32 with -9999 where the input is nodata, to the writer's *sink*;
the sink turns them into the files. Classes are therefore the argmax of the *blended*
probabilities, never a per-tile argmax. Classification models give one score vector per
tile and write a table instead (:class:`ClassificationWriter`).

A writer says:

- ``channels(meta, config)``: how many model output channels it reads;
- ``spatial``: whether the model returns maps ``(B, K, h, w)`` (else ``(B, K)``);
- ``scores(out)``: per-tile output -> what is blended (None: as it is);
- ``open(path, grid, meta, ctx, stack)``: open the outputs, return the sink
  (``block_shapes``, ``dtypes``, ``write(array, window)``); table writers
  (``table = True``) return a row collector instead and write the table once at the end
  (``write_table``);
- ``summary(path, sink)``: the per-file numbers for the summary / ``--json``;
- ``outputs(path)``: every file it writes for ``path`` (overwrite checks);
- ``suffix``: the output name ``<stem><suffix>`` in an output folder.

``WRITERS[task](**options)`` makes one (options: ``probabilities``, ``threshold``,
``per_input``; a writer ignores the others).
"""

from __future__ import annotations

import colorsys
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from rsgeo.errors import InputError
from rsgeo.io.atomic import atomic_path
from rsgeo.io.raster import Grid
from rsgeo.io.vector import write_vector
from rsgeo.io.writer import (HEIGHT_NODATA, check_raster_output, class_tags, open_output,
                             write_categories)
from rsgeo.metrics.grouped import median_inplace
from rsgeo.viz import LANDCOVER_COLORS

CLASS_NODATA = 255  # uint8 class and change rasters
MAX_CLASSES = 255


@dataclass
class OutputContext:
    """How outputs are written: creation options for float rasters (``float_co``, the
    height codec plus ``--co``) and for class rasters (``co``: ``--co`` only), COG copy,
    overwrite, the tags every output gets."""

    float_co: dict | None = None
    co: dict | None = None
    cog: bool = False
    overwrite: bool = False
    tags: dict = field(default_factory=dict)


def softmax(out: np.ndarray) -> np.ndarray:
    """Softmax over axis 1 of ``(B, K, ...)`` logits, float32 (new array)."""
    z = out - out.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32, copy=False)


def sigmoid(out: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` elementwise, float32 (new array)."""
    return (1.0 / (1.0 + np.exp(-np.clip(out, -60, 60)))).astype(np.float32)


def class_names(meta: dict, k: int) -> list[str]:
    """Names of classes ``0..k-1`` from the bundle's ``classes`` ({id: name} or a list);
    ``class_<i>`` where it names none."""
    given = meta.get("classes") or {}
    if isinstance(given, list):
        given = dict(enumerate(given))
    names = {int(i): str(n) for i, n in given.items()}
    return [names.get(i, f"class_{i}") for i in range(k)]


def class_palette(k: int) -> dict[int, tuple[int, int, int, int]]:
    """RGBA colour table for classes ``0..k-1``: the land-cover colours (:mod:`rsgeo.viz`)
    for ids 0..8, evenly spread hues beyond; nodata (255) transparent."""
    table = {}
    for i in range(k):
        if i in LANDCOVER_COLORS:
            table[i] = (*LANDCOVER_COLORS[i], 255)
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.9)
            table[i] = (int(r * 255), int(g * 255), int(b * 255), 255)
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


def num_classes(meta: dict, config: dict, path=None) -> int:
    k = config.get("num_classes") or meta.get("num_classes")
    if not k:
        raise InputError("the model does not say how many classes it has", path)
    if int(k) > MAX_CLASSES:
        raise InputError(f"{k} classes do not fit a uint8 class raster (at most {MAX_CLASSES})",
                         path)
    return int(k)


def sibling(path: str | Path, suffix: str) -> Path:
    """``<stem><suffix>`` next to ``path`` (``out.tif`` -> ``out_probabilities.tif``)."""
    p = Path(path)
    return p.with_name(p.stem + suffix)


class HeightWriter:
    """Heights in metres: float32, nodata -9999, on the input grid (``predict-height``)."""

    task, suffix, spatial, table = "height", "_height.tif", True, False
    scores = None

    def __init__(self, **_):
        pass

    def channels(self, meta: dict, config: dict) -> int:
        return 1

    def outputs(self, path) -> list[Path]:
        return [check_raster_output(path)]

    def open(self, path, grid, meta: dict, ctx: OutputContext, stack):
        return HeightSink(stack.enter_context(open_output(
            path, grid, nodata=HEIGHT_NODATA, co=ctx.float_co, overwrite=ctx.overwrite,
            cog=ctx.cog, tags={**ctx.tags, "units": "metre"}, units="metre",
            band_descriptions=["height above ground (m)"])))

    def summary(self, path, sink) -> dict:
        return sink.stats() if isinstance(sink, HeightSink) else height_stats(path)


class HeightSink:
    """The heights dataset, with min / median / max of what is written to it: no second
    read of the output. Min and max are exact; the median is exact up to ``EXACT_PX``
    pixels, else that of a regular grid of pixels (every ``step``-th row and column) over
    the whole raster, about ``EXACT_PX`` of them. The grid's values are kept in one buffer
    as the rows are written, so finishing a file costs one partition (no concatenation).
    Attributes other than ``write`` are the dataset's."""

    EXACT_PX = 2048 * 2048

    def __init__(self, ds):
        self._ds = ds
        self._lock = threading.Lock()
        self._lo, self._hi = np.inf, -np.inf
        self.step = k = max(1, math.ceil(math.sqrt(ds.width * ds.height / self.EXACT_PX)))
        self._kept = np.empty(-(-ds.height // k) * -(-ds.width // k), np.float32)
        self._n = 0

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def write(self, arr: np.ndarray, window=None, **kw) -> None:
        self._ds.write(arr, window=window, **kw)
        a = arr[0] if arr.ndim == 3 else arr
        r0, c0 = (int(window.row_off), int(window.col_off)) if window is not None else (0, 0)
        k = self.step
        grid = a[(-r0) % k::k, (-c0) % k::k]  # rows and columns that are multiples of step
        grid = grid[grid != HEIGHT_NODATA]
        ok = a != HEIGHT_NODATA
        if not ok.any():
            return
        v = a if ok.all() else a[ok]
        lo, hi = float(v.min()), float(v.max())
        with self._lock:
            self._lo, self._hi = min(self._lo, lo), max(self._hi, hi)
            n = self._n
            if n + grid.size > self._kept.size:  # a window written twice: keep both
                self._kept = np.concatenate([self._kept[:n], np.empty(n + grid.size, np.float32)])
            self._kept[n:n + grid.size] = grid.ravel()
            self._n = n + grid.size

    def stats(self) -> dict:
        """``{"height_min", "height_median", "height_max"}`` (m, rounded to mm; None when
        no valid height was written)."""
        if self._lo > self._hi:
            return {"height_min": None, "height_median": None, "height_max": None}
        med = median_inplace(self._kept[:self._n]) if self._n else None
        return {"height_min": round(self._lo, 3),
                "height_median": None if med is None else round(med, 3),
                "height_max": round(self._hi, 3)}


class ClassSink:
    """Blended probabilities -> uint8 argmax raster (255 nodata), optionally the
    probabilities too; counts pixels per class."""

    def __init__(self, classes, probabilities, names: list[str], threshold: float | None = None):
        self.classes, self.probabilities, self.names = classes, probabilities, names
        k = self.k = len(names)
        self.threshold = threshold  # one-band (change) scores: class 1 where >= threshold
        self.block_shapes = classes.block_shapes
        self.dtypes = ("float32",) * k
        self.counts = np.zeros(max(k, 2), np.int64)

    def write(self, arr: np.ndarray, window) -> None:
        bad = arr[0] == HEIGHT_NODATA
        if self.threshold is None:
            cls = arr.argmax(axis=0).astype(np.uint8)
        else:
            cls = (arr[0] >= self.threshold).astype(np.uint8)
        cls[bad] = CLASS_NODATA
        self.classes.write(cls[None], window=window)
        if self.probabilities is not None:
            self.probabilities.write(arr.astype(np.float32, copy=False), window=window)
        self.counts += np.bincount(cls[~bad].ravel(), minlength=len(self.counts))[:len(self.counts)]

    def fractions(self) -> np.ndarray:
        return self.counts / max(int(self.counts.sum()), 1)


class SegmentationWriter:
    """A uint8 class raster (argmax of the blended softmax probabilities; 255 nodata) with
    the model's class names (tags ``class_<i>``, ``classes``) and a colour table;
    ``probabilities``: also the class raster's sibling ``_probabilities.tif`` (in folder
    runs ``<stem>_classes_probabilities.tif``), one float32 band per class."""

    task, suffix, spatial, table = "segmentation", "_classes.tif", True, False
    scores = staticmethod(softmax)

    def __init__(self, probabilities: bool = False, **_):
        self.probabilities = probabilities

    def channels(self, meta: dict, config: dict) -> int:
        return num_classes(meta, config)

    def outputs(self, path) -> list[Path]:
        return [check_raster_output(path)] + ([sibling(path, "_probabilities.tif")]
                                               if self.probabilities else [])

    def open(self, path, grid, meta: dict, ctx: OutputContext, stack):
        k = num_classes(meta, meta)
        names = class_names(meta, k)
        tags = {**ctx.tags, **class_tags(dict(enumerate(names)))}
        cls = stack.enter_context(open_output(
            path, grid, dtype="uint8", nodata=CLASS_NODATA, co=ctx.co, overwrite=ctx.overwrite,
            cog=ctx.cog, tags=tags, units="class", band_descriptions=["class"]))
        cls.write_colormap(1, class_palette(k))
        prob = None
        if self.probabilities:
            prob = stack.enter_context(open_output(
                sibling(path, "_probabilities.tif"), grid, count=k, nodata=HEIGHT_NODATA,
                co=ctx.float_co, overwrite=ctx.overwrite, cog=ctx.cog,
                tags={**ctx.tags, "units": "probability"}, units="probability",
                band_descriptions=[f"probability of {n}" for n in names]))
        return ClassSink(cls, prob, names)

    def summary(self, path, sink) -> dict:
        # class names for QGIS's legend (a GeoTIFF keeps them only as tags); the side file
        # is published together with the raster (rsgeo.infer.stream: all or nothing)
        write_categories(path, dict(enumerate(sink.names)), class_palette(len(sink.names)))
        out = {"class_fractions": {n: round(float(f), 4)
                                   for n, f in zip(sink.names, sink.fractions())}}
        if self.probabilities:
            out["probabilities"] = str(sibling(path, "_probabilities.tif"))
        return out


CHANGE_COLORS = {0: (0, 0, 0, 0), 1: (220, 30, 30, 255), CLASS_NODATA: (0, 0, 0, 0)}


class ChangeWriter:
    """PRE/POST change: a uint8 mask (1 where the blended change probability >=
    ``threshold``, 0 elsewhere, 255 nodata; colour table) and ``<stem>_probability.tif``
    (float32, nodata -9999)."""

    task, suffix, spatial, table = "change", "_change.tif", True, False
    scores = staticmethod(sigmoid)

    def __init__(self, threshold: float = 0.5, **_):
        if not 0.0 < threshold < 1.0:
            raise InputError(f"--threshold must be in (0, 1), got {threshold}")
        self.threshold = threshold

    def channels(self, meta: dict, config: dict) -> int:
        return 1

    def outputs(self, path) -> list[Path]:
        return [check_raster_output(path), sibling(path, "_probability.tif")]

    def open(self, path, grid, meta: dict, ctx: OutputContext, stack):
        mask = stack.enter_context(open_output(
            path, grid, dtype="uint8", nodata=CLASS_NODATA, co=ctx.co, overwrite=ctx.overwrite,
            cog=ctx.cog, tags={**ctx.tags, "units": "class", "class_0": "no change",
                               "class_1": "change", "threshold": repr(self.threshold)},
            units="class", band_descriptions=["change (1) or not (0)"]))
        mask.write_colormap(1, CHANGE_COLORS)
        prob = stack.enter_context(open_output(
            sibling(path, "_probability.tif"), grid, nodata=HEIGHT_NODATA, co=ctx.float_co,
            overwrite=ctx.overwrite, cog=ctx.cog, tags={**ctx.tags, "units": "probability"},
            units="probability", band_descriptions=["change probability"]))
        return ClassSink(mask, prob, ["change probability"], threshold=self.threshold)

    def summary(self, path, sink) -> dict:
        # the side file's colour table keeps "no change" transparent (a GeoTIFF palette has
        # no alpha: it came back opaque black over the imagery) and names both classes
        write_categories(path, {0: "no change", 1: "change"}, CHANGE_COLORS)
        return {"changed_fraction": round(float(sink.fractions()[1]), 4),
                "probability": str(sibling(path, "_probability.tif"))}


TABLE_SUFFIXES = (".csv", ".parquet", ".gpkg", ".geojson", ".fgb")


class TileRows:
    """Collects one row per tile from ``(B, K)`` probabilities (stands in for the blending
    of map outputs: ``put``, ``join``, ``abort``)."""

    def __init__(self, grid, tile: int, input_name: str, names: list[str]):
        self.grid, self.tile, self.input, self.names = grid, tile, input_name, names
        self.rows: list[tuple] = []  # (row, col, h, w, valid fraction, probabilities)

    def put(self, windows, probs, valid) -> None:
        t, H, W = self.tile, self.grid.height, self.grid.width
        for win, p, v in zip(windows, probs, valid):
            r, c = int(win.row_off), int(win.col_off)
            h, w = min(t, H - r), min(t, W - c)
            frac = float(v[:h, :w].mean())
            if frac > 0:  # tiles of nodata only get no row
                self.rows.append((r, c, h, w, frac, np.array(p, np.float32)))

    def join(self) -> None:
        pass

    def abort(self) -> None:
        pass


class ClassificationWriter:
    """One row per tile (``per_input``: per input, the valid-pixel weighted mean of its
    tiles' probabilities) with the footprint polygon, ``class``, ``class_name``,
    ``probability`` (the top one), ``valid_fraction`` and ``p_<name>`` per class, into a
    table by extension: .csv (geometry as WKT, plus ``crs``) or a vector format
    (.parquet = GeoParquet, .gpkg, .geojson, .fgb). Every input goes into the one table."""

    task, suffix, spatial, table = "classification", ".csv", False, True
    scores = staticmethod(softmax)

    def __init__(self, per_input: bool = False, **_):
        self.per_input = per_input
        self.rows: dict[str, list[dict]] = {}
        self.crs = {}

    def channels(self, meta: dict, config: dict) -> int:
        return num_classes(meta, config)

    def outputs(self, path) -> list[Path]:
        if Path(path).suffix.lower() not in TABLE_SUFFIXES:
            raise InputError("classification results are a table: give an output ending in "
                             + ", ".join(TABLE_SUFFIXES), path)
        return [Path(path)]

    def open(self, path, grid, meta: dict, ctx: OutputContext, stack, *, input_name="",
             tile: int = 0):
        return TileRows(grid, tile, input_name, class_names(meta, num_classes(meta, meta)))

    def summary(self, path, sink) -> dict:
        rows = _tile_rows(sink) if not self.per_input else _input_row(sink)
        self.rows[sink.input] = rows
        self.crs[sink.input] = sink.grid.crs
        top = {}
        for r in rows:
            top[r["class_name"]] = top.get(r["class_name"], 0) + 1
        return {"rows": len(rows), "classes": top}

    def write_table(self, path, inputs: list[str], overwrite: bool) -> int:
        """Write every input's rows (in ``inputs`` order) to ``path``; returns the count."""
        import geopandas as gpd  # lazy: geopandas is heavy
        import pandas as pd

        rows = [r for name in inputs for r in self.rows.get(name, [])]
        crss = {str(self.crs[name]) for name in inputs if name in self.crs}
        if Path(path).suffix.lower() == ".csv":
            frame = pd.DataFrame([{**r, "geometry": r["geometry"].wkt} for r in rows])
            with atomic_path(path, overwrite) as tmp:
                frame.to_csv(tmp, index=False)
            return len(rows)
        if len(crss) > 1:
            raise InputError("inputs in several CRSs cannot share one vector table; write "
                             ".csv (it has a crs column) or run them separately", path)
        crs = next((self.crs[n] for n in inputs if n in self.crs), None)
        frame = gpd.GeoDataFrame([{k: v for k, v in r.items() if k != "crs"} for r in rows],
                                 geometry="geometry", crs=crs)
        write_vector(frame, path, overwrite=overwrite)
        return len(rows)


def _row(sink: TileRows, geometry, probs: np.ndarray, frac: float, extra: dict) -> dict:
    k = int(np.argmax(probs))
    return {"input": sink.input, **extra, "class": k, "class_name": sink.names[k],
            "probability": round(float(probs[k]), 6), "valid_fraction": round(frac, 4),
            **{f"p_{n}": round(float(p), 6) for n, p in zip(sink.names, probs)},
            "crs": str(sink.grid.crs), "geometry": geometry}


def _tile_rows(sink: TileRows) -> list[dict]:
    g = sink.grid
    out = []
    for r, c, h, w, frac, p in sorted(sink.rows, key=lambda x: (x[0], x[1])):
        tile = Grid(g.crs, g.transform * Affine.translation(c, r), w, h)
        out.append(_row(sink, tile.outline(), p, frac, {"row": r, "col": c}))
    return out


def _input_row(sink: TileRows) -> list[dict]:
    if not sink.rows:
        return []
    weights = np.array([x[4] * x[2] * x[3] for x in sink.rows], np.float64)
    probs = np.stack([x[5] for x in sink.rows]).astype(np.float64)
    mean = (probs * weights[:, None]).sum(0) / weights.sum()
    frac = float(weights.sum() / sum(x[2] * x[3] for x in sink.rows))
    return [_row(sink, sink.grid.outline(), mean, frac, {"tiles": len(sink.rows)})]


WRITERS = {"height": HeightWriter, "segmentation": SegmentationWriter, "change": ChangeWriter,
           "classification": ClassificationWriter}


def writer_for(task: str, path=None, **options):
    """The writer for ``task`` with its options; an InputError for a task without one."""
    if task not in WRITERS:
        raise InputError(f"a model of task {task!r}: rsgeo predict knows "
                         + ", ".join(WRITERS), path)
    return WRITERS[task](**options)


def height_stats(path, sample: int = 2048) -> dict:
    """min/median/max of valid heights: exact up to ``sample``² px, else from an 8 x 8 grid
    of ``sample // 8``-px windows spread over the raster (a few Mpx, whatever the size)."""
    import rasterio  # lazy: rasterio-heavy
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        if max(ds.width, ds.height) <= sample:
            h = ds.read(1)
        else:
            n, k = 8, sample // 8
            wk, hk = min(k, ds.width), min(k, ds.height)
            rows = np.linspace(0, ds.height - hk, n).astype(int)
            cols = np.linspace(0, ds.width - wk, n).astype(int)
            h = np.concatenate([ds.read(1, window=Window(int(c), int(r), wk, hk)).ravel()
                                for r in rows for c in cols])
    v = h[h != HEIGHT_NODATA]
    if v.size == 0:
        return {"height_min": None, "height_median": None, "height_max": None}
    return {"height_min": round(float(v.min()), 3), "height_median": round(median_inplace(v), 3),
            "height_max": round(float(v.max()), 3)}
