"""DataLoader worker set-up: one torch thread each, and signals left to the main process.

Workers only slice and copy chips, so more than one intra-op thread per worker just
oversubscribes the cores that the training process needs. SIGINT and SIGTERM are ignored
in workers: a Ctrl-C in the terminal (sent to the whole process group) or a scheduler's
SIGTERM is handled by the main process alone, which stops at a step boundary and shuts
the workers down itself (a worker that died of KeyboardInterrupt would otherwise be
reported as "DataLoader worker exited unexpectedly").
"""

from __future__ import annotations

import signal

import torch


def worker_init(worker_id: int) -> None:
    """``worker_init_fn`` for every rsgeo DataLoader."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def loader_options(workers: int, pin_memory: bool) -> dict:
    """DataLoader keywords for ``workers`` worker processes (0: in the main process).

    Persistent workers, :func:`worker_init`, pinned memory on CUDA, and a prefetch depth
    that keeps at least four batches in flight in total (two per worker at least).
    """
    opts = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        opts.update(worker_init_fn=worker_init, persistent_workers=True,
                    prefetch_factor=max(2, -(-4 // workers)))
    return opts
