"""Errors that reach the user as one line and an exit code.

``InputError`` (exit 2) is for anything the user can fix by changing the command:
missing or unreadable files, rasters without CRS, mismatched grids, bad options,
existing outputs without ``--overwrite``, an output where the system refuses it (a
read-only or foreign folder, an existing output that may not be replaced).
``RsgeoError`` (exit 1) is for runtime failures, ``OutputWriteError`` among them (the disk
filled up while writing). The message names the file first when there is one:
``path: problem``.
"""

from __future__ import annotations

import errno
import os

#: the OS's errors for a write that found no room: disk full, file size limit, quota
#: (rsgeo.io.atomic names them as OutputWriteError; rsgeo.cli.app as one line, exit 1)
NO_ROOM = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


class RsgeoError(Exception):
    """A failure reported to the user as one line (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(RsgeoError):
    """Bad input or usage the user can fix (exit code 2)."""

    exit_code = 2


class OutputWriteError(RsgeoError):
    """An output could not be written: the disk is full, a file size limit or quota was
    hit, the device failed (exit code 1: the command was right, its surroundings were not).
    The message names the output and the OS's reason: ``out/h.tif: no space left on device
    (write failed)``; the output was not published (an earlier one stays as it was)."""


class PeerFailed(RsgeoError):
    """Under torchrun, another process of the job failed (rank 0 could not save a
    checkpoint: the disk is full): this one stops too, exit code 1, and the CLI prints
    nothing more -- the failing rank says why in its own one line."""

    def __init__(self, message: str = "stopped: another process of this torchrun job failed "
                                      "(it says why)"):
        super().__init__(message)


class OutputExistsError(InputError):
    """The output exists and ``--overwrite`` was not given."""

    def __init__(self, path: str | os.PathLike):
        super().__init__("output exists (use --overwrite to replace it)", path)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside training (``rsgeo.cli.app`` raises it from its signal handler).

    A ``KeyboardInterrupt``, so it unwinds like Ctrl-C: no ``except Exception`` swallows
    it and every atomic output removes its temporary file on the way out. Exit code 143
    (128 + SIGTERM), as a shell reports a process killed by it.
    """

    exit_code = 143


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) outside training, as rsgeo's handlers raise it (exit code 130).

    A subclass rather than ``KeyboardInterrupt`` itself: once a bare KeyboardInterrupt has
    passed through code run by a string ``exec`` (a dataclass or named tuple being built
    while a module imports), CPython ends ``python -m rsgeo`` by SIGINT (-2) instead of with
    the 130 it returns, even though the interruption was caught; only the exact class
    counts there.
    """

    exit_code = 130


# The one line a command stopped by a signal outside training prints, by its exit code
# (rsgeo.cli.app.main, and the entry point for a signal during start-up: rsgeo.__main__).
STOPPED = {143: "rsgeo: stopped by SIGTERM; unfinished outputs removed",
           130: "rsgeo: interrupted; unfinished outputs removed"}


class GridMismatchError(InputError):
    """Two rasters that must share a pixel grid do not."""


def first_line(e: BaseException, limit: int = 160) -> str:
    """An exception's first message line (its class name when empty), at most ``limit`` chars."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return msg if len(msg) < limit else msg[:limit - 3] + "..."
