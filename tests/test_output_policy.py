"""The one output policy: --overwrite replaces rsgeo's own outputs and nothing else."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rsgeo.errors import InputError, OutputExistsError
from rsgeo.io import atomic
from rsgeo.io.atomic import (MARKER, all_or_nothing, atomic_path, check_output, claim_folder,
                             write_marker)
from tests.conftest import make_raster, signal_when, write_chip_dataset


def snapshot(root: Path) -> dict:
    """Every file under ``root`` with its SHA-256 (what must survive a refused command)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def user_folder(tmp_path):
    d = tmp_path / "work"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("mine")
    (d / "sub" / "data.csv").write_text("a,b\n1,2\n")
    return d


def test_file_output_never_replaces_a_folder(user_folder):
    for overwrite in (False, True):
        with pytest.raises(InputError, match="folder"):
            check_output(user_folder, overwrite)
    with pytest.raises(InputError, match="folder"):
        with atomic_path(user_folder / "sub", True) as tmp:
            tmp.write_text("x")
    assert (user_folder / "sub" / "data.csv").is_file()


def test_overwrite_never_replaces_a_pipe_or_device(tmp_path, cli):
    fifo = tmp_path / "fifo.tif"
    os.mkfifo(fifo)
    for overwrite in (False, True):
        with pytest.raises(InputError, match="not a regular file"):
            check_output(fifo, overwrite=overwrite)
    pre = make_raster(tmp_path / "pre.tif", np.full((16, 16), 5, np.float32), nodata=-9999)
    post = make_raster(tmp_path / "post.tif", np.full((16, 16), 1, np.float32), nodata=-9999)
    code, _, err = cli("damage-map", pre, post, "-o", fifo, "--overwrite")
    assert code == 2 and "not a regular file" in err and len(err.strip().splitlines()) == 1
    assert fifo.is_fifo()


def test_outputs_of_one_group_are_published_together_or_not_at_all(tmp_path):
    a, b = tmp_path / "new" / "a.txt", tmp_path / "new" / "b.txt"
    with pytest.raises(RuntimeError):
        with all_or_nothing():
            with atomic_path(a) as t:
                t.write_text("a")
            assert not a.exists()            # finished, but not published yet
            raise RuntimeError("the last output failed")
    assert not (tmp_path / "new").exists()
    # publishing: another run published b meanwhile -> a is taken back, b is theirs
    with pytest.raises(InputError, match="appeared"):
        with all_or_nothing():
            for p in (a, b):
                with atomic_path(p) as t:
                    t.write_text("ours")
            b.write_text("theirs")
    assert not a.exists() and b.read_text() == "theirs"
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["b.txt"]   # no temporary


def test_output_equal_to_or_inside_an_input_is_refused(tmp_path):
    src = tmp_path / "in.tif"
    src.write_bytes(b"abc")
    with pytest.raises(InputError, match="replace the input"):
        check_output(src, True, inputs=[src])
    with pytest.raises(InputError, match="replace the input"):
        check_output(tmp_path / "x" / ".." / "in.tif", True, inputs=[src])
    with pytest.raises(InputError, match="replace the input"):
        check_output(tmp_path / "out.json", False, inputs=[tmp_path])
    check_output(tmp_path / "out.json", False, inputs=[src])  # a sibling is fine
    assert src.read_bytes() == b"abc"


def test_input_set_checks_many_outputs_with_one_resolution_each(tmp_path, monkeypatch):
    """predict over a folder of thousands of tiles checks every output against every input:
    an InputSet resolves each path once (the pairwise check resolved n x n), and refuses
    what the pairwise check refused."""
    import rsgeo.io.atomic as atomic

    folder = tmp_path / "tiles"
    (folder / "deep").mkdir(parents=True)
    inputs = [folder / f"t{i}.tif" for i in range(200)] + [folder / "deep" / "b.tif"]
    for p in inputs:
        p.write_bytes(b"x")
    calls = []
    resolved = atomic._resolved
    monkeypatch.setattr(atomic, "_resolved", lambda p: calls.append(p) or resolved(p))
    guard = atomic.InputSet(inputs + [tmp_path / "models"])
    for i in range(200):
        check_output(tmp_path / "out" / f"t{i}_height.tif", False, inputs=guard)
    assert len(calls) == 201 + 1 + 200
    with pytest.raises(InputError, match="replace the input .*t7.tif"):
        check_output(folder / "t7.tif", True, inputs=guard)
    with pytest.raises(InputError, match="holds the input .*b.tif"):
        atomic.refuse_inputs(folder / "deep", guard)
    (tmp_path / "models").mkdir()
    with pytest.raises(InputError, match="replace the input .*models"):
        check_output(tmp_path / "models" / "x.tif", False, inputs=atomic.InputSet([tmp_path / "models"]))


