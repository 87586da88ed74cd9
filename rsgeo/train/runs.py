"""The one owner of run folders for training commands (pretrain, finetune).

:func:`claim_run` wraps :func:`rsgeo.io.atomic.claim_folder` (create, mark, refuse, replace
only rsgeo's own folder of the same kind) with the two rules training adds: only rank 0
touches the folder under torchrun, and ``--resume`` needs a checkpoint to resume from.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from rsgeo.errors import InputError
from rsgeo.io.atomic import check_folder_claim, claim_folder, marker_kind
from rsgeo.train.launch import env_info


def claim_run(out: Path, kind: str, *, resume: bool = False, overwrite: bool = False,
              inputs: Iterable = ()) -> None:
    """Claim ``out`` as a ``kind`` run folder (rank 0 only; other ranks return at once).

    ``inputs`` (the chip dataset's folder): a run folder equal to or inside one is refused;
    in-memory datasets are skipped.
    """
    out = Path(out)
    inputs = [p for p in inputs if isinstance(p, (str, os.PathLike))]
    if env_info().rank != 0:
        return
    check_run(out, kind, resume=resume, overwrite=overwrite, inputs=inputs)
    claim_folder(out, kind, overwrite=overwrite, resume=resume, inputs=inputs)


def check_run(out: Path, kind: str, *, resume: bool = False, overwrite: bool = False,
              inputs: Iterable = ()) -> None:
    """:func:`claim_run`'s refusals, touching nothing: the CLI makes them before torch
    loads (rank 0 only, as there: other ranks may see the folder rank 0 already claimed)."""
    out = Path(out)
    if env_info().rank != 0:
        return
    if resume:
        check_resumable(out, kind)
    check_folder_claim(out, kind, overwrite=overwrite, resume=resume, inputs=inputs)


WHAT = {"pretrain": "a pretrain run", "finetune": "a finetune run",
        "chips": "a chip dataset (rsgeo prepare)", "demo": "an rsgeo demo folder"}


def check_resumable(out: Path, kind: str) -> None:
    """InputError unless ``out`` is a ``kind`` run folder with a checkpoint: a missing or
    empty folder, or another kind of rsgeo folder (a pretrain run given to finetune, a chip
    dataset), is named as such before anything is loaded."""
    if not out.is_dir():
        raise InputError("is a file, not a folder" if out.exists() else
                         "--resume: no such run folder", out)
    found = marker_kind(out)
    if found is not None and found != kind:
        raise InputError(f"--resume: this is {WHAT.get(found, f'an rsgeo {found} folder')}, "
                         f"not {WHAT[kind]}; give the folder the {kind} run wrote", out)
    if not (out / "checkpoints" / "last.pt").is_file():
        raise InputError("--resume: no checkpoint in this run folder", out)


@contextmanager
def removed_if_refused(out: Path) -> Iterator[None]:
    """A run folder this command created is removed again when the run is refused.

    An ``InputError`` (a bad option found after the folder was claimed, a batch larger
    than the dataset) leaves nothing behind, unless a checkpoint was already written; a
    crash or a signal keeps the folder, which the rerun accepts (``--overwrite``/``--resume``).
    """
    out = Path(out)
    created = not out.exists()
    try:
        yield
    except InputError:
        if created and env_info().rank == 0 and not (out / "checkpoints").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
