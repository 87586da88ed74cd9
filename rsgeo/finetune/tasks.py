"""Training wrappers: a task network plus its loss, ``forward(batch) -> (loss, logs)``.

- height: SmoothL1 (beta 1 m) on valid pixels (the reference nDSM's NaNs are nodata);
- segmentation: cross-entropy with optional class weights, ignore index 255;
- change: binary cross-entropy on change logits, ignore 255;
- classification: cross-entropy on chip labels.
``predict(batch)`` returns what validation scores: heights in metres, class ids, 0/1 change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255


class TaskModule(nn.Module):
    def __init__(self, net: nn.Module, task: str, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.net, self.task = net, task
        self.register_buffer("class_weights", class_weights, persistent=False)

    def logits(self, batch: dict) -> torch.Tensor:
        if self.task == "change":
            return self.net(batch["x"], batch["x_post"])
        return self.net(batch["x"])

    def forward(self, batch: dict):
        out = self.logits(batch)
        t = batch["target"]
        if self.task == "height":
            valid = torch.isfinite(t)
            loss = F.smooth_l1_loss(out[valid], t[valid], beta=1.0) if valid.any() \
                else out.sum() * 0
            return loss, {"mae": (out[valid] - t[valid]).abs().mean().detach() if valid.any()
                          else torch.tensor(0.0)}
        if self.task == "change":
            valid = t != IGNORE
            loss = F.binary_cross_entropy_with_logits(out[:, 0][valid], t[valid].float()) \
                if valid.any() else out.sum() * 0
            return loss, {}
        loss = F.cross_entropy(out, t, weight=self.class_weights, ignore_index=IGNORE)
        return loss, {}

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        out = self.logits(batch)
        if self.task == "height":
            return out[:, 0]
        if self.task == "change":
            return (out[:, 0] > 0).long()
        return out.argmax(1)
