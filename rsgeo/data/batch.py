"""The per-batch stage on the training device: stored dtypes in, float model inputs out.

DataLoader workers only cut, flip and stack chips as they are stored (uint8 images,
float16/float32 heights, uint8 labels); this module does the rest once per batch, after
the batch is on the device (``PretrainView.on_device``, ``TaskView.on_device``):

- images: float32 ``(x - mean) / std`` with the statistics of each sample's *source*
  (``source_id [B]`` indexes :attr:`SourceNorm.sources`), per band;
- heights: float32 metres, NaN (nodata) set to 0 plus a valid mask;
- label maps: int64.
"""

from __future__ import annotations

import torch

IMAGES = ("rgb", "post_rgb")


class SourceNorm:
    """Per-source, per-band image normalisation of batches, on any device.

    Args:
        stats: ``{source: {modality: {"mean": [C], "std": [C]}}}`` (``stats.json``'s
            ``sources``); sources or modalities without statistics pass unchanged
            (converted to float32), as does everything when ``stats`` is empty.
        sources: source names; ``source_id`` values index this list.
    """

    def __init__(self, stats: dict | None, sources: list[str] | tuple[str, ...] = ()):
        self.sources = list(sources)
        self.tables: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        stats = stats or {}
        for mod in IMAGES:
            rows = [stats.get(s, {}).get(mod) for s in self.sources]
            if not any(rows):
                continue
            C = len(next(r for r in rows if r)["mean"])
            scale = torch.ones(len(rows), C, dtype=torch.float64)
            shift = torch.zeros(len(rows), C, dtype=torch.float64)
            for k, r in enumerate(rows):
                if r:
                    std = torch.tensor(r["std"], dtype=torch.float64).clamp_min(1e-6)
                    scale[k] = 1.0 / std
                    shift[k] = -torch.tensor(r["mean"], dtype=torch.float64) / std
            self.tables[mod] = (scale.float(), shift.float())
        self._on: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def _table(self, modality: str, device: torch.device):
        key = (modality, str(device))
        if key not in self._on:
            scale, shift = self.tables[modality]
            self._on[key] = (scale.to(device), shift.to(device))
        return self._on[key]

    def __call__(self, x: torch.Tensor, modality: str,
                 source_id: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, C, H, W]`` (any dtype) -> float32, normalised where statistics exist."""
        y = x.float()
        if modality not in self.tables or source_id is None:
            return y
        scale, shift = self._table(modality, x.device)
        sid = source_id.to(x.device).long()
        if y is x:
            y = y.clone()
        return y.mul_(scale[sid][:, :, None, None]).add_(shift[sid][:, :, None, None])

    def __getstate__(self):  # device copies stay in the process that made them
        return {**self.__dict__, "_on": {}}


def heights(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights ``[B, 1, H, W]`` (NaN = nodata) -> float32 with NaN set to 0, and the valid
    mask (float32, 1 where finite)."""
    y = x.float()
    valid = torch.isfinite(y)
    return torch.where(valid, y, torch.zeros((), dtype=y.dtype, device=y.device)), valid.float()
