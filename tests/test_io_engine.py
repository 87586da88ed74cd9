"""The parallel raster engine against the straightforward algorithm it replaced.

The reference below is the pre-engine ``run_tiled``: every tile read with ``read_window``
in row-major order, one full-raster weight sum. The engine must give the same heights (to
1e-6 relative: the weight sum is now separable) at tile/overlap edge cases, for any reader
thread count, with panels, nodata and a resampling WarpedVRT; and a failed read must leave
no output.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from rsgeo.errors import InputError
from rsgeo.io.pipeline import iter_batches, run_tiled
from rsgeo.io.raster import Grid, align_to, open_raster
from rsgeo.io.reader import ParallelReader, read_strips
from rsgeo.io.windows import TileGrid, plan_panels, read_window, tile_order
from rsgeo.io.writer import HEIGHT_NODATA, open_output, ramp

TILED16 = {"TILED": "YES", "BLOCKXSIZE": "16", "BLOCKYSIZE": "16"}


def write_tiled(path, data, nodata=None, block=16, compress="deflate"):
    """A tiled GeoTIFF (small blocks, so small rasters exercise strips and panels)."""
    arr = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[2], height=arr.shape[1],
                       count=arr.shape[0], dtype=arr.dtype, crs="EPSG:32633",
                       transform=Affine(0.5, 0, 5e5, 0, -0.5, 4.1e6), nodata=nodata,
                       tiled=True, blockxsize=block, blockysize=block, compress=compress) as d:
        d.write(arr)
    return path


def model(b: np.ndarray) -> np.ndarray:
    """Position-dependent and nonlinear, so every seam and weight shows in the output."""
    b = b.astype(np.float32)
    t = b.shape[-1]
    ramp_y = np.linspace(0, 3, t, dtype=np.float32)[None, None, :, None]
    return np.sqrt(np.abs(b.mean(axis=1, keepdims=True)) + 1) + ramp_y


def reference(ds, fn, tile, overlap, batch=3, in_nodata=None):
    """The old algorithm, whole raster in memory."""
    tiles = TileGrid(ds.height, ds.width, tile, overlap)
    H, W = ds.height, ds.width
    acc = np.zeros((H, W), np.float32)
    wsum = np.zeros((H, W), np.float32)
    wins = list(tiles)
    for i in range(0, len(wins), batch):
        group = wins[i:i + batch]
        reads = [read_window(ds, w, nodata=in_nodata, out_dtype="float32") for w in group]
        out = np.asarray(fn(np.stack([d for d, _ in reads])), np.float32)
        for w, pred, (_, valid) in zip(group, out, reads):
            r, c = int(w.row_off), int(w.col_off)
            h, ww = min(tile, H - r), min(tile, W - c)
            wy = ramp(tile, overlap, r > 0, r + tile < H)[:h]
            wx = ramp(tile, overlap, c > 0, c + tile < W)[:ww]
            weight = wy[:, None] * wx[None, :] * valid[:h, :ww]
            acc[r:r + h, c:c + ww] += pred[0, :h, :ww] * weight
            wsum[r:r + h, c:c + ww] += weight
    res = np.full((H, W), HEIGHT_NODATA, np.float32)
    np.divide(acc, wsum, out=res, where=wsum > 0)
    return res


def engine(tmp_path, ds, fn, tile, overlap, name="out.tif", **kw):
    out = tmp_path / name
    with open_output(out, Grid.of(ds), co=TILED16, overwrite=True) as dst:
        run_tiled(ds, dst, fn, tile=tile, overlap=overlap, batch_size=3, **kw)
    with rasterio.open(out) as r:
        return r.read(1)


CASES = [  # (height, width, tile, overlap): smaller than a tile, exactly one, one more,
    (20, 30, 32, 8),  # stride multiples, no overlap, overlap >= tile / 2, one column
    (32, 32, 32, 8),
    (33, 65, 32, 8),
    (72, 72, 32, 0),
    (100, 90, 32, 20),
    (97, 129, 48, 36),
    (200, 40, 32, 1),
    (1, 50, 16, 4),
]


@pytest.mark.parametrize("h,w,tile,overlap", CASES)
@pytest.mark.parametrize("threads", [1, 3])
def test_engine_matches_reference(tmp_path, h, w, tile, overlap, threads):
    rng = np.random.default_rng(h * w + tile)
    data = rng.integers(0, 255, (3, h, w), dtype=np.uint8)
    src = write_tiled(tmp_path / "in.tif", data)
    with open_raster(src, require_crs=False) as ds:
        ref = reference(ds, model, tile, overlap)
        got = engine(tmp_path, ds, model, tile, overlap, threads=threads,
                     blend_thread=threads == 1, prefetch=threads)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("panel_width", [96, 160, None])
def test_panels_match_reference_with_nodata(tmp_path, panel_width):
    rng = np.random.default_rng(5)
    data = rng.normal(10, 3, (1, 150, 331)).astype(np.float32)
    data[0, 40:60, 90:200] = -1          # nodata across panel edges
    data[0, 100, :] = np.nan
    src = write_tiled(tmp_path / "in.tif", data, nodata=-1)
    with open_raster(src, require_crs=False) as ds:
        tiles = TileGrid(150, 331, 32, 6)
        if panel_width is not None:
            assert len(plan_panels(tiles, 16, panel_width)) > 1
        ref = reference(ds, model, 32, 6)
        got = engine(tmp_path, ds, model, 32, 6, threads=2, panel_width=panel_width)
    assert ((got == HEIGHT_NODATA) == (ref == HEIGHT_NODATA)).all()
    assert (got[40:60, 90:200] == HEIGHT_NODATA).all() and (got[100] == HEIGHT_NODATA).all()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("nodata", [float("nan"), None])
def test_nan_pixels_do_not_spread_through_a_model_that_mixes_its_tile(tmp_path, nodata):
    """NaN in a float image (declared nodata or not) is nodata in the output and nowhere
    else, even for a model whose every output pixel depends on the whole tile."""
    data = np.random.default_rng(2).uniform(0, 255, (3, 96, 80)).astype(np.float32)
    data[:, :7, :9] = np.nan
    data[1, 50, 40] = np.inf
    src = write_tiled(tmp_path / "in.tif", data, nodata=nodata)

    def mixing(b):
        return (b.mean(axis=(1, 2, 3), keepdims=True) + 0 * b[:, :1]).astype(np.float32)

    with open_raster(src, require_crs=False) as ds:
        got = engine(tmp_path, ds, mixing, 32, 8, threads=2)
    bad = ~np.isfinite(data).all(axis=0)
    assert np.isfinite(got).all()
    assert ((got == HEIGHT_NODATA) == bad).all()


def test_resampled_input_matches_reference(tmp_path):
    """A WarpedVRT (GSD resampling) is reopened per reader thread with the same pixels."""
    rng = np.random.default_rng(2)
    data = rng.integers(0, 255, (3, 120, 150), dtype=np.uint8)
    src = write_tiled(tmp_path / "in.tif", data)
    with open_raster(src, require_crs=False) as ds:
        g = Grid.of(ds)
        target = Grid(g.crs, g.transform * Affine.scale(150 / 97, 120 / 81), 97, 81)
        with align_to(ds, target, "bilinear") as vrt:
            ref = reference(vrt, model, 32, 8)
            got = engine(tmp_path, vrt, model, 32, 8, threads=3)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)


def test_native_dtype_and_sweep_order(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 70, 90), dtype=np.uint8)
    src = write_tiled(tmp_path / "in.tif", data)
    seen = []

    def fn(b):
        seen.append(b.dtype)
        return b[:, :1].astype(np.float32)

    with open_raster(src, require_crs=False) as ds:
        got = engine(tmp_path, ds, fn, 32, 8, dtype=None)
        batches = list(iter_batches(ds, TileGrid(70, 90, 32, 8), 4, dtype=None, threads=2))
    assert set(seen) == {np.dtype(np.uint8)}
    np.testing.assert_allclose(got, data[0], rtol=1e-6)
    assert [w for b in batches for w in b.windows] == list(TileGrid(70, 90, 32, 8))
    tiles = TileGrid(70, 300, 32, 8)
    panels = plan_panels(tiles, 16, 96)
    order = list(tile_order(tiles, panels))
    def key(w):
        return (int(w.row_off), int(w.col_off))

    assert sorted(map(key, order)) == sorted(map(key, tiles)) and len(panels) > 1


def test_wait_false_returns_a_handle_that_finishes_the_write(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (3, 90, 90), dtype=np.uint8)
    src = write_tiled(tmp_path / "in.tif", data)
    with open_raster(src, require_crs=False) as ds:
        ref = reference(ds, model, 32, 8)
        out = tmp_path / "o.tif"
        with open_output(out, Grid.of(ds)) as dst:
            run = run_tiled(ds, dst, model, tile=32, overlap=8, wait=False)
            assert run.join() is run.tiles
    with rasterio.open(out) as r:
        np.testing.assert_allclose(r.read(1), ref, rtol=1e-6)


def corrupt_block(path, row_block: int) -> None:
    """Overwrite the compressed bytes of one block in the middle of a tiled GeoTIFF."""
    with rasterio.open(path) as ds:
        off = int(ds.get_tag_item(f"BLOCK_OFFSET_0_{row_block}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_0_{row_block}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(b"\xff" * size)


def test_reader_failure_mid_run_leaves_no_output(tmp_path):
    data = np.random.default_rng(3).normal(size=(1, 1200, 64)).astype(np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    corrupt_block(src, 60)
    out = tmp_path / "o.tif"
    calls = []
    with open_raster(src, require_crs=False) as ds:
        with pytest.raises(InputError) as e:
            with open_output(out, Grid.of(ds)) as dst:
                run_tiled(ds, dst, lambda b: calls.append(1) or b[:, :1], tile=32, overlap=4,
                          batch_size=1, threads=2)
    assert calls, "the failure must come mid-run, after some tiles"
    msg = str(e.value)
    assert "\n" not in msg and "in.tif" in msg and "read failed at rows" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_model_failure_stops_the_threads_and_removes_output(tmp_path):
    data = np.zeros((1, 100, 100), np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    n = []

    def fn(b):
        n.append(1)
        if len(n) == 3:
            raise RuntimeError("model broke")
        return b[:, :1]

    with open_raster(src, require_crs=False) as ds:
        with pytest.raises(RuntimeError, match="model broke"):
            with open_output(tmp_path / "o.tif", Grid.of(ds)) as dst:
                run_tiled(ds, dst, fn, tile=32, overlap=4, batch_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_read_strips_and_pieces(tmp_path):
    a = np.arange(37 * 50, dtype=np.float32).reshape(37, 50)
    b = (a * 2).astype(np.int16)
    pa, pb = write_tiled(tmp_path / "a.tif", a), write_tiled(tmp_path / "b.tif", b)
    with rasterio.open(pa) as da, rasterio.open(pb) as db:
        got = list(read_strips([da, db], 10, threads=3))
        with ParallelReader(da, 3) as rd:
            pieces = rd.pieces(5, 50)
    assert [int(w.row_off) for w, _ in got] == [0, 10, 20, 30]
    np.testing.assert_array_equal(np.concatenate([x for _, (x, _) in got]), a)
    np.testing.assert_array_equal(np.concatenate([y for _, (_, y) in got]), b)
    assert pieces[0][0] == 5 and pieces[-1][1] == 50
    assert all(p[0] % 16 == 0 for p in pieces[1:])  # cut on block edges


@pytest.mark.parametrize("threads,cuts", [(2, [0]), (8, [0, 32])])
def test_read_strips_share_one_pool(tmp_path, monkeypatch, threads, cuts):
    """Two rasters on one shared pool of THREADS threads: strips are read whole while the
    strips in flight (2 rasters x 2 ahead) keep every thread busy, else cut into pieces."""
    import threading

    a = np.arange(32 * 64, dtype=np.float32).reshape(32, 64)
    pa, pb = write_tiled(tmp_path / "a.tif", a), write_tiled(tmp_path / "b.tif", a + 1)
    calls, orig = [], ParallelReader._read

    def spy(self, out, indexes, r0, r1, c0, c1):
        calls.append((self.path, r0, c0, threading.current_thread().name))
        return orig(self, out, indexes, r0, r1, c0, c1)

    monkeypatch.setattr(ParallelReader, "_read", spy)
    with rasterio.open(pa) as da, rasterio.open(pb) as db:
        got = list(read_strips([da, db], 16, threads=threads, ahead=2))
    np.testing.assert_array_equal(np.concatenate([y for _, (_, y) in got]), a + 1)
    for path in (str(pa), str(pb)):
        assert sorted((r, c) for p, r, c, _ in calls if p == path) == [
            (r, c) for r in (0, 16) for c in cuts]
    assert len({t for *_, t in calls}) <= threads


def test_read_strips_calls_decode_on_the_same_threads(tmp_path, monkeypatch):
    """Successive sweeps (evaluate over a folder of pairs) decode on the process's kept
    threads, not new ones each (a new thread's first georeferenced open sets up GDAL and
    PROJ, 15-20 ms); a sweep abandoned half way leaves none of its reads running."""
    import threading

    a = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    src = write_tiled(tmp_path / "a.tif", a)
    seen, orig = set(), ParallelReader._read

    def spy(self, *args):
        seen.add(threading.current_thread())   # held: no thread object is reused
        return orig(self, *args)

    monkeypatch.setattr(ParallelReader, "_read", spy)
    with rasterio.open(src) as ds:
        for _ in range(4):
            got = list(read_strips([ds], 16, threads=2))
            np.testing.assert_array_equal(np.concatenate([x for _, (x,) in got]), a)
        sweep = read_strips([ds], 8, threads=2, ahead=3)
        next(sweep)
        sweep.close()    # closes its reader: queued reads cancelled, running ones waited for
    assert len(seen) <= 2    # new threads per sweep: 5 sweeps, 5 or more


def test_read_strips_pool_reuses_buffers(tmp_path):
    """With a pool, strips come from it and go back to it; the values are unchanged."""
    from rsgeo.io.buffers import ArrayPool

    a = np.arange(64 * 40, dtype=np.float32).reshape(64, 40)
    src = write_tiled(tmp_path / "a.tif", a)
    pool = ArrayPool(keep=4)
    seen, rows = set(), []
    with rasterio.open(src) as ds:
        for _, (x,) in read_strips([ds], 16, threads=2, ahead=1, pool=pool):
            seen.add(id(x))
            rows.append(x.copy())
            pool.give(x)
    np.testing.assert_array_equal(np.concatenate(rows), a)
    assert len(seen) < 4   # 4 strips of one shape, buffers recycled


@pytest.mark.parametrize("nodata,expect", [(None, True), (7, False)])
def test_batches_of_integer_rasters_without_nodata_are_all_valid(tmp_path, nodata, expect):
    data = np.random.default_rng(6).integers(0, 255, (3, 70, 90), dtype=np.uint8)
    src = write_tiled(tmp_path / "in.tif", data, nodata=nodata)
    with open_raster(src, require_crs=False) as ds:
        inside = list(iter_batches(ds, TileGrid(70, 90, 32, 8), 2, dtype=None))
        small = list(iter_batches(ds, TileGrid(70, 90, 100, 8), 1, dtype=None))  # padded
    assert all(b.all_valid is expect for b in inside)
    assert all(b.valid.all() for b in inside) or not expect
    assert [b.all_valid for b in small] == [False]   # the padding is not valid
    assert not small[0].valid.all()


def test_model_returning_a_view_of_its_input(tmp_path):
    """Batch arrays are reused only once blended: a model may return a view of its input."""
    data = np.random.default_rng(8).normal(5, 2, (1, 150, 200)).astype(np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    with open_raster(src, require_crs=False) as ds:
        ref = reference(ds, lambda b: b[:, :1].copy(), 32, 8)
        got = engine(tmp_path, ds, lambda b: b[:, :1], 32, 8, threads=2, prefetch=1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    np.testing.assert_allclose(got, data[0], rtol=1e-5)


def test_model_reusing_a_ring_of_three_outputs(tmp_path, monkeypatch):
    """The documented contract: a model may hand out its output buffers in turn from a
    ring of three, even when blending lags behind the model (a slow blend thread)."""
    import time

    from rsgeo.io.writer import BlendedWriter

    add = BlendedWriter.add
    monkeypatch.setattr(BlendedWriter, "add", lambda self, *a: (time.sleep(0.002), add(self, *a)))
    data = np.random.default_rng(10).normal(5, 2, (1, 150, 200)).astype(np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    ring = [np.empty((3, 1, 32, 32), np.float32) for _ in range(3)]
    calls = [0]

    def fn(b):
        out = ring[calls[0] % len(ring)][:len(b)]
        calls[0] += 1
        np.multiply(b[:, :1], 2, out=out)
        return out

    with open_raster(src, require_crs=False) as ds:
        ref = reference(ds, lambda b: b[:, :1] * 2, 32, 8)
        got = engine(tmp_path, ds, fn, 32, 8, threads=2, prefetch=2)
    assert calls[0] > 6
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)


def test_batches_recycled_once_blended(tmp_path):
    """run_tiled hands each batch's arrays back after blending: later batches reuse them
    (no fresh pages per batch), and the output is the reference's."""
    data = np.random.default_rng(9).normal(5, 2, (1, 160, 160)).astype(np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    seen = []

    def fn(b):
        seen.append(b)                         # held: only recycling can repeat an array
        return b[:, :1] * 2

    with open_raster(src, require_crs=False) as ds:
        ref = reference(ds, lambda b: b[:, :1] * 2, 32, 8)
        got = engine(tmp_path, ds, fn, 32, 8, threads=2, prefetch=1)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)
    assert len(seen) > 2 * len({id(b) for b in seen})   # 12 batches of 3 tiles, few arrays


