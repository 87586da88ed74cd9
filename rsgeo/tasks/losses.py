"""Training losses shared by the tasks (torch is imported inside: the registry loads fast).

- :func:`height_loss`: SmoothL1 (beta 1 m) on valid pixels (the reference nDSM's NaNs are
  nodata); RS3DAda's land-cover auxiliary head adds ``AUX_WEIGHT x`` :func:`class_loss`
  (RS3DAda weighs height 0.5 x 0.8 and land cover 0.5: a ratio of 1.25);
- :func:`class_loss`: cross-entropy with optional per-pixel and per-class weights,
  ignore index 255;
- :func:`binary_loss`: binary cross-entropy on one logit channel, ignore 255.
"""

from __future__ import annotations

IGNORE = 255
AUX_WEIGHT = 1.25


def height_loss(pred, target, weight=None):
    """SmoothL1 (beta 1 m) over pixels with a finite ``target``, optionally weighted.

    ``pred, target [B, 1, H, W]`` metres; ``weight`` broadcastable to them (default 1).
    Returns ``(loss, mae)``; both 0 (with a graph) when no pixel is valid.
    """
    import torch
    import torch.nn.functional as F

    valid = torch.isfinite(target)
    if not valid.any():
        zero = pred.sum() * 0
        return zero, zero.detach()
    err = F.smooth_l1_loss(pred[valid], target[valid], beta=1.0, reduction="none")
    if weight is not None:
        err = err * torch.broadcast_to(weight, target.shape)[valid]
    return err.mean(), (pred[valid] - target[valid]).abs().mean().detach()


def class_loss(logits, labels, weight=None, class_weights=None):
    """Cross-entropy ``logits [B, K, H, W]`` vs ``labels [B, H, W]`` (255 ignored), optionally
    weighted per pixel (``weight`` broadcastable to labels); 0 when every pixel is ignored."""
    import torch
    import torch.nn.functional as F

    valid = labels != IGNORE
    if not valid.any():
        return logits.sum() * 0
    ce = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=IGNORE,
                         reduction="none")
    if weight is not None:
        ce = ce * torch.broadcast_to(weight, labels.shape)
    return ce[valid].mean()


def binary_loss(logits, labels):
    """Binary cross-entropy of ``logits [B, 1, H, W]`` vs 0/1 ``labels [B, H, W]`` (255
    ignored); 0 (with a graph) when every pixel is ignored."""
    import torch.nn.functional as F

    valid = labels != IGNORE
    if not valid.any():
        return logits.sum() * 0
    return F.binary_cross_entropy_with_logits(logits[:, 0][valid], labels[valid].float())
