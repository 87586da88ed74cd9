import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rsgeo import __version__


def test_version(cli):
    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"rsgeo {__version__}"


def test_help_lists_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0 and "Usage" in out


def test_help_texts_are_rewrapped_not_broken_at_the_docstrings_lines(cli, monkeypatch):
    """The command list and each command's help re-wrap the docstring's paragraphs to the
    terminal instead of keeping its source line breaks (ragged text at any other width)."""
    from rsgeo.cli.app import app
    from rsgeo.cli.helptext import reflow

    monkeypatch.setenv("COLUMNS", "300")
    code, out, _ = cli("--help")
    assert code == 0
    for info in app.registered_commands:
        assert "\n" not in (info.short_help or ""), (info.name, info.short_help, info.help)
    assert "footprints with damage grades) into the folder OUTPUT." in out  # one line at 300
    assert "nodata -9999) on the input grid." in out
    code, out, _ = cli("predict-height", "--help")
    assert code == 0 and "share one model load and one pipeline, into the OUTPUT folder" in out
    assert reflow("""A b
    c.

    - one
    - two
    """) == "A b c.\n\n- one\n- two"  # bullets keep their lines


def test_unknown_command_and_bad_option_exit_2(cli):
    code, _, err = cli("no-such-command")
    assert code == 2 and "No such command" in err
    code, _, err = cli("--no-such-option")
    assert code == 2