def test_normalise_into_a_buffer_equals_in_place():
    from rsgeo.io.writer import _normalise, weight_sums

    rng = np.random.default_rng(0)
    acc = rng.random((2, 40, 75)).astype(np.float32)
    den_y = weight_sums(40, [0, 12, 24], 16, 6)
    den_x = weight_sums(60, [0, 14, 28, 44], 16, 6)
    view = acc[:, :, :60]                      # strided, like a panel's block row
    out = np.empty((2, 40, 60), np.float32)
    _normalise(out, den_y, den_x, view)
    same = np.ascontiguousarray(view)
    _normalise(same, den_y, den_x)
    assert np.array_equal(out, same) and np.array_equal(view, acc[:, :, :60])
    plain = view / np.multiply.outer(den_y, den_x)
    scratch = np.full(40 * 60, np.nan, np.float32)   # weight sums land here, not in out
    _normalise(out, den_y, den_x, view, scratch)
    assert np.array_equal(out, same) and np.array_equal(out, plain)


def test_accumulate_with_scratch_is_the_plain_expression():
    """``acc += pred * weight`` through a scratch buffer: bit for bit, ramps and flat parts."""
    from rsgeo.io.writer import _accumulate, _ones_span, ramp

    rng = np.random.default_rng(1)
    wy, wx = ramp(48, 10, True, True)[:40], ramp(48, 10, True, False)
    weight = wy[:, None] * wx[None, :]
    pred = rng.normal(3, 2, (2, 48, 48)).astype(np.float32)[:, :40]
    acc0 = rng.random((2, 40, 60)).astype(np.float32)
    want = acc0.copy()
    want[:, :, 5:53] += pred * weight
    for scratch in (None, np.full(2 * 48 * 48, np.nan, np.float32)):
        got = acc0.copy()
        _accumulate(got[:, :, 5:53], pred, weight, _ones_span(wy), _ones_span(wx),
                    scratch=scratch)
        assert np.array_equal(got, want)


