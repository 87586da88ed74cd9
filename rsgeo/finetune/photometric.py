"""Per-sample photometric augmentation of normalised image batches (colour jitter, blur).

Used by RS3DAda-style adaptation (:mod:`rsgeo.finetune.adapt`: the teacher's consistency
check and the student's mixed images) and, with ``finetune(photometric=S)``, on the
labelled source images themselves (:class:`rsgeo.finetune.tasks.TaskModule`): a model
trained on synthetic cities otherwise learns the absolute brightness of their few rendered
palettes as a height cue (dark = tree), which real orthophotos do not share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def photometric(x: torch.Tensor, g: torch.Generator, p_jitter: float = 1.0,
                p_blur: float = 1.0, strength: float = 0.2) -> torch.Tensor:
    """Colour jitter and Gaussian blur of normalised images ``[B, C, H, W]``, per sample.

    Jitter: brightness shift ``+-2 x strength`` (normalised units ~ std), contrast and
    saturation factors in ``1 +- strength``. Blur: 5x5 Gaussian, sigma in [0.1, 2] px.
    """
    B, C = x.shape[:2]

    def u(lo, hi, *shape):
        return torch.rand(B, *shape, generator=g).mul(hi - lo).add(lo).to(x.device, x.dtype)

    jitter = (torch.rand(B, generator=g) < p_jitter).to(x.device).view(B, 1, 1, 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    gray = x.mean(1, keepdim=True)
    y = (x - gray) * u(1 - strength, 1 + strength, 1, 1, 1) + gray          # saturation
    y = (y - mean) * u(1 - strength, 1 + strength, 1, 1, 1) + mean          # contrast
    y = y + u(-2 * strength, 2 * strength, 1, 1, 1)                         # brightness
    x = torch.where(jitter, y, x)
    blur = (torch.rand(B, generator=g) < p_blur).to(x.device).view(B, 1, 1, 1)
    sigma = u(0.1, 2.0)
    k = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
    w = torch.exp(-k[None] ** 2 / (2 * sigma[:, None] ** 2))
    w = w / w.sum(1, keepdim=True)                                         # [B, 5]
    pad = F.pad(x, (2, 2, 2, 2), mode="reflect")
    rows = (pad.unfold(3, 5, 1) * w.view(B, 1, 1, 1, 5)).sum(-1)           # blur along W
    both = (rows.unfold(2, 5, 1) * w.view(B, 1, 1, 1, 5)).sum(-1)          # then along H
    return torch.where(blur, both, x)
