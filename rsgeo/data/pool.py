"""Batch buffers that the pipeline rewrites instead of allocating fresh memory per batch.

Writing a batch into freshly allocated memory costs the kernel a page fault and a zeroed
page per 4 KiB: on the 2-core dev machine about 19 ms for the 38.5 MB of 256 RGB crops at
224 px in shared memory, against 4 ms to rewrite memory already mapped, which is more than
the crop copies themselves. So :class:`BatchPool` keeps a few buffers ("slots") per
process and rewrites one only once nothing can see the batch it last carried:

- a batch is one flat buffer; every tensor of it is a view at an offset (:func:`layout`);
- in a DataLoader worker the slots live in shared memory. A batch leaves the worker as a
  :class:`PooledBatch`, whose pickle carries the slot once and which arrives in the main
  process as a plain dict of tensors. The main process keeps only a weak reference to the
  slot and, once it has expired (no tensor of that batch alive any more), writes the
  hand-out's id into a shared table made with the pool (before the workers start); the
  worker rewrites the slot only when the table holds the id it last gave it. The main
  process looks for expired batches whenever a batch arrives;
- in the main process itself (``workers=0``) a slot is free when nothing but the pool
  holds its storage.

A slot is thus never rewritten while a consumer can still read it, whatever it keeps (a
preview batch, a model that stores its inputs): that slot just stays busy, and the pool
takes another one, or allocates a batch of its own when all ``slots`` are busy.
"""

from __future__ import annotations

import os
import secrets
import threading
import weakref

import numpy as np
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.data import get_worker_info

ALIGN = 64  # bytes: every tensor of a batch starts on a cache line
_POOLS: "weakref.WeakValueDictionary[int, BatchPool]" = weakref.WeakValueDictionary()


def layout(arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[list, int]:
    """``{key: (shape, numpy dtype)}`` -> ``([(key, torch dtype, shape, offset)], nbytes)``."""
    out, off = [], 0
    for key, (shape, dtype) in arrays.items():
        dt = torch.from_numpy(np.empty(0, dtype)).dtype
        out.append((key, dt, tuple(shape), off))
        off += -(-int(np.prod(shape)) * dt.itemsize // ALIGN) * ALIGN
    return out, off


def views(flat: torch.Tensor, plan: list) -> dict[str, torch.Tensor]:
    """The tensors of a batch as views of its flat uint8 buffer (``plan`` from :func:`layout`)."""
    out = {}
    for key, dt, shape, off in plan:
        n = int(np.prod(shape)) * dt.itemsize
        out[key] = flat[off:off + n].view(dt).view(shape)
    return out


class PooledBatch(dict):
    """A worker's batch (a dict of views of one pooled slot); unpickled it is a plain dict,
    and the pool of the receiving process learns when the slot may be rewritten."""

    def __init__(self, tensors: dict, flat: torch.Tensor, plan: list, handout: tuple):
        super().__init__(tensors)
        self.flat, self.plan, self.handout = flat, plan, handout

    def __reduce__(self):
        return _arrive, (self.handout, self.flat, self.plan)


def _arrive(handout: tuple, flat: torch.Tensor, plan: list) -> dict:
    """Unpickling a :class:`PooledBatch`: its tensors, and the hand-out tracked."""
    batch = views(flat, plan)
    pool = _POOLS.get(handout[0])
    if pool is not None:
        pool.track(handout, flat)
    return batch


class BatchPool:
    """Reusable batch buffers for one dataset view; see the module docstring.

    Args:
        workers: DataLoader worker ids below this are pooled (others allocate per batch).
        slots: buffers per process at most.
    """

    def __init__(self, workers: int = 64, slots: int = 6):
        self.token = secrets.randbits(62)
        self.workers, self.slots = workers, slots
        self.released = torch.full((workers, slots), -1, dtype=torch.int64).share_memory_()
        self._lock = threading.Lock()
        self._pending: list = []     # main process: (worker, slot, id, weak ref to the slot)
        self._local = None           # this process's slots (reset in a new process)
        _POOLS[self.token] = self

    def __getstate__(self):
        return {"token": self.token, "workers": self.workers, "slots": self.slots,
                "released": self.released}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock(), _pending=[], _local=None)
        _POOLS.setdefault(self.token, self)

    def _state(self) -> dict:
        if self._local is None or self._local["pid"] != os.getpid():
            self._local = {"pid": os.getpid(), "bufs": [None] * self.slots,
                           "last": [None] * self.slots, "next": os.getpid() << 32}
            # main process: last = the storage's use count when only the pool holds it
        return self._local

    def batch(self, arrays: dict) -> dict:
        """Uninitialised tensors ``{key: (shape, numpy dtype)}`` to fill, in one pooled buffer.

        Returns a dict of tensors (main process) or a :class:`PooledBatch` (worker); in a
        worker everything is in shared memory, so it reaches the main process uncopied.
        """
        plan, nbytes = layout(arrays)
        info = get_worker_info()
        flat, handout = self._take(nbytes, info)
        tensors = views(flat, plan)
        return tensors if handout is None else PooledBatch(tensors, flat, plan, handout)

    def _take(self, nbytes: int, info):
        st = self._state()
        worker = None if info is None else info.id
        if worker is not None and worker >= self.workers:
            return _new(nbytes, shared=True), None
        for s in range(self.slots):
            buf = st["bufs"][s]
            if buf is not None and not self._free(st, worker, s):
                continue
            if buf is None or buf.numel() < nbytes:
                buf = st["bufs"][s] = _new(nbytes, shared=worker is not None)
                if worker is None:
                    st["last"][s] = _use_count(buf)
            if worker is None:
                return buf[:nbytes], None
            st["last"][s] = h = st["next"]
            st["next"] += 1
            return buf[:nbytes], (self.token, worker, s, h)
        return _new(nbytes, shared=worker is not None), None  # every slot busy

    def _free(self, st: dict, worker: int | None, s: int) -> bool:
        if worker is None:  # the main process: only the pool holds the slot
            return _use_count(st["bufs"][s]) <= st["last"][s]
        return int(self.released[worker, s]) == st["last"][s]

    def track(self, handout: tuple, flat: torch.Tensor) -> None:
        """Main process: a batch from slot ``handout`` arrived; release the expired ones."""
        _, worker, s, h = handout
        with self._lock:
            self._pending.append((worker, s, h, StorageWeakRef(flat.untyped_storage())))
            keep = []
            for w, slot, hid, ref in self._pending:
                if ref.expired():
                    self.released[w, slot] = hid
                else:
                    keep.append((w, slot, hid, ref))
            self._pending = keep


def _new(nbytes: int, shared: bool) -> torch.Tensor:
    if not shared:
        return torch.empty(nbytes, dtype=torch.uint8)
    return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(nbytes))


def _use_count(t: torch.Tensor) -> int:
    """References to ``t``'s storage (tensors and views that share it)."""
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)