def test_read_strips_failure_is_one_line(tmp_path):
    data = np.ones((160, 64), np.float32)
    src = write_tiled(tmp_path / "in.tif", data)
    corrupt_block(src, 5)
    with rasterio.open(src) as ds:
        with pytest.raises(InputError, match="read failed at rows") as e:
            for _ in read_strips([ds], 16, threads=2):
                pass
    assert "\n" not in str(e.value)


def test_plan_panels_edges_on_blocks():
    tiles = TileGrid(100, 20000, 512, 64)
    panels = plan_panels(tiles, 256, 4096)
    assert len(panels) >= 4 and panels[0].x0 == 0 and panels[-1].x1 == 20000
    for a, b in zip(panels, panels[1:]):
        assert a.x1 == b.x0 and a.x1 % 256 == 0 and a.j1 == b.j0
        assert a.c1 - a.x1 <= 64 + 256
    assert len(plan_panels(tiles, 20000, 4096)) == 1   # striped output: one panel
    assert len(plan_panels(tiles, 256, None)) == 1



# ------------------------------------------------------------------ codecs and commands
def test_codec_options_and_co_wins(tmp_path):
    from rsgeo.io.writer import codec_co, gtiff_profile, height_co

    g = Grid(None, Affine(1, 0, 0, 0, -1, 0), 512, 512)
    assert gtiff_profile(g, 1, "float32", None)["compress"] == codec_co(None)["COMPRESS"]
    assert gtiff_profile(g, 1, "uint8", None)["compress"] == "deflate"
    lerc = gtiff_profile(g, 1, "float32", None, height_co("lerc_zstd", 0.05))
    assert lerc["compress"] == "LERC_ZSTD" and lerc["max_z_error"] == "0.05"
    assert "predictor" not in lerc and "zlevel" not in lerc
    mine = gtiff_profile(g, 1, "float32", None, height_co("zstd", None, {"COMPRESS": "LZW"}))
    assert mine["compress"] == "LZW"
    assert gtiff_profile(g, 1, "float32", None)["num_threads"] == "ALL_CPUS"
    with pytest.raises(InputError):
        codec_co("png")
    with pytest.raises(InputError):
        codec_co("zstd", 0.01)


