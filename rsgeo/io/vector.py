"""Vector output with the format chosen by extension, always with a CRS, written atomically.

``.gpkg`` (default), ``.geojson``/``.json``, ``.geojsonl``/``.geojsons`` (GeoJSON
sequence), ``.parquet`` (GeoParquet), ``.fgb`` (FlatGeobuf). GeoJSON is written as a
FeatureCollection, so QGIS shows it; it can only name a CRS by its authority code, so
frames in a CRS without one are written in EPSG:4326 (RFC 7946's CRS; GeoJSON sequences
always are). Polygons in GeoJSON follow RFC 7946's right-hand rule (exterior rings
counter-clockwise, holes clockwise), whatever the frame's ring order. Shapefiles are refused: they cut field names to 10 characters
(``height_median_m`` and ``height_max_m`` would collide) and are several files, which one
atomic rename cannot publish.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from rsgeo.errors import InputError, first_line
from rsgeo.io.atomic import atomic_path

DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".geojsonl": "GeoJSONSeq",
    ".geojsons": "GeoJSONSeq",
    ".fgb": "FlatGeobuf",
    ".parquet": None,
}
log = logging.getLogger("rsgeo.io")


def driver_for(path: str | os.PathLike) -> str | None:
    """The OGR driver for ``path``'s extension (None means GeoParquet)."""
    ext = Path(path).suffix.lower()
    if ext == ".shp":
        raise InputError("Shapefile output is not offered (field names cut to 10 characters, "
                         "several files); write .gpkg, which QGIS and ArcGIS open, or .fgb", path)
    if ext not in DRIVERS:
        raise InputError(f"unknown vector format {ext or '(no extension)'}; use one of "
                         + ", ".join(DRIVERS), path)
    return DRIVERS[ext]


def write_vector(gdf, path: str | os.PathLike, *, overwrite: bool = False,
                 layer: str | None = None, empty_type: str = "Polygon") -> Path:
    """Write a GeoDataFrame atomically; refuses a frame without CRS.

    A frame without a geometry (no building found) is written as a layer of ``empty_type``
    (every rsgeo layer holds polygons), not of OGR's "Unknown", so GIS software styles it as
    it styles the non-empty layers; otherwise the type is the geometries' own.
    """
    if gdf.crs is None:
        raise ValueError("refusing to write vectors without a CRS")
    driver = driver_for(path)
    if driver == "GeoJSON" and gdf.crs.to_authority() is None:
        log.warning("%s: GeoJSON names a CRS only by its code, and this one has none; written "
                    "in EPSG:4326 (write .gpkg to keep the CRS)", path)
        gdf = gdf.to_crs(4326)
    if driver in ("GeoJSON", "GeoJSONSeq"):
        gdf = right_hand(gdf)
    empty = not gdf.geometry.notna().any()
    with atomic_path(path, overwrite) as tmp:
        if driver is None:
            gdf.to_parquet(tmp)
            if empty:
                _declare_parquet_type(tmp, empty_type)
        else:  # the layer named after the file, not the temporary name it is written under
            typed = {"geometry_type": empty_type} if empty else {}
            with _fixed_gpkg_date():
                gdf.to_file(tmp, driver=driver, engine="pyogrio", layer=layer or Path(path).stem,
                            **typed)
    return Path(path)


def right_hand(gdf):
    """``gdf`` with its polygons' rings in RFC 7946's order (section 3.1.6): exterior rings
    counter-clockwise, holes clockwise. GDAL's GeoJSON driver writes rings as given (only
    its RFC7946=YES mode, which also forces EPSG:4326, orients them), and footprints a user
    gives (ESRI's convention is clockwise) pass through damage-map and building-heights."""
    import shapely

    geoms = gdf.geometry.to_numpy()
    if hasattr(shapely, "orient_polygons"):  # shapely >= 2.1
        fixed = shapely.orient_polygons(geoms)
    else:
        from shapely.geometry import MultiPolygon
        from shapely.geometry.polygon import orient

        fixed = [orient(g) if g is not None and g.geom_type == "Polygon" else
                 MultiPolygon([orient(p) for p in g.geoms])
                 if g is not None and g.geom_type == "MultiPolygon" else g for g in geoms]
    out = gdf.copy()
    out[gdf.geometry.name] = gdf.geometry.__class__(fixed, index=gdf.index, crs=gdf.crs)
    return out


