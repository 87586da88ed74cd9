"""Training wrappers: a task network plus its loss, ``forward(batch) -> (loss, logs)``.

- height: SmoothL1 (beta 1 m) on valid pixels (the reference nDSM's NaNs are nodata);
  with the land-cover auxiliary head, ``+ AUX_WEIGHT x`` cross-entropy on the chip's
  land cover (RS3DAda weighs height 0.5 x 0.8 and land cover 0.5: a ratio of 1.25);
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
AUX_WEIGHT = 1.25


def height_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None):
    """SmoothL1 (beta 1 m) over pixels with a finite ``target``, optionally weighted.

    ``pred, target [B, 1, H, W]`` metres; ``weight`` broadcastable to them (default 1).
    Returns ``(loss, mae)``; both 0 (with a graph) when no pixel is valid.
    """
    valid = torch.isfinite(target)
    if not valid.any():
        zero = pred.sum() * 0
        return zero, zero.detach()
    err = F.smooth_l1_loss(pred[valid], target[valid], beta=1.0, reduction="none")
    if weight is not None:
        err = err * torch.broadcast_to(weight, target.shape)[valid]
    return err.mean(), (pred[valid] - target[valid]).abs().mean().detach()


def class_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
               class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy ``logits [B, K, H, W]`` vs ``labels [B, H, W]`` (255 ignored), optionally
    weighted per pixel (``weight`` broadcastable to labels); 0 when every pixel is ignored."""
    valid = labels != IGNORE
    if not valid.any():
        return logits.sum() * 0
    ce = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE,
                         reduction="none")
    if weight is not None:
        ce = ce * torch.broadcast_to(weight, labels.shape)
    return ce[valid].mean()


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
        t = batch["target"]
        if self.task == "height":
            if getattr(self.net, "aux", None) is None:
                loss, mae = height_loss(self.net(batch["x"]), t)
                return loss, {"mae": mae}
            h, lc = self.net.forward_all(batch["x"])
            lh, mae = height_loss(h, t)
            lc_loss = class_loss(lc, batch["labels"])
            return lh + AUX_WEIGHT * lc_loss, {"mae": mae, "height_loss": lh.detach(),
                                              "landcover_loss": lc_loss.detach()}
        out = self.logits(batch)
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
