import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from rsgeo.data.dataset import ChipDataset
from rsgeo.data.dedup import HashIndex, dhash
from rsgeo.data.prepare import prepare
from rsgeo.data.sources import SceneInput
from rsgeo.data.stats import BandStats
from rsgeo.synth import write_scenes
from tests.conftest import make_raster


def _rgb(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 110 + 50 * np.sin(yy / (7 + seed)) * np.cos(xx / (5 + seed))
    return np.clip(base[None] + rng.integers(0, 40, (3, h, w)), 0, 255).astype(np.uint8)


def test_alignment_across_crs_and_resolution(tmp_path):
    rgb = _rgb(128, 128)
    rgb[:, 40:50, 70:80] = 255                        # a bright roof at rows 40-50, cols 70-80
    a = make_raster(tmp_path / "rgb.tif", rgb, gsd=0.5, origin=(500000.0, 4100000.0))
    # the nDSM of the same roof, 1 m pixels, in Web Mercator
    from rasterio.warp import reproject, calculate_default_transform
    h = np.zeros((64, 64), np.float32)
    h[20:25, 35:40] = 12.0                            # same ground square at 1 m
    src_t = Affine(1.0, 0, 500000.0, 0, -1.0, 4100000.0)
    t, w, hh = calculate_default_transform("EPSG:32633", "EPSG:3857", 64, 64,
                                           *rasterio.transform.array_bounds(64, 64, src_t)[::-1][::-1])
    dst = np.full((hh, w), np.nan, np.float32)
    reproject(h, dst, src_transform=src_t, src_crs="EPSG:32633", dst_transform=t,
              dst_crs="EPSG:3857", resampling=rasterio.enums.Resampling.nearest, dst_nodata=np.nan)
    b = make_raster(tmp_path / "ndsm.tif", dst, crs=CRS.from_epsg(3857), transform=t, nodata=np.nan)
    prepare([SceneInput(rgb=a, ndsm=b, source="s")], tmp_path / "ds", size=128, max_nodata=1.0,
            split=(1, 0, 0))
    s = ChipDataset(tmp_path / "ds", modalities=("rgb", "ndsm"), normalize=False)[0]
    tall = np.argwhere(s["ndsm"][0].numpy() > 6)
    bright = np.argwhere(s["rgb"].numpy().min(0) == 255)
    assert abs(tall.mean(0) - bright.mean(0)).max() < 1.5
    assert abs(len(tall) - len(bright)) < 0.3 * len(bright)


def test_ndsm_from_dsm_recovers_building_heights(tmp_path):
    p = write_scenes(tmp_path / "city", size=256, gsd=0.5, style="mid", seed=5)[0]
    prepare([SceneInput(rgb=p["pre_rgb"], dsm=p["dsm"], source="c")], tmp_path / "ds",
            size=256, ndsm_from_dsm=True, max_nodata=1.0, split=(1, 0, 0))
    s = ChipDataset(tmp_path / "ds", modalities=("ndsm",))[0]
    got = s["ndsm"][0].numpy()
    with rasterio.open(p["pre_ndsm"]) as ds, rasterio.open(p["landcover"]) as lc:
        truth, cls = ds.read(1), lc.read(1)
    roofs = cls == 8
    err = np.abs(got[roofs] - truth[roofs])
    assert np.median(err) < 1.0


def test_stats_equal_numpy_over_valid_pixels(rng):
    chunks = [rng.normal(5, 2, (3, 16, 16)) for _ in range(5)]
    masks = [rng.random((16, 16)) > 0.3 for _ in range(5)]
    a, b = BandStats(3), BandStats(3)
    for c, m in zip(chunks[:2], masks[:2]):
        a.add(c, m)
    for c, m in zip(chunks[2:], masks[2:]):
        b.add(c, m)
    r = a.merge(b).result()
    vals = np.concatenate([c[:, m] for c, m in zip(chunks, masks)], axis=1)
    np.testing.assert_allclose(r["mean"], vals.mean(1))
    np.testing.assert_allclose(r["std"], vals.std(1))
    assert r["count"] == vals.shape[1]


def test_dedup_drops_exact_and_near_duplicates_only(tmp_path):
    base = _rgb(64, 64, seed=1)
    near = np.clip(base.astype(int) + np.random.default_rng(9).integers(-2, 3, base.shape), 0, 255).astype(np.uint8)
    other = _rgb(64, 64, seed=2)
    big = np.concatenate([base, base, near, other], axis=2)   # 4 chips side by side
    src = make_raster(tmp_path / "dup.tif", big)
    summary = prepare([SceneInput(rgb=src, source="d")], tmp_path / "ds", size=64)
    assert summary["d"]["kept"] == 2 and summary["d"]["duplicate"] == 2
    idx = HashIndex(4)
    idx.add(dhash(base))
    assert idx.near(dhash(near)) and not idx.near(dhash(other))
    m = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert list(m["status"]) == ["kept", "duplicate", "duplicate", "kept"]
    summary = prepare([SceneInput(rgb=src, source="e")], tmp_path / "ds", size=64,
                      dedup_distance=0)
    assert summary["e"]["kept"] == 4


def test_manifest_round_trip_and_append_source(tmp_path):
    a = make_raster(tmp_path / "a.tif", _rgb(128, 192, 3))
    b = make_raster(tmp_path / "b.tif", _rgb(64, 128, 4))
    prepare([SceneInput(rgb=a, source="A")], tmp_path / "ds", size=64)
    shard = tmp_path / "ds" / "shards" / "A" / "rgb.npy"
    before = (shard.stat().st_mtime_ns, shard.read_bytes())
    s = prepare([SceneInput(rgb=b, source="B"), SceneInput(rgb=a, source="A")], tmp_path / "ds",
                size=64)
    assert s["A"] == {"skipped": True} and s["B"]["kept"] == 2
    assert (shard.stat().st_mtime_ns, shard.read_bytes()) == before   # old shards untouched
    m = pd.read_parquet(tmp_path / "ds" / "manifest.parquet")
    assert set(m["source"]) == {"A", "B"} and len(m) == 6 + 2
    kept = m[m["status"] == "kept"]
    for src, g in kept.groupby("source"):
        arr = np.load(tmp_path / "ds" / "shards" / src / "rgb.npy", mmap_mode="r")
        assert sorted(g["index"]) == list(range(len(arr)))
    row = kept.iloc[0]
    with rasterio.open(row["scene"]) as ds:
        win = ds.read(window=rasterio.windows.Window(row["col_off"], row["row_off"], 64, 64))
    arr = np.load(tmp_path / "ds" / "shards" / row["source"] / "rgb.npy")[row["index"]]
    np.testing.assert_array_equal(arr, win)
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())["sources"]
    assert set(stats) == {"A", "B"} and len(stats["A"]["rgb"]["mean"]) == 3
    assert set(ChipDataset(tmp_path / "ds", split=None)[0]) >= {"rgb", "source", "chip_id"}