def _declare_parquet_type(path: Path, geometry_type: str) -> None:
    """Rewrite an empty GeoParquet file's ``geometry_types`` (``[]``, "unknown", as
    geopandas writes it) as ``[geometry_type]``."""
    import json

    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    geo = json.loads(meta[b"geo"])
    geo["columns"][geo["primary_column"]]["geometry_types"] = [geometry_type]
    meta[b"geo"] = json.dumps(geo).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)


@contextmanager
def _fixed_gpkg_date():
    """GDAL options for the duration of one write (restored afterwards):

    - ``OGR_CURRENT_DATE``: the GeoPackage's timestamps from ``SOURCE_DATE_EPOCH``
      (deterministic bytes);
    - ``OGR_SQLITE_JOURNAL=OFF``: no rollback journal beside the temporary GeoPackage, which
      is thrown away if the write fails anyway. With one, the journal was the file that hit a
      full disk or a file size limit, and GDAL reported the write failure as "no such table:
      gpkg_contents" while the GeoPackage itself still took more data (so
      :func:`~rsgeo.io.atomic.write_problem` could not name the reason); a killed run
      left the journal behind too.
    """
    import pyogrio

    stamp = datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", 0)), timezone.utc)
    options = {"OGR_CURRENT_DATE": stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
               "OGR_SQLITE_JOURNAL": "OFF"}
    old = {k: pyogrio.get_gdal_config_option(k) for k in options}
    pyogrio.set_gdal_config_options(options)
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options(old)


def read_vector(path: str | os.PathLike, purpose: str = "vector file"):
    """Read any OGR format or GeoParquet into a GeoDataFrame with one-line errors."""
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise InputError("no such file", p)
    try:
        if p.suffix.lower() == ".parquet":
            gdf = gpd.read_parquet(p)
        else:
            gdf = gpd.read_file(p, engine="pyogrio")
    except Exception as e:  # pyogrio raises DataSourceError, ValueError, ...
        raise InputError(_unreadable(p, purpose, e), p) from None
    _check_geographic_range(gdf, p)
    return gdf


def _unreadable(p: Path, purpose: str, e: BaseException) -> str:
    """Why ``p`` could not be read, in words a user acts on: a folder or a raster given where
    polygons were expected says so, rather than GDAL's "'PATH' not recognized as being in a
    supported file format.; It might help to specify the correct driver..." cut mid-word."""
    msg = first_line(e)
    if "not recognized as being in a supported file format" not in msg:
        return f"not a readable {purpose} ({msg})"
    if p.is_dir():
        return f"is a folder, expected a {purpose} (polygons: .gpkg, .shp, .geojson, ...)"
    if _is_raster(p):
        return (f"is a raster, expected a {purpose} (polygons: .gpkg, .shp, .geojson, ...); "
                "were the arguments given in another order?")
    return f"not a readable {purpose} (no vector format OGR reads)"


def _is_raster(p: Path) -> bool:
    """Whether GDAL opens ``p`` as a raster (quietly; False for anything it cannot open)."""
    import warnings

    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(p):
                return True
    except Exception:
        return False


def _check_geographic_range(gdf, path: Path) -> None:
    """Refuse longitudes/latitudes out of range: projected coordinates (metres) in a file
    read as geographic, which is what a GeoJSON without a ``crs`` member becomes (RFC 7946
    says EPSG:4326); reprojecting them fails deep in GEOS or puts them nowhere."""
    if gdf.crs is None or not gdf.crs.is_geographic or len(gdf) == 0:
        return
    x0, y0, x1, y1 = (float(v) for v in gdf.total_bounds)
    if x0 < -180 or x1 > 180 or y0 < -90 or y1 > 90:  # NaN bounds (all empty) pass
        raise InputError(f"coordinates outside EPSG:4326's range (x {x0:.6g} to {x1:.6g}, "
                         f"y {y0:.6g} to {y1:.6g}): a GeoJSON without a crs member is read as "
                         "longitude/latitude; give the file its CRS (e.g. write .gpkg)", path)
