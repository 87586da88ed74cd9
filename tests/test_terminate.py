"""SIGTERM (a scheduler, ``timeout``, ``kill``) during a command other than training: exit
143 with one line on stderr, no traceback, and no partial output left behind.

(Training's own stop at a step boundary is tested in ``test_preemption.py``.)
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from rsgeo.errors import Terminated
from tests.conftest import make_raster, signal_when

ROOT = Path(__file__).resolve().parents[1]


def _sigterm_self(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)             # the handler raises at the next bytecode, long before this ends
    raise AssertionError("SIGTERM was not turned into an interruption")


def test_sigterm_exits_143_with_one_line_and_restores_the_handlers(tmp_path, cli, monkeypatch):
    import rsgeo.damage

    a = make_raster(tmp_path / "pre.tif", np.full((8, 8), 5.0, np.float32))
    monkeypatch.setattr(rsgeo.damage, "damage_map", _sigterm_self)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    code, _, err = cli("damage-map", a, a, "-o", tmp_path / "d.tif")
    assert code == 143
    assert err == "rsgeo: stopped by SIGTERM; unfinished outputs removed\n"
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.slow
def test_sigterm_during_damage_map_leaves_nothing(tmp_path):
    # a real process, signalled once it is writing (its hidden temporary output exists)
    pre = np.zeros((3000, 3000), np.float32)
    pre[(np.arange(3000) // 20 % 2 == 0)] = 10.0
    post = pre.copy()
    post[:1500] = 0.5
    make_raster(tmp_path / "pre.tif", pre, nodata=-9999)
    make_raster(tmp_path / "post.tif", post, nodata=-9999)
    inputs = {"pre.tif", "post.tif"}
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    code, _, err = signal_when(
        [sys.executable, "-m", "rsgeo", "damage-map", "pre.tif", "post.tif", "-o", "d.tif"],
        lambda: any(p.name.startswith(".d.tmp-") for p in tmp_path.iterdir()),
        cwd=tmp_path, env=env)
    assert code == 143, err
    assert err == "rsgeo: stopped by SIGTERM; unfinished outputs removed\n"
    assert {p.name for p in tmp_path.iterdir()} == inputs


def test_stopped_synth_removes_the_scenes_it_wrote_and_keeps_the_rest(tmp_path, monkeypatch):
    import rsgeo.synth.write as write

    real, calls = write.generate_scene, []

    def second_is_stopped(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise Terminated
        return real(*a, **k)

    monkeypatch.setattr(write, "generate_scene", second_is_stopped)
    with pytest.raises(Terminated):
        write.write_scenes(tmp_path / "new" / "city", size=64, scenes=2)
    assert not (tmp_path / "new").exists()      # the folders it made are gone too
    keep = tmp_path / "old" / "city_001_dsm.tif"
    keep.parent.mkdir()
    keep.write_bytes(b"a file of an earlier run")
    calls.clear()
    with pytest.raises(Terminated):
        write.write_scenes(tmp_path / "old", size=64, scenes=2, overwrite=True)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["city_001_dsm.tif"]
    assert keep.read_bytes() == b"a file of an earlier run"


def test_stopped_prepare_removes_the_dataset_it_created(tmp_path, synth_city, monkeypatch):
    import rsgeo.data.prepare as prep
    from rsgeo.data.sources import from_synth_dir

    def stopped(group, out, *a, **k):
        (out / "shards" / "city").mkdir(parents=True)
        raise Terminated

    monkeypatch.setattr(prep, "_run_source", stopped)
    with pytest.raises(Terminated):
        prep.prepare(from_synth_dir(synth_city.folder), tmp_path / "chips", size=64)
    assert list(tmp_path.iterdir()) == []


# A sitecustomize that holds the start-up at its first `import typer` (the CLI's own imports,
# before rsgeo.cli.app.main installs its handlers) until a signal comes, and says so. It
# waits in code run by a string exec, as a dataclass being built during an import does:
# a bare KeyboardInterrupt raised there made `python -m` exit by SIGINT (-2), not with 130.
HOLD_IMPORT = '''
import os, sys

class Hold:
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            open(os.environ["RSGEO_TEST_MARK"], "w").close()
            exec("import time\\ntime.sleep(60)", {})  # a signal ends this, or the process
        return None

sys.meta_path.insert(0, Hold())
'''


def _entry(how: str) -> list[str]:
    """``python -m rsgeo``, or what the installed ``rsgeo`` script runs ([project.scripts])."""
    if how == "-m":
        return ["-m", "rsgeo"]
    import tomllib

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["rsgeo"]
    module, func = target.split(":")
    return ["-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


@pytest.mark.parametrize("how", ["-m", "script"])
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_start_up_exits_with_the_one_line(tmp_path, how, sig, code):
    """A signal while the CLI is still importing (before main() installs its handlers): it
    got Python's defaults (SIGTERM killed the process without a word, -15; Ctrl-C printed a
    KeyboardInterrupt traceback). Now the entry point handles both from its first line."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_IMPORT)
    mark, work = tmp_path / "importing", tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(ROOT)]),
               RSGEO_TEST_MARK=str(mark))
    got, out, err = signal_when([sys.executable, *_entry(how), "synth", "-o", "city", "--size",
                                 "96"], mark.exists, cwd=work, env=env, sig=sig, timeout=60)
    assert mark.exists(), err  # the signal came while the CLI was importing
    assert got == code, err
    assert err == {143: "rsgeo: stopped by SIGTERM; unfinished outputs removed\n",
                   130: "rsgeo: interrupted; unfinished outputs removed\n"}[code]
    assert out == "" and list(work.iterdir()) == []