@pytest.mark.parametrize("stop_in", ["_run_source", "_update_info"])
def test_a_stopped_prepare_leaves_nothing_a_rerun_or_a_reader_trusts(tmp_path, monkeypatch,
                                                                     stop_in):
    """``--overwrite`` redoes source A beside B and is stopped (SIGTERM and Ctrl-C unwind as
    KeyboardInterrupt) while A's chips are cut, or just before A is committed. Before, the
    first left the manifest listing A's chips with A's shards already deleted: the plain
    rerun skipped A as 'already in the dataset' and training used B alone (A 'left out'
    with a warning); the second left A's new rows trusted under the old dataset.json."""
    import rsgeo.data.prepare as P
    from rsgeo.errors import InputError

    a = make_raster(tmp_path / "a.tif", _rgb(128, 192, 3))
    b = make_raster(tmp_path / "b.tif", _rgb(64, 128, 4))
    ds = tmp_path / "ds"
    prepare([SceneInput(rgb=a, source="A"), SceneInput(rgb=b, source="B")], ds, size=64)
    n = len(ChipDataset(ds, split=None))

    def stopped(*args, **kw):
        raise KeyboardInterrupt

    real = getattr(P, stop_in)
    monkeypatch.setattr(P, stop_in, stopped)
    with pytest.raises(KeyboardInterrupt):
        prepare([SceneInput(rgb=a, source="A")], ds, size=64, overwrite=True)
    monkeypatch.setattr(P, stop_in, real)
    if stop_in == "_run_source":  # A was removed whole before its chips were redone
        assert ChipDataset(ds, split=None).sources == ["B"]
        assert set(json.loads((ds / "stats.json").read_text())["sources"]) == {"B"}
    else:                         # A's rows are written, not committed: readers refuse them
        with pytest.raises(InputError, match=r"source\(s\) A unfinished: rsgeo prepare "
                                             "stopped while writing them"):
            ChipDataset(ds, split=None)
    s = prepare([SceneInput(rgb=a, source="A")], ds, size=64)  # the plain rerun redoes A
    assert s["A"]["scenes"] == 1 and "skipped" not in s["A"]
    again = ChipDataset(ds, split=None)
    assert again.sources == ["A", "B"] and len(again) == n
    assert json.loads((ds / "dataset.json").read_text())["sources"] == ["A", "B"]
    assert sorted(p.name for p in (ds / "shards").iterdir()) == ["A", "B"]


