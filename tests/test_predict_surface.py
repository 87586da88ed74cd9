"""Models trained on heights (DSM / nDSM bands) at prediction: metres in, never stretched;
RGB + DSM models read their heights from --dsm (rsgeo.infer.surface)."""

import logging

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from rsgeo.errors import InputError
from rsgeo.infer.predict import predict_files, predict_height_file
from rsgeo.tasks.bundle import build_task_model, save_task_model
from tests.conftest import make_raster

RGBD = {"task": "height", "bands": ["red", "green", "blue", "ndsm"],
        "mean": [120.0, 120.0, 120.0, 0.0], "std": [50.0, 50.0, 50.0, 1.0], "gsd": 0.5,
        "tile": 64, "overlap": 16, "units": "m", "nodata": -9999}
DSM_ONLY = {**RGBD, "bands": ["dsm"], "mean": [0.0], "std": [1.0]}
ORIGIN = Affine(0.5, 0, 500000.0, 0, -0.5, 5400000.0)


def band_runner(meta, band):
    """A 'model' returning its normalised input band ``band``: what the model is fed."""
    class R:
        device = "cpu"

        def __call__(self, batch):
            return batch[:, band:band + 1].copy()
    cfg = {"task": "height", "in_chans": len(meta["bands"]), "backbone": "vit-tiny-2"}
    return R(), meta, cfg


def _heights(h=96, w=120):
    yy, xx = np.mgrid[0:h, 0:w]
    return (12 + 9 * np.sin(yy / 11.0) * np.cos(xx / 8.0)).astype(np.float32)


def _rgb16(h=96, w=120):
    """A 12-bit RGB image: the percentile stretch has a scale far from 1."""
    rng = np.random.default_rng(3)
    return rng.integers(200, 3000, (3, h, w)).astype(np.uint16)


def test_height_only_model_reads_metres_unstretched(tmp_path):
    dsm = make_raster(tmp_path / "dsm.tif", _heights()[None], transform=ORIGIN)
    r = predict_height_file(dsm, "m.ckpt", tmp_path / "h.tif",
                            runner=band_runner(DSM_ONLY, 0), tile=64, overlap=16)
    assert r["input_stretch"]["mode"] == "none"
    with rasterio.open(tmp_path / "h.tif") as ds:
        np.testing.assert_allclose(ds.read(1), _heights(), atol=1e-4)


def test_rgb_dsm_model_gets_stretched_rgb_and_raw_metres(tmp_path):
    rgb = make_raster(tmp_path / "rgb.tif", _rgb16(), transform=ORIGIN)
    ndsm = make_raster(tmp_path / "ndsm.tif", _heights()[None], transform=ORIGIN)
    out = tmp_path / "h.tif"
    r = predict_height_file(rgb, "m.ckpt", out, runner=band_runner(RGBD, 3), tile=64,
                            overlap=16, dsm=ndsm)
    assert r["input_stretch"]["mode"] == "percentile" and r["dsm"] == str(ndsm)
    with rasterio.open(out) as ds:
        np.testing.assert_allclose(ds.read(1), _heights(), atol=1e-3)
        assert ds.tags()["input_dsm"] == str(ndsm)
    # the image bands keep the stretch they had: band 1 as an RGB model sees it
    k, off = r["input_stretch"]["scale"], r["input_stretch"]["offset"]
    predict_height_file(rgb, "m.ckpt", tmp_path / "r.tif", runner=band_runner(RGBD, 0),
                        tile=64, overlap=16, dsm=ndsm)
    with rasterio.open(tmp_path / "r.tif") as ds:
        want = (_rgb16()[0].astype(np.float64) * k - off - 120) / 50
        np.testing.assert_allclose(ds.read(1), want, atol=1e-3)


