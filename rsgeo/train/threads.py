"""CPU threads for training: torch's intra-op threads and DataLoader workers sized together.

A training process runs ``threads`` intra-op threads and ``workers`` DataLoader processes
(one thread each). :func:`plan_threads` keeps ``threads + workers`` within the cores this
process may run on (``os.sched_getaffinity``: a taskset, cgroup cpuset or scheduler
allocation), at least 1; ``RSGEO_NUM_THREADS`` overrides it, and an ``OMP_NUM_THREADS``
the user set is an upper bound.

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
import os
import sys

from rsgeo.errors import InputError

ENV = "RSGEO_NUM_THREADS"
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
    n = max(1, available_cores() - max(0, int(workers)))
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