@pytest.mark.parametrize("codec", ["deflate", "zstd", "lerc_zstd"])
@pytest.mark.parametrize("cog", [False, True])
def test_height_codecs_round_trip(tmp_path, codec, cog):
    from rsgeo.io.writer import height_co

    g = Grid(None, Affine(0.5, 0, 5e5, 0, -0.5, 4e6), 300, 300)
    a = (np.random.default_rng(0).random((1, 300, 300)) * 40).astype(np.float32)
    a[0, :7] = HEIGHT_NODATA
    out = tmp_path / "h.tif"
    with open_output(out, g, co=height_co(codec), cog=cog) as dst:
        dst.write(a)
    with rasterio.open(out) as r:
        b = r.read()
        assert r.compression.name == codec
    assert (b[0, :7] == HEIGHT_NODATA).all()
    err = np.abs(b - a).max()
    assert err == 0 if codec != "lerc_zstd" else 0 < err <= 0.01 + 1e-5  # + float32 ulp


def test_damage_map_loss_codec_and_corrupt_input(tmp_path, cli):
    pre = np.full((1, 300, 200), 10, np.float32)
    pre[0, 280:] = 0.0                    # some ground: all-roof heights look like a DSM
    post = pre.copy()
    post[0, 50:120, 40:90] = 1.0
    a = write_tiled(tmp_path / "pre.tif", pre)
    b = write_tiled(tmp_path / "post.tif", post)
    code, out, err = cli("damage-map", a, b, "-o", tmp_path / "d.tif", "--compress", "lerc_zstd",
                         "--max-z-error", "0.02", "--json")
    assert code == 0, err
    with rasterio.open(tmp_path / "d_loss.tif") as r:
        assert r.compression.name == "lerc_zstd"
        assert abs(r.read(1)[60, 60] - 9.0) <= 0.02 + 1e-5
    corrupt_block(b, 12)
    code, out, err = cli("damage-map", a, b, "-o", tmp_path / "e.tif")
    assert code == 2 and "read failed at rows" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e.tif").exists() and not (tmp_path / "e_loss.tif").exists()


