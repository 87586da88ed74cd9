"""What a GIS user sees when opening rsgeo's outputs in QGIS, geopandas or GDAL: field
types, layer geometry types, ring orientation, raster band metadata and colour tables."""

import json

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from shapely.geometry import box

from rsgeo.damage import damage_map
from rsgeo.errors import OutputWriteError
from tests.conftest import make_raster

X0, Y0 = 500000.0, 4100000.0   # make_raster's origin (UTM 33N, 0.5 m pixels)


def _pair(tmp_path, damaged=True):
    """PRE with two buildings (12 m, 8 m); POST with the first one collapsed to 1 m."""
    pre = np.zeros((120, 100), np.float32)
    pre[20:60, 20:60] = 12.0
    pre[70:100, 50:90] = 8.0
    post = pre.copy()
    if damaged:
        post[20:60, 20:60] = 1.0
    return (make_raster(tmp_path / "pre.tif", pre, nodata=-9999),
            make_raster(tmp_path / "post.tif", post, nodata=-9999))


def _buildings(tmp_path):
    g = gpd.GeoDataFrame({"name": ["big", "small", "far"]},
                         geometry=[box(X0 + 10, Y0 - 30, X0 + 30, Y0 - 10),
                                   box(X0 + 25, Y0 - 50, X0 + 45, Y0 - 35),
                                   box(X0 + 1000, Y0 - 1000, X0 + 1010, Y0 - 990)], crs=32633)
    g.to_file(tmp_path / "buildings.gpkg")
    return tmp_path / "buildings.gpkg"


def _field_types(path) -> dict:
    info = pyogrio.read_info(path)
    return dict(zip(info["fields"], info["ogr_types"]))


@pytest.mark.parametrize("ext", ["gpkg", "fgb"])
def test_damage_pixel_counts_are_integer_fields_with_buildings(tmp_path, ext):
    # a building outside the raster has no statistics: its NaN once made every count a float
    a, b = _pair(tmp_path)
    damage_map(a, b, tmp_path / "d.tif", tmp_path / f"d.{ext}", buildings=_buildings(tmp_path))
    assert _field_types(tmp_path / f"d.{ext}")["pixels"] == "OFTInteger64"
    g = gpd.read_file(tmp_path / f"d.{ext}").set_index("name")
    assert g.loc["big", "pixels"] == 40 * 40 and g.loc["far", "pixels"] == 0
    assert g.loc["far", "coverage"] == "outside" and np.isnan(g.loc["far", "area_m2"])


def test_damage_pixel_counts_are_integer_in_geoparquet(tmp_path):
    a, b = _pair(tmp_path)
    damage_map(a, b, tmp_path / "d.tif", tmp_path / "d.parquet", buildings=_buildings(tmp_path))
    assert gpd.read_parquet(tmp_path / "d.parquet")["pixels"].dtype == np.int64


@pytest.mark.parametrize("ext", ["gpkg", "fgb"])
def test_empty_damage_layer_is_typed_as_the_non_empty_one(tmp_path, ext):
    a, b = _pair(tmp_path)
    damage_map(a, b, tmp_path / "full.tif", tmp_path / f"full.{ext}")
    (tmp_path / "intact").mkdir()
    _, same = _pair(tmp_path / "intact", damaged=False)
    s = damage_map(a, same, tmp_path / "empty.tif", tmp_path / f"empty.{ext}")
    assert s["features"] == 0
    full, empty = (pyogrio.read_info(tmp_path / f"{n}.{ext}") for n in ("full", "empty"))
    assert full["geometry_type"] == "Polygon"
    assert empty["geometry_type"] == full["geometry_type"]
    assert _field_types(tmp_path / f"empty.{ext}") == _field_types(tmp_path / f"full.{ext}")


def test_empty_footprints_layer_is_polygon_typed_also_in_geoparquet(tmp_path):
    from rsgeo.footprints import footprints

    prob = make_raster(tmp_path / "p.tif", np.zeros((64, 64), np.float32))
    for ext in ("gpkg", "fgb"):
        assert footprints(prob, tmp_path / f"f.{ext}")["features"] == 0
        assert pyogrio.read_info(tmp_path / f"f.{ext}")["geometry_type"] == "Polygon"
    footprints(prob, tmp_path / "f.parquet")
    import pyarrow.parquet as pq

    geo = json.loads(pq.read_schema(tmp_path / "f.parquet").metadata[b"geo"])
    assert geo["columns"][geo["primary_column"]]["geometry_types"] == ["Polygon"]
    assert len(gpd.read_parquet(tmp_path / "f.parquet")) == 0


