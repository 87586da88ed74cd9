"""Imagery as it comes, on real rasters (skipped without ../shared/realdata): an 11-bit
panchromatic SpaceNet tile, an RGBA drone ortho with its 0/255 building mask, and a LiDAR
DSM given where heights are expected."""

import json

import numpy as np
import pytest
import rasterio

from rsgeo.infer.predict import predict_height_file
from tests.test_predict_height import ckpt, mean_runner  # noqa: F401 - the tiny height model

pytestmark = pytest.mark.realdata
SPACENET = "spacenet-atlanta-solaris/sn4_atlanta_pan_0p5m_733601_3725139.tif"


def test_spacenet_11bit_pan_tile_predicts_nonzero_heights_by_default(realdata, tmp_path,
                                                                    ckpt):  # noqa: F811
    src = realdata / SPACENET
    r = predict_height_file(src, ckpt, tmp_path / "h.tif", tile=128, device="cpu")
    assert r["input_bands"] == {"indexes": [1, 1, 1], "alpha_mask": None, "mask_band": False,
                                 "replicated": True}
    assert r["input_stretch"]["mode"] == "percentile"
    with rasterio.open(tmp_path / "h.tif") as ds:
        h = ds.read(1)
        assert ds.tags()["input_bands"].startswith("1,1,1")
    assert (h != -9999).all() and np.abs(h).max() > 0.01 and h.std() > 0.01
    # what the model sees, exactly (a runner returning its mean normalised input): the
    # default stretch centres the tile on the training scale; bit depth leaves it near black
    seen = {}
    for scale in ("percentile", "bitdepth"):
        predict_height_file(src, "x", tmp_path / f"{scale}.tif", runner=mean_runner(),
                            tile=64, overlap=16, scale=scale)
        x = rasterio.open(tmp_path / f"{scale}.tif").read(1) * 50 + 120  # back to 0-255
        seen[scale] = float(np.median(x))
    assert 60 < seen["percentile"] < 200 and seen["bitdepth"] < 30, seen


def test_accra_rgba_ortho_and_0_255_mask_keep_the_building_class(realdata, tmp_path, cli):
    from rsgeo.data.dataset import ChipDataset

    d = realdata / "opencities-accra"
    mask = d / "665946_tile_920_mask.tif"
    (tmp_path / "classes.json").write_text(json.dumps({"0": "background", "1": "building"}))
    code, out, err = cli("prepare", "--rgb", d / "665946_tile_920.tif", "--labels", mask,
                         "--label-map", "0:0,255:1", "--classes", tmp_path / "classes.json",
                         "-o", tmp_path / "chips", "--size", 256, "--dedup-distance", 0,
                         "--json")
    assert code == 0, err
    s = json.loads(out)["665946_tile_920"]
    assert s["kept"] == 16 and s["input_bands"] == {"rgb": "1,2,3 (alpha 4 as mask)"}
    ds = ChipDataset(tmp_path / "chips", split=None, modalities=("labels",))
    lab = np.stack([ds[i]["labels"] for i in range(len(ds))])
    with rasterio.open(mask) as m:
        share = float((m.read(1) == 255).mean())
    assert set(np.unique(lab)) == {0, 1}
    assert abs(float((lab == 1).mean()) - share) < 1e-6  # every building pixel kept


def test_alexandria_dsm_as_heights_is_refused_with_a_hint_then_accepted_with_dtm(
        realdata, tmp_path, cli):
    d = realdata / "alexandria-lidar-buildings"
    code, _, err = cli("damage-map", d / "dsm.tif", d / "dsm.tif", "-o", tmp_path / "a.tif")
    assert code == 2 and "--dtm" in err and "dsm.tif" in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "a.tif").exists()
    code, out, err = cli("damage-map", d / "dsm.tif", d / "dsm.tif", "--dtm", d / "dtm.tif",
                         "-o", tmp_path / "a.tif", "--json")
    assert code == 0, err
    assert json.loads(out)["by_grade"].get("destroyed", 0) == 0


def test_puerto_rico_pre_post_images_map_damage_on_their_own_grid(realdata, tmp_path, cli,
                                                                   ckpt):  # noqa: F811
    """Real Maxar pre/post tiles (0.305 m, EPSG:32619) through damage-map with a height
    model of another GSD (0.5 m): resampled for the model and back, so every output lies on
    the input's grid, in its CRS, and the heights that were graded are the model's."""
    d = realdata / "puerto-rico-maria"
    pre, post = d / "pre_event_tile_0_107.tif", d / "post_event_tile_0_107.tif"
    code, out, err = cli("damage-map", pre, post, "-m", ckpt, "-o", tmp_path / "d.tif",
                         "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["heights_from"] == "predicted" and s["post_resampled"] is False
    assert s["inputs"][0]["input_stretch"] == "none"  # 8-bit imagery is fed as it is
    with rasterio.open(pre) as src:
        for name in ("classes", "loss"):
            with rasterio.open(tmp_path / s["outputs"][name]) as o:
                assert o.crs == src.crs and o.crs.to_epsg() == 32619
                assert o.transform == src.transform and o.shape == src.shape
        assert rasterio.open(tmp_path / s["outputs"]["loss"]).units[0] in ("m", "metre")


def test_drone_dsm_in_degrees_gives_an_ndsm_in_metres(realdata, tmp_path, cli, caplog):
    """A real 2.8 cm photogrammetric DSM in EPSG:4326: the GSD is estimated in metres (with
    a warning), the ground filter works in metres, and the nDSM is height above ground:
    never below 0, the yard near 0, the walls and structures metres above it."""
    from rsgeo.data.dataset import ChipDataset

    dsm = realdata / "dsm2dtm-drone-dsm" / "test_dsm.tif"
    code, out, err = cli("prepare", "--dsm", dsm, "--ndsm-from-dsm", "-o", tmp_path / "c",
                         "--size", 64, "--json")
    assert code == 0, err
    assert "geographic CRS" in caplog.text and "--gsd" in caplog.text
    assert json.loads((tmp_path / "c" / "dataset.json").read_text())["gsd"] == \
        pytest.approx(0.027, abs=0.001)
    ds = ChipDataset(tmp_path / "c", split=None, modalities=("ndsm", "dsm"))
    n = np.stack([ds[i]["ndsm"] for i in range(len(ds))])
    dsm_z = np.stack([ds[i]["dsm"] for i in range(len(ds))])
    assert len(ds) > 50 and np.nanmin(n) >= 0
    assert np.nanmedian(n) < 1.0                      # most of the tile is ground
    assert 5 < np.nanpercentile(n, 99) < np.nanmax(dsm_z) - np.nanmin(dsm_z)