def test_stored_hog_is_each_chips_own(tmp_path, monkeypatch):
    """HOG is computed for a batch of chips at once: every stored row must be its own chip's
    (RGB, and the height image of DSM-only chips), more chips than one batch, and the same
    when a read batch is cut into several HOG calls."""
    from rsgeo.data import prepare as prepare_module
    from rsgeo.data.hog import hog_energy_numpy
    from rsgeo.data.prepare import _height_image

    noise = np.random.default_rng(5).integers(0, 256, (3, 320, 384)).astype(np.uint8)
    rgb = make_raster(tmp_path / "a.tif", noise)  # no near-duplicates: all 30 chips kept
    dsm = np.random.default_rng(6).uniform(0, 30, (1, 320, 384)).astype(np.float32)
    dsm_path = make_raster(tmp_path / "d.tif", dsm)
    prepare([SceneInput(rgb=rgb, source="A")], tmp_path / "A", size=64)
    prepare([SceneInput(rgb=None, dsm=dsm_path, source="D")], tmp_path / "D", size=64)
    for src, key in (("A", "rgb"), ("D", "dsm")):
        shards = tmp_path / src / "shards" / src
        images, hog = np.load(shards / f"{key}.npy"), np.load(shards / "hog.npy")
        assert len(images) == len(hog) == 30  # two batches of 16 chips
        for k in (0, 17, 29):
            base = images[k] if key == "rgb" else _height_image(images[k])
            np.testing.assert_array_equal(hog[k], hog_energy_numpy(base))
    monkeypatch.setattr(prepare_module, "HOG_PIXELS", 3 * 64 * 64)  # 3 chips a call
    prepare([SceneInput(rgb=rgb, source="A")], tmp_path / "A3", size=64)
    assert (tmp_path / "A3/shards/A/hog.npy").read_bytes() == \
        (tmp_path / "A/shards/A/hog.npy").read_bytes()


