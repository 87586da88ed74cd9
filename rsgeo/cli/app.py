"""The ``rsgeo`` Typer app: global options, command registration, errors -> exit codes.

Exit codes: 0 ok, 1 runtime failure, 2 bad input or usage, 141 (quietly) when the reader of
stdout is gone (``rsgeo ... | head -1``), 130 / 143 stopped by SIGINT /
SIGTERM: training after saving its checkpoint (``--resume`` continues it), any other command
at once, its unfinished outputs removed (130 also for any other interruption). Errors
print one line on stderr (``rsgeo: error: path: problem``); ``-vv`` adds the traceback. Command modules import typer and light rsgeo modules
(``cli.options``, ``errors``, ``jsonout``, ``progress``, ``data.sources``) at module level;
library modules that pull in torch, rasterio, geopandas or onnxruntime are imported inside
the commands under a ``# lazy: keep rsgeo --help fast`` comment, so ``rsgeo --help`` and
``rsgeo --version`` stay fast.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import logging
import os
import re
import signal
import sys
import threading
import traceback
from typing import Annotated, Optional

import typer

from rsgeo import __version__, progress
from rsgeo.cli.helptext import examples, reflow
from rsgeo.cli.options import (NOT_UTF8, finite_floats, no_empty_values, path_values, shown,
                               utf8_values)
from rsgeo.errors import (NO_ROOM, STOPPED, Interrupted, PeerFailed, RsgeoError, Terminated,
                          first_line)

app = typer.Typer(
    name="rsgeo",
    help="Building heights, change and damage from aerial RGB and surface models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
    epilog=examples(
        "rsgeo synth -o city --size 512",
        "rsgeo footprints city/city_000_landcover.tif --class 8 -o buildings.gpkg",
        "rsgeo damage-map city/city_000_pre_ndsm.tif city/city_000_post_ndsm.tif --json",
        "rsgeo CMD --help  # every command's options and examples"),
)

state = {"verbose": 0}


def _version(value: bool):
    if value:
        typer.echo(f"rsgeo {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True,
                                         help="More output (-vv: debug, tracebacks).")] = 0,
    quiet: Annotated[int, typer.Option("-q", "--quiet", count=True,
                                       help="Less output (no progress bars).")] = 0,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version,
                                                    is_eager=True, help="Show the version.")] = None,
):
    """rsgeo: chips, pretraining, fine-tuning, large-raster height inference, damage maps, metrics."""
    level = 1 + verbose - quiet  # 0 quiet, 1 default, 2 info, 3+ debug and tracebacks
    state["verbose"] = level
    progress.ENABLED = False if level <= 0 else None  # None: bars only on a terminal
    logging.basicConfig(format="rsgeo: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.getLogger("rsgeo").setLevel(
        [logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG][max(min(level, 3), 0)])


COMMANDS: list[str] = ["synth", "prepare", "pretrain", "finetune", "export", "predict", "predict_height", "damage_map", "footprints", "building_heights", "evaluate", "demo", "doctor", "completion"]


def _register() -> None:
    # Each module adds its own command(s) to `app`; only commands that work are listed.
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"rsgeo.cli.{name}")
    # help texts re-wrapped to the terminal: Typer keeps a docstring's own line breaks, which
    # at another width leave every other line half empty
    # (a computed help, e.g. pretrain's registered methods, reflows itself when it is read)
    for info in app.registered_commands:
        if inspect.isfunction(info.callback) and info.help is None and info.callback.__doc__:
            info.help = reflow(info.callback.__doc__)
        if info.short_help is None and info.help:
            info.short_help = info.help.split("\n\n")[0]


_register()


def _sigterm(signum, frame):
    """SIGTERM -> :class:`~rsgeo.errors.Terminated` (a KeyboardInterrupt), so atomic outputs
    remove their temporary files as for Ctrl-C; a second SIGTERM while unwinding is ignored
    (it would cut the clean-up short). Training installs its own handler while it runs."""
    if state.get("stopped_by"):
        return
    state["stopped_by"] = "SIGTERM"
    raise Terminated


def _sigint(signum, frame):
    """Ctrl-C -> :class:`~rsgeo.errors.Interrupted` (a KeyboardInterrupt), noted so that
    ``main`` can say so (Typer turns a KeyboardInterrupt into a silent exit 130)."""
    state["stopped_by"] = state.get("stopped_by") or "SIGINT"
    raise Interrupted


@contextlib.contextmanager
def _lost_stops_raised_again():
    """Raise again a stop that Python could not raise where the signal came.

    A signal handler runs wherever the main thread is, a ``__del__`` or a weakref callback
    included (the thread pools and GDAL handles of a command make plenty of them), and an
    exception there is only printed ("Exception ignored in ...") and dropped: the command
    carried on to its end as if never stopped (exit 0, a traceback on stderr). Here the
    dropped stop is raised again 1 ms later (SIGALRM) in whatever runs then, as often as it
    takes; any other such exception still goes to the usual hook. POSIX only (setitimer).
    """
    if not hasattr(signal, "setitimer"):
        yield
        return
    hook = sys.unraisablehook

    def dropped(unraisable) -> None:
        kind = unraisable.exc_type
        if state.get("stopped_by") and kind is not None and issubclass(kind, KeyboardInterrupt):
            state["again"] = kind
            signal.setitimer(signal.ITIMER_REAL, 0.001)
        else:
            hook(unraisable)

    def again(signum, frame) -> None:
        kind = state.pop("again", None)
        if kind is not None:
            raise kind

    alarm = signal.signal(signal.SIGALRM, again)
    sys.unraisablehook = dropped
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        state.pop("again", None)
        sys.unraisablehook = hook
        signal.signal(signal.SIGALRM, alarm if alarm is not None else signal.SIG_DFL)


GLOBAL_FLAGS = re.compile(r"^(-v+|-q+|--verbose|--quiet)$")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move ``-v``/``-q`` given after the subcommand in front of it (``rsgeo CMD ... -q``).

    Only flags before a ``--`` move; no subcommand defines ``-v`` or ``-q`` itself.
    """
    cmd = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if cmd is None:
        return list(argv)
    end = argv.index("--") if "--" in argv[cmd:] else len(argv)
    moved = [a for a in argv[cmd + 1:end] if GLOBAL_FLAGS.match(a)]
    rest = [a for a in argv[cmd + 1:end] if not GLOBAL_FLAGS.match(a)]
    return argv[:cmd] + moved + [argv[cmd]] + rest + argv[end:]


