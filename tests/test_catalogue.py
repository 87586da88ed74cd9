"""The error catalogue: bad or unusual input to every command fails the same clean way.

Each case runs ``rsgeo ARGS`` in-process in a fresh copy of a small world of inputs (32 px
rasters, a tiny model, a chip dataset, a user's own folder) and checks what a user sees:

- the exit code (2: something the user can fix);
- exactly one line on stderr that names the file or option and says what is wrong, with
  no traceback, no bare exception class name, no temporary file name and no leaked
  warning (Python warnings and log records are shown as a terminal would show them);
- nothing left behind and every file that was there before byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from rsgeo.tasks.bundle import build_task_model, save_task_model
from tests.conftest import UTM, make_raster
from tests.test_pretrain_cli import write_chips

CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 32,
       "head": "dpt", "head_features": 16}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0] * 3,
        "std": [50.0] * 3, "gsd": 0.5, "tile": 32, "overlap": 8, "units": "m", "nodata": -9999}
N = 32
PT = ("--method", "mae", "--backbone", "vit-tiny-4")
FT = ("--encoder", "random", "--backbone", "vit-tiny-4")


class Evil:
    """Unpickling this creates ``pwned.txt`` (a model file must never run code)."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        import builtins

        return (builtins.open, (self.target, "w"))


def _vectors(root: Path) -> None:
    import geopandas as gpd
    import shapely

    x0, y0 = 500000.0, 4100000.0 - N * 0.5
    polys = [shapely.box(x0 + 2, y0 + 2, x0 + 6, y0 + 6), shapely.box(x0 + 8, y0 + 8, x0 + 12, y0 + 12)]
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=polys, crs=UTM).to_file(root / "buildings.gpkg")
    gpd.GeoDataFrame({"height_m": [6.0, 9.0]}, geometry=polys, crs=UTM).to_file(
        root / "surveyed.gpkg")                       # reference heights already there
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=[p.centroid for p in polys], crs=UTM).to_file(
        root / "points.gpkg")
    gpd.GeoDataFrame({"id": [1]}, geometry=[shapely.LineString([(x0 + 1, y0 + 1), (x0 + 9, y0 + 9)])],
                     crs=UTM).to_file(root / "lines.gpkg")
    gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.box(x0 + 9e4, y0, x0 + 9e4 + 4, y0 + 4)] * 2,
                     crs=UTM).to_file(root / "far.gpkg")      # 90 km east: off every raster


def _rasters(root: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (3, N, N), dtype=np.uint8)
    ndsm = np.zeros((N, N), np.float32)
    ndsm[8:20, 8:20] = 12.0
    make_raster(root / "rgb.tif", rgb)
    make_raster(root / "pre.tif", ndsm, nodata=-9999)
    make_raster(root / "post.tif", ndsm * 0.2, nodata=-9999)
    make_raster(root / "nocrs.tif", ndsm, crs=None, transform=Affine.identity())
    make_raster(root / "nocrs_rgb.tif", rgb, crs=None, transform=Affine.identity())
    make_raster(root / "nan.tif", np.full((N, N), np.nan, np.float32), nodata=-9999)
    make_raster(root / "nodata.tif", np.full((N, N), -9999, np.float32), nodata=-9999)
    make_raster(root / "nodata_rgb.tif", np.zeros((3, N, N), np.uint8), nodata=0)
    make_raster(root / "shifted.tif", ndsm[:24], nodata=-9999)              # another grid
    make_raster(root / "wgs.tif", ndsm, crs=CRS.from_epsg(4326), nodata=-9999,
                transform=Affine(1e-5, 0, 10, 0, -1e-5, 45))
    make_raster(root / "dsm_abs.tif", ndsm + 120.0, nodata=-9999)           # elevations a.s.l.
    four = make_raster(root / "four.tif", np.concatenate([rgb, rgb[:1]]))
    with rasterio.open(four, "r+") as ds:  # RGB + NIR: GDAL's default would call band 4 alpha
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.undefined]
    make_raster(root / "two.tif", np.stack([ndsm, ndsm]), nodata=-9999)
    with rasterio.open(make_raster(root / "ndsm_m.tif", ndsm, nodata=-9999), "r+") as ds:
        ds.units = ["metre"]                                 # an nDSM as rsgeo synth writes it
    make_raster(root / "labels.tif", (ndsm > 0).astype(np.uint8))
    (root / "tiles").mkdir()
    make_raster(root / "tiles" / "a.tif", rgb)                          # a folder of tiles
    make_raster(root / "change7.tif", (ndsm > 0).astype(np.uint8) * 7)      # not 0/1/255
    with warnings.catch_warnings():  # a plain picture: no CRS, no geotransform at all
        warnings.simplefilter("ignore")
        for name, arr in (("plain.png", rgb), ("plain1.png", rgb[:1])):
            with rasterio.open(root / name, "w", driver="PNG", width=N, height=N,
                               count=arr.shape[0], dtype="uint8") as dst:
                dst.write(arr)
    (root / "empty.tif").write_bytes(b"")
    (root / "text.tif").write_text("this is not a raster\n")
    big = make_raster(root / "big_rgb.tif", rng.integers(0, 255, (3, 256, 256), dtype=np.uint8))
    (root / "trunc.tif").write_bytes(big.read_bytes()[:3000])
    big.unlink()


