"""Helpers shared by the benchmark scripts (run from this folder, so `import common` works)."""

from __future__ import annotations

import resource


def peak_rss_mb() -> float:
    """This process's peak resident set (MB): ``VmHWM`` of /proc/self/status.

    Not ``getrusage(...).ru_maxrss``: Linux keeps that across ``execve``, so a child started
    by a parent that already grew large (a generated input, a loaded model) would report
    the parent's peak.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synth_chips(root, name: str, *, scenes: int, size: int, chip: int, seed: int, split,
                style: str | None = None, randomize: bool = False, footprints: bool = True,
                recolour=None, cached: bool = False, suffix: str = ""):
    """A synthetic city cut into a chip dataset: ``root/name`` -> ``root/name_chips{suffix}``.

    ``scenes`` scenes of ``size`` px (seeds ``seed``, ``seed + 1`` ...; ``style`` and
    ``randomize`` as in ``rsgeo synth``), land-cover classes kept, ``split`` the
    train/val/test fractions. ``recolour(folder)`` may edit the images before they are cut
    (another "sensor"); ``cached`` reuses a chip folder a previous run finished, and scenes
    a previous run wrote (one city cut at several chip sizes, each its own ``suffix``).
    """
    from pathlib import Path

    from rsgeo.data.prepare import prepare
    from rsgeo.data.sources import from_synth_dir
    from rsgeo.synth import LANDCOVER, write_scenes

    folder, out = Path(root) / name, Path(root) / f"{name}_chips{suffix}"
    if cached and (out / "dataset.json").is_file():
        return out
    if not (cached and (folder / "done").is_file()):
        write_scenes(folder, size=size, scenes=scenes, seed=seed, style=style, prefix=name,
                     randomize=randomize, footprints=footprints, overwrite=True)
        if recolour is not None:
            recolour(folder)
        if cached:
            (folder / "done").write_text("")
    prepare(from_synth_dir(folder), out, size=chip, classes=dict(LANDCOVER), split=split,
            seed=seed, overwrite=cached)
    return out


def mean_sd(values) -> str:
    """``"mean ± sd"`` (3 decimals; sample sd, 0 for a single value)."""
    import numpy as np

    v = np.asarray(values, float)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}"


def plan_jobs(jobs: int | None, device: str = "cpu") -> int:
    """Runs at once for a study of independent runs: ``jobs``, else 1 on CUDA and the cores
    (at most 4) on CPU.

    The benchmark models are tiny: on 2 cores two 1-thread fine-tuning runs finished
    together in 23.6 s where one 2-thread run took 20.3 s (vit-tiny-4, 300 steps of 8)."""
    from rsgeo.train.threads import available_cores

    if jobs:
        return jobs
    return 1 if str(device).startswith("cuda") else min(4, available_cores())


def job_threads(jobs: int) -> int:
    """Torch threads of each of ``jobs`` workers: its share of the cores, at least 1."""
    from rsgeo.train.threads import available_cores

    return max(1, available_cores() // jobs)


def _set_job_threads(jobs: int) -> None:
    """A worker's initializer: ``RSGEO_NUM_THREADS`` = :func:`job_threads` (if unset)."""
    import os

    os.environ.setdefault("RSGEO_NUM_THREADS", str(job_threads(jobs)))


class Inline:
    """An executor that runs each task when it is submitted, in this process (one job)."""

    def submit(self, fn, *args):
        from concurrent.futures import Future

        fut = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001  (raised again by fut.result())
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def executor(jobs: int):
    """``Inline()`` for one job, else a pool of ``jobs`` spawned processes, each with its
    share of the cores. The caller's module must be importable by the workers (a script
    guarded by ``if __name__ == "__main__"``, or a module on ``sys.path``)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if jobs == 1:
        return Inline()
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_set_job_threads, initargs=(jobs,))