def tidy_help(command) -> None:
    """Help without type noise: no ``<bool>`` on flags, ``<path>...`` not ``<list[Path]>``.

    Typer labels every parameter with its Python annotation; a user wants the value's kind.
    An option that declares its own metavar (``--co KEY=VALUE``, ``--min-area M2``) keeps it.
    """
    from typing import get_args

    def label(p) -> str | None:
        desc = getattr(p, "type_descriptor", None)
        if desc is None or desc.is_choice:
            return None
        ann = desc.annotation
        if desc.is_list and get_args(ann):
            ann = get_args(ann)[0]
        name = getattr(ann, "__name__", str(ann)).lower()
        return f"<{'path' if 'path' in name else name}>" + ("..." if desc.is_list else "")

    def quiet_help_option(cmd) -> None:
        original = cmd.get_help_option

        def get_help_option(ctx):
            opt = original(ctx)
            if opt is not None:
                opt.metavar = ""
            return opt

        cmd.get_help_option = get_help_option

    for cmd in (command, *getattr(command, "commands", {}).values()):
        quiet_help_option(cmd)
        for p in cmd.params:
            if getattr(p, "is_flag", False) or getattr(p, "count", False):
                p.metavar = ""
            elif p.param_type_name == "argument":
                text = label(p)
                if text:
                    p.display_type_rich = lambda ctx, text=text: text
            elif label(p) and not p.metavar:  # a declared metavar (KEY=VALUE, M2) says more
                p.metavar = label(p)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (tests call this; ``run`` exits with it)."""
    argv = hoist_global_flags(sys.argv[1:] if argv is None else list(argv))
    command = typer.main.get_command(app)
    tidy_help(command)
    finite_floats(command)
    no_empty_values(command)
    utf8_values(command)
    path_values(command)
    state["stopped_by"] = None
    previous, main_thread = {}, threading.current_thread() is threading.main_thread()
    if main_thread:  # signals: main thread only
        for sig, handler in ((signal.SIGTERM, _sigterm), (signal.SIGINT, _sigint)):
            previous[sig] = signal.signal(sig, handler)
    try:
        with _lost_stops_raised_again() if main_thread else contextlib.nullcontext():
            code = _run(command, argv)
    finally:  # a test calling main() in-process gets its own handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if state["stopped_by"] and code in (130, Terminated.exit_code):
        code = Terminated.exit_code if state["stopped_by"] == "SIGTERM" else 130
        print(STOPPED[code], file=sys.stderr)
    return code


def _run(command, argv: list[str]) -> int:
    """The command's exit code; errors as one line on stderr (see the module docstring)."""
    try:  # recent typer vendors click as typer._click; older releases use click itself
        from typer._click.exceptions import ClickException
        exits, aborts = (typer.Exit,), (typer.Abort, KeyboardInterrupt)
    except ImportError:  # pragma: no cover
        from click.exceptions import Abort, ClickException, Exit
        exits, aborts = (Exit,), (Abort, KeyboardInterrupt)

    try:
        rv = command.main(args=argv, prog_name="rsgeo", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except exits as e:
        return e.exit_code
    except (BrokenPipeError, SystemExit) as e:  # click and rich: EPIPE -> a silent exit 1
        pipe = _broken_pipe(e)
        if pipe is None:
            raise
        if _stdout_gone():
            return stdout_closed()
        print(f"rsgeo: error: {type(pipe).__name__}: {pipe}", file=sys.stderr)  # not stdout's
        return 1
    except ClickException as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            e.show()
            return 0
        ctx = getattr(e, "ctx", None)  # one line, like every other error
        where = ctx.command_path if ctx is not None else "rsgeo"
        msg = e.format_message().replace("Value error, ", "")  # pydantic's, via Typer's choices
        print(f"{where}: error: {msg} (see {where} -h)", file=sys.stderr)
        return e.exit_code
    except aborts:  # main() names the signal (Typer turns a KeyboardInterrupt into Exit 130)
        if not state["stopped_by"]:
            print("rsgeo: interrupted", file=sys.stderr)
        return 130
    except PeerFailed as e:   # under torchrun: the failing rank says why, once
        return e.exit_code
    except RsgeoError as e:
        if state["verbose"] >= 3:
            traceback.print_exc()
        kind = "" if e.exit_code >= 128 else "error: "  # >= 128: stopped by a signal
        print(f"rsgeo: {kind}{e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # runtime failure: one line, traceback with -vv
        if state["verbose"] >= 3:
            traceback.print_exc()
        if isinstance(e, UnicodeEncodeError) and e.reason == "surrogates not allowed":
            # a file name that is not UTF-8, met in a folder or a list (bad input, exit 2)
            where = first_line(ValueError(shown(e.object)))
            print(f"rsgeo: error: {where}: the name is {NOT_UTF8}", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and e.errno in NO_ROOM:  # a write outside the atomic outputs
            where = f"{e.filename}: " if e.filename else ""
            text = e.strerror or os.strerror(e.errno)
            print(f"rsgeo: error: {where}{text[:1].lower() + text[1:]} (write failed)",
                  file=sys.stderr)
            return 1
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"rsgeo: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1


SIGPIPE_EXIT = 141  # 128 + SIGPIPE (13), as a shell reports `yes | head -1`'s yes


def _broken_pipe(e: BaseException | None) -> OSError | None:
    """The EPIPE error ``e`` is, or was raised while handling (None if there is none)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.EPIPE:
            return e
        e = e.__context__
    return None


def _stdout_gone() -> bool:
    """Whether stdout is a pipe or socket without a reader, or /dev/null put there by rich's
    own broken-pipe handler (an EPIPE on another pipe is a runtime failure, not this)."""
    import select
    import stat

    try:
        fd = sys.stdout.fileno()
        st = os.fstat(fd)
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: in-process
        return False
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == os.stat(os.devnull).st_rdev
    if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)):
        return False
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0))


def stdout_closed(streams=("stdout",)) -> int:
    """The reader of stdout went away (``rsgeo ... | head -1``): stop quietly, exit 141.

    Later writes to ``streams`` (and the flush at exit) go to /dev/null, so Python prints no
    "Exception ignored ... BrokenPipeError" either. Exit 1 (click's and rich's answer) would
    read as a runtime failure."""
    for name in streams:
        try:
            fd = getattr(sys, name).fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: in-process
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return SIGPIPE_EXIT


def run() -> None:
    """Run the CLI and exit with its code (:func:`run_code`)."""
    sys.exit(run_code())


def run_code() -> int:
    """:func:`main`'s exit code, and 141 when stderr is closed too while an error line is
    printed. The entry points (``python -m rsgeo``, the ``rsgeo`` script) are
    :func:`rsgeo.__main__.run`, which installs the signal handlers first and calls this."""
    try:
        return main()
    except BrokenPipeError:  # stderr closed too while an error line was printed
        return stdout_closed(("stdout", "stderr"))