def test_parents_are_created_and_removed_on_failure(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not (tmp_path / "a").exists()
    with atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"


def test_publish_is_exclusive_without_overwrite(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(InputError, match="appeared while"):
        with atomic_path(target) as tmp:
            tmp.write_text("second")
            target.write_text("first")  # another run published meanwhile
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]   # no temporary left
    with atomic_path(target, overwrite=True) as tmp:
        tmp.write_text("replaced")
    assert target.read_text() == "replaced"


def test_claim_folder_replaces_only_its_own_kind(tmp_path, user_folder):
    before = snapshot(user_folder)
    with pytest.raises(InputError, match="not an rsgeo pretrain folder"):
        claim_folder(user_folder, "pretrain", overwrite=True)
    assert snapshot(user_folder) == before
    run = claim_folder(tmp_path / "runs" / "a", "pretrain")        # parents created
    assert (run / MARKER).is_file()
    (run / "metrics.jsonl").write_text("{}\n")                      # a failed run's leftovers
    with pytest.raises(OutputExistsError):
        claim_folder(run, "pretrain")
    with pytest.raises(InputError, match="holds rsgeo pretrain output"):
        claim_folder(run, "demo", overwrite=True)
    claim_folder(run, "pretrain", overwrite=True)                   # its own rerun is accepted
    assert sorted(p.name for p in run.iterdir()) == [MARKER]


def test_claim_folder_refuses_the_current_folder(tmp_path, monkeypatch):
    run = claim_folder(tmp_path / "demo", "demo")
    (run / "sub").mkdir()
    monkeypatch.chdir(run / "sub")
    with pytest.raises(InputError, match="current folder"):
        claim_folder(run, "demo", overwrite=True)
    assert (run / "sub").is_dir()


def test_a_folder_output_that_cannot_be_created_is_bad_input(tmp_path, cli, monkeypatch):
    """Folder outputs (chip dataset, run, demo) under a file, or where the folder cannot be
    made, are refused like file outputs: one line naming the path, exit 2. prepare, pretrain,
    finetune and demo gave `rsgeo: error: NotADirectoryError: ...` (or FileNotFoundError,
    PermissionError), exit 1 as for an internal failure."""
    (tmp_path / "notes.txt").write_text("mine")
    chips = write_chip_dataset(tmp_path / "chips", {"rgb": np.zeros((2, 3, 32, 32), np.uint8),
                                                    "ndsm": np.ones((2, 1, 32, 32), np.float32)})
    ndsm = make_raster(tmp_path / "ndsm.tif", np.ones((64, 64), np.float32), nodata=-9999)
    under_file = tmp_path / "notes.txt" / "out"
    tiny = ("--backbone", "vit-tiny-2", "-o", under_file)
    for args in (("prepare", "--ndsm", ndsm, "--size", "32", "-o", under_file),
                 ("pretrain", chips, "--method", "mae", *tiny),
                 ("finetune", chips, "--task", "height", *tiny),
                 ("demo", "--quick", "-o", under_file)):
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert err.strip() == f"rsgeo: error: {tmp_path / 'notes.txt'}: is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text() == "mine"

    def refuse(self, *a, **kw):  # a folder the system will not create (read-only, /proc)
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(InputError, match="cannot create the output folder .Permission denied"):
        claim_folder(tmp_path / "run", "pretrain")


def _pair(tmp_path):
    h = np.zeros((64, 64), np.float32)
    h[20:40, 20:40] = 10
    a = make_raster(tmp_path / "pre.tif", h, nodata=-9999)
    b = make_raster(tmp_path / "post.tif", np.zeros_like(h), nodata=-9999)
    return a, b


def test_cli_never_deletes_folders_or_inputs(tmp_path, user_folder, cli, monkeypatch):
    a, b = _pair(user_folder)
    before = snapshot(tmp_path)
    monkeypatch.chdir(user_folder / "sub")
    cases = [
        ("evaluate", a, b, "-o", "..", "--overwrite"),
        ("evaluate", a, b, "-o", user_folder / "sub", "--overwrite"),
        ("evaluate", a, b, "-o", a, "--overwrite"),
        ("damage-map", a, b, "-o", a, "--overwrite"),
        ("damage-map", a, b, "-o", user_folder, "--overwrite"),
        ("demo", "-o", user_folder, "--overwrite", "--quick"),
        ("demo", "-o", ".", "--overwrite", "--quick"),
    ]
    for args in cases:
        code, _, err = cli(*args)
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert "use --overwrite" not in err, (args, err)
        assert snapshot(tmp_path) == before, args


def test_two_processes_writing_one_output_one_wins(tmp_path):
    a, b = _pair(tmp_path)
    out = tmp_path / "metrics.json"
    cmd = [sys.executable, "-m", "rsgeo", "evaluate", str(a), str(b), "-o", str(out)]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes == [0, 2], results
    import json

    assert "mae" in json.loads(out.read_text())        # a complete output of one of them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "post.tif", "pre.tif"]


def test_marker_written_in_demo_style_folder(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    write_marker(d, "chips")
    claim_folder(d, "chips", overwrite=True)
    assert (d / MARKER).is_file()


def test_geopackage_bytes_are_deterministic(tmp_path):

    import geopandas as gpd
    import shapely

    from rsgeo.io.vector import write_vector

    g = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3)],
                         crs=32633)
    write_vector(g, tmp_path / "a" / "f.gpkg")
    time.sleep(1.1)  # GDAL stamps to the second
    write_vector(g, tmp_path / "b" / "f.gpkg")
    assert (tmp_path / "a" / "f.gpkg").read_bytes() == (tmp_path / "b" / "f.gpkg").read_bytes()


