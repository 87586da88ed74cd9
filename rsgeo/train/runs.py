"""The one owner of run folders for training commands (pretrain, finetune).

:func:`claim_run` wraps :func:`rsgeo.io.atomic.claim_folder` (create, mark, refuse, replace
only rsgeo's own folder of the same kind) with the two rules training adds: only rank 0
touches the folder under torchrun, and ``--resume`` needs a checkpoint to resume from.
"""

from __future__ import annotations

from pathlib import Path

from rsgeo.errors import InputError
from rsgeo.io.atomic import claim_folder
from rsgeo.train.distributed import env_info


def claim_run(out: Path, kind: str, *, resume: bool = False, overwrite: bool = False) -> None:
    """Claim ``out`` as a ``kind`` run folder (rank 0 only; other ranks return at once)."""
    out = Path(out)
    if env_info().rank != 0:
        return
    if resume and not (out / "checkpoints" / "last.pt").is_file():
        raise InputError("--resume: no checkpoint in this run folder", out)
    claim_folder(out, kind, overwrite=overwrite, resume=resume)
