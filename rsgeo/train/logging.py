"""``RUN/metrics.jsonl``: one JSON record per logging step, appended and flushed at once.

Training records: ``{"step", "epoch", "loss", "lr", "img_per_s", "max_mem_mb", ...task
logs}``; validation records add ``"kind": "val"``. On resume, records past the
checkpoint's step are dropped first (the file rewritten atomically), so the file reads as
one uninterrupted run; a torn last line (a process killed while appending it) is dropped
with them, any other line that is not JSON is refused naming the file.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path

import torch

from rsgeo.errors import InputError
from rsgeo.io.atomic import atomic_path


def max_mem_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA allocator peak on GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


class MetricsLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled

    def _records(self) -> list[tuple[str, dict]]:
        """``(line, record)`` of every record; a torn last line is left out."""
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append((line, json.loads(line)))
            except ValueError:
                if i < len(lines) - 1:
                    raise InputError(f"damaged: line {i + 1} is not JSON", self.path) from None
        return out

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (resume); the file is replaced atomically."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line, r in self._records() if r.get("step", 0) <= step]
        with atomic_path(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep))

    def last_loss(self, step: int) -> float | None:
        """The loss of the last training record at or before ``step`` (None: none)."""
        if not self.path.exists():
            return None
        loss = None
        for _, r in self._records():
            if r.get("kind") is None and "loss" in r and r.get("step", 0) <= step:
                loss = r["loss"]
        return loss

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
