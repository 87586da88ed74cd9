"""The inference pipeline: same outputs as the engine's plain path, many inputs, failures."""

import json

import numpy as np
import pytest
import rasterio

from rsgeo.errors import InputError
from rsgeo.infer.predict import predict_height_file, predict_height_files
from rsgeo.infer.session import Norm, device_normalise
from tests.conftest import make_raster

CFG = {"task": "height", "backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
       "head": "dpt", "head_features": 32}
META = {"task": "height", "bands": ["red", "green", "blue"], "mean": [120.0, 110.0, 100.0],
        "std": [50.0, 45.0, 40.0], "gsd": 0.5, "tile": 64, "overlap": 16, "units": "m",
        "nodata": -9999}


def position_model(batch):
    """Depends on the pixel values and on the position inside the tile (a wrong window,
    weight or order shows), returns two bands (the pipeline keeps the first)."""
    t = batch.shape[-1]
    ramp = np.linspace(0, 1, t, dtype=np.float32)
    a = np.tanh(batch[:, :1] * 0.7) + batch[:, 1:2] * batch[:, 2:3] * 0.1 + ramp[:, None] \
        - 0.5 * ramp[None, :]
    return np.concatenate([a, -a], axis=1)


def runner(fn=position_model):
    class R:
        device = "cpu"

        def __call__(self, batch):
            return fn(batch)
    return R(), META, CFG


def rgb(path, h, w, seed=0, dtype=np.uint8, top=255, nodata=None):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, top + 1, (3, h, w)).astype(dtype)
    return make_raster(path, img, nodata=nodata)


