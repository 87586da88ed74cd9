"""A sampler that shards one seeded permutation over ranks and can start mid-epoch.

Like ``DistributedSampler`` (``set_epoch`` reshuffles, rank ``r`` of ``W`` takes every
``W``-th index), plus ``set_start`` so a resumed run skips the batches it already did
without loading them. Rank ``r`` takes ``perm[r::W]``, so global batch ``k`` of a W-rank
run holds exactly the samples of batch ``k`` in a one-process run with the same global
batch: runs agree whatever the number of processes.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler


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


class EpochBatches(Sampler[list]):
    """Micro-batches of ``(epoch, index)`` keys for a whole run, epoch after epoch.

    One DataLoader iterator can then serve every epoch: the epoch travels with each index
    (:class:`EpochIndexed` hands it to the dataset's ``set_epoch`` inside the worker), so
    persistent workers are never torn down between epochs. Starting at ``(epoch, start)``
    it yields ``n_batches`` batches of ``batch`` keys; each epoch yields only whole
    optimiser steps (``step_samples`` = micro-batch x accumulation), exactly what the
    training loop consumes of it, and the rest of the epoch is dropped as before.
    """

    def __init__(self, sampler: ShardedSampler, batch: int, step_samples: int, epoch: int,
                 start: int, n_batches: int):
        import copy

        self.sampler = copy.copy(sampler)
        self.batch, self.step_samples = batch, step_samples
        self.epoch, self.start, self.n_batches = epoch, start, n_batches

    def __iter__(self):
        epoch, start, left = self.epoch, self.start, self.n_batches
        while left > 0:
            self.sampler.set_epoch(epoch)
            order = self.sampler.order()
            usable = (len(order) - start) // self.step_samples * self.step_samples
            if usable <= 0 and start == 0:
                return  # an epoch without one whole step (the engine refuses this)
            for k in range(start, start + usable, self.batch):
                if left == 0:
                    return
                yield [(epoch, i) for i in order[k:k + self.batch]]
                left -= 1
            epoch, start = epoch + 1, 0

    def __len__(self) -> int:
        return self.n_batches


class EpochIndexed(Dataset):
    """``dataset[(epoch, i)]``: sets the wrapped dataset's epoch (if it has ``set_epoch``)
    when it changes, then returns ``dataset[i]``; works the same inside worker processes."""

    def __init__(self, dataset):
        self.dataset, self.epoch = dataset, None
        self.has_epoch = hasattr(dataset, "set_epoch")

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        if self.has_epoch and epoch != self.epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset[i]


class EpochBatched(EpochIndexed):
    """:class:`EpochIndexed` that builds whole batches: the DataLoader's fetcher calls
    ``__getitems__(keys)`` once per batch, which returns ``dataset.get_batch(indices)``
    (already collated; pair it with :func:`whole_batch` as ``collate_fn``). The keys of
    one batch share an epoch (:class:`EpochBatches` never mixes epochs in a batch)."""

    def __getitems__(self, keys):
        epochs = {e for e, _ in keys}
        if len(epochs) != 1:
            raise ValueError(f"a batch mixes epochs {sorted(epochs)}")
        epoch = epochs.pop()
        if self.has_epoch and epoch != self.epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        return self.dataset.get_batch([i for _, i in keys])


def whole_batch(batch):
    """``collate_fn`` for :class:`EpochBatched`: the batch is collated already."""
    return batch
