"""Global head for chip classification: mean-pooled last map -> LayerNorm -> Linear.

With a frozen encoder this is a linear probe. MAE's linear probe puts a BatchNorm before
the classifier to even out feature scales; a LayerNorm does the same per chip and does not
depend on the batch.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearHead(nn.Module):
    """``[B, C, h, w]`` (the encoder's last map) -> ``[B, num_classes]`` logits."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(x.mean((2, 3))))
