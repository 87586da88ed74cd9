"""When the OUTPUT side fails: the disk fills up or a file size limit is hit while writing,
or the system refuses a folder or an existing output. rsgeo says so in one line naming the
output and the OS's reason (``out/h.tif: no space left on device (write failed)``), exits
1 (a full disk) or 2 (refused, as for any output it cannot write), publishes nothing, leaves
no temporary file and, with --overwrite, the earlier output as it was.

A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that writes fail with EFBIG) stands
in for a full disk in child processes; a really full disk is a small tmpfs mounted in a
private mount namespace (``unshare``), skipped where the system does not allow one.
Refusals are simulated in-process (``os.replace`` raising EPERM) or, for a read-only
folder, made with chmod 0o555 (chattr +i as root, whom chmod does not stop).
"""

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio

from rsgeo.errors import OutputWriteError
from tests.conftest import make_raster

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")


def _file_size_limit(limit: int):
    def set_limit():  # in the child, before exec: an ignored signal stays ignored
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return set_limit


def rsgeo_limited(limit: int, *args) -> subprocess.CompletedProcess:
    """``python -m rsgeo ARGS`` whose files may not grow beyond ``limit`` bytes."""
    return subprocess.run([sys.executable, "-m", "rsgeo", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300,
                          preexec_fn=_file_size_limit(limit))


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------- library, file size limit
LIBRARY = r'''
import hashlib, json, resource, signal, sys
from pathlib import Path
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from affine import Affine
from rasterio.crs import CRS
from rsgeo.data.shards import ShardWriter
from rsgeo.io.atomic import atomic_path, write_problem as probe
from rsgeo.io.raster import Grid
from rsgeo.io.vector import write_vector
from rsgeo.io.writer import write_array

root = Path(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
grid = Grid(CRS.from_epsg(32633), Affine(0.5, 0, 500000, 0, -0.5, 4100000), 512, 256)
noise = np.random.default_rng(0).random((256, 512), dtype=np.float32)  # incompressible
results = {}

def limited(name, limit, fn):
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        fn()
        results[name] = "no error"
    except Exception as e:
        results[name] = f"{type(e).__name__}: {e}"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

limited("geotiff", 20000, lambda: write_array(root / "new" / "h.tif", noise, grid))
write_array(root / "old.tif", noise[:8, :8], Grid(grid.crs, grid.transform, 8, 8))
before = hashlib.sha256((root / "old.tif").read_bytes()).hexdigest()
limited("geotiff_overwrite", 20000,
        lambda: write_array(root / "old.tif", noise, grid, overwrite=True))
results["old_kept"] = hashlib.sha256((root / "old.tif").read_bytes()).hexdigest() == before
import rsgeo.io.atomic, rsgeo.io.writer   # the block table alone, no probe naming the reason
rsgeo.io.atomic.write_problem = rsgeo.io.writer.write_problem = lambda path: None
limited("geotiff_unprobed", 20000, lambda: write_array(root / "u.tif", noise, grid))
rsgeo.io.atomic.write_problem = rsgeo.io.writer.write_problem = probe

import geopandas as gpd, shapely
gdf = gpd.GeoDataFrame({"id": [1, 2, 3]}, geometry=[shapely.box(i, 0, i + 1, 1) for i in range(3)],
                       crs=32633)
limited("geojson", 300, lambda: write_vector(gdf, root / "v.geojson"))
limited("gpkg", 20000, lambda: write_vector(gdf, root / "v.gpkg"))

def text():
    with atomic_path(root / "m.json") as tmp:
        tmp.write_text("x" * 1000)
limited("json", 100, text)

(root / "s").mkdir()
shard = ShardWriter(root / "s" / "rgb.npy", (3, 32, 32), np.uint8)
def chips():
    for _ in range(40):
        shard.append(np.zeros((3, 32, 32), np.uint8))
    shard.finish()
limited("shard", 20000, chips)
shard.abort()
results["left"] = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
print(json.dumps(results))
'''


@pytest.fixture(scope="module")
def limited_writes(tmp_path_factory):
    """The library's writers run once in a child whose files may not grow past a limit."""
    root = tmp_path_factory.mktemp("limited")
    p = subprocess.run([sys.executable, "-c", LIBRARY, str(root)], env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return root, json.loads(p.stdout.strip().splitlines()[-1])


def test_a_geotiff_gdal_could_not_finish_is_never_published(limited_writes):
    """GDAL writes the tiles it compresses on its worker threads, and the blocks cached at
    close, without telling rasterio when that fails: the truncated GeoTIFF was published
    as finished (predict-height exit 0 with a 20000-byte h.tif, or replacing a good one
    with --overwrite)."""
    root, r = limited_writes
    assert r["geotiff"] == f"OutputWriteError: {root}/new/h.tif: file too large (write failed)"
    assert r["geotiff_overwrite"].endswith("old.tif: file too large (write failed)")
    assert r["old_kept"]
    # what a failed GDAL write leaves (blocks at offset 0 or past the end) is found by itself
    assert r["geotiff_unprobed"].startswith(f"OutputWriteError: {root}/u.tif: write failed: "
                                            "GDAL left the file incomplete ("), r


def test_check_complete_reads_the_block_table(tmp_path):
    from rsgeo.io.writer import check_complete

    data = np.random.default_rng(0).random((600, 600)).astype(np.float32)
    good = make_raster(tmp_path / "good.tif", data)
    check_complete(good, "out.tif")
    size = good.stat().st_size
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[:size // 2])   # the last blocks were never written
    with pytest.raises(OutputWriteError, match="out.tif: write failed: GDAL left the file "
                                               r"incomplete \(block"):
        check_complete(cut, "out.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + bytes(100))   # its directory was never written
    with pytest.raises(OutputWriteError, match="junk.tif: write failed: GDAL left the file"):
        check_complete(junk, "junk.tif")


def test_a_sparse_geotiff_asked_for_is_published(tmp_path):
    """--co SPARSE_OK=TRUE leaves blocks never written out of the file: not a failure."""
    from rasterio.windows import Window

    from rsgeo.io.raster import Grid
    from rsgeo.io.writer import open_output

    with rasterio.open(make_raster(tmp_path / "in.tif", np.zeros((512, 512), np.float32))) as ds:
        grid = Grid.of(ds)
    with open_output(tmp_path / "s.tif", grid, co={"SPARSE_OK": "TRUE"}) as dst:
        dst.write(np.ones((1, 256, 256), np.float32), window=Window(0, 0, 256, 256))
    with rasterio.open(tmp_path / "s.tif") as ds:
        assert ds.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1) is None   # sparse indeed
        assert ds.read(1)[0, 0] == 1


def test_a_vector_file_whose_close_failed_is_never_published(limited_writes):
    """The GeoJSON driver writes its last buffer at close and nobody checks it: a
    truncated .geojson was published; a GeoPackage's write failed as "no such table:
    gpkg_contents" (its rollback journal hit the limit), naming neither file nor reason."""
    root, r = limited_writes
    assert r["geojson"] == f"OutputWriteError: {root}/v.geojson: file too large (write failed)"
    assert r["gpkg"] == f"OutputWriteError: {root}/v.gpkg: file too large (write failed)"


def test_a_failed_python_write_names_the_output(limited_writes):
    """A plain write (evaluate -o, stats.json) raised ``OSError: [Errno 27] File too
    large``, naming no file; a chip shard's the same, and its abort left the raw files."""
    root, r = limited_writes
    assert r["json"] == f"OutputWriteError: {root}/m.json: file too large (write failed)"
    assert r["shard"] == f"OutputWriteError: {root}/s/rgb.npy: file too large (write failed)"
    assert r["left"] == ["old.tif", "s"]   # no temporary, raw or probe file anywhere


# ----------------------------------------------------------------------------- CLI, limit
def test_evaluate_output_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    a = make_raster(tmp_path / "a.tif", np.full((32, 32), 5, np.float32), nodata=-9999)
    p = rsgeo_limited(100, "evaluate", a, a, "-o", tmp_path / "out" / "m.json")
    assert p.returncode == 1, p.stderr
    assert p.stderr == f"rsgeo: error: {tmp_path}/out/m.json: file too large (write failed)\n"
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.tif"]   # nor the folder it made


def _height_onnx(path: Path) -> Path:
    """A tiny ONNX 'height model': the mean of the normalised bands."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["output"], axes=[1], keepdims=1)], "h",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["b", 1, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"bands": ["red", "green", "blue"], "mean": [120.0] * 3, "std": [50.0] * 3,
             "gsd": 0.5, "tile": 64, "overlap": 16, "nodata": -9999, "task": "height",
             "units": "m", "format": "rsgeo-onnx", "stride": 16, "inputs": ["image"],
             "config": {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64,
                        "head": "dpt", "head_features": 16, "task": "height"}}
    helper.set_model_props(model, {k: json.dumps(v) for k, v in props.items()})
    onnx.save(model, str(path))
    return path


def test_predict_height_on_a_full_disk_publishes_no_truncated_raster(tmp_path):
    """Exit 0 with a 20000-byte h.tif and libtiff's own ``_tiffWriteProc: File too
    large.`` lines on stderr; with --overwrite the good earlier h.tif was replaced by it."""
    model = _height_onnx(tmp_path / "h.onnx")
    rgb = np.random.default_rng(0).integers(0, 255, (3, 160, 160), dtype=np.uint8)
    img = make_raster(tmp_path / "img.tif", rgb)
    out = tmp_path / "out"
    out.mkdir()
    (out / "h.tif").write_bytes(b"an earlier run's heights")
    before = _digest(tmp_path)
    p = rsgeo_limited(20000, "predict-height", img, "-m", model, "-o", out / "h.tif",
                      "--device", "cpu", "--overwrite", "-q")
    assert p.returncode == 1, p.stderr
    assert p.stderr == f"rsgeo: error: {out}/h.tif: file too large (write failed)\n"
    assert _digest(tmp_path) == before


def test_prepare_on_a_full_disk_removes_the_dataset_folder_it_made(tmp_path):
    """``OSError: [Errno 27] File too large`` and a chip folder left with its marker and
    the shards' hidden raw files."""
    h = np.random.default_rng(0).random((128, 128)).astype(np.float32) * 10
    ndsm = make_raster(tmp_path / "ndsm.tif", h, nodata=-9999)
    p = rsgeo_limited(2000, "prepare", "--ndsm", ndsm, "--size", "32", "--dedup-distance",
                      "0", "-o", tmp_path / "chips")
    assert p.returncode == 1, p.stderr
    assert p.stderr == (f"rsgeo: error: {tmp_path}/chips/shards/ndsm/ndsm.npy: file too "
                        "large (write failed)\n")
    assert sorted(q.name for q in tmp_path.iterdir()) == ["ndsm.tif"]


# ------------------------------------------------------------------- a really full disk
FULL = r'''
import json, sys
from pathlib import Path
import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rsgeo.data.shards import ShardWriter
from rsgeo.io.raster import Grid
from rsgeo.io.writer import write_array

small, medium = Path(sys.argv[1]), Path(sys.argv[2])
results = {}
grid = Grid(CRS.from_epsg(32633), Affine(0.5, 0, 500000, 0, -0.5, 4100000), 512, 256)
try:
    write_array(small / "h.tif", np.random.default_rng(0).random((256, 512), np.float32), grid)
    results["geotiff"] = "no error"
except Exception as e:
    results["geotiff"] = f"{type(e).__name__}: {e}"
shard = ShardWriter(medium / "rgb.npy", (3, 32, 32), np.uint8)
try:   # 150 KiB of chips fit, their copy into the .npy does not
    for _ in range(50):
        shard.append(np.ones((3, 32, 32), np.uint8))
    shard.finish()
    results["shard"] = "no error"
except Exception as e:
    results["shard"] = f"{type(e).__name__}: {e}"
shard.abort()
results["left"] = sorted(p.name for d in (small, medium) for p in d.iterdir())
print(json.dumps(results))
'''


def test_a_really_full_disk(tmp_path):
    """ENOSPC, not a size limit: a shard's .npy was written through a memory map, and a page
    the disk had no room for killed prepare with SIGBUS (exit -7), leaving its raw files."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a small tmpfs in a private namespace")
    small, medium = tmp_path / "small", tmp_path / "medium"
    small.mkdir(), medium.mkdir()
    script = ('mount -t tmpfs -o size=128k tmpfs "$1" && mount -t tmpfs -o size=256k tmpfs '
              '"$2" || exit 77; exec "$3" -c "$4" "$1" "$2"')
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", small, medium,
                        sys.executable, FULL], env=ENV, capture_output=True, text=True,
                       timeout=300)
    if p.returncode == 77 or "unshare failed" in p.stderr:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here ({p.stderr.strip()})")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["geotiff"] == f"OutputWriteError: {small}/h.tif: no space left on device (write failed)"
    assert r["shard"] == f"OutputWriteError: {medium}/rgb.npy: no space left on device (write failed)"
    assert r["left"] == []


# ------------------------------------------------------------------ refusals, in-process
def _refuse_replacing(monkeypatch, name: str):
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(src), None, str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)


def test_an_output_the_system_will_not_replace_is_one_line_exit_2(tmp_path, cli, monkeypatch):
    """``rsgeo: error: .../m.json: writing failed ([Errno 1] Operation not permitted:
    '.../m.json' -> '.../m.json')``, exit 1 (an immutable file, a sticky folder of another
    user); other commands named rsgeo's hidden temporary file."""
    a = make_raster(tmp_path / "a.tif", np.full((32, 32), 5, np.float32), nodata=-9999)
    (tmp_path / "m.json").write_text("earlier")
    _refuse_replacing(monkeypatch, "m.json")
    code, _, err = cli("evaluate", a, a, "-o", tmp_path / "m.json", "--overwrite")
    assert code == 2
    assert err == (f"rsgeo: error: {tmp_path}/m.json: cannot replace the existing output "
                   "(Operation not permitted)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "m.json"]
    assert (tmp_path / "m.json").read_text() == "earlier"


def test_a_failed_publish_puts_every_earlier_output_back(tmp_path, monkeypatch):
    """damage-map publishes four files; when the last could not be replaced, the three it
    had already replaced were removed: --overwrite lost the earlier run's outputs."""
    from rsgeo.damage import damage_map
    from rsgeo.errors import InputError

    h = np.zeros((64, 64), np.float32)
    h[20:40, 20:40] = 10
    a = make_raster(tmp_path / "pre.tif", h, nodata=-9999)
    b = make_raster(tmp_path / "post.tif", np.zeros_like(h), nodata=-9999)
    damage_map(a, b, tmp_path / "d.tif")
    before = _digest(tmp_path)
    assert {"d.tif", "d_loss.tif", "d.gpkg", "d.tif.aux.xml"} <= set(before)
    _refuse_replacing(monkeypatch, "d.gpkg")
    with pytest.raises(InputError, match="d.gpkg: cannot replace the existing output"):
        damage_map(a, b, tmp_path / "d.tif", threshold=5.0, overwrite=True)
    assert _digest(tmp_path) == before


@contextmanager
def _read_only(folder: Path):
    """``folder`` made read-only: chmod 0o555, or chattr +i for root (chmod does not stop
    root); skips when neither works here."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(
            ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root, and chattr +i is not available to make a folder "
                    "read-only for root")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_output_folder_is_refused_before_any_work(tmp_path, cli):
    a = make_raster(tmp_path / "a.tif", np.full((32, 32), 5, np.float32), nodata=-9999)
    lc = make_raster(tmp_path / "lc.tif", np.full((32, 32), 8, np.uint8))
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "m.json").write_text("earlier")
    with _read_only(ro):
        for args, out in ((("evaluate", a, a, "--overwrite", "-o"), ro / "m.json"),
                          (("damage-map", a, a, "-o"), ro / "d.tif"),
                          (("footprints", lc, "--class", "8", "-o"), ro / "b.gpkg")):
            code, _, err = cli(*args, out)
            assert code == 2, (args, err)
            assert err.startswith(f"rsgeo: error: {out}: cannot write the output here ("), err
            assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in ro.iterdir()) == ["m.json"]


# --------------------------------------------------------------- other writers, in-process
def test_a_folder_whose_marker_cannot_be_written_is_removed_again(tmp_path, monkeypatch):
    import rsgeo.io.atomic as atomic

    def full(folder, kind):
        (Path(folder) / atomic.MARKER).write_text("{")
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(atomic, "write_marker", full)
    with pytest.raises(OutputWriteError, match=r"a/run/\.rsgeo\.json: file too large \(write"):
        atomic.claim_folder(tmp_path / "a" / "run", "pretrain")
    assert list(tmp_path.iterdir()) == []


def test_a_bare_write_error_still_names_the_file_and_the_reason(tmp_path, cli, monkeypatch):
    """An OSError from a write outside rsgeo's atomic outputs was ``rsgeo: error: OSError:
    [Errno 28] No space left on device: '...'``."""
    import rsgeo.evaluate

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache.bin"))

    monkeypatch.setattr(rsgeo.evaluate, "evaluate", full)
    a = make_raster(tmp_path / "a.tif", np.full((32, 32), 5, np.float32), nodata=-9999)
    code, _, err = cli("evaluate", a, a)
    assert code == 1
    assert err == f"rsgeo: error: {tmp_path}/cache.bin: no space left on device (write failed)\n"


def test_a_failed_checkpoint_save_keeps_the_previous_one_and_says_so(tmp_path, monkeypatch):
    """The save's own error (torch: ``[enforce fail at inline_container.cc:672] . unexpected
    pos``) was all the user saw, not what was left to continue from."""
    import torch

    import rsgeo.train.checkpoint as checkpoint
    from rsgeo.train.engine import Trainer
    from tests.test_engine import Pairs, Regressor, cfg

    saves, real = [], torch.save

    def full_disk_on_the_second_save(obj, f, *a, **k):
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk_on_the_second_save)
    run = tmp_path / "run"
    with pytest.raises(OutputWriteError) as e:
        Trainer(Regressor(), Pairs(), cfg(steps=8, ckpt_every=4), run).fit()
    assert str(e.value) == (
        f"{run}/checkpoints/last.pt: no space left on device (write failed); the checkpoint "
        "of step 4 is kept as it was: with room again, the same command with --resume "
        "continues from it")
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.pt"]


def test_a_failed_best_checkpoint_write_publishes_none_of_its_files(tmp_path, monkeypatch):
    """best.ckpt and val_preview.png were published before best.json failed: the run folder
    then held a best.ckpt its best.json did not describe (and --resume trusts best.json)."""
    from contextlib import contextmanager as cm

    import rsgeo.finetune as ft
    from tests.test_finetune import SynthChips

    real = ft.atomic_path

    @cm
    def full(path, *a, **k):
        with real(path, *a, **k) as tmp:
            yield tmp
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ft, "atomic_path", full)
    run = tmp_path / "run"
    with pytest.raises(OutputWriteError, match="best.json: no space left on device .write "
                                               "failed.; no checkpoint was saved yet"):
        ft.finetune(SynthChips(n_scenes=1, size=128), "height", run, backbone="vit-tiny-2",
                    steps=1, batch_size=2, head_features=16)
    assert not [p.name for p in run.iterdir() if p.name.startswith(("best", "val_preview"))]


def test_a_pretrain_whose_encoder_could_not_be_written_says_what_resume_does(tmp_path,
                                                                              monkeypatch):
    """Training finished and its checkpoint is saved, but the encoder is not: the error said
    nothing about the run being complete (``--resume`` writes the encoder again)."""
    import rsgeo.pretrain
    from tests.test_pretrain_cli import write_chips

    def full(enc, path, meta):
        raise OutputWriteError("no space left on device (write failed)", path)

    monkeypatch.setattr(rsgeo.pretrain, "save_encoder", full)
    run = tmp_path / "run"
    with pytest.raises(OutputWriteError) as e:
        rsgeo.pretrain.pretrain(write_chips(tmp_path / "chips", n=4, size=32), "mae",
                                "vit-tiny-2", run, steps=1, batch_size=4, decoder_dim=32,
                                decoder_depth=1, decoder_heads=2)
    assert str(e.value) == (
        f"{run}/encoder.safetensors: no space left on device (write failed); the checkpoint of "
        "step 1 is kept as it was: with room again, the same command with --resume continues "
        "from it")


def test_a_work_file_that_cannot_be_written_is_named(tmp_path, monkeypatch):
    from rsgeo.io.atomic import write_work_text

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputWriteError, match="pair.vrt: no space left on device .write failed"):
        write_work_text(tmp_path / "pair.vrt", "<VRTDataset/>")


def test_an_export_that_could_not_be_written_names_the_onnx_file(tmp_path, monkeypatch, caplog):
    """The write failure was reported against the checkpoint (``h.ckpt: torch.onnx.export
    failed``) after a 10-15 s retry with the dynamo exporter, which then wrote the file."""
    import rsgeo.infer.export as export
    from tests.test_export import checkpoint

    ckpt = checkpoint(tmp_path / "h.ckpt")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "export_traced", full)
    monkeypatch.setattr(export, "_export_dynamo", lambda *a, **k: pytest.fail("retried"))
    with pytest.raises(OutputWriteError, match="h.onnx: no space left on device .write failed"):
        export.export_onnx(ckpt, tmp_path / "h.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.ckpt"]
    assert "trying dynamo" not in caplog.text