def test_dsm_nodata_and_other_grid(tmp_path, caplog):
    rgb = make_raster(tmp_path / "rgb.tif", np.full((3, 96, 120), 128, np.uint8),
                      transform=ORIGIN)
    h = _heights()
    h[10:20, 30:40] = -9999
    ndsm = make_raster(tmp_path / "ndsm.tif", h[None], transform=ORIGIN, nodata=-9999)
    out = tmp_path / "h.tif"
    predict_height_file(rgb, "m.ckpt", out, runner=band_runner(RGBD, 3), tile=64,
                        overlap=16, dsm=ndsm)
    with rasterio.open(out) as ds:
        got = ds.read(1)
    assert (got[10:20, 30:40] == -9999).all() and (got[40:, :] != -9999).all()
    # a DSM at 1 m covering the left half only: resampled, the right half is nodata
    coarse = make_raster(tmp_path / "coarse.tif", _heights(48, 30)[None],
                         transform=Affine(1.0, 0, 500000.0, 0, -1.0, 5400000.0), gsd=1.0)
    with caplog.at_level(logging.WARNING, logger="rsgeo.infer"):
        predict_height_file(rgb, "m.ckpt", tmp_path / "c.tif", runner=band_runner(RGBD, 3),
                            tile=64, overlap=16, dsm=coarse)
    assert "resampled (bilinear)" in caplog.text
    with rasterio.open(tmp_path / "c.tif") as ds:
        got = ds.read(1)
    assert (got[:, 70:] == -9999).all() and (got[5:90, 5:55] != -9999).all()
    assert abs(float(np.median(got[5:90, 5:55])) - float(np.median(_heights(48, 30)))) < 2


def test_dsm_option_errors(tmp_path):
    rgb = make_raster(tmp_path / "rgb.tif", np.full((3, 64, 64), 128, np.uint8))
    rgb2 = make_raster(tmp_path / "rgb2.tif", np.full((3, 64, 64), 128, np.uint8))
    ndsm = make_raster(tmp_path / "ndsm.tif", np.ones((1, 64, 64), np.float32))
    rgb_meta = {**RGBD, "bands": ["red", "green", "blue"], "mean": [0.0] * 3, "std": [1.0] * 3}

    def run(images, runner, dsm):
        return predict_files(images, "m.ckpt", [tmp_path / f"o{i}.tif" for i in range(len(images))],
                             expect="height", runner=runner, dsm=dsm)

    with pytest.raises(InputError, match="give its nDSM raster .* with --dsm"):
        run([rgb], band_runner(RGBD, 3), None)
    with pytest.raises(InputError, match="--dsm is for models of RGB \\+ DSM"):
        run([rgb], band_runner(rgb_meta, 0), ndsm)
    with pytest.raises(InputError, match="give the height raster as its image"):
        run([ndsm], band_runner(DSM_ONLY, 0), ndsm)
    with pytest.raises(InputError, match="a --dsm file goes with one image"):
        run([rgb, rgb2], band_runner(RGBD, 3), ndsm)
    folder = tmp_path / "heights"
    folder.mkdir()
    (folder / "rgb.tif").write_bytes(ndsm.read_bytes())
    with pytest.raises(InputError, match="holds no rgb2.tif"):
        run([rgb, rgb2], band_runner(RGBD, 3), folder)
    assert not list(tmp_path.glob("o*.tif"))
    (folder / "rgb2.tif").write_bytes(ndsm.read_bytes())
    assert run([rgb, rgb2], band_runner(RGBD, 3), folder)["total"]["files"] == 2


