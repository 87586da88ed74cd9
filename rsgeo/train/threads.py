"""CPU threads for training: torch's intra-op threads and DataLoader workers sized together.

A training process runs ``threads`` intra-op threads and ``workers`` DataLoader processes
(one thread each). :func:`plan_threads` keeps ``threads + workers`` within the cores this
process may run on (``os.sched_getaffinity``: a taskset, cgroup cpuset or scheduler
allocation) less the cores other processes keep busy when the run starts
(:func:`busy_cores`), at least 1; ``RSGEO_NUM_THREADS`` overrides it, and an
``OMP_NUM_THREADS`` the user set is an upper bound.

Busy cores: every parallel region waits for its slowest thread, and a thread that shares a
core with another process waits for its time slice. On these 2 cores, beside one other
2-thread training job, a vit-tiny-4 + DPT step (batch 8, 64 px) took 95 ms with one thread
and 320 ms with two (``rsgeo demo --quick``: 36 s against 98 s). So a run that finds cores
busy leaves them to their owners; on an idle machine it takes them all.

Waiting threads: OpenMP threads that spin while they wait for work (the GNU OpenMP default)
turn a shared machine into a trap: every parallel region waits for the thread that the
kernel gave to another process. On 2 cores at load 11, 60 fine-tuning steps (vit-tiny-4,
batch 8, 64 px) took 16 s with one thread and 359 s with two spinning ones; with two
passive threads 20 steps took 8.8 s against 7.6 s with one. Fully passive threads cost the
idle machine instead (121 ms a step against 68 ms spinning, for the same small model), so
a short spin comes with them: ``import rsgeo`` sets ``OMP_WAIT_POLICY=PASSIVE`` and
``GOMP_SPINCOUNT=10000`` (libgomp spins that long before it sleeps) when the user has not
chosen and torch is not yet loaded. Measured on these 2 cores: idle 72 ms a step (68 spinning,
121 passive), with two busy processes beside it 247 ms (264 passive); see
:func:`passive_openmp`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

from rsgeo.errors import InputError

ENV = "RSGEO_NUM_THREADS"
log = logging.getLogger("rsgeo.train")
SPINCOUNT = "10000"  # libgomp busy-wait iterations before a waiting thread sleeps


def passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` if unset and torch is not imported yet; True if in force.

    OpenMP reads the variable once, when torch loads it; later calls change nothing.
    """
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", SPINCOUNT)
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def busy_cores(samples: int = 9, interval: float = 0.002, path: str = "/proc/loadavg") -> int:
    """Cores of this process's set that other processes keep busy now, at least 0.

    The kernel's count of runnable threads (``/proc/loadavg``, 4th field: an instant, not
    the 1-minute average, which lags for minutes after a job ends), its median over
    ``samples`` reads, less this process, scaled to the share of the machine's cores this
    process may use (a container pinned to 4 of 64 cores sees the whole host's count).
    0 where the count cannot be read (not Linux).
    """
    counts = []
    for i in range(samples):
        try:
            with open(path) as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        if i + 1 < samples:
            time.sleep(interval)
    others = max(0, sorted(counts)[len(counts) // 2] - 1)  # this process reads the file
    share = available_cores() / max(os.cpu_count() or 1, available_cores())
    return int(others * share)


def plan_threads(workers: int = 0) -> int:
    """torch intra-op threads for a process feeding on ``workers`` loader processes."""
    value = os.environ.get(ENV)
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"{ENV}={value!r}: use a whole number of threads >= 1")
        return n
    busy = busy_cores()
    n = max(1, available_cores() - max(0, int(workers)) - busy)
    if busy:
        log.info("%d torch thread(s): %d of %d cores busy with other processes (%s overrides)",
                 n, busy, available_cores(), ENV)
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        n = min(n, int(omp))
    return n


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous number."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
