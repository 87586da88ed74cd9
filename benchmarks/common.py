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
                recolour=None, cached: bool = False):
    """A synthetic city cut into a chip dataset: ``root/name`` -> ``root/name_chips``.

    ``scenes`` scenes of ``size`` px (seeds ``seed``, ``seed + 1`` ...; ``style`` and
    ``randomize`` as in ``rsgeo synth``), land-cover classes kept, ``split`` the
    train/val/test fractions. ``recolour(folder)`` may edit the images before they are cut
    (another "sensor"); ``cached`` reuses a chip folder a previous run finished.
    """
    from pathlib import Path

    from rsgeo.data.prepare import prepare
    from rsgeo.data.sources import from_synth_dir
    from rsgeo.synth import LANDCOVER, write_scenes

    folder, out = Path(root) / name, Path(root) / f"{name}_chips"
    if cached and (out / "dataset.json").is_file():
        return out
    write_scenes(folder, size=size, scenes=scenes, seed=seed, style=style, prefix=name,
                 randomize=randomize, footprints=footprints, overwrite=True)
    if recolour is not None:
        recolour(folder)
    prepare(from_synth_dir(folder), out, size=chip, classes=dict(LANDCOVER), split=split,
            seed=seed, overwrite=cached)
    return out
