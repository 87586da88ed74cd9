"""Masks and selections, vectorised over the batch, drawn from per-sample seeds.

Every random draw of a method comes from :func:`uniform`, a counter-based hash of the
batch's ``seed`` (set by the data pipeline from run seed, epoch and sample index), the
draw's ``stream`` and the position (:func:`rsgeo.train.seeds.uniform_from_seeds`),
computed per batch on the training device. A sample therefore gets the same mask
whichever rank, batch or process count draws it: one process and ``torchrun
--nproc_per_node N`` train identically, and a resumed run redraws exactly the masks it
would have drawn. Rankings use stable sorts, so equal draws order by position.
"""

from __future__ import annotations

import math

import torch

from rsgeo.train.seeds import uniform_from_seeds


def uniform(batch: dict, n: int, stream: int, like: torch.Tensor) -> torch.Tensor:
    """``[B, n]`` float32 uniforms in [0, 1) on ``like``'s device; ``stream`` separates
    independent draws of one step.

    Uses ``batch["seed"]`` ([B] int64) when present, else the global torch RNG.
    """
    seeds = batch.get("seed")
    if seeds is None:
        return torch.rand(like.shape[0], n, device=like.device)
    return uniform_from_seeds(seeds.to(like.device, non_blocking=True), n, stream)


def visible_count(L: int, ratio: float) -> int:
    """Tokens MAE keeps visible of ``L`` at mask ``ratio``: ``int(L * (1 - ratio))``."""
    return int(L * (1 - ratio))


def random_masking(noise: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE per-sample random masking from ``noise [B, L]``.

    Returns:
        ``ids_keep [B, keep]`` (visible token indices), ``mask [B, L]`` (1 = masked, 0 =
        visible, in original order) and ``ids_restore [B, L]`` (unshuffles
        ``[visible, masked]`` back to the original order).
    """
    ids_shuffle = torch.argsort(noise, dim=1, stable=True)  # ascend: small is keep, large is remove
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones_like(noise)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, mask, ids_restore


def masked_units(U: int, ratio: float) -> int:
    """Units SimMIM masks of ``U`` at ``ratio``: ``ceil(U * ratio)``."""
    return math.ceil(U * ratio)


def block_mask(noise: torch.Tensor, units: tuple[int, int], ratio: float, scale: int) -> torch.Tensor:
    """SimMIM mask: ``ceil(U * ratio)`` of the ``U`` coarse units masked per sample.

    Args:
        noise: ``[B, U]`` uniforms, ``U = units[0] * units[1]``.
        units: coarse grid (e.g. ``H/32, W/32``).
        scale: patch tokens per unit side (``unit_px / patch_px``).

    Returns:
        ``[B, units[0]*scale, units[1]*scale]`` bool on the patch-token grid (True = masked).
    """
    B, U = noise.shape
    count = masked_units(U, ratio)
    rank = torch.argsort(torch.argsort(noise, dim=1, stable=True), dim=1)  # unit ranks
    mask = (rank < count).view(B, *units)
    return mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)


def gather_tokens(x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``x [B, L, D]`` at ``ids [B, N]`` -> ``[B, N, D]``."""
    return torch.gather(x, 1, ids.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def top_k(scores: torch.Tensor, k: int, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``[B, k]`` of the highest ``scores [B, L]``, skipping ``exclude [B, L]`` (bool)."""
    if exclude is not None:
        scores = scores.masked_fill(exclude, float("-inf"))
    return torch.topk(scores, k, dim=1).indices


def index_mask(ids: torch.Tensor, L: int) -> torch.Tensor:
    """Bool ``[B, L]`` that is True at ``ids [B, N]``."""
    m = torch.zeros(ids.shape[0], L, dtype=torch.bool, device=ids.device)
    return m.scatter_(1, ids, True)


def upsample_mask(mask: torch.Tensor, p: int) -> torch.Tensor:
    """Token-grid mask ``[B, h, w]`` -> pixel mask ``[B, 1, h*p, w*p]`` (float)."""
    return mask.repeat_interleave(p, 1).repeat_interleave(p, 2).unsqueeze(1).float()