def test_vector_formats_keep_their_crs_and_layer_name_and_shapefiles_are_refused(tmp_path,
                                                                                   caplog):
    import json

    import geopandas as gpd
    import shapely
    from pyproj import CRS

    from rsgeo.io.vector import read_vector, write_vector

    custom = CRS.from_proj4("+proj=tmerc +lat_0=43 +lon_0=3.5 +k=1 +x_0=1000 +y_0=2000 "
                            "+ellps=GRS80 +units=m +no_defs")  # no authority code
    g = gpd.GeoDataFrame({"height_median_m": [1.0], "height_max_m": [2.0]},
                         geometry=[shapely.box(100, 4800, 110, 4810)], crs=custom)
    for ext in ("gpkg", "fgb", "parquet"):
        back = read_vector(write_vector(g, tmp_path / f"b.{ext}"))
        assert back.crs.equals(custom) and back.geometry[0].equals(g.geometry[0]), ext
    with caplog.at_level("WARNING"):  # GeoJSON: reprojected to EPSG:4326, never unlabelled
        back = read_vector(write_vector(g, tmp_path / "b.geojson"))
    assert back.crs.to_epsg() == 4326 and "EPSG:4326" in caplog.text
    assert back.to_crs(custom).geometry[0].equals_exact(g.geometry[0], 1e-6)
    assert json.loads((tmp_path / "b.geojson").read_text())["name"] == "b"  # not the temp name
    utm = write_vector(g.to_crs(32631), tmp_path / "u.geojson")
    assert read_vector(utm).crs.to_epsg() == 32631
    with pytest.raises(InputError, match="Shapefile"):
        write_vector(g, tmp_path / "b.shp")
    assert not list(tmp_path.glob("*b.*shp")) and not list(tmp_path.glob(".*"))


def test_every_vector_extension_the_readme_lists_is_written_and_shapefiles_are_read(tmp_path):
    """README: outputs .gpkg, .geojson or .json, .geojsonl or .geojsons (GeoJSON sequence,
    always in EPSG:4326, to 7 decimals: about 1 cm), .parquet, .fgb (:data:`rsgeo.io.vector.DRIVERS`); inputs (--buildings,
    footprints) in any OGR format, a Shapefile included, or GeoParquet named .parquet."""
    import geopandas as gpd
    import shapely

    from rsgeo.io.vector import DRIVERS, read_vector, write_vector

    g = gpd.GeoDataFrame({"height": [1.0]}, geometry=[shapely.box(500, 4800, 510, 4810)],
                         crs=32631)
    for ext, driver in DRIVERS.items():
        back = read_vector(write_vector(g, tmp_path / f"b{ext}"))
        seq = driver == "GeoJSONSeq"
        assert back.crs.to_epsg() == (4326 if seq else 32631), ext
        assert back.to_crs(32631).geometry[0].equals_exact(g.geometry[0], 0.02 if seq else 1e-6)
    with pytest.raises(InputError, match="unknown vector format .gml; use one of .gpkg"):
        write_vector(g, tmp_path / "b.gml")
    g.to_file(tmp_path / "in.shp", engine="pyogrio")  # a user's Shapefile, as input
    assert read_vector(tmp_path / "in.shp").crs.to_epsg() == 32631