def test_cli_rgb_dsm_checkpoint_and_onnx(tmp_path, cli):
    from rsgeo.infer.export import export_onnx

    torch.manual_seed(0)
    cfg = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 4, "img_size": 64,
           "head": "dpt", "head_features": 32}
    ckpt = tmp_path / "rgbd.ckpt"
    save_task_model(build_task_model(cfg), cfg, RGBD, ckpt)
    rgb = make_raster(tmp_path / "rgb.tif", np.full((3, 64, 80), 120, np.uint8))
    flat = make_raster(tmp_path / "flat.tif", np.zeros((1, 64, 80), np.float32))
    tall = make_raster(tmp_path / "tall.tif", np.full((1, 64, 80), 30, np.float32))
    code, _, err = cli("predict-height", rgb, "-m", ckpt, "-o", tmp_path / "x.tif")
    assert code == 2 and "--dsm" in err and "rgbd.ckpt" in err
    outs = {}
    for name, dsm in (("flat", flat), ("tall", tall)):
        code, _, err = cli("predict-height", rgb, "-m", ckpt, "-o", tmp_path / f"{name}.h.tif",
                           "--dsm", dsm, "-q")
        assert code == 0, err
        with rasterio.open(tmp_path / f"{name}.h.tif") as ds:
            outs[name] = ds.read(1)
    assert np.abs(outs["flat"] - outs["tall"]).max() > 1e-3  # the model sees the heights
    export_onnx(ckpt, tmp_path / "rgbd.onnx")
    code, _, err = cli("predict", rgb, "-m", tmp_path / "rgbd.onnx", "-o", tmp_path / "o.tif",
                       "--dsm", tall, "-q")
    assert code == 0, err
    with rasterio.open(tmp_path / "o.tif") as ds:
        np.testing.assert_allclose(ds.read(1), outs["tall"], atol=1e-3)


def _tall_building_onnx(path):
    """A tiny ONNX RGB + nDSM segmentation 'model' (ground, tree, building): the building
    logit is the nDSM band minus 2.5 m, the others 0 (anything taller than 2.5 m is a
    building)."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, dtype), n) for n, v, dtype in (
        ("s", [3], np.int64), ("e", [4], np.int64), ("ax", [1], np.int64),
        ("eave", 2.5, np.float32), ("zero", 0.0, np.float32))]
    graph = helper.make_graph(
        [helper.make_node("Slice", ["image", "s", "e", "ax"], ["h"]),
         helper.make_node("Sub", ["h", "eave"], ["b"]),
         helper.make_node("Mul", ["h", "zero"], ["z"]),
         helper.make_node("Concat", ["z", "z", "b"], ["output"], axis=1)],
        "tall", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 4, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", 3, "h", "w"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {**RGBD, "task": "segmentation", "num_classes": 3, "stride": 16,
             "classes": {"0": "ground", "1": "tree", "2": "building"},
             "format": "rsgeo-onnx", "inputs": ["image"],
             "config": {"task": "segmentation", "backbone": "vit-tiny-2", "in_chans": 4,
                        "img_size": 64, "head": "dpt", "num_classes": 3}}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in props.items()})
    onnx.save(model, str(path))
    return path


def test_footprints_from_an_rgb_ndsm_model_use_the_heights(tmp_path, cli):
    import json

    import geopandas as gpd

    seg = _tall_building_onnx(tmp_path / "tall.onnx")
    rgb = make_raster(tmp_path / "rgb.tif", np.full((3, 72, 96), 90, np.uint8))
    h = np.zeros((1, 72, 96), np.float32)
    h[0, 20:40, 30:60] = 6.0                      # 20 x 30 px at 0.5 m: 150 m², 6 m tall
    ndsm = make_raster(tmp_path / "ndsm.tif", h)
    code, out, err = cli("footprints", rgb, "-m", seg, "--dsm", ndsm, "-o", tmp_path / "b.gpkg",
                         "--json")
    assert code == 0, err
    assert json.loads(out)["features"] == 1
    assert gpd.read_file(tmp_path / "b.gpkg").area.iloc[0] == pytest.approx(150.0, rel=0.05)
    code, _, err = cli("footprints", rgb, "-m", seg, "-o", tmp_path / "c.gpkg")
    assert code == 2 and "--dsm" in err and not (tmp_path / "c.gpkg").exists()
    code, _, err = cli("footprints", ndsm, "--dsm", ndsm, "-o", tmp_path / "d.gpkg")
    assert code == 2 and "--dsm goes with -m MODEL" in err