def test_bad_inputs(tmp_path, cli):
    two = make_raster(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint8))
    four = make_raster(tmp_path / "four.tif", np.zeros((4, 64, 64), np.uint16) + 9)  # RGBN
    rgb = make_raster(tmp_path / "rgb.tif", _rgb(64, 64))
    far = make_raster(tmp_path / "far.tif", np.zeros((64, 64), np.float32), origin=(9e5, 1e5))
    far_crs = make_raster(tmp_path / "far3857.tif", np.zeros((64, 64), np.float32),
                          crs=CRS.from_epsg(3857), origin=(-8e6, 6e6))
    blank = make_raster(tmp_path / "blank.tif", np.zeros((3, 64, 64), np.uint8), nodata=0)
    lab = make_raster(tmp_path / "lab.tif", np.full((64, 64), 42, np.uint8))
    dtm = make_raster(tmp_path / "dtm.tif", np.full((64, 64), 3.0, np.float32))
    (tmp_path / "classes.json").write_text(json.dumps({"1": "a", "2": "b"}))
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "x.txt").write_text("mine")
    cases = [
        (["--rgb", two], "--bands"), (["--rgb", four], "--bands"),
        (["--rgb", rgb, "--bands", "1,2,5"], "has 3 band(s)"),
        (["--rgb", rgb, "--dsm", far], "does not overlap"),
        (["--rgb", rgb, "--dsm", far_crs], "does not overlap"),
        (["--rgb", blank], "no valid pixel"),
        (["--rgb", rgb, "--labels", lab, "--classes", tmp_path / "classes.json"],
         "label values 42 are not in the --classes list (1, 2)"),
        (["--rgb", rgb, "--stride", 0], "--stride"),  # was taken for the default (size)
        # a DTM without its DSM wrote a dataset.json listing an ndsm modality without chips
        (["--rgb", rgb, "--dtm", dtm], "--dtm needs --dsm"),
        (["--rgb", rgb, "--ndsm", dtm, "--dtm", dtm], "--dtm needs --dsm"),
    ]
    for i, (args, msg) in enumerate(cases):
        code, _, err = cli("prepare", *args, "-o", tmp_path / f"ds{i}", "--size", 64)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / f"ds{i}").exists(), (args, list((tmp_path / f"ds{i}").rglob("*")))
    code, _, err = cli("prepare", "--rgb", rgb, "-o", tmp_path / "notds", "--size", 64)
    assert code == 2 and "not an rsgeo chips folder" in err      # no hint to overwrite it
    code, _, err = cli("prepare", "--rgb", rgb, "-o", tmp_path / "notds", "--size", 64, "--overwrite")
    assert code == 2 and "not an rsgeo chips folder" in err
    code, _, err = cli("prepare", "--rgb", four, "--bands", "3,2,1", "-o", tmp_path / "ok", "--size", 64)
    assert code == 0, err


def test_footprints_that_all_miss_the_scene_are_refused_some_warned(tmp_path, cli, caplog):
    # footprints in the wrong zone gave all-zero building chips, exit 0, no word
    import geopandas as gpd
    from shapely.geometry import box

    rgb = make_raster(tmp_path / "rgb.tif", _rgb(64, 64))
    on, off = box(500002, 4099990, 500008, 4099996), box(600000, 4099990, 600008, 4099996)
    gpd.GeoDataFrame(geometry=[off, off], crs=32633).to_file(tmp_path / "far.gpkg")
    gpd.GeoDataFrame(geometry=[on, off], crs=32633).to_file(tmp_path / "some.gpkg")
    code, _, err = cli("prepare", "--rgb", rgb, "--footprints", tmp_path / "far.gpkg",
                       "-o", tmp_path / "far", "--size", 64)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "far.gpkg" in err and "none of the 2 footprints overlaps the raster" in err, err
    assert not (tmp_path / "far").exists()
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        code, _, err = cli("prepare", "--rgb", rgb, "--footprints", tmp_path / "some.gpkg",
                           "-o", tmp_path / "some", "--size", 64)
    assert code == 0, err
    assert "some.gpkg: 1 of 2 footprints lie outside the raster" in caplog.text
    assert np.load(tmp_path / "some" / "shards" / "rgb" / "buildings.npy").sum() > 0