def _models(root: Path) -> None:
    torch.manual_seed(0)
    save_task_model(build_task_model(CFG), CFG, META, root / "model.ckpt")
    rgbn = {**CFG, "in_chans": 4}                              # an rgb+ndsm height model
    save_task_model(build_task_model(rgbn), rgbn, {**META, "bands": META["bands"] + ["ndsm"],
                    "mean": META["mean"] + [0.0], "std": META["std"] + [1.0]}, root / "rgbn.ckpt")
    # a protobuf field longer than the file: what a download cut short looks like to ONNX
    (root / "corrupt.onnx").write_bytes(b"\x0a\xff\xff\xff\x0f" + b"cut short" * 20)
    (root / "trunc.ckpt").write_bytes((root / "model.ckpt").read_bytes()[:5000])
    torch.save({"format": "rsgeo-task", "payload": Evil("pwned.txt")}, root / "evil.ckpt")
    run = root / "evilrun"                                    # finetune --resume on it
    (run / "checkpoints").mkdir(parents=True)
    (run / ".rsgeo.json").write_text(json.dumps({"kind": "finetune"}))
    torch.save({"step": 3, "payload": Evil("pwned.txt")}, run / "checkpoints" / "last.pt")
    for folder, kind in (("pretrun", "pretrain"), ("demofolder", "demo")):  # no best.ckpt
        (root / folder).mkdir()
        (root / folder / ".rsgeo.json").write_text(json.dumps({"kind": kind}))
    (root / "demofolder" / "height.onnx").write_bytes((root / "corrupt.onnx").read_bytes())
    (root / "encoder.safetensors").write_bytes(b"\x00" * 40)           # damaged weights
    (root / "encoder.json").write_text(json.dumps({"backbone": "vit-tiny-4", "in_chans": 3, "img_size": 32,
                                                       "bands": ["red", "green", "blue"]}))


def _chips(root: Path) -> None:
    """A chip dataset with RGB, DSM, nDSM and land-cover labels with classes 0-5 (pretrain,
    finetune --task height and segmentation accept it)."""
    write_chips(root, n=4, size=32)
    shutil.copy(root / "shards" / "city" / "dsm.npy", root / "shards" / "city" / "ndsm.npy")
    np.save(root / "shards" / "city" / "labels.npy",
            (np.arange(4 * 32 * 32) % 6).astype(np.uint8).reshape(4, 32, 32))
    for name, key in (("dataset.json", None), ("stats.json", "sources")):
        info = json.loads((root / name).read_text())
        if key is None:
            info["modalities"] += ["ndsm", "labels"]
            info["classes"] = {str(i): f"class {i}" for i in range(6)}
        else:
            info[key]["city"]["ndsm"] = info[key]["city"]["dsm"]
        (root / name).write_text(json.dumps(info))
    (root / "sub").mkdir()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The pristine inputs every case starts from (copied per case)."""
    root = tmp_path_factory.mktemp("world")
    _rasters(root)
    _vectors(root)
    _models(root)
    _chips(root / "chips")
    user = root / "mine"                                      # a folder rsgeo did not write
    (user / "sub").mkdir(parents=True)
    (user / "notes.txt").write_text("keep me")
    (user / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (root / "notes.txt").write_text("keep me too")
    (root / "bad.csv").write_text("ImageId,BuildingId,PolygonWKT_Pix,Confidence\nimg,1,POLYGON ((0 0,,\n")
    (root / "bad.yaml").write_text("- just\n- a list\n")
    (root / "classes.json").write_text("{not json")
    (root / "classes_from1.json").write_text('{"1": "building"}')     # labels.tif holds 0 too
    (root / "classes_twice.json").write_text('{"0": "other", "1": "other"}')
    return root


def snapshot(root: Path) -> dict:
    """Every file (SHA-256) and folder under ``root``: what a refused command must not change."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest()
                                       if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