@pytest.mark.parametrize("name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_stop_that_lands_in_a_finaliser_is_not_lost(tmp_path, cli, name, code):
    """The signal's handler runs wherever the main thread is: inside a ``__del__`` (or a
    weakref callback: thread pools and GDAL handles make many) its exception is printed as
    "Exception ignored in ..." and dropped, and the command went on to publish its output
    and exit 0. Now the dropped stop is raised again in the command's next steps."""
    from rsgeo.cli import app as app_module
    from rsgeo.io.atomic import atomic_path

    class Finaliser:
        def __del__(self):
            os.kill(os.getpid(), getattr(signal, name))
            for _ in range(100_000):  # the handler runs in here
                pass

    @app_module.app.command("_finalised", hidden=True)
    def _finalised():
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            Finaliser()  # dropped at once: its __del__ runs here
            for _ in range(200):
                time.sleep(0.01)
            tmp.write_text("whole")

    before = signal.getsignal(signal.SIGALRM), sys.unraisablehook
    try:
        got, out, err = cli("_finalised")
    finally:
        app_module.app.registered_commands[:] = [
            c for c in app_module.app.registered_commands if c.name != "_finalised"]
    assert got == code, err
    assert err.strip().splitlines() == [{143: "rsgeo: stopped by SIGTERM; unfinished outputs "
                                               "removed",
                                         130: "rsgeo: interrupted; unfinished outputs "
                                              "removed"}[code]]
    assert list(tmp_path.iterdir()) == []
    assert (signal.getsignal(signal.SIGALRM), sys.unraisablehook) == before


@pytest.mark.parametrize("kind", ["footprints", "building-heights"])
def test_a_stopped_model_run_removes_the_folders_it_made(tmp_path, monkeypatch, kind):
    """footprints / building-heights with -m predict into a work folder beside the output;
    the output's missing folders were made for it with mkdir and stayed behind, empty, when
    the run was stopped (or failed) before the output was written."""
    import rsgeo.damage.buildings as b

    image = make_raster(tmp_path / "image.tif", np.zeros((3, 8, 8), np.uint8))
    (tmp_path / "m.onnx").write_bytes(b"a model")
    (tmp_path / "b.gpkg").write_bytes(b"buildings")

    def predicting(image, model, dest, **kw):  # into the work folder, or a file in it
        (Path(dest) / "half.tif" if Path(dest).is_dir() else Path(dest)).write_bytes(b"half")
        raise Terminated

    monkeypatch.setattr(b, "require_overlap", lambda *a: None)
    monkeypatch.setattr(b, "model_buildings", predicting)
    monkeypatch.setattr(b, "predict_height_file", predicting)
    out = tmp_path / "new" / "deeper" / "out.gpkg"
    with pytest.raises(Terminated):
        if kind == "footprints":
            b.predicted_footprints(image, tmp_path / "m.onnx", out)
        else:
            b.predicted_building_heights(image, tmp_path / "m.onnx", tmp_path / "b.gpkg", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gpkg", "image.tif", "m.onnx"]


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


@pytest.mark.slow
def test_footprint_workers_leave_a_signal_to_the_group_to_the_main_process(tmp_path):
    """footprints --workers regularises in spawned processes. A Ctrl-C or a scheduler's
    SIGTERM goes to the whole process group: a worker killed by it broke the pool (a
    traceback from the executor's thread, leaked semaphores). The workers now start with
    both signals blocked; the main process stops and shuts them down."""
    if not Path("/proc/self/status").exists():
        pytest.skip("reads the workers' signal masks from /proc")
    prob = np.zeros((2000, 2000), np.float32)
    for r in range(0, 2000, 40):
        prob[r + 8:r + 28] = np.where(np.arange(2000) % 40 >= 8, 0.9, 0.0)
        prob[r + 8:r + 28, np.arange(2000) % 40 >= 28] = 0.0
    make_raster(tmp_path / "p.tif", prob)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "rsgeo", "footprints", "p.tif", "-o", "b.gpkg",
                             "--workers", "2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        workers = []
        while proc.poll() is None and not workers:
            workers = [k for k in _children(proc.pid)
                       if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
            time.sleep(0.005)
        assert workers, proc.communicate()[1]
        status = Path(f"/proc/{workers[0]}/status").read_text()
        blocked = int(status.split("SigBlk:")[1].split()[0], 16)
        assert blocked >> (signal.SIGINT - 1) & 1 and blocked >> (signal.SIGTERM - 1) & 1
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err == "rsgeo: stopped by SIGTERM; unfinished outputs removed\n"
    assert [p.name for p in tmp_path.iterdir()] == ["p.tif"]


# ------------------------------------------ every output-writing command, stopped mid-run
def _stop_in(monkeypatch, module, name: str, sig: int, at: int = 1) -> None:
    """``module.name`` sends ``sig`` to this process on its ``at``-th call, then carries on
    (called from a worker thread too: the main thread's handler raises where it waits)."""
    real, calls = getattr(module, name), []

    def stopping(*a, **k):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), sig)
            if threading.current_thread() is threading.main_thread():
                time.sleep(5)  # the handler raises in here
                raise AssertionError(f"{signal.Signals(sig).name} was not turned into a stop")
        return real(*a, **k)

    monkeypatch.setattr(module, name, stopping)


def _heights(tmp_path, name, shift=0.0):
    h = np.zeros((64, 64), np.float32)
    h[8:24, 8:24], h[40:56, 30:60] = 9.0 + shift, 14.0 + shift
    return make_raster(tmp_path / name, h, nodata=-9999)


def _case(kind: str, tmp_path, cli) -> tuple[list, tuple]:
    """(arguments, (module, function the stop is sent from, on which call)) for ``kind``."""
    import rsgeo.evaluate as ev
    import rsgeo.io.atomic as atomic

    ref = _heights(tmp_path, "ref.tif")
    if kind.startswith("evaluate"):
        pred = _heights(tmp_path, "pred.tif", 0.5)
        if kind == "evaluate-json":  # a stop while strips are scored on the metrics threads
            return ["evaluate", pred, ref, "--json"], (ev, "_score_group", 1)
        if kind == "evaluate-o":
            return ["evaluate", pred, ref, "-o", tmp_path / "m.json"], (atomic, "publish", 1)
        for d in ("preds", "refs"):
            (tmp_path / d).mkdir()
            for i in range(3):
                _heights(tmp_path / d, f"t{i}.tif", 0.5 * (d == "preds"))
        return (["evaluate", tmp_path / "preds", tmp_path / "refs", "--format", "csv", "-o",
                 tmp_path / "m.csv"], (ev, "_score_group", 2))  # in the second pair
    prob = make_raster(tmp_path / "prob.tif", (_read(ref) > 0).astype(np.float32))
    if kind == "footprints":
        return ["footprints", prob, "-o", tmp_path / "out" / "b.gpkg"], (atomic, "publish", 1)
    assert cli("footprints", prob, "-o", tmp_path / "b.gpkg")[0] == 0
    return (["building-heights", ref, "--buildings", tmp_path / "b.gpkg", "-o",
             tmp_path / "out" / "h.gpkg"], (atomic, "publish", 1))


def _read(path):
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("kind", ["evaluate-json", "evaluate-o", "evaluate-folder",
                                  "footprints", "building-heights"])
def test_a_stopped_command_exits_with_one_line_and_leaves_nothing(tmp_path, cli, monkeypatch,
                                                                  kind, sig, code):
    """SIGTERM / Ctrl-C while evaluate (its metrics threads scoring, or its report about to
    be published), footprints or building-heights (the output written, about to be
    published) works: exit 143 / 130, the one line, no output, no temporary file (none of
    the hidden ``.NAME.tmp-*`` siblings, no ``.rsgeo-*`` work folder), no partial JSON."""
    args, (module, name, at) = _case(kind, tmp_path, cli)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    _stop_in(monkeypatch, module, name, sig, at)
    got, out, err = cli(*args)
    assert got == code, err
    assert err.strip().splitlines() == [
        {143: "rsgeo: stopped by SIGTERM; unfinished outputs removed",
         130: "rsgeo: interrupted; unfinished outputs removed"}[code]]
    assert out == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_export_leaves_no_model(tmp_path, cli, monkeypatch, height_bundle, sig, code):
    """rsgeo export stopped once the ONNX file is written and checked, as it is published."""
    import rsgeo.io.atomic as atomic

    _stop_in(monkeypatch, atomic, "publish", sig)
    got, out, err = cli("export", height_bundle, "-o", tmp_path / "models" / "h.onnx")
    assert got == code, err
    assert err.strip().splitlines() == [
        {143: "rsgeo: stopped by SIGTERM; unfinished outputs removed",
         130: "rsgeo: interrupted; unfinished outputs removed"}[code]]
    assert out == "" and list(tmp_path.iterdir()) == []