def test_label_and_change_rasters_that_are_not_class_ids_are_refused(tmp_path, cli):
    # a probability raster became class 0 everywhere, an nDSM truncated class ids, and a
    # change mask holding 7 was stored as 7 (change chips are 0/1, 255 ignore)
    rgb = make_raster(tmp_path / "rgb.tif", _rgb(64, 64))
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    prob = make_raster(tmp_path / "prob.tif", ramp)
    ndsm = make_raster(tmp_path / "ndsm.tif", ramp * 12.5)
    change = np.zeros((64, 64), np.uint8)
    change[10:20, 10:20], change[30:40, 30:40] = 1, 7
    seven = make_raster(tmp_path / "change7.tif", change)
    wide = make_raster(tmp_path / "wide.tif", np.full((64, 64), 300, np.uint16))
    cases = [(["--labels", prob], "prob.tif: labels raster holds values that are not whole"),
             (["--labels", ndsm], "ndsm.tif: labels raster holds values that are not whole"),
             (["--change", seven], "change7.tif: change mask holds the value(s) 7"),
             (["--change", seven, "--label-map", "7:0"], None),
             (["--labels", wide], "wide.tif: label values 300 are not class ids")]
    for i, (args, msg) in enumerate(cases):
        code, _, err = cli("prepare", "--rgb", rgb, *args, "-o", tmp_path / f"ds{i}",
                           "--size", 64)
        if msg is None:
            assert code == 0, err
            stored = np.load(tmp_path / f"ds{i}" / "shards" / "rgb" / "change.npy")
            assert set(np.unique(stored)) == {0, 1}
            continue
        assert code == 2 and len(err.strip().splitlines()) == 1 and msg in err, (args, err)
        assert not (tmp_path / f"ds{i}").exists()
    whole = make_raster(tmp_path / "whole.tif", np.round(ramp * 3))  # float, whole numbers
    code, _, err = cli("prepare", "--rgb", rgb, "--labels", whole, "-o", tmp_path / "w",
                       "--size", 64)
    assert code == 0, err
    stored = np.load(tmp_path / "w" / "shards" / "rgb" / "labels.npy")
    assert set(np.unique(stored)) == {0, 1, 2, 3}
    # the ids and their pixels are recorded (finetune checks --num-classes against them)
    rec = json.loads((tmp_path / "w" / "stats.json").read_text())["sources"]["rgb"]["labels"]
    assert rec == {"ids": [0, 1, 2, 3], "pixels": np.bincount(stored.ravel()).tolist()}



def test_label_rasters_are_read_through_in_strips_before_the_dataset_is_touched(
        tmp_path, cli, monkeypatch):
    # the checks ran per chip, after the folder was claimed and chips cut; with --overwrite
    # the source's old chips were dropped first, leaving a manifest without its shards
    import rsgeo.data.prepare as prep
    import rsgeo.io.labels as labels
    import rsgeo.io.reader as reader   # check_label_raster imports read_strips from here

    rgb = make_raster(tmp_path / "rgb.tif", _rgb(128, 64))
    good = np.zeros((128, 64), np.uint8)
    good[10:20, 10:20] = 1
    bad = good.copy()
    bad[2, 5], bad[120, 60] = 7, 5                    # first and last strip
    good_path = make_raster(tmp_path / "change.tif", good)
    bad_path = make_raster(tmp_path / "change7.tif", bad)
    code, _, err = cli("prepare", "--rgb", rgb, "--change", good_path, "-o", tmp_path / "ds",
                       "--size", 64)
    assert code == 0, err
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns)
                    for p in (tmp_path / "ds").rglob("*"))
    strips = []
    real = reader.read_strips  # check_label_raster imports it when called (rasterio: lazy)
    monkeypatch.setattr(labels, "LABEL_STRIP_PIXELS", 64 * 16)

    def counted(ds, rows, **kw):
        strips.append(rows)
        yield from real(ds, rows, **kw)

    monkeypatch.setattr(reader, "read_strips", counted)

    def no_dataset(*a, **k):
        raise AssertionError("the dataset folder was opened before the labels were checked")

    monkeypatch.setattr(prep, "_open_dataset", no_dataset)
    for out in ("ds", "new"):
        code, _, err = cli("prepare", "--rgb", rgb, "--change", bad_path, "-o", tmp_path / out,
                           "--size", 64, "--overwrite")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "change7.tif: change mask holds the value(s) 5, 7" in err, err
    assert strips and max(strips) < 128, strips       # streamed, never read whole
    assert not (tmp_path / "new").exists()
    assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns)
                  for p in (tmp_path / "ds").rglob("*")) == before
    labs = np.zeros((128, 64), np.uint8)
    labs[100:110, :] = 3
    (tmp_path / "classes.json").write_text(json.dumps({"0": "ground", "1": "roof"}))
    code, _, err = cli("prepare", "--rgb", rgb, "--labels", make_raster(tmp_path / "lc.tif", labs),
                       "--classes", tmp_path / "classes.json", "-o", tmp_path / "lc")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "lc.tif: label values 3 are not in the --classes list (0, 1)" in err, err
    assert not (tmp_path / "lc").exists()

