"""Siamese change head: pre/post feature maps of one shared encoder -> change logits.

At each of the 4 levels the pre and post maps ``a, b [B, C_i, h, w]`` are fused as
``conv1x1([a, b, |a - b|]) -> C_i`` (ReLU), so the head sees both what each date shows
and where they differ; a DPT head (no output clamp) turns the fused levels into one
change logit per pixel. Swapping pre and post changes only the first two slots, so the
head can learn direction-dependent change (a new building vs a demolished one) while
the ``|a - b|`` slot makes plain "something differs" easy to learn.
"""

from __future__ import annotations

import torch
from torch import nn

from rsgeo.models.heads.dpt import DPTHead


class ChangeHead(nn.Module):
    """``(pre feats, post feats)`` (4 maps each) -> ``[B, out_channels, H, W]`` logits."""

    def __init__(self, in_channels: list[int], strides: list[int], features: int = 64,
                 out_channels: int = 1):
        super().__init__()
        self.fuse = nn.ModuleList(nn.Sequential(nn.Conv2d(3 * c, c, 1), nn.ReLU(inplace=True))
                                  for c in in_channels)
        self.dense = DPTHead(in_channels, strides, features=features,
                             out_channels=out_channels, relu_out=False)

    def forward(self, pre: list[torch.Tensor], post: list[torch.Tensor]) -> torch.Tensor:
        fused = [f(torch.cat([a, b, (a - b).abs()], 1)) for f, a, b in zip(self.fuse, pre, post)]
        return self.dense(fused)
