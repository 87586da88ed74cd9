"""A DPT-style dense head (Ranftl et al. 2021; the SynRS3D/RS3DAda height head).

Reassemble: each of the 4 encoder maps is projected to ``features`` channels and resampled
to strides 4, 8, 16 and 32 px (a ViT's 4 maps all sit at stride 16: transposed convs
upsample the first two, a strided conv downsamples the last; Swin's stages already sit
there). Fuse: from the coarsest level up, residual conv units and x2 upsampling add each
finer level. Output: conv, x4 upsampling to the input size, conv, ReLU, 1x1 conv to
``out_channels``, and a final ReLU for non-negative quantities (heights in metres).
BatchNorm is avoided (RS3DAda's teacher never updates its BN statistics); GroupNorm-free
residual units keep the head small and batch-size independent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def resample(ch: int, factor: float) -> nn.Module:
    """Change a map's resolution by ``factor`` (2^k): >1 upsamples, <1 downsamples."""
    if factor == 1:
        return nn.Identity()
    k = int(round(math.log2(factor)))
    if k > 0:
        return nn.ConvTranspose2d(ch, ch, kernel_size=2 ** k, stride=2 ** k)
    return nn.Conv2d(ch, ch, kernel_size=3, stride=2 ** (-k), padding=1)


class DPTHead(nn.Module):
    """Dense prediction from 4 maps ``[B, C_i, H/s_i, W/s_i]`` to ``[B, out, H, W]``.

    Args:
        in_channels: channels of the 4 maps; strides: their strides in pixels.
        features: channels inside the head.
        out_channels: 1 for height; class count for segmentation (then ``relu_out=False``).
        relu_out: clamp outputs at 0 (heights are non-negative metres).
    """

    def __init__(self, in_channels: list[int], strides: list[int], features: int = 64,
                 out_channels: int = 1, relu_out: bool = True):
        super().__init__()
        targets = [4, 8, 16, 32]
        self.project = nn.ModuleList(nn.Conv2d(c, features, 1) for c in in_channels)
        self.resample = nn.ModuleList(resample(features, s / t) for s, t in zip(strides, targets))
        self.rcu_in = nn.ModuleList(ResidualConvUnit(features) for _ in range(4))
        self.rcu_out = nn.ModuleList(ResidualConvUnit(features) for _ in range(4))
        self.out = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
            nn.Conv2d(features // 2, 32, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(32, out_channels, 1))
        self.relu_out = relu_out
        if relu_out:  # start in the active region of the final ReLU
            nn.init.constant_(self.out[-1].bias, 0.5)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        maps = [rs(pr(f)) for f, pr, rs in zip(feats, self.project, self.resample)]
        x = self.rcu_out[3](self.rcu_in[3](maps[3]))
        for i in (2, 1, 0):
            x = F.interpolate(x, size=maps[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.rcu_out[i](x + self.rcu_in[i](maps[i]))
        y = self.out(x)
        return F.relu(y) if self.relu_out else y
