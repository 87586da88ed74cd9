"""Preemption: SIGTERM/SIGINT ask training to stop at the next step boundary.

    with StopSignals() as stop:
        for step in ...:
            train_step()
            if stop.agreed():           # all ranks agree (a MAX all-reduce under torchrun)
                save_checkpoint(); raise TrainingInterrupted(stop.signum, ...)

While the context is open, SIGTERM and SIGINT only set a flag in the process that opened
it. DataLoader workers forked meanwhile inherit the handler, which does nothing in them
(the process id differs), so a signal sent to the whole process group (Ctrl-C in a
terminal, a scheduler, ``timeout``) never raises inside a worker; workers made by
``spawn`` ignore the signals through the engine's ``worker_init_fn``. A second SIGINT
raises ``KeyboardInterrupt`` at once (an impatient Ctrl-C Ctrl-C). On exit the previous
handlers come back.

Under torchrun each rank may see the signal at a different step (the launcher forwards
it to every rank, but not in the same instant), so :meth:`StopSignals.agreed` all-reduces
the flag (MAX) over a gloo group on CPU tensors: every rank stops after the same step,
and no CUDA synchronisation is added to the step.

Exit codes: 128 + the signal number, as shells report a process killed by it: 130 for
SIGINT, 143 for SIGTERM (:class:`TrainingInterrupted`).
"""

from __future__ import annotations

import os
import signal
import threading

import torch

from rsgeo.errors import Interrupted, RsgeoError
from rsgeo.train import distributed as D

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(RsgeoError):
    """Training stopped by a signal after saving its checkpoint (exit 128 + signal)."""

    def __init__(self, signum: int, message: str):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(message)


class StopSignals:
    """Context manager turning SIGTERM/SIGINT into a stop request; see the module docstring."""

    def __init__(self, group=None):
        self.group = group          # a gloo process group for the agreement (None: no DDP)
        self.signum = 0             # the first signal received (0: none)
        self._pid = os.getpid()
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        if os.getpid() != self._pid:      # a forked DataLoader worker: ignore
            return
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise Interrupted             # second Ctrl-C: stop now, without a checkpoint
        if not self.signum:
            self.signum = int(signum)

    def __enter__(self) -> "StopSignals":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.getsignal(s)
                signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        """Whether this process received a signal (no communication)."""
        return bool(self.signum)

    def agreed(self) -> bool:
        """Whether any rank received a signal; every rank gets the same answer.

        Collective under torchrun (call it on every rank at the same step); records the
        signal another rank received when this one received none.
        """
        if self.group is None:
            return self.requested
        import torch.distributed as dist

        flag = torch.tensor([self.signum], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        if flag.item() and not self.signum:
            self.signum = int(flag.item())
        return bool(flag.item())


def stop_group():
    """A gloo group over every rank for :meth:`StopSignals.agreed` (None without DDP).

    Collective: every rank must call it, in the same order as its other groups.
    """

    if not D.is_distributed():
        return None
    import torch.distributed as dist

    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    return dist.new_group(backend="gloo")