@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:3857"])   # resampled, then reprojected
def test_label_rasters_are_read_once_and_the_dataset_is_the_same(tmp_path, monkeypatch, crs):
    """prepare read each label and change raster twice: whole for the up-front check, then
    again for every batch of chips. The chips are now cut from the class ids the check
    read (within LABEL_KEEP_BYTES); the dataset recorded is that of the second read."""
    import rsgeo.data.prepare as prep
    from rasterio.warp import calculate_default_transform, reproject

    rgb = make_raster(tmp_path / "rgb.tif", _rgb(160, 224), gsd=0.5)
    rng = np.random.default_rng(3)
    lab = np.kron(rng.integers(0, 5, (40, 56)), np.ones((2, 2), int)).astype(np.uint8)
    lab[:6, :9] = 9                                   # nodata
    lab[50:60, 100:140] = 200                         # recoded by --label-map 200:4
    src_t = Affine(1.0, 0, 500000.0, 0, -1.0, 4100000.0)     # 1 m: resampled onto 0.5 m
    t, w, h = calculate_default_transform("EPSG:32633", crs, 112, 80,
                                          *rasterio.transform.array_bounds(80, 112, src_t)[::-1][::-1])
    moved = np.full((h, w), 9, np.uint8)
    reproject(lab, moved, src_transform=src_t, src_crs="EPSG:32633", dst_transform=t,
              dst_crs=crs, resampling=rasterio.enums.Resampling.nearest, src_nodata=9,
              dst_nodata=9)
    labels = make_raster(tmp_path / "lab.tif", moved, crs=CRS.from_user_input(crs),
                         transform=t, nodata=9)
    change = make_raster(tmp_path / "chg.tif", (_rgb(160, 224, 5)[0] > 140).astype(np.uint8))
    reads = []
    real = prep.align_to

    def counted(ds, grid, *a, **k):
        reads.append(Path(ds.name).name)
        return real(ds, grid, *a, **k)

    monkeypatch.setattr(prep, "align_to", counted)
    scene = [SceneInput(rgb=rgb, labels=labels, change=change, source="s")]
    kw = dict(size=64, stride=32, label_map={200: 4}, max_nodata=0.5)   # overlapping chips
    prepare(scene, tmp_path / "once", **kw)
    assert reads.count("lab.tif") == 1 and reads.count("chg.tif") == 1, reads
    monkeypatch.setattr(prep, "LABEL_KEEP_BYTES", 0)  # nothing kept: read again per batch
    prepare(scene, tmp_path / "twice", **kw)
    assert reads.count("lab.tif") > 2
    for name in ("dataset.json", "stats.json"):
        assert (tmp_path / "once" / name).read_text() == (tmp_path / "twice" / name).read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "once" / "manifest.parquet"),
                                  pd.read_parquet(tmp_path / "twice" / "manifest.parquet"))
    for key in ("labels", "change"):
        once = np.load(tmp_path / "once" / "shards" / "s" / f"{key}.npy")
        np.testing.assert_array_equal(once, np.load(tmp_path / "twice" / "shards" / "s"
                                                    / f"{key}.npy"))
        assert set(np.unique(once)) == ({0, 1, 2, 3, 4, 255} if key == "labels" else {0, 1})
    rec = json.loads((tmp_path / "once" / "stats.json").read_text())["sources"]["s"]["labels"]
    assert rec["ids"] == [0, 1, 2, 3, 4]    # of the kept chips, 200 recoded, 9 ignored


