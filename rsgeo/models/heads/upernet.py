"""UperNet head (Xiao et al. 2018) as used by the MAE-on-DEM and HiRes-FusedMIM papers.

Pyramid pooling on the coarsest map, an FPN top-down path over the 4 levels, all levels
upsampled to the finest (stride 4) and fused, then a 1x1 classifier and x4 upsampling to
the input size. ViT maps (all at stride 16) are first resampled to strides 4-32, as in
the DPT head.

Our change to PSPNet's pooling: the pyramid averages over the whole map (scale 1) and over
windows of 2, 3 and 6 cells of the stride-32 map, instead of into 2x2, 3x3 and 6x6 bins.
Bins depend on the input size (a 256-px tile and a 1024-px tile would pool differently),
and adaptive pooling with a dynamic input size cannot be exported to ONNX; fixed windows
give the same features whatever the tile size, and export with dynamic height and width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsgeo.models.heads.dpt import resample


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
                         nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True))


def pool(x: torch.Tensor, window: int) -> torch.Tensor:
    """Average over the whole map (``window=1``) or over ``window``-cell windows."""
    if window == 1:
        return x.mean((2, 3), keepdim=True)
    return F.avg_pool2d(x, window, window, ceil_mode=True, count_include_pad=False)


class UperNetHead(nn.Module):
    """4 maps ``[B, C_i, H/s_i, W/s_i]`` -> class logits ``[B, num_classes, H, W]``."""

    def __init__(self, in_channels: list[int], strides: list[int], num_classes: int,
                 features: int = 64, pool_scales=(1, 2, 3, 6)):
        super().__init__()
        targets = [4, 8, 16, 32]
        self.resample = nn.ModuleList(resample(c, s / t) for c, s, t in
                                      zip(in_channels, strides, targets))
        self.pool_scales = tuple(pool_scales)
        self.ppm = nn.ModuleList(conv_bn_relu(in_channels[3], features, 1) for _ in pool_scales)
        self.ppm_out = conv_bn_relu(in_channels[3] + len(pool_scales) * features, features)
        self.lateral = nn.ModuleList(conv_bn_relu(c, features, 1) for c in in_channels[:3])
        self.fpn = nn.ModuleList(conv_bn_relu(features, features) for _ in range(3))
        self.fuse = conv_bn_relu(4 * features, features)
        self.classifier = nn.Conv2d(features, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        maps = [rs(f) for f, rs in zip(feats, self.resample)]
        top = maps[3]
        pooled = [F.interpolate(conv(pool(top, s)), size=top.shape[-2:], mode="bilinear",
                                align_corners=False) for conv, s in zip(self.ppm, self.pool_scales)]
        levels = [self.ppm_out(torch.cat([top, *pooled], 1))]
        for i in (2, 1, 0):
            lat = self.lateral[i](maps[i])
            up = F.interpolate(levels[0], size=lat.shape[-2:], mode="bilinear", align_corners=False)
            levels.insert(0, self.fpn[i](lat + up))
        size = levels[0].shape[-2:]
        fused = torch.cat([levels[0]] + [F.interpolate(x, size=size, mode="bilinear",
                                                       align_corners=False) for x in levels[1:]], 1)
        logits = self.classifier(self.fuse(fused))
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
