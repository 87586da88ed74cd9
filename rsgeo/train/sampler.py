"""A sampler that shards one seeded permutation over ranks and can start mid-epoch.

Like ``DistributedSampler`` (``set_epoch`` reshuffles, rank ``r`` of ``W`` takes every
``W``-th index), plus ``set_start`` so a resumed run skips the batches it already did
without loading them. Rank ``r`` takes ``perm[r::W]``, so global batch ``k`` of a W-rank
run holds exactly the samples of batch ``k`` in a one-process run with the same global
batch: runs agree whatever the number of processes.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ShardedSampler(Sampler[int]):
    def __init__(self, n: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        self.n, self.world_size, self.rank = n, world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0
        self.per_rank = n // world_size  # the tail that does not split evenly is dropped

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` and start from its beginning."""
        self.epoch, self.start = epoch, 0

    def set_start(self, start: int) -> None:
        """Skip this rank's first ``start`` samples of the current epoch (resume)."""
        self.start = start

    def order(self) -> list[int]:
        """This rank's indices for the current epoch, from its beginning."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        perm = perm[: self.per_rank * self.world_size]
        return perm[self.rank::self.world_size].tolist()

    def __iter__(self):
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start