def _ring_orientation(geojson_path) -> set:
    """{(ring index 0 = exterior, is counter-clockwise)} over every polygon of the file."""
    import shapely

    out = set()
    for f in json.loads(geojson_path.read_text())["features"]:
        g = f["geometry"]
        polys = [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
        for rings in polys:
            out |= {(min(i, 1), bool(shapely.is_ccw(shapely.LinearRing(r))))
                    for i, r in enumerate(rings)}
    return out


def test_geojson_follows_the_right_hand_rule_for_clockwise_input_footprints(tmp_path):
    # footprints drawn clockwise with counter-clockwise holes (ESRI's order), kept as given
    # by the GeoPackage, pass through damage-map --buildings and building-heights
    from shapely.geometry import Polygon

    from rsgeo.footprints.heights import building_heights

    a, b = _pair(tmp_path)
    cw = Polygon([(X0 + 10, Y0 - 30), (X0 + 10, Y0 - 10), (X0 + 30, Y0 - 10), (X0 + 30, Y0 - 30)],
                 [[(X0 + 15, Y0 - 25), (X0 + 20, Y0 - 25), (X0 + 20, Y0 - 20), (X0 + 15, Y0 - 20)]])
    assert not cw.exterior.is_ccw and cw.interiors[0].is_ccw
    gpd.GeoDataFrame({"name": ["big"]}, geometry=[cw], crs=32633).to_file(tmp_path / "cw.gpkg")
    damage_map(a, b, tmp_path / "d.tif", tmp_path / "d.geojson", buildings=tmp_path / "cw.gpkg")
    building_heights(a, tmp_path / "cw.gpkg", tmp_path / "h.geojson")
    for out in ("d.geojson", "h.geojson"):
        assert _ring_orientation(tmp_path / out) == {(0, True), (1, False)}, out
        # the CRS rules stay: a CRS with an EPSG code is kept, coordinates in metres
        g = gpd.read_file(tmp_path / out)
        assert g.crs.to_epsg() == 32633 and g.total_bounds[0] == pytest.approx(X0 + 10)


def test_geojson_of_rsgeo_traced_polygons_follows_the_right_hand_rule(tmp_path):
    from rsgeo.footprints import footprints

    m = np.zeros((64, 64), np.uint8)
    m[10:50, 10:50] = 1
    m[20:30, 20:30] = 0    # a courtyard
    footprints(make_raster(tmp_path / "m.tif", m), tmp_path / "f.geojson", regularise=False)
    assert _ring_orientation(tmp_path / "f.geojson") == {(0, True), (1, False)}


def test_damage_rasters_carry_class_names_units_and_a_transparent_background(tmp_path):
    import xml.etree.ElementTree as ET

    import rasterio

    a, b = _pair(tmp_path)
    damage_map(a, b, tmp_path / "d.tif")
    names = ["no structure", "intact", "minor", "major", "destroyed"]
    with rasterio.open(tmp_path / "d.tif") as ds:
        # a GeoTIFF palette is RGB only: class 0 came back opaque black, hiding the imagery
        cmap = ds.colormap(1)
        assert cmap[0][3] == 0 and cmap[255][3] == 0 and cmap[4] == (200, 0, 0, 255)
        tags = ds.tags()
        assert [tags[f"class_{i}"] for i in range(5)] == names
        assert json.loads(tags["classes"])["4"] == "destroyed" and tags["units"] == "class"
        assert ds.descriptions == ("damage class",) and ds.units == ("class",)
    # GDAL keeps category names (gdalinfo's "Categories") only in its .aux.xml side file
    side = ET.parse(tmp_path / "d.tif.aux.xml").getroot()
    assert [c.text for c in side.iter("Category")] == names
    with rasterio.open(tmp_path / "d_loss.tif") as ds:
        assert ds.units == ("metre",) and ds.tags()["units"] == "metre"
        assert ds.descriptions == ("height loss (pre - post)",) and ds.nodata == -9999


def _failing_vector_write(monkeypatch):
    def full_disk(self, *a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gpd.GeoDataFrame, "to_file", full_disk)


def test_damage_map_publishes_all_outputs_or_none(tmp_path, cli, monkeypatch):
    # the rasters were published before the vectors were written: a failed vector write
    # left a class and a loss raster that looked like a finished run
    a, b = _pair(tmp_path)
    inputs = sorted(p.name for p in tmp_path.iterdir())
    _failing_vector_write(monkeypatch)
    code, _, err = cli("damage-map", a, b, "-o", tmp_path / "out" / "d.tif")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert err.strip().endswith("out/d.gpkg: no space left on device (write failed)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == inputs   # nor the folder it made


def test_failed_overwrite_leaves_the_earlier_outputs_as_they_were(tmp_path, monkeypatch):
    import hashlib

    a, b = _pair(tmp_path)
    damage_map(a, b, tmp_path / "d.tif")
    outputs = ("d.tif", "d_loss.tif", "d.gpkg", "d.tif.aux.xml")
    before = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in outputs}
    _failing_vector_write(monkeypatch)
    with pytest.raises(OutputWriteError, match="d.gpkg: no space left on device"):
        damage_map(a, b, tmp_path / "d.tif", threshold=5.0, overwrite=True)
    after = {n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in outputs}
    assert after == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
