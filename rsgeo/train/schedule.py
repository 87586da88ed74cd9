"""Learning-rate schedule: linear warm-up, then half-cycle cosine down to ``min_lr``.

Set per optimiser step (MAE's ``util/lr_sched.py`` does it per iteration too), so curves
do not depend on the epoch length. The state is the step counter alone.
"""

from __future__ import annotations

import math


def lr_at(step: int, total: int, base_lr: float, warmup: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total``.

    Warm-up rises linearly from ``base_lr / warmup`` at step 0 to ``base_lr`` at step
    ``warmup - 1``; the cosine then falls to ``min_lr`` at step ``total``.
    """
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupCosine:
    """Sets ``lr`` on every param group (scaled by the group's ``lr_scale``, default 1)."""

    def __init__(self, optimizer, total: int, base_lr: float, warmup: int, min_lr: float = 0.0):
        self.optimizer, self.total, self.base_lr = optimizer, total, base_lr
        self.warmup, self.min_lr, self.step_count = warmup, min_lr, 0
        self.apply()

    @property
    def lr(self) -> float:
        return lr_at(self.step_count, self.total, self.base_lr, self.warmup, self.min_lr)

    def apply(self) -> float:
        lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.step_count += 1
        self.apply()

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.apply()
