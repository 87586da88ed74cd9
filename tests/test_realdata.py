"""The raster core and damage-map on real rasters from ../shared/realdata (skipped if absent)."""

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio import features

from rsgeo.damage import damage_map
from rsgeo.io.pipeline import run_tiled
from rsgeo.io.raster import Grid, open_raster
from rsgeo.io.writer import open_output


def test_blended_identity_on_a_real_jpeg_ortho_in_feet(realdata, tmp_path):
    """3248x4385 JPEG with an .aux.xml georeference in US feet: non-GeoTIFF driver,
    larger than one tile, non-square; identity model must reproduce band 1 exactly."""
    src = realdata / "autzen-pdal-ortho" / "autzen_ortho_1ft.jpg"
    out = tmp_path / "o.tif"
    with open_raster(src, bands=3) as ds, open_output(out, Grid.of(ds)) as dst:
        run_tiled(ds, dst, lambda b: b[:, :1], tile=512, overlap=64, batch_size=4)
        ref, crs, transform = ds.read(1), ds.crs, ds.transform
    with rasterio.open(out) as o:
        assert o.crs == crs and o.transform == transform
        np.testing.assert_allclose(o.read(1), ref, atol=1e-3)


def test_world_file_georeferencing_is_read(realdata):
    png = realdata / "xbd-joplin-tornado" / "images" / "joplin-tornado_00000000_pre_disaster.png"
    with open_raster(png, bands=(3, 4)) as ds:
        assert ds.crs is not None and not ds.transform.is_identity


def test_delft_per_building_heights_match_lidar_reference(realdata, tmp_path):
    """Real nDSM + 160 real BGT footprints: per-building medians equal the reference medians
    computed from the same LiDAR nDSM, and simulated collapses are graded destroyed."""
    d = realdata / "delft-ahn3-bgt"
    ndsm = d / "derived_from_lidar" / "delft_ndsm.tif"
    fp = gpd.read_file(d / "bgt_pand_buildings_epsg28992.geojson")
    with rasterio.open(ndsm) as ds:
        pre, prof = ds.read(1), ds.profile
    ids = features.rasterize(zip(fp.geometry, range(1, len(fp) + 1)), out_shape=pre.shape,
                             transform=prof["transform"], dtype="int32")
    tall = fp.index[fp["lidar_ndsm_p50_m"] > 6][:10]
    post = pre.copy()
    post[np.isin(ids, tall + 1) & (pre != -9999)] = 0.5
    with rasterio.open(tmp_path / "post.tif", "w", **prof) as dst:
        dst.write(post, 1)
    s = damage_map(ndsm, tmp_path / "post.tif", tmp_path / "dm.tif", buildings=fp_path(d))
    out = gpd.read_file(tmp_path / "dm.gpkg")
    assert len(out) == 160 and s["post_resampled"] is False
    ok = out["lidar_npix"] > 20
    np.testing.assert_allclose(out.loc[ok, "pre_median_m"], out.loc[ok, "lidar_ndsm_p50_m"],
                               atol=0.05)
    assert set(out.loc[tall, "grade"]) == {"destroyed"}
    assert (out.drop(index=tall).loc[ok, "grade"] == "none").all()


def fp_path(d):
    return d / "bgt_pand_buildings_epsg28992.geojson"


def test_alexandria_dsm_is_refused_as_heights_and_accepted_with_its_dtm(realdata, tmp_path):
    """A real 2 m LiDAR DSM (elevations 7-39 m) given as heights is refused with a hint
    (it once gave hundreds of "damaged" regions); with its DTM, per-building medians of
    DSM - DTM agree with the footprints' own HEIGHT attribute."""
    from rsgeo.errors import InputError

    d = realdata / "alexandria-lidar-buildings"
    with pytest.raises(InputError, match="absolute elevations.*--dtm"):
        damage_map(d / "dsm.tif", d / "dsm.tif", tmp_path / "a.tif")
    assert not (tmp_path / "a.tif").exists()
    s = damage_map(d / "dsm.tif", d / "dsm.tif", tmp_path / "a.tif", dtm=d / "dtm.tif",
                   buildings=d / "buildings.geojson")
    assert s["features"] == 84 and s["outside"] == 0 and s["by_grade"]["none"] == 84
    out = gpd.read_file(tmp_path / "a.gpkg")
    ok = out["HEIGHT"].notna() & out["pre_median_m"].notna()
    assert ok.sum() >= 80
    assert np.corrcoef(out.loc[ok, "pre_median_m"], out.loc[ok, "HEIGHT"])[0, 1] > 0.9
    assert abs(np.median(out.loc[ok, "pre_median_m"] - out.loc[ok, "HEIGHT"])) < 1.5
