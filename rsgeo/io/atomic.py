"""Atomic outputs and the overwrite guard.

Every file rsgeo writes goes through :func:`atomic_path`: the writer gets a temporary
name in the target folder, which is renamed onto the requested name only when the
block finishes without an exception. On failure or Ctrl-C the temporary file is
removed, so nothing half-written ever stands under the requested name.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rsgeo.errors import InputError, OutputExistsError


def check_output(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an existing ``path`` unless ``overwrite``; check that its folder exists."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise OutputExistsError(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise InputError("output folder does not exist", parent)
    if p.is_dir() and not p.suffix == "":
        raise InputError("output is a folder", p)
    return p


def temp_name(path: Path) -> Path:
    """A hidden temporary sibling of ``path`` keeping its suffix (drivers read it)."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The overwrite guard runs first, so an existing output is refused before any work.
    Folders work too (the temporary folder is renamed as a whole).
    """
    final = check_output(path, overwrite)
    tmp = temp_name(final)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"{final}: writer produced no output")
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        remove(tmp)
        raise


def remove(path: Path) -> None:
    """Remove a file or folder if it exists (plus GDAL's .aux.xml side file)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
    Path(str(path) + ".aux.xml").unlink(missing_ok=True)