def test_evaluate_corrupt_input_is_one_line(tmp_path, cli):
    a = np.random.default_rng(0).random((1, 400, 64)).astype(np.float32)
    p = write_tiled(tmp_path / "p.tif", a)
    r = write_tiled(tmp_path / "r.tif", a)
    code, out, err = cli("evaluate", p, r, "--format", "json")
    assert code == 0 and '"mae": 0.0' in out
    corrupt_block(p, 20)
    code, out, err = cli("evaluate", p, r, "--format", "json")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "p.tif" in err and "read failed at rows" in err


def test_predict_height_corrupt_input_leaves_nothing(tmp_path):
    """The command path (predict_height_file) on a file with a corrupt block mid-raster."""
    from rsgeo.infer.predict import predict_height_file

    class Mean:
        device = "cpu"

        def __call__(self, batch):
            return batch.mean(axis=1, keepdims=True)

    meta = {"task": "height", "mean": [0.0] * 3, "std": [1.0] * 3, "gsd": 0.5, "tile": 64,
            "overlap": 16, "stride": 16}
    data = np.random.default_rng(4).integers(0, 255, (3, 1200, 64), dtype=np.uint8)
    src = write_tiled(tmp_path / "img.tif", data)
    corrupt_block(src, 60)
    out = tmp_path / "h.tif"
    with pytest.raises(InputError, match="read failed at rows") as e:
        predict_height_file(src, "m.onnx", out, runner=(Mean(), meta, {"in_chans": 3}),
                            tile=64, overlap=16, batch_size=2)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]


