"""The CLI's entry point: ``python -m rsgeo`` and the ``rsgeo`` script (``[project.scripts]``).

:func:`run` installs its SIGTERM and SIGINT handlers before anything else: the CLI's
imports (typer, rich, every command module: about 0.2-0.4 s) come before
:func:`rsgeo.cli.app.main` installs its own, and a signal in that window used to get
Python's defaults (SIGTERM: the process killed without a line; Ctrl-C: a KeyboardInterrupt
traceback). Here either stops the start-up as it stops a command: one line on stderr,
exit 143 / 130, nothing written. Only light modules are imported before the handlers.
"""

import signal
import sys

from rsgeo.errors import STOPPED, Interrupted, Terminated

_stopping = []  # the first signal's number: a second one while unwinding is ignored


def _startup_signal(signum, frame):
    if _stopping:
        return
    _stopping.append(signum)
    raise Terminated if signum == signal.SIGTERM else Interrupted


def run() -> None:
    """Run the CLI (:func:`rsgeo.cli.app.run_code`) and exit with its code."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _startup_signal)
    try:
        from rsgeo.cli.app import run_code  # lazy: imported once the signal handlers are in place

        code = run_code()
        # the command is over: Python's defaults again while the interpreter shuts down
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except KeyboardInterrupt as e:  # a signal before main() took over, or after it returned
        code = Terminated.exit_code if isinstance(e, Terminated) else 130
        print(STOPPED[code], file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    run()
