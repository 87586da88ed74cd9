"""Validation batched on the training device, scored by each task's accumulator (rsgeo.tasks).

:class:`ValSet` collates the validation view once (its samples never change: centre crops,
no flips) and keeps it on the device when it fits ``max_bytes``, so each validation is a
few forward passes over slices of resident tensors; the metric counts (F1^HE, MAE, RMSE,
delta; confusion matrices) are computed there too and only a handful of numbers come back.
A view too large to keep is streamed through a DataLoader instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from rsgeo.io.atomic import atomic_path
from rsgeo.synth.preview import colorize_classes, colorize_heights
from rsgeo.tasks import get_task
from rsgeo.tasks.scores import confusion_update, height_update
from rsgeo.train.engine import to_device

__all__ = ["ValSet", "confusion_update", "evaluate_view", "height_update", "save_val_preview"]


class ValSet:
    """A validation view as batches on ``device``.

    Args:
        view: a Dataset of dict samples (``TaskView(train=False)``).
        device: where the batches live (the training device).
        batch_size: samples per forward pass.
        max_bytes: largest collated size kept resident (default 1 GiB); above it, batches
            are loaded from ``view`` at each pass.
    """

    def __init__(self, view, device, batch_size: int = 32, max_bytes: int = 2**30):
        self.view, self.device = view, torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.n = len(view)
        self.data: dict | None = None
        if self.n:
            first = view[0]
            per = sum(t.numel() * t.element_size() for t in first.values()
                      if isinstance(t, torch.Tensor))
            if per * self.n <= max_bytes:
                self.data = to_device(default_collate([view[i] for i in range(self.n)]),
                                      self.device)

    def __len__(self) -> int:
        return self.n

    def batches(self, limit: int | None = None):
        """Yield model-ready dict batches on the device (the first ``limit`` samples).

        Samples are kept as the view stores them (uint8 images: small); the view's
        ``on_device`` (normalisation, dtype conversion) runs per batch on the device.
        """
        n = self.n if limit is None else min(limit, self.n)
        prepare = getattr(self.view, "on_device", None) or (lambda b: b)
        if self.data is not None:
            for s in range(0, n, self.batch_size):
                yield prepare({k: v[s:min(s + self.batch_size, n)] for k, v in self.data.items()})
            return
        view = self.view if n == self.n else torch.utils.data.Subset(self.view, range(n))
        for batch in DataLoader(view, batch_size=self.batch_size):
            yield prepare(to_device(batch, self.device))


@torch.no_grad()
def evaluate_view(model, view, task: str, device=None, num_classes: int | None = None,
                  batch_size: int = 32) -> dict:
    """Metrics of ``model`` (a TaskModule) over ``view`` (a ValSet, or a Dataset batched
    here): a flat dict for metrics.jsonl, from the task spec's accumulator."""
    vs = view if isinstance(view, ValSet) else ValSet(view, device or "cpu", batch_size, 0)
    was_training = model.training
    model.eval()
    acc = get_task(task).accumulator(num_classes, model.net)
    for batch in vs.batches():
        acc.update(model.net, batch)
    model.train(was_training)
    return acc.result()


@torch.no_grad()
def save_val_preview(model, view, task: str, device, path, n: int = 4) -> None:
    """A PNG row per chip: input RGB, reference, prediction (heights colour-mapped).

    ``view``: a ValSet or a Dataset; the first ``n`` chips are drawn.
    """
    from PIL import Image

    kind = get_task(task).preview
    if kind is None or len(view) == 0:
        return
    vs = view if isinstance(view, ValSet) else ValSet(view, device or "cpu", n, 0)
    was = model.training
    model.eval()
    batch = next(vs.batches(limit=n))
    batch = {k: v[:n] for k, v in batch.items()}
    pred = model.predict(batch).float().cpu().numpy()
    model.train(was)
    x = batch["x"][:, :3].float().cpu().numpy()
    t = batch["target"].cpu().numpy()
    rows = []
    for i in range(len(pred)):
        img = x[i]
        lo, hi = np.percentile(img, 1), np.percentile(img, 99)
        rgb = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(rgb, 3, 0)[:3] if rgb.shape[0] == 1 else rgb
        if kind == "heights":
            vmax = max(float(np.nanmax(t[i])) if np.isfinite(t[i]).any() else 1.0, 1.0)
            ref, prd = colorize_heights(t[i, 0], vmax), colorize_heights(pred[i], vmax)
        else:
            ref = colorize_classes(np.where(t[i] == 255, 0, t[i]).astype(np.uint8))
            prd = colorize_classes(pred[i].astype(np.uint8))
        rows.append(np.concatenate([rgb.transpose(1, 2, 0), ref, prd], 1))
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(np.concatenate(rows, 0)).save(tmp, format="PNG")
