"""Vectors that must hold polygons (building footprints): anything else is refused, not dropped."""

from __future__ import annotations

import os

from rsgeo.errors import InputError

POLYGONAL = {"Polygon", "MultiPolygon"}


def require_polygons(gdf, path: str | os.PathLike, what: str = "buildings") -> None:
    """Raise ``InputError`` naming ``path`` when a non-empty geometry is not a (multi)polygon.

    Empty and missing geometries pass (callers drop or keep them by their own rules).
    """
    import shapely

    geoms = gdf.geometry.to_numpy()
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    kinds = gdf.geometry[present].geom_type.value_counts()
    bad = {k: int(n) for k, n in kinds.items() if k not in POLYGONAL}
    if bad:
        found = ", ".join(f"{n} {k}" for k, n in sorted(bad.items()))
        raise InputError(f"{what} must be polygons; found {found}", path)