def old_path(src, out, tile, overlap, batch_size=4, fn=position_model):
    """Today's path: float32 reads, normalised on the host, the engine's run_tiled."""
    from rsgeo.infer.predict import input_scale
    from rsgeo.io.pipeline import run_tiled
    from rsgeo.io.raster import Grid
    from rsgeo.io.writer import HEIGHT_NODATA, open_output

    mean = np.asarray(META["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(META["std"], np.float32).reshape(1, -1, 1, 1)
    with rasterio.open(src) as ds, open_output(out, Grid.of(ds), nodata=HEIGHT_NODATA) as dst:
        scale = np.float32(input_scale(ds))
        run_tiled(ds, dst, lambda b: fn((b * scale - mean) / std)[:, :1], tile=tile,
                  overlap=overlap, batch_size=batch_size, in_nodata=ds.nodata)
    return rasterio.open(out).read(1)


@pytest.mark.parametrize("shape,tile,overlap,batch,workers", [
    ((40, 50), 64, 16, 4, 2),       # smaller than one tile: padded
    ((64, 64), 64, 16, 1, 1),       # exactly one tile
    ((65, 129), 64, 16, 3, 3),      # one pixel more than a tile: snapped last window
    ((130, 97), 64, 0, 5, 2),       # no overlap
    ((70, 75), 64, 63, 7, 4),       # stride 1: every window overlaps every other
    ((150, 230), 32, 8, 8, 2),      # many tiles, batches cross tile rows
])
def test_same_output_as_the_plain_float_path(tmp_path, shape, tile, overlap, batch, workers):
    src = rgb(tmp_path / "img.tif", *shape)
    ref = old_path(src, tmp_path / "ref.tif", tile, overlap)
    r = predict_height_file(src, "m.ckpt", tmp_path / "new.tif", runner=runner(), tile=tile,
                            overlap=overlap, batch_size=batch, workers=workers)
    got = rasterio.open(tmp_path / "new.tif").read(1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    assert r["batch_size"] == batch and r["tiles"] > 0


def test_nodata_and_16bit_scaling_match_the_plain_path(tmp_path):
    img = np.random.default_rng(1).integers(0, 4096, (3, 90, 110)).astype(np.uint16)
    img[:, 20:40, 30:70] = 0
    src = make_raster(tmp_path / "u16.tif", img, nodata=0)
    ref = old_path(src, tmp_path / "ref.tif", 64, 16)
    r = predict_height_file(src, "m.ckpt", tmp_path / "new.tif", runner=runner(), tile=64,
                            overlap=16, batch_size=3, scale="bitdepth")
    got = rasterio.open(tmp_path / "new.tif").read(1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert (got[20:40, 30:70] == -9999).all() and r["input_scale"] == pytest.approx(255 / 4095)


def test_uint8_normalised_on_the_device_equals_the_float_path():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for dtype, scale, top in ((np.uint8, 1.0, 255), (np.uint16, 255 / 2047, 2047),
                              (np.int16, 255 / 4095, 4095)):
        raw = rng.integers(0, top + 1, (3, 3, 17, 19)).astype(dtype)
        norm = Norm(float(np.float32(scale)), (120.0, 110.0, 100.0), (50.0, 45.0, 40.0))
        mean = np.asarray(norm.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(norm.std, np.float32).reshape(1, -1, 1, 1)
        old = (raw.astype(np.float32) * np.float32(scale) - mean) / std
        dev = device_normalise(torch, raw, norm, torch.device("cpu")).numpy()
        np.testing.assert_array_equal(dev, old)
        np.testing.assert_array_equal(norm.host(raw), old)
        np.testing.assert_array_equal(norm.host([raw[:1], raw[1:]]), old)


def test_torch_runner_on_raw_tiles_equals_the_old_float_call(tmp_path):
    import torch

    from rsgeo.infer.session import TorchRunner
    from rsgeo.tasks.bundle import build_task_model

    torch.manual_seed(0)
    r = TorchRunner(build_task_model(CFG), "cpu")
    raw = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64)).astype(np.uint8)
    norm = Norm(1.0, tuple(META["mean"]), tuple(META["std"]))
    p = r.submit([raw[:1], raw[1:]], norm)
    np.testing.assert_allclose(p.result(), r(norm.host(raw))[:, :1], rtol=0, atol=1e-6)
    p.release()


class AsyncSlotsRunner:
    """Like the CUDA runner, without CUDA: ``submit`` returns at once, a worker thread
    computes into one of ``slots`` reused output buffers, free again only after
    ``release``. A pipeline that kept a buffer past ``release`` would get overwritten tiles."""

    device = "cpu"

    def __init__(self, slots=3):
        import queue
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1)
        self.free = queue.Queue()
        self.bufs = {}
        for i in range(slots):
            self.free.put(i)

    def submit(self, raw, norm):
        i = self.free.get(timeout=30)
        x = norm.host(raw)

        def work():
            import time

            time.sleep(0.002)  # results arrive late, out of step with the submits
            out = position_model(x)[:, :norm.out_bands]
            buf = self.bufs.get(i)
            if buf is None or buf.shape != out.shape:
                buf = self.bufs[i] = np.empty_like(out)
            buf[...] = out
            return buf

        fut = self.pool.submit(work)
        owner = self

        class P:
            def result(self):
                return fut.result()

            def release(self):
                fut.result()
                owner.bufs[i][...] = np.nan  # the next user scribbles over it
                owner.free.put(i)
        return P()


def test_async_runner_buffers_are_copied_before_release(tmp_path):
    src = rgb(tmp_path / "img.tif", 150, 230)
    ref = old_path(src, tmp_path / "ref.tif", 32, 8)
    predict_height_file(src, "m.ckpt", tmp_path / "new.tif", runner=(AsyncSlotsRunner(), META,
                        CFG), tile=32, overlap=8, batch_size=5)
    got = rasterio.open(tmp_path / "new.tif").read(1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_many_inputs_one_pipeline_equal_single_runs(tmp_path):
    shapes = [(40, 50), (100, 70), (64, 64), (33, 90)]
    srcs = [rgb(tmp_path / f"i{k}.tif", *s, seed=k) for k, s in enumerate(shapes)]
    outs = [tmp_path / f"many_{k}.tif" for k in range(len(srcs))]
    r = predict_height_files(srcs, "m.ckpt", outs, runner=runner(), tile=64, overlap=16,
                             batch_size=8, workers=3)   # batches hold tiles of several files
    assert [f["output"] for f in r["files"]] == [str(o) for o in outs]
    assert r["total"]["files"] == 4 and r["total"]["outputs"] == [str(o) for o in outs]
    assert r["total"]["mpx"] == pytest.approx(sum(h * w for h, w in shapes) / 1e6, abs=1e-3)
    for k, src in enumerate(srcs):
        predict_height_file(src, "m.ckpt", tmp_path / f"one_{k}.tif", runner=runner(),
                            tile=64, overlap=16, batch_size=2)
        a = rasterio.open(outs[k]).read(1)
        b = rasterio.open(tmp_path / f"one_{k}.tif").read(1)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_files_share_one_set_of_decoding_threads(tmp_path, monkeypatch):
    """A folder run decodes every file on the same reader threads (each new thread pays
    GDAL's and PROJ's set-up, several ms: per file with many small tiles), with the same
    outputs as one run per file."""
    import threading

    from rsgeo.io.reader import ParallelReader

    seen = set()
    plain = ParallelReader._read

    def spy(self, *a):
        seen.add(threading.current_thread())   # held: no thread object is reused
        return plain(self, *a)

    monkeypatch.setattr(ParallelReader, "_read", spy)
    srcs = [rgb(tmp_path / f"s{k}.tif", 48, 40 + 8 * k, seed=k) for k in range(6)]
    outs = [tmp_path / f"s{k}_h.tif" for k in range(6)]
    predict_height_files(srcs, "m.ckpt", outs, runner=runner(), tile=32, overlap=8,
                         batch_size=4, workers=2)
    assert 1 <= len(seen) <= 2
    for src, out in zip(srcs, outs):
        predict_height_file(src, "m.ckpt", tmp_path / "one.tif", runner=runner(), tile=32,
                            overlap=8, batch_size=4, overwrite=True)
        np.testing.assert_array_equal(rasterio.open(out).read(1),
                                      rasterio.open(tmp_path / "one.tif").read(1))


def test_one_file_runs_in_a_loop_reuse_the_decoding_threads(tmp_path, monkeypatch):
    """A loop of one-file calls (a notebook's ``for f in files: predict_height_file(...)``)
    decodes on the same threads each call: their GDAL and PROJ set-up is paid once per
    process; each call's reads are done when it returns."""
    import threading

    from rsgeo.io.reader import ParallelReader

    seen: list[set] = []
    plain = ParallelReader._read

    def spy(self, *a):
        seen[-1].add(threading.current_thread())
        return plain(self, *a)

    monkeypatch.setattr(ParallelReader, "_read", spy)
    for k in range(3):
        seen.append(set())
        src = rgb(tmp_path / f"s{k}.tif", 40, 48, seed=k)
        predict_height_file(src, "m.ckpt", tmp_path / f"h{k}.tif", runner=runner(), tile=32,
                            overlap=8, batch_size=4, workers=2)
        assert rasterio.open(tmp_path / f"h{k}.tif").read(1).shape == (40, 48)
    assert all(seen) and len(set().union(*seen)) <= 2   # per-call threads: 3 or more


def test_the_first_file_is_opened_in_the_calling_thread(tmp_path, monkeypatch):
    """The first input is opened (and its output created) in the calling thread, whose GDAL
    and PROJ are already set up: a new thread's first CRS costs 15-20 ms, on the path of
    every one-file call; later files are opened ahead in the pipeline's own thread."""
    import threading

    from rsgeo.infer import predict

    where = []
    plain = predict._prepare

    def spy(*a, **k):
        where.append(threading.current_thread())
        return plain(*a, **k)

    monkeypatch.setattr(predict, "_prepare", spy)
    srcs = [rgb(tmp_path / f"s{k}.tif", 40, 48, seed=k) for k in range(3)]
    predict_height_files(srcs, "m.ckpt", [tmp_path / f"h{k}.tif" for k in range(3)],
                         runner=runner(), tile=32, overlap=8, batch_size=4)
    assert where[0] is threading.current_thread()
    assert len(where) == 3 and all(w is not where[0] for w in where[1:])


def _predict_in_child(src, dst) -> None:
    predict_height_file(src, "m.ckpt", dst, runner=runner(), tile=32, overlap=8, batch_size=4,
                        workers=2)


def test_a_forked_child_starts_its_own_decoding_threads(tmp_path):
    """The kept decoding threads do not survive ``fork``: a child predicts on new ones (a
    child that inherited the parent's pool would wait forever on threads it does not have)."""
    import multiprocessing as mp

    if "fork" not in mp.get_all_start_methods():
        pytest.skip("no fork on this platform")
    src = rgb(tmp_path / "a.tif", 40, 48)
    predict_height_file(src, "m.ckpt", tmp_path / "parent.tif", runner=runner(), tile=32,
                        overlap=8, batch_size=4, workers=2)   # the parent's threads exist
    child = mp.get_context("fork").Process(target=_predict_in_child,
                                           args=(src, tmp_path / "child.tif"))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on its parent's decoding threads")
    assert child.exitcode == 0
    np.testing.assert_array_equal(rasterio.open(tmp_path / "child.tif").read(1),
                                  rasterio.open(tmp_path / "parent.tif").read(1))


def test_reader_on_a_shared_pool_closes_without_stopping_it(tmp_path):
    """Closing a reader whose reads are still queued on a shared pool cancels them, waits
    for the running one and closes its handles; the pool serves the next reader."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from rsgeo.io.reader import ParallelReader

    src = rgb(tmp_path / "a.tif", 64, 64)
    pool = ThreadPoolExecutor(1)
    try:
        with rasterio.open(src) as ds:
            pool.submit(time.sleep, 0.2)          # the one thread is busy: reads queue
            out = np.zeros((3, 64, 64), np.uint8)
            first = ParallelReader(ds, 1, pool=pool)
            futs = first.read_into(out, 0, 64, 0, 64)
            first.close()
            assert all(f.cancelled() for f in futs) and not out.any()
            second = ParallelReader(ds, 1, pool=pool)
            futs = second.read_into(out, 0, 64, 0, 64)
            [f.result(timeout=10) for f in futs]
            second.close()
            np.testing.assert_array_equal(out, ds.read())
    finally:
        pool.shutdown()


def test_reader_batches_recycled_only_after_every_slice_is_blended(tmp_path, monkeypatch):
    """Reader batches go back to the pool (later batches reuse their arrays) once blended;
    a batch cut across two model batches (files sharing one) is kept until both are: a
    released batch is scribbled over here, so an early release shows in the outputs."""
    from rsgeo.io.pipeline import Batch

    released = []
    plain = Batch.release

    def scribbling_release(self):
        if self.pool is not None:
            released.append(len(self.windows))
            self.data[...] = 7
            self.valid[...] = False
        plain(self)
    monkeypatch.setattr(Batch, "release", scribbling_release)
    shapes = [(70, 90), (100, 70), (33, 130)]
    srcs = []
    for k, (h, w) in enumerate(shapes):
        img = np.random.default_rng(k).integers(1, 256, (3, h, w)).astype(np.uint8)
        img[:, 5:20, 10:30] = 0
        srcs.append(make_raster(tmp_path / f"i{k}.tif", img, nodata=0))
    outs = [tmp_path / f"many_{k}.tif" for k in range(len(srcs))]
    predict_height_files(srcs, "m.ckpt", outs, runner=(AsyncSlotsRunner(), META, CFG),
                         tile=32, overlap=8, batch_size=5)
    for k, src in enumerate(srcs):
        ref = old_path(src, tmp_path / f"ref_{k}.tif", 32, 8)
        np.testing.assert_allclose(rasterio.open(outs[k]).read(1), ref, rtol=1e-6, atol=1e-6)
    assert len(released) > 3 and sum(released) > 0


def test_model_failure_mid_run_leaves_no_output(tmp_path):
    calls = {"n": 0}

    def failing(batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("model exploded")
        return position_model(batch)

    src = rgb(tmp_path / "img.tif", 200, 200)
    with pytest.raises(RuntimeError, match="exploded"):
        predict_height_file(src, "m", tmp_path / "h.tif", runner=runner(failing), tile=64,
                            overlap=16, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]


def test_read_failure_keeps_finished_files_and_discards_the_rest(tmp_path):
    from affine import Affine

    a = rgb(tmp_path / "a.tif", 50, 50)
    b = tmp_path / "b.tif"
    img = np.random.default_rng(1).integers(0, 256, (3, 256, 128)).astype(np.uint8)
    with rasterio.open(b, "w", driver="GTiff", width=128, height=256, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 4e6),
                       tiled=True, blockxsize=64, blockysize=64, compress="deflate") as dst:
        dst.write(img)
    with rasterio.open(b) as ds:  # corrupt a block in the lower half: fails mid-run
        off = int(ds.get_tag_item("BLOCK_OFFSET_0_3", "TIFF", bidx=1))
        size = int(ds.get_tag_item("BLOCK_SIZE_0_3", "TIFF", bidx=1))
    with open(b, "r+b") as f:
        f.seek(off)
        f.write(b"\xff" * size)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="b.tif") as e:
        predict_height_files([a, b], "m", [out / "a_h.tif", out / "b_h.tif"], runner=runner(),
                             tile=64, overlap=16, batch_size=2, workers=2)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in out.iterdir()) == ["a_h.tif"]


def test_bad_second_input_fails_after_the_first_is_written(tmp_path):
    a = rgb(tmp_path / "a.tif", 50, 60)
    four = make_raster(tmp_path / "four.tif", np.zeros((4, 64, 64), np.uint16))  # RGBN: --bands needed
    with pytest.raises(InputError, match="4 band"):
        predict_height_files([a, four], "m", [tmp_path / "a_h.tif", tmp_path / "f_h.tif"],
                             runner=runner(), tile=64, overlap=16)
    assert (tmp_path / "a_h.tif").exists() and not (tmp_path / "f_h.tif").exists()


def test_cli_folder_input_and_json_per_file_and_total(tmp_path, cli, monkeypatch):
    import rsgeo.infer.predict as predict

    monkeypatch.setattr(predict, "start_loading", _fake_loading)
    folder = tmp_path / "tiles"
    folder.mkdir()
    for k in range(3):
        rgb(folder / f"t{k}.tif", 60 + 10 * k, 70, seed=k)
    (folder / "notes.txt").write_text("not a raster")
    code, out, err = cli("predict-height", folder, "-m", tmp_path / "m.ckpt", "-o",
                         tmp_path / "out", "--json")
    assert code == 0, err
    lines = [json.loads(x) for x in out.strip().splitlines()]
    assert [Path_name(x["output"]) for x in lines[:3]] == [f"t{k}_height.tif" for k in range(3)]
    assert all(x["mpx_per_s"] > 0 and x["seconds"] > 0 for x in lines[:3])
    total = lines[3]
    assert total["total"] is True and total["files"] == 3 and len(total["outputs"]) == 3
    assert total["mpx"] == pytest.approx(sum(x["mpx"] for x in lines[:3]), abs=2e-3)
    code, out, err = cli("predict-height", folder / "t0.tif", "-m", tmp_path / "m.ckpt", "-o",
                         tmp_path / "lerc.tif", "--compress", "lerc_zstd", "--max-z-error", "0.05")
    assert code == 0, err
    with rasterio.open(tmp_path / "lerc.tif") as a, rasterio.open(tmp_path / "out" /
                                                                   "t0_height.tif") as b:
        assert a.profile["compress"].lower() == "lerc_zstd"
        np.testing.assert_allclose(a.read(1), b.read(1), rtol=0, atol=0.05 + 1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("predict-height", empty, "-m", tmp_path / "m.ckpt", "-o", tmp_path / "o")
    assert code == 2 and "no rasters" in err


def Path_name(p):
    from pathlib import Path

    return Path(p).name


def _fake_loading(model_path, *a, **k):
    from concurrent.futures import Future

    from rsgeo.infer.predict import Loading

    meta, run = Future(), Future()
    r, m, c = runner()
    meta.set_result((m, c))
    run.set_result(r)
    return Loading(meta, run)


def test_height_stats_sample_large_outputs(tmp_path):
    from rsgeo.infer.predict import height_stats

    h = np.linspace(0, 30, 300 * 300, dtype=np.float32).reshape(300, 300)
    h[:10] = -9999
    p = make_raster(tmp_path / "h.tif", h, nodata=-9999)
    exact = height_stats(p)
    assert exact["height_max"] == 30.0 and exact["height_min"] > 0.9
    approx = height_stats(p, sample=80)  # 8 x 8 windows of 10 px
    assert approx["height_min"] >= exact["height_min"] and approx["height_max"] <= 30.0
    assert abs(approx["height_median"] - exact["height_median"]) < 2.0


class _Dataset:
    """What a sink needs of a dataset: its size and a write that keeps the array."""

    def __init__(self, h, w):
        self.height, self.width, self.data = h, w, np.zeros((h, w), np.float32)
        self.block_shapes = [(16, 16)]

    def write(self, arr, window=None):
        r, c = int(window.row_off), int(window.col_off)
        self.data[r:r + arr.shape[1], c:c + arr.shape[2]] = arr[0]


@pytest.mark.parametrize("exact_px", [10 ** 6, 500])
def test_height_sink_stats_are_those_of_what_was_written(monkeypatch, exact_px):
    """Min and max exact, the median that of every pixel (small rasters) or of a regular
    grid of every step-th row and column (large ones), whatever order and shape the
    written pieces have; predict-height reports them without reading its output back."""
    from rasterio.windows import Window

    from rsgeo.infer.writers import HeightSink

    monkeypatch.setattr(HeightSink, "EXACT_PX", exact_px)
    rng = np.random.default_rng(0)
    h = rng.gamma(2.0, 3.0, (90, 110)).astype(np.float32)
    h[:7, :50] = -9999
    ds = _Dataset(90, 110)
    sink = HeightSink(ds)
    assert sink.block_shapes == [(16, 16)] and sink.step == (1 if exact_px > 9900 else 5)
    pieces = [(r, c) for r in range(0, 90, 32) for c in range(0, 110, 48)]
    for r, c in reversed(pieces):  # panels and strips come in any order
        win = Window(c, r, min(48, 110 - c), min(32, 90 - r))
        sink.write(h[None, r:r + win.height, c:c + win.width], window=win)
    np.testing.assert_array_equal(ds.data, h)
    s, ok = sink.stats(), h != -9999
    k = sink.step
    assert s["height_min"] == round(float(h[ok].min()), 3)
    assert s["height_max"] == round(float(h[ok].max()), 3)
    sub = h[::k, ::k]
    assert s["height_median"] == round(float(np.median(sub[sub != -9999])), 3)
    empty = HeightSink(_Dataset(4, 4))
    empty.write(np.full((1, 4, 4), -9999, np.float32), window=Window(0, 0, 4, 4))
    assert empty.stats() == {"height_min": None, "height_median": None, "height_max": None}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_median_inplace_is_numpys(dtype):
    """The sink's one-partition median equals np.median bit for bit: odd and even counts,
    ties, one value, NaN."""
    from rsgeo.metrics.grouped import median_inplace

    rng = np.random.default_rng(1)
    cases = [rng.gamma(2.0, 3.0, n) for n in (1, 2, 3, 10, 1001, 4096)]
    cases += [rng.integers(0, 5, 999).astype(float), np.array([1.0, np.nan, 2.0])]
    for v in cases:
        v = v.astype(dtype)
        want = np.median(v)
        got = median_inplace(v.copy())
        assert (np.isnan(want) and np.isnan(got)) or got == float(want), (v.size, got, want)


def test_height_sink_keeps_a_window_written_twice():
    from rasterio.windows import Window

    from rsgeo.infer.writers import HeightSink

    sink = HeightSink(_Dataset(4, 4))
    for value in (1.0, 3.0, 8.0):
        sink.write(np.full((1, 4, 4), value, np.float32), window=Window(0, 0, 4, 4))
    assert sink.stats() == {"height_min": 1.0, "height_median": 3.0, "height_max": 8.0}


def test_predict_height_reports_the_stats_of_its_output(tmp_path):
    from rsgeo.infer.predict import height_stats

    a = rgb(tmp_path / "a.tif", 90, 100, seed=3)
    r = predict_height_files([a], "m", [tmp_path / "a_h.tif"], runner=runner(), tile=64,
                             overlap=16)["files"][0]
    assert {k: r[k] for k in ("height_min", "height_median", "height_max")} == \
        height_stats(tmp_path / "a_h.tif")


def test_cpu_batch_size_from_the_tile():
    from rsgeo.infer.batching import auto_batch_size, cpu_batch_size

    assert cpu_batch_size(512) == 4 and cpu_batch_size(256) == 8 and cpu_batch_size(2048) == 1
    r, _, _ = runner()
    assert auto_batch_size(r, 1024, 3) == 1


@pytest.mark.cuda
def test_cuda_streams_match_cpu_with_batches_in_flight():
    import torch

    from rsgeo.infer.session import TorchRunner
    from rsgeo.tasks.bundle import build_task_model

    torch.manual_seed(0)
    model = build_task_model(CFG)
    cpu = TorchRunner(model, "cpu")
    gpu = TorchRunner(build_task_model(CFG).eval(), "cuda")
    gpu.model.load_state_dict(model.state_dict())
    norm = Norm(1.0, tuple(META["mean"]), tuple(META["std"]))
    rng = np.random.default_rng(0)
    raws = [rng.integers(0, 256, (n, 3, 64, 64)).astype(np.uint8) for n in (3, 5, 1, 4)]
    pend = [gpu.submit(r, norm) for r in raws[:3]]        # three in flight at once
    pend.append(gpu.submit([raws[3][:2], raws[3][2:]], norm))
    for r, p in zip(raws, pend):
        ref = cpu.submit(r, norm).result()
        np.testing.assert_allclose(p.result(), ref, rtol=1e-2, atol=1e-2)  # cuDNN TF32 convs
        p.release()


@pytest.mark.cuda
def test_predict_height_on_cuda_matches_cpu(tmp_path):
    import torch

    from rsgeo.tasks.bundle import build_task_model, save_task_model

    torch.manual_seed(0)
    ckpt = tmp_path / "m.ckpt"
    save_task_model(build_task_model(CFG), CFG, META, ckpt)
    src = rgb(tmp_path / "img.tif", 150, 170)
    predict_height_file(src, ckpt, tmp_path / "c.tif", device="cpu")
    r = predict_height_file(src, ckpt, tmp_path / "g.tif", device="cuda")
    assert r["device"] == "cuda" and r["batch_size"] >= 1
    a = rasterio.open(tmp_path / "c.tif").read(1)
    b = rasterio.open(tmp_path / "g.tif").read(1)
    np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)  # cuDNN TF32 convolutions


def _last_waits_for(monkeypatch, name, told):
    """Make the file whose output is named ``name`` wait (20 s at most) to be prepared until
    ``told()``: a run that tells files only at its end gets there at the timeout, and
    ``seen`` says False."""
    import time

    import rsgeo.infer.predict as predict

    prepare, seen = predict._prepare, {}

    def prepare_last(item, out, spec):
        if Path_name(out) == name:
            deadline = time.monotonic() + 20
            while not told() and time.monotonic() < deadline:
                time.sleep(0.01)
            seen["told"] = told()
        return prepare(item, out, spec)

    monkeypatch.setattr(predict, "_prepare", prepare_last)
    return seen


def test_each_file_is_told_once_published_in_order_while_the_run_goes_on(tmp_path,
                                                                          monkeypatch):
    """`predict-height DIR --json | jq` got every file's line at the end of the run: the
    library now hands each file's summary (described: task, device, backend) to ``on_file``
    once its outputs are published, in input order, before the later files are done; the
    returned summary is unchanged."""
    srcs = [rgb(tmp_path / f"t{k}.tif", 60, 70, seed=k) for k in range(4)]
    outs = [tmp_path / f"t{k}_h.tif" for k in range(4)]
    told = []

    def on_file(f):
        assert Path_name(f["output"]) in {o.name for o in outs} and f["task"] == "height"
        assert f["device"] == "cpu" and f["backend"] == "torch" and f["batch_size"] == 1
        told.append((Path_name(f["output"]), (tmp_path / Path_name(f["output"])).exists()))

    seen = _last_waits_for(monkeypatch, "t3_h.tif", lambda: bool(told))
    r = predict_height_files(srcs, "m.ckpt", outs, runner=runner(), tile=64, overlap=16,
                             batch_size=1, on_file=on_file)
    assert seen["told"]  # the first file was told before the last one was even opened
    assert told == [(o.name, True) for o in outs]  # in order, each once it was there
    assert [Path_name(f["output"]) for f in r["files"]] == [o.name for o in outs]
    assert r["total"]["files"] == 4 and all(f["device"] == "cpu" for f in r["files"])


def test_an_error_in_on_file_stops_the_run(tmp_path):
    """A reader that went away (`| head -1`: BrokenPipeError from the first line) stops the
    run: the error is raised, not lost in a finisher thread."""
    srcs = [rgb(tmp_path / f"t{k}.tif", 60, 70, seed=k) for k in range(3)]
    outs = [tmp_path / f"t{k}_h.tif" for k in range(3)]

    def on_file(f):
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(BrokenPipeError):
        predict_height_files(srcs, "m.ckpt", outs, runner=runner(), tile=64, overlap=16,
                             batch_size=1, on_file=on_file)
    assert outs[0].exists()  # published before it was told


def test_cli_json_lines_reach_stdout_file_by_file(tmp_path, cli, monkeypatch):
    """`rsgeo predict-height DIR -o OUT --json | jq ...`: the first file's line is on stdout
    before the last file is opened; N + 1 lines, the totals last."""
    import sys

    import rsgeo.infer.predict as predict

    monkeypatch.setattr(predict, "start_loading", _fake_loading)
    folder = tmp_path / "tiles"
    folder.mkdir()
    for k in range(3):
        rgb(folder / f"t{k}.tif", 60, 70, seed=k)
    seen = _last_waits_for(monkeypatch, "t2_height.tif", lambda: bool(sys.stdout.getvalue()))
    code, out, err = cli("predict-height", folder, "-m", tmp_path / "m.ckpt", "-o",
                         tmp_path / "out", "--json", "--batch-size", "1")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 4 and lines[-1]["total"] is True and seen["told"]
    assert [Path_name(x["output"]) for x in lines[:3]] == [f"t{k}_height.tif" for k in range(3)]


@pytest.mark.parametrize("command", ["predict-height", "predict"])
def test_cli_json_lines_come_in_argument_order_each_naming_its_input(tmp_path, cli,
                                                                      monkeypatch, command):
    """`rsgeo predict A B C D -o out/ --json | jq`: files of different sizes overlap in the
    pipeline and are finished by several threads, so a later, smaller file can be published
    before an earlier one; its line still waits for the earlier ones (argument order, not
    name or finish order), and every line names its ``input`` and its ``output``."""
    import threading

    import rsgeo.infer.predict as predict
    from rsgeo.infer.writers import HeightWriter

    monkeypatch.setattr(predict, "start_loading", _fake_loading)
    sizes = {"c": (150, 170), "a": (40, 50), "d": (64, 64), "b": (130, 97)}  # argument order
    srcs = [rgb(tmp_path / f"{n}.tif", *hw, seed=k) for k, (n, hw) in enumerate(sizes.items())]
    summary, done, lock, seen = HeightWriter.summary, set(), threading.Lock(), {}

    def first_finishes_last(self, path, sink):  # c's statistics wait for the 3 others'
        name = Path_name(path)
        if name == "c_height.tif":
            seen["others_first"] = _wait_until(lambda: len(done) == 3)
        r = summary(self, path, sink)
        with lock:
            done.add(name)
        return r

    monkeypatch.setattr(HeightWriter, "summary", first_finishes_last)
    code, out, err = cli(command, *srcs, "-m", tmp_path / "m.ckpt", "-o", tmp_path / "out",
                         "--json", "--batch-size", "2")
    assert code == 0, err
    lines = [json.loads(x) for x in out.splitlines()]
    assert seen["others_first"]  # published out of order ...
    assert [x["input"] for x in lines[:-1]] == [str(s) for s in srcs]  # ... told in order
    assert [x["output"] for x in lines[:-1]] == [str(tmp_path / "out" / f"{n}_height.tif")
                                                 for n in sizes]
    assert lines[-1]["total"] is True and lines[-1]["files"] == 4


def test_predict_and_predict_height_print_a_height_model_s_files_alike(tmp_path, cli,
                                                                      monkeypatch):
    """`predict -m height.onnx` is `predict-height`: the same line per file in words (each
    command had its own, in another order), the same totals; speeds and times aside."""
    import re

    import rsgeo.infer.predict as predict

    monkeypatch.setattr(predict, "start_loading", _fake_loading)
    srcs = [rgb(tmp_path / f"t{k}.tif", 60 + 40 * k, 70, seed=k) for k in range(2)]
    said = {}
    for command in ("predict", "predict-height"):
        code, out, err = cli(command, *srcs, "-m", tmp_path / "m.ckpt", "-o",
                             tmp_path / command)
        assert code == 0, err
        said[command] = re.sub(r"[\d.]+ (Mpx/s|s\b)", r"N \1",
                               out.replace(str(tmp_path / command), "OUT")).splitlines()
    assert said["predict"] == said["predict-height"]
    assert said["predict"][0].startswith("OUT/t0_height.tif: heights min ")
    assert said["predict"][0].endswith(" m (N Mpx/s, 2 tiles, torch on cpu)")


def _wait_until(cond, limit: float = 20.0) -> bool:
    """Whether ``cond()`` came true within ``limit`` seconds (polled; no timing asserted)."""
    import time

    deadline = time.monotonic() + limit
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_cli_output_with_a_trailing_slash_is_a_folder_for_one_input(tmp_path, cli,
                                                                    monkeypatch):
    """`-o out/` for one input: the user typed a folder; it was refused (not a .tif name),
    or, named out.tif/, written as the FILE out.tif."""
    import rsgeo.infer.predict as predict

    monkeypatch.setattr(predict, "start_loading", _fake_loading)
    src = rgb(tmp_path / "t0.tif", 60, 70)
    for out in ("out", "out.tif"):
        code, _, err = cli("predict-height", src, "-m", tmp_path / "m.ckpt", "-o",
                           f"{tmp_path / out}/")
        assert code == 0, err
        assert (tmp_path / out / "t0_height.tif").is_file()
