"""Progressive Semantic Token Selection (SelectiveMAE, Wang et al., Sec. 3.2.3).

Start from a small set S of visible tokens (the HOG-richest patches) and grow it in
``sub_steps`` sub-steps. In each, every remaining token u is scored by its largest cosine
similarity to S (patch embeddings + positions, no gradient) and tokens are added:

    stage 1            the most similar ("near")                        easy, warm-up
    stage 2 (blend)    near -> least similar ("far"), linearly
    stage 3            the least similar ("far")                        complementary
    stage 4 (blend)    far -> random, linearly
    stage 5            random                                            robustness

Stages are set by the fraction of the run done, ``bounds = (b1, b2, b3, b4)``. The
default ``(0.35, 0.375, 0.725, 0.75)`` is the authors' epoch schedule
``[300-20, 300, 600-20, 600]`` of 800 epochs as fractions (their public training
script). Unlike their code, random picks are drawn per sample, and stage 2 works for any
batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rsgeo.methods.catalog import PSTS_BOUNDS as DEFAULT_BOUNDS
from rsgeo.methods.masking import gather_tokens, index_mask


@dataclass(frozen=True)
class Mix:
    """Shares of near / far / random picks in one sub-step (they sum to 1)."""

    stage: int
    near: float
    far: float
    random: float

    def counts(self, n: int) -> tuple[int, int, int]:
        """``(near, far, random)`` counts summing to ``n`` (``int`` of the leading share)."""
        if self.stage <= 2:
            near = int(self.near * n)
            return near, n - near, 0
        far = int(self.far * n)
        return 0, far, n - far


def stage_mix(progress: float, bounds=DEFAULT_BOUNDS) -> Mix:
    """The PSTS mix at ``progress`` (fraction of the run done, 0..1)."""
    b1, b2, b3, b4 = bounds
    if progress < b1:
        return Mix(1, 1.0, 0.0, 0.0)
    if progress < b2:
        t = (progress - b1) / (b2 - b1)
        return Mix(2, 1.0 - t, t, 0.0)
    if progress < b3:
        return Mix(3, 0.0, 1.0, 0.0)
    if progress < b4:
        t = (progress - b3) / (b4 - b3)
        return Mix(4, 0.0, 1.0 - t, t)
    return Mix(5, 0.0, 0.0, 1.0)


@torch.no_grad()
def expand(tokens: torch.Tensor, selected: torch.Tensor, n_add: int, mix: Mix,
           noise: torch.Tensor, sub_steps: int = 2) -> torch.Tensor:
    """Grow ``selected [B, k]`` by ``n_add`` token indices.

    Args:
        tokens: ``[B, L, D]`` patch embeddings (+ positions).
        noise: ``[B, sub_steps * L]`` uniforms for the random picks.

    Returns:
        ``[B, k + n_add]`` indices: ``selected`` first, then additions in pick order.
    """
    B, L, _ = tokens.shape
    feats = F.normalize(tokens.float(), dim=-1)
    sizes = [n_add // sub_steps] * (sub_steps - 1)
    sizes.append(n_add - sum(sizes))
    for i, n in enumerate(sizes):
        if n == 0:
            continue
        taken = index_mask(selected, L)                                   # [B, L]
        sim = torch.bmm(feats, gather_tokens(feats, selected).transpose(1, 2))  # [B, L, k]
        score = sim.amax(dim=2).masked_fill(taken, float("inf"))
        order = torch.argsort(score, dim=1, stable=True)  # remaining far -> near, then selected
        free = L - selected.shape[1]
        n_near, n_far, n_rand = mix.counts(n)
        picks = [order[:, :n_far], order[:, free - n_near:free]]
        if n_rand:
            chosen = taken | index_mask(torch.cat(picks, 1), L)
            r = noise[:, i * L:(i + 1) * L].masked_fill(chosen, float("inf"))
            picks.append(torch.argsort(r, dim=1, stable=True)[:, :n_rand])
        selected = torch.cat([selected, *picks], dim=1)
    return selected