# (id, args, expected exit, words the one stderr line must hold, cwd inside the world)
C = [
    # synth
    ("synth-size-huge", ["synth", "-o", "s", "--size", "100000"], 2, ["--size"], "."),
    ("synth-size-zero", ["synth", "-o", "s", "--size", "0"], 2, ["--size"], "."),
    ("synth-gsd-tiny", ["synth", "-o", "s", "--gsd", "0.0001"], 2, ["--gsd"], "."),
    ("synth-gsd-negative", ["synth", "-o", "s", "--gsd", "-1"], 2, ["--gsd"], "."),
    ("synth-scenes-zero", ["synth", "-o", "s", "--scenes", "0"], 2, ["--scenes"], "."),
    ("synth-destroyed-above-1", ["synth", "-o", "s", "--destroyed", "1.5"], 2, ["--destroyed"], "."),
    ("synth-bad-style", ["synth", "-o", "s", "--style", "huge"], 2, ["--style"], "."),
    ("synth-no-output", ["synth"], 2, ["--output"], "."),
    # an empty value (an unset shell variable) is refused, never read as "." or "not given":
    # `-o ""` wrote the scenes into the current folder, exit 0
    ("synth-empty-output", ["synth", "-o", "", "--size", "64"], 2, ["--output", "empty"], "."),
    ("synth-into-a-file", ["synth", "-o", "notes.txt", "--size", "64", "--overwrite"], 2,
     ["notes.txt"], "."),
    # prepare
    ("prepare-missing-folder", ["prepare", "nowhere", "-o", "c"], 2, ["nowhere"], "."),
    ("prepare-missing-rgb", ["prepare", "--rgb", "missing.tif", "-o", "c"], 2, ["missing.tif"], "."),
    ("prepare-no-crs", ["prepare", "--rgb", "nocrs_rgb.tif", "-o", "c"], 2, ["nocrs_rgb.tif"], "."),
    ("prepare-plain-picture", ["prepare", "--rgb", "plain.png", "-o", "c"], 2, ["plain.png"], "."),
    ("prepare-truncated", ["prepare", "--rgb", "trunc.tif", "-o", "c", "--size", "32"], 2,
     ["trunc.tif"], "."),
    ("prepare-empty-file", ["prepare", "--rgb", "empty.tif", "-o", "c"], 2, ["empty.tif"], "."),
    ("prepare-text-as-tif", ["prepare", "--rgb", "text.tif", "-o", "c"], 2, ["text.tif"], "."),
    ("prepare-four-bands", ["prepare", "--rgb", "four.tif", "-o", "c", "--size", "32"], 2,
     ["four.tif", "band"], "."),
    ("prepare-size-17", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--size", "17"], 2, ["--size"], "."),
    ("prepare-empty-source", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--source", ""], 2,
     ["--source", "empty"], "."),
    # one scene's options next to a folder or --pairs were silently ignored
    ("prepare-source-with-folder", ["prepare", "mine", "-o", "c", "--source", "x"], 2,
     ["--source", "--pairs"], "."),
    # a folder given to --pairs was "no such pairs file" though it exists
    ("prepare-pairs-is-a-folder", ["prepare", "--pairs", "mine", "-o", "c"], 2,
     ["mine", "is a folder", "rsgeo prepare FOLDER"], "."),
    ("prepare-dtm-with-pairs", ["prepare", "--pairs", "bad.csv", "-o", "c", "--dtm", "pre.tif"], 2,
     ["--dtm", "--pairs"], "."),
    ("prepare-bad-split", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--split", "a,b"], 2,
     ["--split"], "."),
    ("prepare-gsd-tiny", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--gsd", "0.0001"], 2,
     ["--gsd"], "."),
    ("prepare-bad-scale", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--scale", "loud"], 2,
     ["--scale"], "."),
    ("prepare-max-nodata-2", ["prepare", "--rgb", "rgb.tif", "-o", "c", "--max-nodata", "2"], 2,
     ["--max-nodata"], "."),
    ("prepare-points-as-buildings", ["prepare", "--rgb", "rgb.tif", "--footprints", "points.gpkg",
                                     "-o", "c", "--size", "32"], 2, ["points.gpkg", "polygon"], "."),
    ("prepare-all-nan-ndsm", ["prepare", "--rgb", "rgb.tif", "--ndsm", "nan.tif", "-o", "c",
                              "--size", "32"], 2, ["nan.tif"], "."),
    ("prepare-change-mask-not-0-1", ["prepare", "--rgb", "rgb.tif", "--change", "change7.tif",
                                     "-o", "c", "--size", "32"], 2, ["change7.tif", "7"], "."),
    ("prepare-change-mask-over-a-dataset", ["prepare", "--rgb", "rgb.tif", "--change", "change7.tif",
                                            "-o", "chips", "--size", "32", "--overwrite"], 2,
     ["change7.tif", "7"], "."),
    ("prepare-into-user-folder", ["prepare", "--rgb", "rgb.tif", "-o", "mine", "--overwrite"], 2,
     ["mine"], "."),
    ("prepare-output-is-input", ["prepare", "--rgb", "rgb.tif", "-o", "rgb.tif", "--overwrite"], 2,
     ["rgb.tif"], "."),
    ("prepare-dotdot-overwrite", ["prepare", "--rgb", "../../rgb.tif", "-o", "..", "--overwrite"], 2,
     [".."], "mine/sub"),
    # pretrain
    ("pretrain-missing-dataset", ["pretrain", "nowhere", "-o", "r", *PT], 2, ["nowhere"], "."),
    ("pretrain-not-a-dataset", ["pretrain", "mine", "-o", "r", *PT], 2, ["mine"], "."),
    ("pretrain-negative-lr", ["pretrain", "chips", "-o", "r", *PT, "--lr", "-1"], 2, ["--lr"], "."),
    ("pretrain-mask-ratio-1.5", ["pretrain", "chips", "-o", "r", *PT, "--mask-ratio", "1.5"], 2,
     ["--mask-ratio"], "."),
    ("pretrain-mask-ratio-0", ["pretrain", "chips", "-o", "r", *PT, "--mask-ratio", "0"], 2,
     ["--mask-ratio"], "."),
    ("pretrain-mask-ratio-none-visible", ["pretrain", "chips", "-o", "r", *PT, "--mask-ratio",
                                          "0.9", "--batch-size", "2"], 2,
     ["--method mae --mask-ratio 0.9", "32-px crop", "use at most 0.75"], "."),
    ("pretrain-rec-ratio-0", ["pretrain", "chips", "-o", "r", "--method", "selectivemae",
                              "--backbone", "vit-tiny-4", "--rec-ratio", "0"], 2, ["--rec-ratio"], "."),
    ("pretrain-modality-labels", ["pretrain", "chips", "-o", "r", *PT, "--modality", "labels"], 2,
     ["--modality", "labels"], "."),
    ("pretrain-dsm-modality-rgb", ["pretrain", "chips", "-o", "r", "--method", "fusedmim",
                                   "--backbone", "swin-tiny-2", "--dsm-modality", "rgb"], 2,
     ["--dsm-modality", "rgb"], "."),
    ("pretrain-steps-zero", ["pretrain", "chips", "-o", "r", *PT, "--steps", "0"], 2, ["--steps"], "."),
    ("pretrain-unknown-backbone", ["pretrain", "chips", "-o", "r", "--method", "mae", "--backbone",
                                   "vit-nope"], 2,
     ["vit-nope"], "."),
    ("pretrain-missing-config", ["pretrain", "chips", "-o", "r", *PT, "--config", "none.yaml"], 2,
     ["none.yaml"], "."),
    ("pretrain-config-not-mapping", ["pretrain", "chips", "-o", "r", *PT, "--config", "bad.yaml"], 2,
     ["bad.yaml"], "."),
    ("pretrain-output-is-input", ["pretrain", "chips", "-o", "chips", *PT, "--overwrite"], 2, ["chips"], "."),
    ("pretrain-output-inside-input", ["pretrain", "chips", "-o", "chips/sub", *PT, "--overwrite"], 2,
     ["chips"], "."),
    ("pretrain-into-user-folder", ["pretrain", "chips", "-o", "mine", *PT, "--overwrite",
                                   "--steps", "1"], 2, ["mine"], "."),
    ("pretrain-resume-missing-run", ["pretrain", "chips", "-o", "r", *PT, "--resume"], 2, ["r"], "."),
    # finetune
    ("finetune-missing-dataset", ["finetune", "nowhere", "--task", "height", "-o", "f", *FT], 2,
     ["nowhere"], "."),
    ("finetune-negative-lr", ["finetune", "chips", "--task", "height", "-o", "f", *FT, "--lr", "-1"], 2,
     ["--lr"], "."),
    # the task registry's message: the unknown name and the registered ones
    ("finetune-bad-task", ["finetune", "chips", "--task", "volume", "-o", "f", *FT], 2,
     ["volume", "height"], "."),
    ("finetune-missing-encoder", ["finetune", "chips", "--task", "height", "-o", "f", "--encoder",
                                  "none.safetensors"], 2, ["none.safetensors"], "."),
    ("finetune-corrupt-encoder", ["finetune", "chips", "--task", "height", "-o", "f", "--encoder",
                                  "encoder.safetensors"], 2, ["encoder.safetensors"], "."),
    # an image or a text file as --encoder gave PyTorch's "Weights only load failed. In
    # PyTorch 2.6, we changed ..." or "cannot read the checkpoint (105)"
    ("finetune-raster-as-encoder", ["finetune", "chips", "--task", "height", "-o", "f",
                                    "--encoder", "rgb.tif"], 2,
     ["rgb.tif", "not a checkpoint", ".safetensors"], "."),
    ("finetune-text-as-encoder", ["finetune", "chips", "--task", "height", "-o", "f",
                                  "--encoder", "notes.txt"], 2, ["notes.txt", "not a checkpoint"], "."),
    ("finetune-bad-class-weights", ["finetune", "chips", "--task", "segmentation", "-o", "f", *FT,
                                    "--class-weights", "a,b"], 2, ["--class-weights"], "."),
    # class counts are checked against dataset.json's classes (0-5) before a run folder exists
    ("finetune-class-weights-count", ["finetune", "chips", "--task", "segmentation", "-o", "f", *FT,
                                      "--class-weights", "1,2"], 2, ["--class-weights", "6 classes"], "."),
    ("finetune-num-classes-below-labels", ["finetune", "chips", "--task", "segmentation", "-o", "f",
                                           *FT, "--num-classes", "3"], 2,
     ["--num-classes 3", "up to 5", "6 or more"], "."),
    ("finetune-class-weights-no-effect", ["finetune", "chips", "--task", "height", "-o", "f", *FT,
                                          "--class-weights", "1,2"], 2,
     ["--class-weights", "--task height"], "."),
    ("finetune-train-size-zero", ["finetune", "chips", "--task", "height", "-o", "f", *FT,
                                  "--train-size", "0"], 2, ["--train-size"], "."),
    ("finetune-output-is-input", ["finetune", "chips", "--task", "height", "-o", "chips", *FT,
                                  "--overwrite"], 2, ["chips"], "."),
    ("finetune-into-user-folder", ["finetune", "chips", "--task", "height", "-o", "mine",
                                   "--overwrite", *FT],
     2, ["mine"], "."),
    ("finetune-style-without-adapt-to", ["finetune", "chips", "--task", "height", "-o", "f", *FT,
                                         "--style", "fda"], 2, ["--style", "--adapt-to"], "."),
    ("finetune-layer-decay-zero", ["finetune", "chips", "--task", "height", "-o", "f", *FT,
                                   "--layer-decay", "0"], 2, ["--layer-decay"], "."),
    ("finetune-layer-decay-frozen", ["finetune", "chips", "--task", "height", "-o", "f", *FT,
                                     "--layer-decay", "0.75", "--freeze-encoder"], 2,
     ["--layer-decay", "--freeze-encoder"], "."),
    ("finetune-resume-crafted-checkpoint", ["finetune", "chips", "--task", "height", "-o", "evilrun",
                                            "--resume", *FT], 2, ["refusing to load"], "."),
    # export
    ("export-missing", ["export", "none.ckpt", "-o", "m.onnx"], 2, ["none.ckpt"], "."),
    ("export-crafted-pickle", ["export", "evil.ckpt", "-o", "m.onnx"], 2, ["evil.ckpt", "refusing"], "."),
    # said "not a readable rsgeo checkpoint (not a torch checkpoint file)"
    ("export-onnx-as-checkpoint", ["export", "corrupt.onnx", "-o", "m.onnx"], 2,
     ["corrupt.onnx", "already an ONNX model", "best.ckpt"], "."),
    # a pretraining run or a demo folder for a model said "give a model file (.onnx or
    # .ckpt)", which export does not take, without naming what the folder is
    ("export-pretraining-run", ["export", "pretrun", "-o", "m.onnx"], 2,
     ["pretrun", "pretraining run", "finetune"], "."),
    ("predict-demo-folder", ["predict-height", "rgb.tif", "-m", "demofolder", "-o", "h.tif"], 2,
     ["demofolder", "demo folder", "height.onnx"], "."),
    ("export-truncated", ["export", "trunc.ckpt", "-o", "m.onnx"], 2, ["trunc.ckpt"], "."),
    ("export-text-file", ["export", "notes.txt", "-o", "m.onnx"], 2, ["notes.txt"], "."),
    ("export-output-is-input", ["export", "model.ckpt", "-o", "model.ckpt", "--overwrite"], 2,
     ["model.ckpt"], "."),
    ("export-into-user-folder", ["export", "model.ckpt", "-o", "mine", "--overwrite"], 2, ["mine"], "."),
    ("export-output-exists", ["export", "model.ckpt", "-o", "corrupt.onnx"], 2,
     ["corrupt.onnx", "--overwrite"], "."),
    # export writes ONNX only: another name is refused before the checkpoint is loaded
    ("export-output-not-onnx", ["export", "model.ckpt", "-o", "m.txt"], 2, ["m.txt", ".onnx"], "."),
    ("export-output-no-extension", ["export", "model.ckpt", "-o", "model"], 2,
     ["model", ".onnx"], "."),
    ("export-negative-atol", ["export", "model.ckpt", "-o", "m.onnx", "--atol", "-1"], 2, ["--atol"], "."),
    # predict-height
    # models trained on heights: --dsm goes with RGB + DSM / nDSM models only
    ("predict-rgbn-without-dsm", ["predict-height", "rgb.tif", "-m", "rgbn.ckpt", "-o", "h.tif"], 2,
     ["rgbn.ckpt", "nDSM", "--dsm"], "."),
    ("predict-dsm-for-rgb-model", ["predict-height", "rgb.tif", "-m", "model.ckpt", "--dsm", "pre.tif",
                                   "-o", "h.tif"], 2, ["model.ckpt", "--dsm"], "."),
    ("predict-dsm-missing", ["predict-height", "rgb.tif", "-m", "rgbn.ckpt", "--dsm", "none.tif",
                             "-o", "h.tif"], 2, ["none.tif", "no such file"], "."),
    ("predict-dsm-two-bands", ["predict-height", "rgb.tif", "-m", "rgbn.ckpt", "--dsm", "two.tif",
                               "-o", "h.tif"], 2, ["two.tif"], "."),
    ("predict-dsm-elsewhere", ["predict-height", "rgb.tif", "-m", "rgbn.ckpt", "--dsm", "wgs.tif",
                               "-o", "h.tif"], 2, ["wgs.tif", "overlap"], "."),
    ("predict-dsm-folder-without-it", ["predict-height", "rgb.tif", "-m", "rgbn.ckpt", "--dsm", "mine",
                                       "-o", "h.tif"], 2, ["mine", "holds no rgb.tif"], "."),
    ("predict-missing-input", ["predict-height", "none.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["none.tif"], "."),
    ("predict-no-crs", ["predict-height", "nocrs_rgb.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["nocrs_rgb.tif"], "."),
    ("predict-plain-picture", ["predict-height", "plain.png", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["plain.png"], "."),
    ("predict-truncated", ["predict-height", "trunc.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["trunc.tif"], "."),
    ("predict-empty-file", ["predict-height", "empty.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["empty.tif"], "."),
    ("predict-text-as-tif", ["predict-height", "text.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["text.tif"], "."),
    # several inputs and -o NAME.tif made a folder called NAME.tif (exit 0)
    ("predict-two-inputs-one-file", ["predict-height", "rgb.tif", "four.tif", "-m", "model.ckpt",
                                     "-o", "h.tif"], 2, ["h.tif", "2 inputs", "-o h/"], "."),
    ("predict-folder-into-a-tif", ["predict", "tiles", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["h.tif", "of a folder", "-o h.tif/"], "."),
    ("predict-four-bands", ["predict-height", "four.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["four.tif", "band"], "."),
    # a 1-band raster (e.g. a DSM) is now a panchromatic image, replicated with a warning
    # (--bands rules); a 2-band one is still refused
    # ... but not one whose band declares a length unit: an nDSM given for the ortho was
    # predicted on as grey levels, exit 0
    ("predict-heights-as-image", ["predict-height", "ndsm_m.tif", "-m", "model.ckpt", "-o",
                                  "h.tif"], 2, ["ndsm_m.tif", "holds heights", "--bands"], "."),
    ("prepare-heights-as-rgb", ["prepare", "--rgb", "ndsm_m.tif", "--ndsm", "pre.tif", "-o", "c"],
     2, ["ndsm_m.tif", "holds heights"], "."),
    ("predict-two-bands", ["predict-height", "two.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["two.tif", "band"], "."),
    ("predict-all-nodata", ["predict-height", "nodata_rgb.tif", "-m", "model.ckpt", "-o", "h.tif"], 2,
     ["nodata_rgb.tif", "valid"], "."),
    ("predict-corrupt-onnx", ["predict-height", "rgb.tif", "-m", "corrupt.onnx", "-o", "h.tif"], 2,
     ["corrupt.onnx"], "."),
    ("predict-missing-model", ["predict-height", "rgb.tif", "-m", "none.onnx", "-o", "h.tif"], 2,
     ["none.onnx"], "."),
    ("predict-crafted-pickle", ["predict-height", "rgb.tif", "-m", "evil.ckpt", "-o", "h.tif"], 2,
     ["evil.ckpt", "refusing"], "."),
    ("predict-tile-8", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif", "--tile", "8"],
     2, ["--tile"], "."),
    ("predict-overlap-above-tile", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                                    "--tile", "32", "--overlap", "40"], 2, ["--overlap"], "."),
    ("predict-gsd-tiny", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif", "--gsd",
                          "0.0001"], 2, ["--gsd"], "."),
    ("predict-gsd-word", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif", "--gsd",
                          "fine"], 2, ["--gsd"], "."),
    ("predict-bad-co", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif", "--co",
                        "NOSUCHOPTION=1"], 2, ["NOSUCHOPTION"], "."),
    ("predict-co-not-key-value", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                                  "--co", "zstd"], 2, ["--co"], "."),
    ("predict-bad-nodata", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                            "--nodata", "lots"], 2, ["--nodata"], "."),
    ("predict-scale-reversed", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                                "--scale", "200,10"], 2, ["--scale"], "."),
    ("predict-batch-zero", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                            "--batch-size", "0"], 2, ["--batch-size"], "."),
    ("predict-empty-model", ["predict-height", "rgb.tif", "-m", "", "-o", "h.tif"], 2,
     ["--model", "empty"], "."),
    ("predict-output-is-input", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "rgb.tif",
                                 "--overwrite"], 2, ["rgb.tif"], "."),
    ("predict-output-is-model", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "model.ckpt",
                                 "--overwrite"], 2, ["model.ckpt"], "."),
    ("predict-several-one-missing", ["predict-height", "rgb.tif", "none.tif", "-m", "model.ckpt",
                                     "-o", "hs"], 2, ["none.tif"], "."),
    ("predict-several-into-a-file", ["predict-height", "rgb.tif", "four.tif", "-m", "model.ckpt",
                                     "-o", "notes.txt"], 2, ["notes.txt"], "."),
    ("predict-output-not-tif", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "notes.txt"],
     2, ["notes.txt", ".tif"], "."),
    ("predict-unwritable-output", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o",
                                   "/proc/rsgeo-h.tif"], 2, ["/proc/rsgeo-h.tif"], "."),
    ("predict-cuda-absent", ["predict-height", "rgb.tif", "-m", "model.ckpt", "-o", "h.tif",
                             "--device", "cuda"], 2, ["CUDA"], "."),
    # damage-map
    ("damage-missing-pre", ["damage-map", "none.tif", "post.tif", "-o", "d.tif"], 2, ["none.tif"], "."),
    ("damage-no-crs", ["damage-map", "nocrs.tif", "post.tif", "-o", "d.tif"], 2, ["nocrs.tif"], "."),
    ("damage-plain-picture", ["damage-map", "plain1.png", "post.tif", "-o", "d.tif"], 2,
     ["plain1.png"], "."),
    ("damage-all-nan-post", ["damage-map", "pre.tif", "nan.tif", "-o", "d.tif"], 2,
     ["nan.tif", "valid"], "."),
    ("damage-all-nodata-pre", ["damage-map", "nodata.tif", "post.tif", "-o", "d.tif"], 2,
     ["nodata.tif", "valid"], "."),
    ("damage-absolute-dsm", ["damage-map", "dsm_abs.tif", "post.tif", "-o", "d.tif"], 2,
     ["dsm_abs.tif", "--dtm"], "."),
    ("damage-empty-file", ["damage-map", "empty.tif", "post.tif", "-o", "d.tif"], 2, ["empty.tif"], "."),
    ("damage-truncated", ["damage-map", "trunc.tif", "post.tif", "-o", "d.tif"], 2, ["trunc.tif"], "."),
    ("damage-two-bands", ["damage-map", "two.tif", "post.tif", "-o", "d.tif"], 2, ["two.tif"], "."),
    ("damage-points-as-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "points.gpkg",
                                    "-o", "d.tif"], 2, ["points.gpkg", "polygons"], "."),
    ("damage-lines-as-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "lines.gpkg",
                                   "-o", "d.tif"], 2, ["lines.gpkg", "polygons"], "."),
    ("damage-missing-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "none.gpkg",
                                  "-o", "d.tif"], 2, ["none.gpkg"], "."),
    # a raster or a folder as polygons gave GDAL's "'PATH' not recognized as being in a
    # supported file format.; It might help to specify the correct driver..." cut mid-word
    ("damage-raster-as-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "rgb.tif",
                                    "-o", "d.tif"], 2, ["rgb.tif", "is a raster"], "."),
    ("damage-folder-as-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "mine",
                                    "-o", "d.tif"], 2, ["mine", "is a folder"], "."),
    ("damage-text-as-buildings", ["damage-map", "pre.tif", "post.tif", "--buildings", "notes.txt",
                                  "-o", "d.tif"], 2, ["notes.txt", "no vector format"], "."),
    ("damage-images-without-model", ["damage-map", "rgb.tif", "rgb.tif", "-o", "d.tif"], 2,
     ["rgb.tif"], "."),
    ("damage-corrupt-model", ["damage-map", "rgb.tif", "rgb.tif", "-m", "corrupt.onnx", "-o", "d.tif"],
     2, ["corrupt.onnx"], "."),
    ("damage-model-buildings-off-the-images", ["damage-map", "rgb.tif", "rgb.tif", "-m", "model.ckpt",
                                               "--buildings", "far.gpkg", "-o", "d.tif"], 2,
     ["far.gpkg", "none of the 2 footprints"], "."),
    ("damage-negative-threshold", ["damage-map", "pre.tif", "post.tif", "-o", "d.tif", "--threshold",
                                   "-1"], 2, ["--threshold"], "."),
    # a negative --min-height made every ground pixel a structure, exit 0
    ("damage-negative-min-height", ["damage-map", "pre.tif", "post.tif", "-o", "d.tif",
                                    "--min-height", "-3"], 2, ["--min-height", "-3"], "."),
    ("damage-bad-grades", ["damage-map", "pre.tif", "post.tif", "-o", "d.tif", "--grades", "lots"], 2,
     ["--grades"], "."),
    ("damage-bad-co", ["damage-map", "pre.tif", "post.tif", "-o", "d.tif", "--co", "NOSUCHOPTION=1"],
     2, ["NOSUCHOPTION"], "."),
    # `-o .` crashed (exit 1, ValueError: PosixPath('.') has an empty name)
    ("damage-output-current-folder", ["damage-map", "pre.tif", "post.tif", "-o", "."], 2,
     [".tif"], "."),
    ("damage-output-is-input", ["damage-map", "pre.tif", "post.tif", "-o", "pre.tif", "--overwrite"],
     2, ["pre.tif"], "."),
    ("damage-output-named-like-a-folder", ["damage-map", "pre.tif", "post.tif", "-o", "mine",
                                           "--overwrite"], 2, ["mine", ".tif"], "."),
    ("damage-all-nan-dtm", ["damage-map", "dsm_abs.tif", "dsm_abs.tif", "--dtm", "nan.tif", "-o",
                            "d.tif"], 2, ["nan.tif"], "."),
    ("damage-unwritable-output", ["damage-map", "pre.tif", "post.tif", "-o", "/proc/rsgeo-d.tif"], 2,
     ["/proc/rsgeo-d.tif"], "."),
    # evaluate
    ("evaluate-missing-ref", ["evaluate", "pre.tif", "none.tif"], 2, ["none.tif"], "."),
    ("evaluate-grid-mismatch", ["evaluate", "pre.tif", "shifted.tif"], 2, ["shifted.tif", "--align"], "."),
    ("evaluate-crs-mismatch", ["evaluate", "pre.tif", "wgs.tif"], 2, ["wgs.tif"], "."),
    ("evaluate-no-crs", ["evaluate", "nocrs.tif", "pre.tif"], 2, ["nocrs.tif"], "."),
    ("evaluate-plain-picture", ["evaluate", "plain1.png", "pre.tif"], 2, ["plain1.png"], "."),
    ("evaluate-all-nan-pred", ["evaluate", "nan.tif", "pre.tif"], 2, ["nan.tif", "valid"], "."),
    ("evaluate-absolute-ref", ["evaluate", "pre.tif", "dsm_abs.tif"], 2, ["dsm_abs.tif"], "."),
    ("evaluate-truncated", ["evaluate", "trunc.tif", "pre.tif"], 2, ["trunc.tif"], "."),
    ("evaluate-empty-file", ["evaluate", "empty.tif", "pre.tif"], 2, ["empty.tif"], "."),
    ("evaluate-points-as-footprints", ["evaluate", "points.gpkg", "buildings.gpkg", "--task",
                                       "footprints"], 2, ["points.gpkg", "polygon"], "."),
    # footprints with the default --task height said the file is not a readable raster
    ("evaluate-footprints-without-task", ["evaluate", "buildings.gpkg", "surveyed.gpkg"], 2,
     ["buildings.gpkg", "--task footprints"], "."),
    ("evaluate-raster-as-reference-footprints", ["evaluate", "buildings.gpkg", "labels.tif",
                                                 "--task", "footprints"], 2,
     ["labels.tif", "is a raster", "another order"], "."),
    ("evaluate-malformed-spacenet-csv", ["evaluate", "bad.csv", "bad.csv", "--task", "footprints"], 2,
     ["bad.csv"], "."),
    ("evaluate-bad-classes-file", ["evaluate", "labels.tif", "labels.tif", "--task", "segmentation",
                                   "--classes", "classes.json"], 2, ["classes.json"], "."),
    ("evaluate-class-id-not-listed", ["evaluate", "labels.tif", "labels.tif", "--task",
                                      "segmentation", "--classes", "classes_from1.json"], 2,
     ["labels.tif", "[0]", "class list"], "."),
    ("evaluate-class-name-twice", ["evaluate", "labels.tif", "labels.tif", "--task", "segmentation",
                                   "--classes", "classes_twice.json"], 2,
     ["classes_twice.json", "'other'"], "."),
    ("evaluate-bad-format", ["evaluate", "pre.tif", "post.tif", "--format", "xml"], 2, ["--format"], "."),
    ("evaluate-iou-above-1", ["evaluate", "buildings.gpkg", "buildings.gpkg", "--task", "footprints",
                              "--iou", "1.5"], 2, ["--iou"], "."),
    ("evaluate-negative-min-area", ["evaluate", "buildings.gpkg", "buildings.gpkg", "--task",
                                    "footprints", "--min-area", "-5"], 2, ["--min-area", "-5"], "."),
    ("evaluate-output-is-input", ["evaluate", "pre.tif", "post.tif", "-o", "pre.tif", "--overwrite"], 2,
     ["pre.tif"], "."),
    ("evaluate-dotdot-overwrite", ["evaluate", "../../pre.tif", "../../post.tif", "-o", "..",
                                   "--overwrite"], 2, [".."], "mine/sub"),
    ("evaluate-file-over-user-folder", ["evaluate", "pre.tif", "post.tif", "-o", "mine", "--overwrite"],
     2, ["mine", "folder"], "."),
    ("evaluate-unwritable-output", ["evaluate", "pre.tif", "post.tif", "-o", "/proc/rsgeo-e.json"], 2,
     ["/proc/rsgeo-e.json"], "."),
    # footprints: the error named both options whichever was wrong, and neither value
    ("footprints-negative-tolerance", ["footprints", "labels.tif", "-o", "f.gpkg", "--tolerance",
                                       "-1"], 2, ["--tolerance", "-1"], "."),
    ("footprints-negative-min-area", ["footprints", "labels.tif", "-o", "f.gpkg", "--min-area",
                                      "-2"], 2, ["--min-area", "-2"], "."),
    # building-heights
    # a footprints file given for the raster (arguments swapped) gave GDAL's "'PATH' not
    # recognized as being in a supported file format."
    ("footprints-vector-as-raster", ["footprints", "buildings.gpkg", "-o", "f.gpkg"], 2,
     ["buildings.gpkg", "is a vector file", "another order"], "."),
    ("heights-arguments-swapped", ["building-heights", "buildings.gpkg", "--buildings", "pre.tif",
                                   "-o", "h.gpkg"], 2, ["buildings.gpkg", "is a vector file"], "."),
    ("heights-missing-buildings", ["building-heights", "pre.tif", "--buildings", "none.gpkg", "-o",
                                   "h.gpkg"], 2, ["none.gpkg"], "."),
    ("heights-points", ["building-heights", "pre.tif", "--buildings", "points.gpkg", "-o", "h.gpkg"], 2,
     ["points.gpkg", "polygon"], "."),
    ("heights-no-crs", ["building-heights", "nocrs.tif", "--buildings", "buildings.gpkg", "-o",
                        "h.gpkg"], 2, ["nocrs.tif"], "."),
    ("heights-all-nan", ["building-heights", "nan.tif", "--buildings", "buildings.gpkg", "-o",
                         "h.gpkg"], 2, ["nan.tif", "valid"], "."),
    ("heights-absolute-dsm", ["building-heights", "dsm_abs.tif", "--buildings", "buildings.gpkg",
                              "-o", "h.gpkg"], 2, ["dsm_abs.tif", "--dtm"], "."),
    ("heights-image-not-heights", ["building-heights", "rgb.tif", "--buildings", "buildings.gpkg",
                                   "-o", "h.gpkg"], 2, ["rgb.tif", "image", "-m MODEL"], "."),
    ("heights-model-buildings-off-the-image", ["building-heights", "rgb.tif", "-m", "model.ckpt",
                                               "--buildings", "far.gpkg", "-o", "h.gpkg"], 2,
     ["far.gpkg", "none of the 2 footprints"], "."),
    ("heights-bad-format", ["building-heights", "pre.tif", "--buildings", "buildings.gpkg", "-o",
                            "h.xyz"], 2, ["h.xyz"], "."),
    ("heights-output-is-input", ["building-heights", "pre.tif", "--buildings", "buildings.gpkg", "-o",
                                 "buildings.gpkg", "--overwrite"], 2, ["buildings.gpkg"], "."),
    ("heights-column-taken", ["building-heights", "pre.tif", "--buildings", "surveyed.gpkg", "-o",
                              "h.gpkg"], 2, ["surveyed.gpkg", "height_m", "--prefix"], "."),
    ("heights-model-and-dtm", ["building-heights", "rgb.tif", "-m", "model.ckpt", "--dtm", "pre.tif",
                               "--buildings", "buildings.gpkg", "-o", "h.gpkg"], 2, ["--dtm", "-m"], "."),
    ("heights-model-missing", ["building-heights", "rgb.tif", "-m", "none.ckpt", "--buildings",
                               "buildings.gpkg", "-o", "h.gpkg"], 2, ["none.ckpt"], "."),
    # demo
    ("demo-into-user-folder", ["demo", "-o", "mine", "--overwrite", "--quick"], 2, ["mine"], "."),
    ("demo-current-folder", ["demo", "-o", ".", "--overwrite", "--quick"], 2, ["."], "mine"),
    ("demo-into-a-file", ["demo", "-o", "notes.txt", "--quick"], 2, ["notes.txt"], "."),
    ("demo-cuda-absent", ["demo", "-o", "dm", "--quick", "--device", "cuda"], 2, ["CUDA"], "."),
]

