"""Validation accumulators of the tasks, counting on the tensors' device.

:func:`height_update` and :func:`confusion_update` add a batch to the numpy accumulators of
:mod:`rsgeo.metrics` (same counts as their per-image ``update``) with only a handful of
numbers copied back. The accumulators a :class:`~rsgeo.tasks.spec.TaskSpec` returns wrap
them: ``update(net, batch)`` scores one prepared batch (see
:meth:`rsgeo.finetune.data.TaskView.on_device`), ``result()`` gives the flat metrics dict.
torch is imported inside the functions (the registry loads fast).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from rsgeo.metrics.height import ETAS, HeightAccumulator
from rsgeo.metrics.segmentation import ConfusionMatrix
from rsgeo.tasks.losses import IGNORE


def height_update(acc, pred, ref) -> None:
    """Add a batch of images to a HeightAccumulator, counting on the tensors' device.

    ``pred, ref [B, H, W]`` metres (NaN = nodata); each of the B images is one image of
    :meth:`HeightAccumulator.update` (same counts; sums may differ in the last bits).
    """
    import torch

    p, g = pred.float(), ref.float()
    ok = torch.isfinite(p) & torch.isfinite(g)
    p, g = torch.where(ok, p, 0.0), torch.where(ok, g, 0.0)
    d = p - g
    acc.n_images += int(p.shape[0])
    acc.n += int(ok.sum())
    acc.abs_sum += float(d.abs().sum(dtype=torch.float64))
    acc.sq_sum += float((d * d).sum(dtype=torch.float64))
    pc, gc = p.clamp_min(acc.floor), g.clamp_min(acc.floor)
    ratio = torch.maximum(pc / gc, gc / pc)
    sp, sg = (p > acc.threshold) & ok, (g > acc.threshold) & ok
    both = sp & sg
    fp, fn = (sp & ~sg).sum((1, 2)), (sg & ~sp).sum((1, 2))
    has_ref = (fn > 0) | both.any(2).any(1)        # images that count for F1^HE
    rows = []
    for eta in ETAS:
        good = (ratio < eta) & ok
        tp = (good & both).sum((1, 2))
        rows.append(torch.stack([good.sum(), (tp * has_ref).sum(), (fp * has_ref).sum(),
                                 (fn * has_ref).sum()]))
    counts = torch.stack(rows).cpu().numpy().astype(np.int64)   # one transfer
    acc.delta += counts[:, 0]
    acc.f1_counts += counts[:, 1:]


def confusion_update(acc, pred, ref) -> None:
    """Add label tensors (any equal shape, on any device) to a ConfusionMatrix."""
    import torch

    k = acc.k
    p, r = pred.reshape(-1).long(), ref.reshape(-1).long()
    if acc.ignore_index is not None:
        keep = r != acc.ignore_index
        p, r = p[keep], r[keep]
    if p.numel():
        lo, hi = torch.stack([torch.minimum(p.min(), r.min()),
                              torch.maximum(p.max(), r.max())]).tolist()
        if lo < 0 or hi >= k:
            raise ValueError(f"class ids outside 0..{k - 1}")
    acc.matrix += torch.bincount(r * k + p, minlength=k * k).reshape(k, k).cpu().numpy()


class HeightScore:
    """mae, rmse, delta1, f1he_1..3 of a height network (plus ``landcover_miou`` when the
    network has RS3DAda's land-cover ``aux`` head)."""

    def __init__(self, aux_classes: int | None = None):
        self.acc = HeightAccumulator()
        self.lc = ConfusionMatrix(aux_classes, ignore_index=IGNORE) if aux_classes else None

    @classmethod
    def for_net(cls, num_classes, net) -> "HeightScore":
        aux = getattr(net, "aux", None)
        return cls(aux.out[-1].out_channels if aux is not None else None)

    def update(self, net, batch: dict) -> None:
        if self.lc is not None:
            h, lc = net.forward_all(batch["x"])
            confusion_update(self.lc, lc.argmax(1), batch["labels"])
        else:
            h = net(batch["x"])
        height_update(self.acc, h[:, 0], batch["target"][:, 0])

    def result(self) -> dict:
        r = self.acc.result()
        out = {k: r[k] for k in ("mae", "rmse", "delta1", "f1he_1", "f1he_2", "f1he_3")}
        if self.lc is not None:
            out["landcover_miou"] = self.lc.result()["miou"]
        return out


class LabelScore:
    """A confusion matrix over ``predict(net, batch)`` vs ``batch["target"]`` (255 ignored);
    ``summary(matrix) -> dict`` makes the task's metrics."""

    def __init__(self, k: int, predict: Callable, summary: Callable[[ConfusionMatrix], dict]):
        self.acc = ConfusionMatrix(int(k), ignore_index=IGNORE)
        self.predict, self.summary = predict, summary

    def update(self, net, batch: dict) -> None:
        confusion_update(self.acc, self.predict(net, batch), batch["target"])

    def result(self) -> dict:
        return self.summary(self.acc)
