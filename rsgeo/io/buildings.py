"""Building footprints from a vector file, on a raster's grid, measured strip by strip.

:func:`load_buildings` reads polygons (any OGR format, GeoParquet), reprojects them onto the
raster's CRS and says which lie outside it; :class:`Footprints` rasterises the buildings of
one strip (pixel centres, ids 1..n) and joins per-building statistics back onto the input
rows. Used by ``damage-map --buildings`` and ``building-heights``.
"""

from __future__ import annotations

import logging

import numpy as np
from rasterio import features
from rasterio.windows import Window

from rsgeo.errors import InputError
from rsgeo.io.polygons import require_polygons
from rsgeo.io.raster import Grid, crs_label, open_raster
from rsgeo.io.vector import read_vector

log = logging.getLogger("rsgeo.io")
#: where a footprint lies (``Footprints.coverage`` and the ``coverage`` column)
COVERAGE = ("inside", "partly outside", "outside", "no valid pixel")


class Footprints:
    """Building footprints on a raster grid: ids 1..n, row span of each, rasterised per strip.

    ``coverage`` (one value per building) says where each footprint lies: ``inside`` or
    ``partly outside`` the raster extent (measured on the pixels inside), ``outside`` it
    (no statistics). Buildings in the extent without a valid pixel centre (nodata, or
    smaller than a pixel) become ``no valid pixel`` in :meth:`with_stats`.

    Footprints whose interiors overlap (a building and its parts, the same building from
    two sources, a block around its houses) are rasterised in separate ``layers``, so each
    gets every pixel centre inside it; in one raster the later would take the shared
    pixels and the earlier come out smaller, or without a valid pixel.
    """

    def __init__(self, gdf, grid: Grid, source_crs=None):
        import shapely

        self.gdf, self.grid = gdf.reset_index(drop=True), grid
        self.source_crs = source_crs or gdf.crs  # the file's own, before reprojection
        self.ids = np.arange(1, len(self.gdf) + 1, dtype=np.int64)
        extent = grid.outline()
        geoms = self.gdf.geometry.to_numpy()
        touches = shapely.intersects(geoms, extent)
        within = shapely.within(geoms, extent)
        self.coverage = np.where(within, "inside",
                                 np.where(touches, "partly outside", "outside")).astype(object)
        b = self.gdf.geometry.bounds.to_numpy()
        inv = ~grid.transform  # map -> (col, row); row = d*x + e*y + f
        rows = np.stack([inv.d * x + inv.e * y + inv.f for x, y in
                         ((b[:, 0], b[:, 1]), (b[:, 0], b[:, 3]), (b[:, 2], b[:, 1]), (b[:, 2], b[:, 3]))])
        self.first_row = np.clip(np.floor(rows.min(0)), 0, grid.height - 1).astype(np.int64)
        self.last_row = np.zeros(len(self.ids) + 1, np.int64)
        self.last_row[1:] = np.clip(np.floor(rows.max(0)), 0, grid.height - 1)
        self.first_row[~touches] = grid.height    # never rasterised
        self.last_row[1:][~touches] = 0
        self.layer = overlap_layers(geoms)
        self.layers = int(self.layer.max(initial=0)) + 1

    def rasterize(self, win: Window, transform) -> np.ndarray:
        """Building ids of the window's pixels (pixel centres inside; 0: none), ``[layers,
        height, width]``: one layer unless footprints overlap (see the class)."""
        r0, r1 = int(win.row_off), int(win.row_off + win.height)
        sel = (self.first_row < r1) & (self.last_row[1:] >= r0)
        out = np.zeros((self.layers, int(win.height), int(win.width)), np.int32)
        geoms = self.gdf.geometry.to_numpy()
        for k in range(self.layers):
            pick = sel & (self.layer == k)
            if pick.any():  # burnt in place (``out``: a copy per strip cost 5 %)
                features.rasterize(zip(geoms[pick], self.ids[pick]), out=out[k],
                                   transform=transform, fill=0, dtype="int32")
        return out

    def with_stats(self, table: dict, coverage_column: str = "coverage"):
        """The input frame with ``table``'s columns (statistics per ``table["id"]``, sorted;
        NaN for buildings without) and the coverage column; ``table`` keys starting with
        ``_`` are for the caller, not columns. Integer columns (pixel counts) stay integer
        fields, 0 for buildings without statistics: no NaN turns them into floats."""
        out = self.gdf.copy()
        pos, found = self.rows_of(table["id"])
        for k, v in table.items():
            if k == "id" or k.startswith("_"):
                continue
            v = np.asarray(v)
            col = np.zeros(len(self.ids), v.dtype) if v.dtype.kind in "iu" \
                else np.full(len(self.ids), np.nan)
            col[found] = v[pos[found]]
            out[k] = col
        coverage = self.coverage.copy()
        coverage[~found & (coverage != "outside")] = "no valid pixel"
        out[coverage_column] = coverage
        return out

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(pos, found)``: for every building, its row in the sorted ``ids`` and whether
        it is there."""
        n = len(ids)
        pos = np.clip(np.searchsorted(ids, self.ids), 0, max(n - 1, 0))
        found = (ids[pos] == self.ids) if n else np.zeros(len(self.ids), bool)
        return pos, found

    @staticmethod
    def coverage_counts(gdf) -> dict:
        """Summary counts of the buildings not (fully) graded, from :meth:`with_stats`."""
        c = gdf["coverage"].value_counts()
        return {"outside": int(c.get("outside", 0)),
                "partly_outside": int(c.get("partly outside", 0)),
                "no_valid_pixel": int(c.get("no valid pixel", 0))}


def overlap_layers(geoms) -> np.ndarray:
    """A layer index per polygon such that no two polygons of one layer share interior
    (touching along an edge is fine: a pixel centre belongs to one side): greedy colouring
    of the overlap graph, all 0 when nothing overlaps."""
    import shapely

    layer = np.zeros(len(geoms), np.int64)
    if len(geoms) < 2:
        return layer
    i, j = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    i, j = i[keep], j[keep]
    hit = ~shapely.touches(geoms[i], geoms[j])
    i, j = i[hit], j[hit]
    if not len(i):
        return layer
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        neighbours.setdefault(b, []).append(a)
    for b in sorted(neighbours):           # each polygon after every earlier one it overlaps
        used = {int(layer[a]) for a in neighbours[b]}
        layer[b] = next(k for k in range(len(used) + 1) if k not in used)
    return layer


def read_footprints(path):
    """The non-empty footprints of ``path`` (any OGR format, GeoParquet) in their own CRS.

    Raises:
        InputError: no CRS, an empty layer, a geometry that is not a (multi)polygon.
    """
    gdf = read_vector(path, "footprints file")
    if gdf.crs is None:
        raise InputError("footprints have no CRS; assign one (e.g. ogr2ogr -a_srs EPSG:...)", path)
    if len(gdf) == 0:
        raise InputError("footprints layer is empty", path)
    require_polygons(gdf, path)
    import shapely

    geoms = gdf.geometry.to_numpy()
    gdf = gdf[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    if len(gdf) == 0:
        raise InputError("footprints layer holds only empty geometries", path)
    return gdf


def load_buildings(path, grid: Grid, skipped: str = "they get no statistics") -> Footprints:
    """Footprints (polygons with a CRS) reprojected onto ``grid``'s CRS; a warning names
    those outside the raster (``skipped`` says what that means for them).

    Raises:
        InputError: no CRS, an empty layer, a geometry that is not a (multi)polygon, or no
            footprint overlapping the raster (a wrong CRS or zone: nothing to measure).
    """
    gdf = read_footprints(path)
    source_crs = gdf.crs
    if grid.crs is not None and gdf.crs != grid.crs:
        log.info("%s: footprints reprojected from %s", path, crs_label(gdf.crs))
        gdf = gdf.to_crs(grid.crs)
    if not gdf.geometry.is_valid.all():
        gdf = gdf.copy()
        gdf["geometry"] = gdf.geometry.buffer(0)
    fp = Footprints(gdf, grid, source_crs)
    report_outside(fp.coverage == "outside", path, source_crs, grid.crs, skipped)
    return fp


def require_overlap(path, raster) -> None:
    """Refuse the footprints ``path`` before costly work on ``raster`` (a prediction that
    turns an image into heights): what :func:`load_buildings` refuses -- no CRS, an empty
    layer, non-polygons, and footprints none of which overlaps ``raster`` (a wrong CRS,
    zone or file) -- checked on ``raster``'s own extent. Warns about nothing: the later
    :func:`load_buildings` does."""
    gdf = read_footprints(path)
    with open_raster(raster) as ds:
        grid = Grid.of(ds)
    outside = footprints_outside(gdf, grid)
    if outside.all():
        report_outside(outside, path, gdf.crs, grid.crs, "")


def footprints_outside(gdf, grid: Grid) -> np.ndarray:
    """Which footprints of ``gdf`` (any CRS) miss ``grid``'s extent entirely (bool per row;
    empty and missing geometries count as outside)."""
    import shapely

    if grid.crs is not None and gdf.crs is not None and gdf.crs != grid.crs:
        gdf = gdf.to_crs(grid.crs)
    return ~shapely.intersects(gdf.geometry.to_numpy(), grid.outline())


def report_outside(outside: np.ndarray, path, source_crs, raster_crs, skipped: str) -> None:
    """Refuse footprints none of which overlaps the raster (a wrong CRS, UTM zone or file:
    nothing to measure, an all-empty result); warn about some outside (``skipped``: what
    that means for them)."""
    n, k = len(outside), int(np.count_nonzero(outside))
    if n and k == n:
        raise InputError(f"none of the {n} footprints overlaps the raster ({crs_label(source_crs)}"
                         f" footprints, {crs_label(raster_crs)} raster): wrong CRS, zone or file?",
                         path)
    if k:
        log.warning("%s: %d of %d footprints lie outside the raster; %s", path, k, n, skipped)

