"""Batch size when none is given: from the tile size, and on a GPU from its free memory.

- CPU (any backend): about 1 Mpx per call, ``2**20 // tile**2`` tiles, between 1 and 8
  (4 at tile 512, 8 at tile 256): larger batches give ONNX Runtime no more throughput
  on a few cores and only cost memory.
- torch on CUDA: one probe batch of ``PROBE`` tiles measures the peak memory the model
  needs per tile; the batch fills half of the memory free after the probe, rounded down
  to a multiple of 8, between 1 and ``MAX_BATCH``. The probe doubles as warm-up.
- ONNX Runtime on CUDA (no allocator statistics to probe): ``16 * (512 / tile)**2``
  tiles, between 1 and 64.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("rsgeo.infer")
PROBE = 4
MAX_BATCH = 256


def cpu_batch_size(tile: int) -> int:
    """Tiles per call on a CPU for ``tile x tile`` px tiles."""
    return int(min(8, max(1, 2 ** 20 // (tile * tile))))


def auto_batch_size(runner, tile: int, bands: int) -> int:
    """A batch size for ``runner`` on ``tile x tile`` tiles with ``bands`` bands."""
    if getattr(runner, "device", "cpu") != "cuda":
        return cpu_batch_size(tile)
    if not hasattr(runner, "forward"):  # ONNX Runtime on CUDA
        return int(min(64, max(1, 16 * 512 * 512 // (tile * tile))))
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    runner.warmup((PROBE, bands, tile, tile), np.uint8)
    torch.cuda.synchronize()
    per_tile = max(1, (torch.cuda.max_memory_allocated() - base) / PROBE)
    free, _ = torch.cuda.mem_get_info()
    free += torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    n = int(0.5 * free / per_tile)
    n = int(min(MAX_BATCH, max(1, n - n % 8 if n >= 8 else n)))
    log.info("batch size %d (%.0f MB per %d px tile, %.0f MB free)", n, per_tile / 2 ** 20,
             tile, free / 2 ** 20)
    return n
