"""Pixel coordinates -> a square metric frame (for regularising) -> the raster's CRS; areas in m².

Footprints are traced in pixel coordinates (column, row). Regularisation needs square
units, so a polygon is scaled by the ground size of a pixel (``x * sx``, ``y * sy``, in
metres): exact for projected CRSs, and for geographic CRSs the size at the scene's centre
latitude (a pixel of 1e-5° is ~1.1 m north-south but only ~0.7 m east-west at 50°N).
Areas in m² are planar in projected CRSs (times the unit's length in metres, squared) and
geodesic on the CRS's ellipsoid in geographic ones.
"""

from __future__ import annotations


import numpy as np
import shapely

from rsgeo.io.raster import Grid, ground_res

def pixel_size_m(grid: Grid) -> tuple[float, float]:
    """Ground size (x, y) of one pixel in metres: :func:`rsgeo.io.raster.ground_res`, the
    size every other command resamples by (its own sphere constant here gave geographic
    rasters pixels 0.1 % larger than prediction does)."""
    return ground_res(grid)


def scale(geoms, sx: float, sy: float):
    """Geometries with x multiplied by ``sx`` and y by ``sy`` (vectorised)."""
    return shapely.transform(geoms, lambda xy: xy * np.array([sx, sy]))


def to_crs(geoms, grid: Grid):
    """Pixel-coordinate geometries -> map coordinates of ``grid`` (its affine transform)."""
    t = grid.transform
    m = np.array([[t.a, t.d], [t.b, t.e]])
    return shapely.transform(geoms, lambda xy: xy @ m + np.array([t.c, t.f]))


def area_m2(geoms, crs) -> np.ndarray:
    """Area of map-coordinate polygons in m² (float64 ``[n]``)."""
    geoms = np.asarray(geoms, dtype=object)
    if crs is not None and crs.is_geographic:
        from pyproj import CRS

        geod = CRS.from_user_input(crs.to_wkt()).get_geod()
        return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], float)
    factor = crs.linear_units_factor[1] if crs is not None else 1.0
    return shapely.area(geoms) * factor ** 2