def test_help_does_not_import_heavy_libraries():
    """`rsgeo --help` must stay fast: torch, geopandas, onnxruntime load inside commands."""
    code = ("import sys; from rsgeo.cli.app import main; main(['--help']); "
            "heavy = [m for m in ('torch', 'geopandas', 'onnxruntime', 'rasterio', 'timm') "
            "if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout, out.stdout[-300:]


def test_commands_without_a_model_never_import_torch(tmp_path):
    """torch (with timm and torchvision) takes 4-7 s to import on 2 cores: synth, prepare
    (HOG scores in numpy, --preview), evaluate, damage-map, footprints and building-heights
    run without it, all in one process here, so none of them may load it."""
    code = f"""
import sys
from pathlib import Path
from rsgeo.cli.app import main
t = Path({str(tmp_path)!r})
c = lambda k: str(t / "city" / f"city_000_{{k}}")
for args in (["synth", "-o", str(t / "city"), "--size", "256", "--preview"],
             ["prepare", str(t / "city"), "-o", str(t / "chips"), "--size", "64",
              "--preview", str(t / "chips.png")],
             ["evaluate", c("post_ndsm.tif"), c("pre_ndsm.tif")],
             ["damage-map", c("pre_ndsm.tif"), c("post_ndsm.tif"), "-o", str(t / "d.tif")],
             ["footprints", c("landcover.tif"), "--class", "8", "-o", str(t / "b.gpkg")],
             ["building-heights", c("pre_ndsm.tif"), "--buildings", c("footprints.gpkg"),
              "--prefix", "m_", "-o", str(t / "h.gpkg")]):
    assert main(args) == 0, args
print("TORCH", [m for m in ("torch", "timm", "torchvision") if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TORCH []" in out.stdout, out.stdout[-300:]
    assert (tmp_path / "chips.png").stat().st_size > 1000 and (tmp_path / "h.gpkg").is_file()


def test_training_and_export_refuse_bad_arguments_before_torch_loads(tmp_path):
    """A mistyped dataset, task, encoder or model, or an occupied run folder, is answered in
    about a second (exit 2, one line), not after torch's and timm's 4-7 s import."""
    (tmp_path / "chips").mkdir()
    (tmp_path / "chips" / "dataset.json").write_text("{}")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.ckpt").write_bytes(b"never read")
    (tmp_path / "out.onnx").write_bytes(b"")
    code = f"""
import contextlib, io, os, sys
from rsgeo.cli.app import main
os.chdir({str(tmp_path)!r})
ft = ["finetune", "chips", "--task", "height", "--backbone", "vit-tiny-4", "-o"]
for args, want in (
        (["finetune", "nosuch", "--task", "height", "-o", "r1"], "nosuch: not a chip dataset"),
        (["finetune", "chips", "--task", "heigth", "-o", "r1"], "unknown task 'heigth'"),
        (ft + ["r1", "--encoder", "nosuch.pt"], "nosuch.pt: encoder checkpoint not found"),
        (["finetune", "chips", "--task", "height", "-o", "r1"], "random needs --backbone"),
        (ft + ["busy"], "busy: exists"),
        (ft + ["empty", "--resume"], "--resume: no checkpoint"),
        (["pretrain", "nosuch", "--method", "mae", "--backbone", "vit-tiny-4", "-o", "r2"],
         "nosuch: not a chip dataset"),
        (["pretrain", "chips", "--method", "mae", "--backbone", "vit-tiny-4", "-o", "busy"],
         "busy: exists"),
        (["export", "nosuch.ckpt", "-o", "m.onnx"], "nosuch.ckpt: no such model file"),
        (["export", "model.ckpt", "-o", "out.onnx"], "out.onnx: "),
        (["predict-height", "nosuch.tif", "-m", "model.ckpt", "-o", "h.tif"], "nosuch.tif: no such"),
        (["predict", "nosuch.tif", "-m", "model.ckpt", "-o", "h.tif"], "nosuch.tif: no such")):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(args)
    line = err.getvalue().strip()
    assert rc == 2 and want in line and "\\n" not in line, (args, rc, line)
print("TORCH", [m for m in ("torch", "timm") if m in sys.modules], sorted(os.listdir()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TORCH [] ['busy', 'chips', 'empty', 'model.ckpt', 'out.onnx']" in out.stdout, \
        out.stdout[-500:]
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_every_float_option_refuses_nan_and_inf(cli):
    """nan or +-inf in any float option of any command is one line naming the option, exit
    2, before the command runs (footprints --tolerance nan crashed with AttributeError,
    --min-area inf with OverflowError; damage-map --min-height nan found nothing, exit 0;
    building-heights --max-height nan turned the height check off)."""
    import typer

    from rsgeo.cli.app import app
    from rsgeo.cli.options import is_float_option

    seen = set()
    for name, cmd in typer.main.get_command(app).commands.items():
        for opt in (p.opts[0] for p in cmd.params if is_float_option(p)):
            seen.add(f"{name} {opt}")
            for bad in ("nan", "inf", "-inf"):
                code, out, err = cli(name, opt, bad)
                assert code == 2 and out == "", (name, opt, bad, err)
                assert len(err.strip().splitlines()) == 1 and opt in err, (name, opt, bad, err)
                # the finite rule, or typer's min/max where the option has one
                assert "must be a finite number" in err or "Input should be" in err, err
    assert {"footprints --tolerance", "footprints --min-area", "footprints --class",
            "damage-map --min-height", "damage-map --min-area", "building-heights --max-height",
            "evaluate --min-area", "pretrain --lr", "finetune --layer-decay", "synth --gsd",
            "prepare --max-nodata", "predict --threshold"} <= seen, sorted(seen)


def test_errors_are_one_line_with_exit_codes(cli, monkeypatch):

    from rsgeo.cli import app as app_module
    from rsgeo.errors import InputError

    @app_module.app.command("_fail_input", hidden=True)
    def _fail_input():
        raise InputError("broken thing", "some/file.tif")

    @app_module.app.command("_fail_runtime", hidden=True)
    def _fail_runtime():
        raise RuntimeError("deep failure\nsecond line")

    try:
        code, out, err = cli("_fail_input")
        assert code == 2 and err.strip() == "rsgeo: error: some/file.tif: broken thing"
        code, out, err = cli("_fail_runtime")
        assert code == 1 and err.strip() == "rsgeo: error: RuntimeError: deep failure"
        code, out, err = cli("-vv", "_fail_runtime")
        assert code == 1 and "Traceback" in err
    finally:
        app_module.app.registered_commands[:] = [
            c for c in app_module.app.registered_commands
            if c.name not in ("_fail_input", "_fail_runtime")]


def _closed_stdout(*args, stderr_closed=False):
    """``rsgeo ARGS`` writing into a pipe whose reader is gone (``rsgeo ... | head -1`` once
    head has exited): (exit code, stderr)."""
    import os

    r, w = os.pipe()
    os.close(r)
    err_r, err_w = os.pipe()
    if stderr_closed:
        os.close(err_r)
    try:
        p = subprocess.Popen([sys.executable, "-m", "rsgeo", *map(str, args)], stdout=w,
                             stderr=w if stderr_closed else err_w)
    finally:
        os.close(w)
        os.close(err_w)
    if stderr_closed:
        return p.wait(timeout=120), ""
    with os.fdopen(err_r) as f:
        err = f.read()
    return p.wait(timeout=120), err


def test_a_closed_stdout_ends_quietly_with_141(tmp_path, cli, monkeypatch):
    """`rsgeo ... | head -1`: the reader leaves early; rsgeo stops without a traceback or an
    "Exception ignored" line and exits 141 (128 + SIGPIPE, as a shell reports it). It exited
    1, a runtime failure by rsgeo's exit codes, from typer.echo (click) and rich tables
    alike; a scripted `set -o pipefail` could not tell it from a crash."""
    from rsgeo.cli import app as app_module
    from tests.conftest import make_raster

    a = make_raster(tmp_path / "a.tif", np.ones((8, 8), np.float32), nodata=-9999)
    for args in (["--version"], ["completion", "bash"], ["evaluate", a, a]):  # echo, rich
        code, err = _closed_stdout(*args)
        assert (code, err) == (141, ""), args
    code, _ = _closed_stdout("evaluate", tmp_path / "missing.tif", a, stderr_closed=True)
    assert code == 141  # the error line itself met the closed pipe: no traceback either

    @app_module.app.command("_pipe", hidden=True)
    def _pipe():  # a pipe of rsgeo's own broke, stdout is fine: a failure, said in one line
        raise BrokenPipeError(32, "Broken pipe")

    try:
        code, out, err = cli("_pipe")
        assert code == 1 and err.strip() == "rsgeo: error: BrokenPipeError: [Errno 32] Broken pipe"
    finally:
        app_module.app.registered_commands[:] = [
            c for c in app_module.app.registered_commands if c.name != "_pipe"]


def test_names_that_are_not_utf8_are_bad_input(tmp_path, cli):
    """A Latin-1 file name (``caf\\xe9.tif``, as unzipped from an old archive) reaches Python
    as surrogate escapes, which rasterio and pyogrio cannot encode: every command failed with
    `UnicodeEncodeError`, exit 1. Given on the command line it is refused naming the
    option, found in a folder naming the file; exit 2 both, the bytes shown as \\xNN."""
    import os

    from tests.conftest import make_raster

    name = os.fsdecode(b"caf\xe9.tif")
    for folder in ("pred", "ref"):
        (tmp_path / folder).mkdir()
        tif = make_raster(tmp_path / folder / "a.tif", np.ones((8, 8), np.float32), nodata=-9999)
        try:  # (GDAL cannot write the name either)
            tif.rename(tif.with_name(name))
        except (OSError, UnicodeError):
            pytest.skip("this file system takes UTF-8 names only")
    code, _, err = cli("evaluate", tmp_path / "pred" / name, tmp_path / "ref" / name)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "'pred'" in err and "caf\\xe9.tif' is not valid UTF-8" in err, err
    code, _, err = cli("footprints", tmp_path / "ref" / name, "-o", tmp_path / "x\udce9.gpkg")
    assert code == 2 and "'--output'" in err and "x\\xe9.gpkg' is not valid UTF-8" in err, err
    code, _, err = cli("evaluate", tmp_path / "pred", tmp_path / "ref")  # found in the folders
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("rsgeo: error: ") and "caf\\xe9.tif: the name is not valid UTF-8" in err


def test_a_signal_outside_training_gives_one_line_and_128_plus_the_signal(cli, tmp_path):
    """SIGTERM (a scheduler, ``timeout``) or Ctrl-C while a command works outside a training
    loop (prepare, predict-height, a training run's start-up): the file being written is
    removed, one line names the signal, exit 143 / 130. (Typer turns the KeyboardInterrupt
    into a silent exit 130, for SIGTERM too: no line was printed before.)"""
    import os
    import signal
    import time

    from rsgeo.cli import app as app_module
    from rsgeo.io.atomic import atomic_path

    @app_module.app.command("_signalled", hidden=True)
    def _signalled(name: str):
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("half")
            os.kill(os.getpid(), getattr(signal, name))
            time.sleep(5)  # the handler runs before this returns
            tmp.write_text("whole")

    before = signal.getsignal(signal.SIGTERM)
    try:
        for name, want in (("SIGTERM", 143), ("SIGINT", 130)):
            code, out, err = cli("_signalled", name)
            assert code == want, err
            assert err.strip() == {"SIGTERM": "rsgeo: stopped by SIGTERM; unfinished outputs removed",
                                   "SIGINT": "rsgeo: interrupted; unfinished outputs removed"}[name]
            assert list(tmp_path.iterdir()) == []
        assert signal.getsignal(signal.SIGTERM) is before  # main() puts the handler back
    finally:
        app_module.app.registered_commands[:] = [
            c for c in app_module.app.registered_commands if c.name != "_signalled"]


def test_verbosity_flags_work_after_the_subcommand(cli, tmp_path):
    from rsgeo.cli.app import hoist_global_flags

    assert hoist_global_flags(["synth", "-o", "x", "-q"]) == ["-q", "synth", "-o", "x"]
    assert hoist_global_flags(["-v", "evaluate", "a", "-vv", "--", "-q"]) == \
        ["-v", "-vv", "evaluate", "a", "--", "-q"]
    from rsgeo.cli.app import state

    code, _, err = cli("synth", "-o", tmp_path / "s", "--size", "96", "-q")
    assert code == 0 and state["verbose"] == 0, err
    code, _, err = cli("synth", "-o", tmp_path / "t", "--size", "96", "-vv")
    assert code == 0 and state["verbose"] == 3, err


def test_help_has_no_type_noise(cli):
    for args in (["--help"], ["predict-height", "--help"], ["finetune", "--help"],
                 ["evaluate", "--help"]):
        code, out, _ = cli(*args)
        assert code == 0 and "--help" in out
        for noise in ("<bool>", "list[", "range>"):
            assert noise not in out, (args, noise)


def test_doctor_reports_versions_devices_and_threads(cli):
    import json

    from rsgeo.doctor import _version

    code, out, err = cli("doctor")
    assert code == 0, err
    assert "GDAL" in out and "PROJ" in out and "onnxruntime" in out and "torch" in out
    code, out, err = cli("doctor", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["rsgeo"] and r["geo"]["gdal"] and r["geo"]["proj"]
    assert "CPUExecutionProvider" in r["onnxruntime"]["providers"]
    assert r["threads"]["cpus"] >= 1 and r["threads"]["io"] >= 1
    assert isinstance(r["torch"]["cuda_available"], bool)
    assert _version("a_package_that_is_not_installed") is None


def test_every_option_and_argument_has_help(cli):
    """`rsgeo CMD --help` explains every option (finetune's --epochs, --device, --precision,
    --seed and --workers had none: a bare `[default: 0]` for --workers)."""
    import typer

    from rsgeo.cli.app import app

    command = typer.main.get_command(app)
    missing = []
    for name, cmd in command.commands.items():
        ctx = cmd.make_context(name, ["--help"], resilient_parsing=True)
        for p in cmd.get_params(ctx):
            if not (getattr(p, "help", None) or "").strip():
                missing.append(f"{name} {p.opts[0]}")
    assert not missing, missing


def test_every_command_help_ends_with_examples_that_parse(cli, monkeypatch):
    """`rsgeo --help` and `rsgeo CMD --help` end with examples (they had none: the README was
    the only place to see a whole command line). Each example parses as its command (options, choices, types
    and required values as they are) and fits an 80-column terminal unwrapped."""
    import shlex

    import typer

    from rsgeo.cli.app import app

    monkeypatch.setenv("COLUMNS", "80")
    command = typer.main.get_command(app)
    for name, cmd in {"": command, **command.commands}.items():
        if cmd.hidden:
            continue
        lines = (cmd.epilog or "").splitlines()
        assert lines[:1] == ["Examples:"] and any(x.startswith("rsgeo ") for x in lines), name
        code, out, _ = cli(*[name] * bool(name), "--help")
        assert code == 0 and "Examples:" in out, name
        for line in lines[2:]:
            assert len(line) <= 78 and f" {line.rstrip()}" in out, (name, line)
            words = shlex.split(line, comments=True)
            words = words[:next((i for i, w in enumerate(words) if w in "|>"), len(words))]
            if words[1:2] == ["CMD"]:
                continue
            assert words[0] == "rsgeo" and words[1] == (name or words[1]), line
            sub = command.commands[words[1]]
            sub.make_context(words[1], words[2:])  # an unknown option or a bad value raises


def test_every_output_option_says_what_it_writes():
    """-o's help said "Output path." on synth, prepare, export, footprints, building-heights,
    damage-map and evaluate: not whether a file or a folder, which formats, or what happens
    without it (damage-map writes into the current folder, evaluate prints)."""
    import typer

    from rsgeo.cli.app import app

    command = typer.main.get_command(app)
    for name, cmd in command.commands.items():
        ctx = cmd.make_context(name, ["--help"], resilient_parsing=True)
        for p in cmd.get_params(ctx):
            if "--output" in getattr(p, "opts", ()):
                assert p.help != "Output path." and len(p.help) > 20, (name, p.help)
    helps = {n: next(p.help for p in c.params if "--output" in getattr(p, "opts", ()))
             for n, c in command.commands.items() if n in ("damage-map", "evaluate", "synth")}
    assert "current folder" in helps["damage-map"] and "instead of printing" in helps["evaluate"]
    assert "Folder" in helps["synth"]


def test_help_keeps_declared_metavars(cli, monkeypatch):
    """An option's own metavar says what to type (`--co KEY=VALUE`, `--bands B,G,R`,
    `--min-area M2`); the help showed `<str>...`, `<str>`, `<float>` instead."""
    import re

    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = cli("predict-height", "--help")
    for opt, shown in (("--co", "KEY=VALUE"), ("--bands", "B,G,R"), ("--nodata", "V"),
                       ("--max-pixels", "N"), ("--tile", "<int>")):
        assert re.search(rf"{opt}\s+{re.escape(shown)}\s", out), (opt, shown)
    _, out, _ = cli("footprints", "--help")
    assert re.search(r"--min-area\s+M2\s", out)


def test_json_help_of_the_prediction_commands_says_json_lines(cli, monkeypatch):
    """predict and predict-height print one JSON object per file and one of totals, which
    `python -m json.tool` refuses as one document; their --json help said 'a JSON summary'."""
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("predict", "predict-height"):
        _, out, _ = cli(name, "--help")
        assert "JSON Lines" in out, name
    _, out, _ = cli("prepare", "--help")
    assert "JSON Lines" not in out and "JSON summary" in out


def test_the_installed_console_script_runs_and_passes_exit_codes(tmp_path):
    """The ``rsgeo`` script pip installs (``rsgeo.__main__:run``): tests/test_readme.py runs its
    commands in a warm process (tests/forkserver.py), so the script itself is checked here."""
    exe = Path(sys.executable).parent / "rsgeo"
    if not exe.exists():
        pytest.skip("rsgeo is not installed in this environment")
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.startswith("rsgeo ")
    r = subprocess.run([str(exe), "evaluate", str(tmp_path / "a.tif"), str(tmp_path / "b.tif")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().endswith("a.tif: no such file or folder")


def _path_params(value):
    """``(command, param, argv)`` for every path option and argument of every command, argv
    giving it the text ``value`` (arguments before it get a placeholder; nothing else is
    needed: the value is checked as it is read)."""
    import typer

    from rsgeo.cli.app import app

    command = typer.main.get_command(app)
    for name, cmd in sorted(command.commands.items()):
        args = [p.name for p in cmd.params if p.param_type_name == "argument"]
        for p in cmd.params:
            if "Path" in str(getattr(p.type_descriptor, "annotation", "")):
                yield name, p, ([name, p.opts[0], value] if p.param_type_name == "option"
                                else [name, *["x"] * args.index(p.name), value])


def test_dash_is_refused_for_every_path_but_evaluate_output(tmp_path, cli, monkeypatch):
    """No command reads stdin or writes its data to stdout, but `-` was taken as a name:
    `evaluate -o -` wrote a file named `-`, `synth -o -` made a folder `-`. Every path option
    and argument refuses it (exit 2, one line naming it); `evaluate -o -` prints what the
    file would hold, as --json prints it."""
    monkeypatch.chdir(tmp_path)
    checked = 0
    for name, p, argv in _path_params("-"):
        if (name, p.name) == ("evaluate", "output"):
            continue
        code, _, err = cli(*argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, p.name, err)
        assert "'-' (stdin/stdout) is not supported" in err, (name, p.name, err)
        assert (p.opts[-1] if p.param_type_name == "option" else f"'{p.name}'") in err, err
        checked += 1
    assert checked > 40 and not list(tmp_path.iterdir())
    from tests.conftest import make_raster

    a = make_raster(tmp_path / "a.tif", np.arange(64, dtype=np.float32).reshape(8, 8) / 8)
    b = make_raster(tmp_path / "b.tif", np.ones((8, 8), np.float32))
    code, out, err = cli("evaluate", a, b, "-o", "-")
    _, as_json, _ = cli("evaluate", a, b, "--json")
    assert code == 0 and out == as_json and len(out.splitlines()) == 1, err
    code, out, _ = cli("evaluate", a, b, "-o", "-", "--format", "csv")
    assert code == 0 and out.splitlines()[-1].startswith("ALL,")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.tif", "b.tif"]


def test_a_trailing_slash_means_a_folder(tmp_path, cli, monkeypatch):
    """`evaluate -o dir/` wrote a FILE `dir` (the path type drops the slash). A path typed
    with a trailing / is a folder: options that take a file (metavar FILE) refuse it, exit 2
    naming the option; so does any path that is an existing file (`a.tif/`); options that
    take a file or a folder (predict's -o) write into the folder (tests/test_infer_stream.py)."""
    from tests.conftest import make_raster

    monkeypatch.chdir(tmp_path)
    files = [x for x in _path_params("out/") if x[1].metavar in ("FILE", "FILE|-")]
    assert {n for n, _, _ in files} >= {"evaluate", "export", "footprints", "building-heights",
                                        "damage-map", "prepare"}
    for name, p, argv in files:
        code, _, err = cli(*argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (name, p.name, err)
        assert p.opts[-1] in err and "'out/' ends in '/', which names a folder" in err, err
    a = make_raster(tmp_path / "a.tif", np.ones((8, 8), np.float32))
    code, _, err = cli("evaluate", a, a, "-o", "dir/")
    assert code == 2 and not (tmp_path / "dir").exists()
    code, _, err = cli("evaluate", f"{a}/", a)
    assert code == 2 and f"but {a} is a file" in err, err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.tif"]
    code, _, err = cli("synth", "-o", "city/", "--size", "64")  # a folder option: as before
    assert code == 0 and (tmp_path / "city").is_dir(), err
