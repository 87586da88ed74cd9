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
