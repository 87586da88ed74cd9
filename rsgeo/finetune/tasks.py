"""Training wrapper: a task network plus its task's loss, ``forward(batch) -> (loss, logs)``.

The loss, the network inputs and what ``predict`` returns come from the task's spec
(:mod:`rsgeo.tasks`): height SmoothL1 on valid pixels (+ the land-cover auxiliary head's
cross-entropy), segmentation and classification cross-entropy (class weights, ignore 255),
change binary cross-entropy. ``predict(batch)`` returns what validation scores: heights in
metres, class ids, 0/1 change.
"""

from __future__ import annotations

import torch
from torch import nn

from rsgeo.finetune.photometric import photometric as jitter
from rsgeo.tasks import get_task
from rsgeo.train.seeds import batch_generator


class TaskModule(nn.Module):
    """``photometric`` > 0: in training, each sample's input image ``x`` gets colour jitter
    (p 0.8; brightness +-2S std, contrast and saturation x 1 +- S) and Gaussian blur (p 0.5)
    (:func:`rsgeo.finetune.photometric.photometric`), drawn from the batch's sample seeds.

    ``head_steps`` > 0 (LP-FT, Kumar et al. 2022, "Fine-Tuning can Distort Pretrained
    Features"): optimiser steps ``0 .. head_steps - 1`` train the head(s) only (the encoder
    gets no gradient, so AdamW leaves it as it is, weight decay included); from step
    ``head_steps`` on everything trains. Set per step by :meth:`set_progress`, so a resumed
    run is in the right phase."""

    def __init__(self, net: nn.Module, task: str, class_weights: torch.Tensor | None = None,
                 photometric: float = 0.0, head_steps: int = 0):
        super().__init__()
        self.net, self.task, self.spec = net, task, get_task(task)
        self.photometric, self.head_steps = float(photometric), int(head_steps)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def set_progress(self, step: int, total: int) -> None:
        """Engine hook before every optimiser step: the encoder trains from ``head_steps`` on."""
        if self.head_steps > 0:
            self.net.encoder.requires_grad_(step >= self.head_steps)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.net(*self.spec.model_args(batch))

    def forward(self, batch: dict):
        if self.training and self.photometric > 0:
            g = batch_generator(batch["seed"])
            batch = {**batch, "x": jitter(batch["x"], g, p_jitter=0.8, p_blur=0.5,
                                          strength=self.photometric)}
        return self.spec.loss(self.net, batch, self.class_weights)

    @torch.no_grad()
    def predict(self, batch: dict) -> torch.Tensor:
        return self.spec.predict(self.net, batch)
