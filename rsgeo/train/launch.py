"""Where this process sits in a ``torchrun`` launch, read from its environment (no torch).

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for every process it starts; a
plain ``python -m rsgeo`` run has none of them and is rank 0 of 1. Reading them needs no
torch, so run folders are checked (rank 0 claims them) before torch loads;
:mod:`rsgeo.train.distributed` joins the process group from the same numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (defaults: one process)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))