def test_a_stride_above_the_size_warns_of_the_pixels_in_no_chip(tmp_path, cli, caplog):
    """--stride S > --size Z left gaps between chips without a word."""
    rgb = make_raster(tmp_path / "rgb.tif", _rgb(192, 288))
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        code, _, err = cli("prepare", "--rgb", rgb, "-o", tmp_path / "gaps", "--size", 64,
                           "--stride", 96, "--max-nodata", 1)
    assert code == 0, err
    m = pd.read_parquet(tmp_path / "gaps" / "manifest.parquet")
    inside = np.zeros((192, 288), bool)                       # what the chips cover
    for r, c in zip(m["row_off"], m["col_off"]):
        inside[r:r + 64, c:c + 64] = True
    assert round(100 * (1 - inside.mean())) == 35
    said = [r.getMessage() for r in caplog.records if "--stride" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(
        "--stride 96 > --size 64: 35% of the input pixels are in no chip"), said
    for i, (h, w, stride) in enumerate([(192, 288, 64), (192, 288, 32), (100, 100, 96)]):
        # no gap: stride <= size, or a stride the last chip (snapped to the edge) closes
        img = make_raster(tmp_path / f"img{i}.tif", _rgb(h, w))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rsgeo"):
            code, _, err = cli("prepare", "--rgb", img, "-o", tmp_path / f"ok{i}", "--size",
                               64, "--stride", stride, "--max-nodata", 1)
        assert code == 0 and "--stride" not in caplog.text, caplog.text


def test_ndsm_stored_as_float16_by_default_float32_datasets_keep_theirs(tmp_path):
    from rsgeo.data.prepare import stored_heights
    from rsgeo.errors import InputError

    heights = np.zeros((64, 128), np.float32)
    heights[5:20, 10:40] = 12.345
    heights[30:50, 70:100] = 47.891
    heights[0, :4] = np.nan
    rgb = make_raster(tmp_path / "rgb.tif", _rgb(64, 128))
    nd = make_raster(tmp_path / "ndsm.tif", heights, nodata=np.nan)
    dsm = make_raster(tmp_path / "dsm.tif", heights + 850.25, nodata=np.nan)
    scene = SceneInput(rgb=rgb, ndsm=nd, dsm=dsm, source="a")
    prepare([scene], tmp_path / "new", size=64, max_nodata=1.0, split=(1, 0, 0), dedup_distance=0)
    info = json.loads((tmp_path / "new" / "dataset.json").read_text())
    assert info["dtypes"] == {"dsm": "float32", "hog": "float32", "ndsm": "float16",
                              "rgb": "uint8"}
    ds = ChipDataset(tmp_path / "new", modalities=("ndsm", "dsm"))
    got = np.concatenate([ds[i]["ndsm"][0].numpy() for i in range(2)], 1)
    assert ds[0]["ndsm"].dtype == torch.float16 and ds[0]["dsm"].dtype == torch.float32
    assert np.array_equal(np.isnan(got), np.isnan(heights))
    err = np.abs(got.astype(np.float32) - heights)[~np.isnan(heights)]
    assert 0 < err.max() <= 2.0 ** -6 and err.max() <= heights[~np.isnan(heights)].max() * 2 ** -11
    # an older dataset with float32 nDSM (no dtypes record) keeps float32 when extended
    prepare([scene], tmp_path / "old", size=64, max_nodata=1.0, split=(1, 0, 0),
            ndsm_dtype="float32")
    p = tmp_path / "old" / "dataset.json"
    old = json.loads(p.read_text())
    del old["dtypes"]
    p.write_text(json.dumps(old))
    prepare([SceneInput(rgb=rgb, ndsm=nd, source="b")], tmp_path / "old", size=64,
            max_nodata=1.0, split=(1, 0, 0))
    ds = ChipDataset(tmp_path / "old", modalities=("ndsm",))
    assert {ds[i]["ndsm"].dtype for i in range(len(ds))} == {torch.float32}
    assert ds.stored_dtype("ndsm") == np.float32
    assert json.loads(p.read_text())["dtypes"]["ndsm"] == "float32"
    with pytest.raises(InputError, match="stores nDSM chips as float32"):
        prepare([SceneInput(rgb=rgb, ndsm=nd, source="c")], tmp_path / "old", size=64,
                ndsm_dtype="float16")
    with pytest.raises(InputError, match="--ndsm-dtype"):
        prepare([scene], tmp_path / "x", size=64, ndsm_dtype="int8")
    big = stored_heights(np.array([1.0, -70000.0, 7e4, np.nan], np.float32), "float16")
    assert big.dtype == np.float16 and big[0] == 1 and np.isnan(big[1:]).all()


def test_sources_without_a_modality_are_left_out_with_a_warning(tmp_path, caplog):
    """A dataset extended with a source lacking labels still trains segmentation on the
    labelled sources (the others named in one warning); RGB runs see every source."""

    rgb_a = make_raster(tmp_path / "a.tif", _rgb(128, 128, seed=1))
    labels = make_raster(tmp_path / "l.tif", (np.arange(128 * 128).reshape(1, 128, 128) % 3
                                              ).astype(np.uint8))
    rgb_b = make_raster(tmp_path / "b.tif", _rgb(128, 128, seed=2))
    prepare([SceneInput(rgb=rgb_a, labels=labels, source="A")], tmp_path / "ds", size=64,
            dedup_distance=0)
    prepare([SceneInput(rgb=rgb_b, source="B")], tmp_path / "ds", size=64, dedup_distance=0)
    with caplog.at_level(logging.WARNING, logger="rsgeo"):
        labelled = ChipDataset(tmp_path / "ds", split=None, modalities=("rgb", "labels"))
    assert labelled.sources == ["A"] and len(labelled) == 4
    assert "source(s) B have no rgb/labels chips and are left out" in caplog.text
    assert ChipDataset(tmp_path / "ds", split=None).sources == ["A", "B"]


def test_a_rotated_grid_keeps_its_chip_bounds_and_footprints(tmp_path):
    import math

    import geopandas as gpd
    from shapely.affinity import affine_transform

    p = write_scenes(tmp_path / "city", size=128, scenes=1, seed=3)[0]
    with rasterio.open(p["pre_rgb"]) as src:
        rgb, north_up = src.read(), src.transform
    th = math.radians(30)
    rotated = Affine(0.5 * math.cos(th), 0.5 * math.sin(th), north_up.c,
                     0.5 * math.sin(th), -0.5 * math.cos(th), north_up.f)
    rot_rgb = make_raster(tmp_path / "rot.tif", rgb, crs=CRS.from_epsg(32631), transform=rotated)
    m = rotated * ~north_up  # the same rotation for the footprints: the same roofs per pixel
    fp = gpd.read_file(p["footprints"])
    fp["geometry"] = [affine_transform(g, [m.a, m.b, m.d, m.e, m.c, m.f]) for g in fp.geometry]
    fp.to_file(tmp_path / "rot.gpkg")
    for name, scene in (("up", SceneInput(rgb=p["pre_rgb"], footprints=p["footprints"],
                                          source="s")),
                        ("rot", SceneInput(rgb=rot_rgb, footprints=tmp_path / "rot.gpkg",
                                           source="s"))):
        prepare([scene], tmp_path / name, size=64, dedup_distance=0, max_nodata=1.0)
    up, rot = (np.load(tmp_path / n / "shards" / "s" / "buildings.npy") for n in ("up", "rot"))
    assert up.sum() > 0 and np.array_equal(up, rot)
    row = pd.read_parquet(tmp_path / "rot" / "manifest.parquet").iloc[-1]
    xs, ys = zip(*(rotated * (row.col_off + i, row.row_off + j) for i in (0, 64) for j in (0, 64)))
    assert (row.minx, row.miny, row.maxx, row.maxy) == pytest.approx(
        (min(xs), min(ys), max(xs), max(ys)))