QUIET_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
CLASS_NAME = re.compile(r"\b[A-Z][A-Za-z]*(Error|Exception|Warning)\b")


def run_cli(args, cwd: Path, monkeypatch, capsys):
    """Run ``rsgeo ARGS`` in ``cwd``; stderr as a terminal would show it (warnings, logging)."""
    from rsgeo.cli.app import main

    monkeypatch.chdir(cwd)
    handler = logging.StreamHandler(sys.stderr)           # what logging.basicConfig shows
    handler.setFormatter(logging.Formatter("rsgeo: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            code = main([str(a) for a in args])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out, err = capsys.readouterr()
    shown = [f"{w.category.__name__}: {w.message}" for w in caught
             if not issubclass(w.category, QUIET_WARNINGS)]
    return code, out, err, shown


@pytest.mark.parametrize("args, code, words, where", [c[1:] for c in C], ids=[c[0] for c in C])
def test_catalogue(world, tmp_path, monkeypatch, capsys, args, code, words, where):
    if "CUDA" in words and torch.cuda.is_available():
        pytest.skip("CUDA is present")
    root = tmp_path / "w"
    shutil.copytree(world, root)
    before = snapshot(root)
    got, out, err, shown = run_cli(args, root / where, monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert got == code, (got, err)
    assert len(lines) == 1, err
    line = lines[0]
    for w in words:
        assert w in line, (w, line)
    assert "Traceback" not in err and not CLASS_NAME.search(line), line
    assert "Value error," not in line, line   # the option parser's own prefix, for nobody
    assert not re.search(r"\.tmp-[0-9a-f]{8}", line), line
    assert not shown, shown
    assert snapshot(root) == before
    assert not (root / "pwned.txt").exists()
    for p in ("/proc/rsgeo-h.tif", "/proc/rsgeo-d.tif", "/proc/rsgeo-e.json"):
        assert not Path(p).exists()


def test_catalogue_is_large_and_covers_every_command():
    commands = {c[1][0] for c in C}
    assert commands == {"synth", "prepare", "pretrain", "finetune", "predict", "predict-height", "damage-map",
                        "evaluate", "export", "demo", "building-heights", "footprints"}
    assert len(C) >= 60 and len({c[0] for c in C}) == len(C)


def test_sources_without_a_modality_are_left_out(tmp_path, caplog):
    """A dataset extended with an unlabelled source still trains on the labelled ones."""
    import pandas as pd

    from rsgeo.data.dataset import ChipDataset

    root = write_chips(tmp_path / "chips", n=4, size=32)                # source "city" has dsm
    other = root / "shards" / "plain"
    other.mkdir()
    for name in ("rgb", "hog"):
        shutil.copy(root / "shards" / "city" / f"{name}.npy", other / f"{name}.npy")
    m = pd.read_parquet(root / "manifest.parquet")
    extra = m.assign(source="plain", chip_id=m["chip_id"].str.replace("city", "plain"))
    pd.concat([m, extra]).to_parquet(root / "manifest.parquet")
    info = json.loads((root / "dataset.json").read_text())   # prepare lists the source last
    (root / "dataset.json").write_text(json.dumps({**info, "sources": ["city", "plain"]}))
    assert len(ChipDataset(root, modalities=("rgb",))) == 8
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        ds = ChipDataset(root, modalities=("rgb", "dsm"))
    assert len(ds) == 4 and ds.sources == ["city"] and "plain" in caplog.text
    assert ds.read(3, "dsm").shape[-2:] == (32, 32)