@pytest.mark.parametrize("args, flag", [
    (("synth", "-o", "{tmp}/s", "--size", "100000"), "--size"),
    (("synth", "-o", "{tmp}/s", "--gsd", "0.0001"), "--gsd"),
])
def test_nonsensical_values_are_refused_naming_the_option(tmp_path, cli, args, flag):
    code, _, err = cli(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_train_config_refuses_negative_learning_rate():
    from rsgeo.train.config import TrainConfig

    for kw, flag in (({"lr": -1}, "--lr"), ({"batch_size": 0}, "--batch-size"),
                     ({"steps": 0}, "--steps"), ({"clip_grad": -1.0}, "--clip-grad")):
        with pytest.raises(InputError, match=flag):
            TrainConfig(**kw)
    TrainConfig(lr=1e-4, clip_grad=None)


def test_published_files_get_the_umask_default_mode(tmp_path):
    """safetensors writes its files owner-only (0600): a saved encoder came out unreadable to
    the user's group, unlike every other output. Published files get 0666 less the umask."""
    from rsgeo.io.atomic import _UMASK
    from rsgeo.models.backbones import build_encoder, save_encoder

    weights, sidecar = save_encoder(build_encoder("vit-tiny-2", 3, 64), tmp_path / "enc",
                                    {"backbone": "vit-tiny-2", "in_chans": 3, "img_size": 64})
    with atomic_path(tmp_path / "owner_only.txt") as tmp:
        tmp.write_text("x")
        os.chmod(tmp, 0o600)
    for path in (weights, sidecar, tmp_path / "owner_only.txt"):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~_UMASK, path


def _earlier_run(folder: Path, kind: str) -> dict:
    """An earlier run folder of ``kind`` with results; returns its snapshot."""
    folder.mkdir(parents=True)
    write_marker(folder, kind)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"the earlier run's weights")
    (folder / "summary.json").write_text('{"loss": 0.5}\n')
    return snapshot(folder)


def test_overwrite_keeps_the_earlier_folder_until_the_run_succeeds(tmp_path):
    run = tmp_path / "run"
    before = _earlier_run(run, "pretrain")
    with pytest.raises(KeyboardInterrupt):   # a failure or a stop after the claim
        claim_folder(run, "pretrain", overwrite=True)
        with atomic.replacing(run):
            (run / "metrics.jsonl").write_text("{}\n")
            raise KeyboardInterrupt
    assert snapshot(run) == before and os.listdir(tmp_path) == ["run"]   # nothing hidden left
    claim_folder(run, "pretrain", overwrite=True)
    with atomic.replacing(run):
        (run / "metrics.jsonl").write_text("{}\n")
    assert sorted(snapshot(run)) == [MARKER, "metrics.jsonl"] and os.listdir(tmp_path) == ["run"]


def test_a_killed_overwrite_leaves_the_earlier_folder_beside_and_the_rerun_clears_it(tmp_path):
    """SIGKILL skips every cleanup: the earlier folder stays under its hidden name (nothing
    lost), the new one is a marked folder its rerun with --overwrite accepts, and the rerun
    that succeeds removes both."""
    run = tmp_path / "run"
    before = _earlier_run(run, "demo")
    claim_folder(run, "demo", overwrite=True)
    atomic._EARLIER.clear()                         # the process is gone: no cleanup ran
    (hidden,) = [p for p in tmp_path.iterdir() if p.name != "run"]
    assert hidden.name.startswith(".run.rsgeo-earlier-") and snapshot(hidden) == before
    claim_folder(run, "demo", overwrite=True)
    with atomic.replacing(run):
        (run / "summary.json").write_text("{}\n")
    assert os.listdir(tmp_path) == ["run"]


def test_a_training_run_refused_after_the_claim_keeps_the_earlier_run(tmp_path, cli):
    """``--overwrite`` with a batch larger than the dataset (found once the folder was
    claimed): the earlier run was deleted at the claim, so the user had neither."""
    chips = write_chip_dataset(tmp_path / "chips", {"rgb": np.zeros((2, 3, 32, 32), np.uint8)})
    run = tmp_path / "run"
    before = _earlier_run(run, "pretrain")
    code, _, err = cli("pretrain", chips, "--method", "mae", "--backbone", "vit-tiny-2",
                       "--batch-size", "8", "--device", "cpu", "-o", run, "--overwrite")
    assert code == 2 and "larger than the dataset" in err, err
    assert snapshot(run) == before
    assert sorted(os.listdir(tmp_path)) == ["chips", "run"]


@pytest.mark.slow
def test_sigterm_during_an_overwriting_demo_puts_the_earlier_one_back(tmp_path):
    """A real process, stopped once it is writing its new folder (the new city exists)."""
    out = tmp_path / "d"
    before = _earlier_run(out, "demo")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               OMP_NUM_THREADS="1")
    code, _, err = signal_when([sys.executable, "-m", "rsgeo", "demo", "--quick", "--device",
                                "cpu", "-o", "d", "--overwrite"], (out / "city").exists,
                               cwd=tmp_path, env=env)
    assert code == 143, err
    assert snapshot(out) == before and os.listdir(tmp_path) == ["d"]