def test_default_threads_from_environment(monkeypatch):
    from rsgeo.io.reader import default_threads

    monkeypatch.setenv("RSGEO_IO_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv("RSGEO_IO_THREADS", "many")
    with pytest.raises(InputError):
        default_threads()
    monkeypatch.delenv("RSGEO_IO_THREADS")
    assert 1 <= default_threads() <= 8


def test_close_never_closes_a_handle_under_a_read_it_was_not_told_of(tmp_path, monkeypatch):
    """A stop raised in read_into between the pool's submit and the reader's bookkeeping left
    a read that close() neither cancelled nor waited for: close() shut the handle the read
    was decoding (evaluate over a folder, Ctrl-C: "CPLAcquireMutex: Error = 22", then a
    segmentation fault). Now close() waits for every read under way and a read that starts
    after it is refused without touching a handle."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import rsgeo.io.reader as reader
    from rsgeo.errors import RsgeoError

    started, release, calls = threading.Event(), threading.Event(), []

    class Handle:  # stands for a dataset handle: records a read made on a closed one
        closed = False

        def read(self, *a, **k):
            calls.append(self.closed)
            started.set()
            release.wait(30)
            calls.append(self.closed)

        def close(self):
            self.closed = True

    monkeypatch.setattr(reader, "_reopen", lambda ds: (Handle(), None))
    path = write_tiled(tmp_path / "a.tif", np.zeros((16, 16), np.float32))
    pool = ThreadPoolExecutor(1)
    try:
        with rasterio.open(path) as ds:
            rd = ParallelReader(ds, 1, pool=pool)
            out = np.empty((1, 16, 16), np.float32)
            running = pool.submit(rd._read, out, [1], 0, 16, 0, 16)  # not in rd._futures
            queued = pool.submit(rd._read, out, [1], 0, 16, 0, 16)
            started.wait(30)
            closer = threading.Thread(target=rd.close)
            closer.start()
            closer.join(0.5)       # before the fix close() was done by now, the read still on
            release.set()
            closer.join(30)
            assert running.result(30) is None and calls == [False, False]
            with pytest.raises(RsgeoError, match="read after the reader was closed"):
                queued.result(30)
            assert calls == [False, False]  # the late read touched no handle
    finally:
        release.set()
        pool.shutdown()
