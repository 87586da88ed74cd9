"""Validation with the shared metric accumulators, and a validation preview PNG."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from rsgeo.train.engine import to_device


@torch.no_grad()
def evaluate_view(model, view, task: str, device, num_classes: int | None = None,
                  batch_size: int = 8) -> dict:
    """Metrics of ``model`` (a TaskModule) over ``view``: flat dict for metrics.jsonl."""
    from rsgeo.metrics.height import HeightAccumulator
    from rsgeo.metrics.segmentation import ConfusionMatrix

    was_training = model.training
    model.eval()
    if task == "height":
        acc = HeightAccumulator()
    elif task == "change":
        acc = ConfusionMatrix(2, ignore_index=255)
    else:
        acc = ConfusionMatrix(int(num_classes), ignore_index=255)
    aux = getattr(model.net, "aux", None) if task == "height" else None
    lc_acc = ConfusionMatrix(aux.out[-1].out_channels, ignore_index=255) \
        if aux is not None else None
    prepare = getattr(view, "on_device", lambda b: b)
    for batch in DataLoader(view, batch_size=batch_size):
        batch = prepare(to_device(batch, device))
        target = batch["target"].cpu().numpy()
        if task == "height":
            if lc_acc is not None:
                h, lc = model.net.forward_all(batch["x"])
                pred = h[:, 0].float().cpu().numpy()
                lc_acc.update(lc.argmax(1).cpu().numpy(), batch["labels"].cpu().numpy())
            else:
                pred = model.predict(batch).float().cpu().numpy()
            for p, t in zip(pred, target[:, 0]):
                acc.update(p, t)                      # one chip = one image
        else:
            acc.update(model.predict(batch).cpu().numpy().astype(np.int64), target)
    model.train(was_training)
    if task == "height":
        r = acc.result()
        out = {k: r[k] for k in ("mae", "rmse", "delta1", "f1he_1", "f1he_2", "f1he_3")}
        if lc_acc is not None:
            out["landcover_miou"] = lc_acc.result()["miou"]
        return out
    if task == "change":
        return acc.change_result()
    r = acc.result()
    if task == "classification":
        return {"accuracy": r["oa"], "miou": r["miou"]}
    return {"miou": r["miou"], "oa": r["oa"]}


@torch.no_grad()
def save_val_preview(model, view, task: str, device, path, n: int = 4) -> None:
    """A PNG row per chip: input RGB, reference, prediction (heights colour-mapped)."""
    from PIL import Image

    from rsgeo.io.atomic import atomic_path
    from rsgeo.synth.preview import colorize_classes, colorize_heights

    if task == "classification" or len(view) == 0:
        return
    was = model.training
    model.eval()
    batch = to_device(next(iter(DataLoader(view, batch_size=min(n, len(view))))), device)
    batch = getattr(view, "on_device", lambda b: b)(batch)
    pred = model.predict(batch).float().cpu().numpy()
    model.train(was)
    x = batch["x"][:, :3].cpu().numpy()
    t = batch["target"].cpu().numpy()
    rows = []
    for i in range(len(pred)):
        img = x[i]
        lo, hi = np.percentile(img, 1), np.percentile(img, 99)
        rgb = (np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        rgb = np.repeat(rgb, 3, 0)[:3] if rgb.shape[0] == 1 else rgb
        if task == "height":
            vmax = max(float(np.nanmax(t[i])) if np.isfinite(t[i]).any() else 1.0, 1.0)
            ref, prd = colorize_heights(t[i, 0], vmax), colorize_heights(pred[i], vmax)
        else:
            ref = colorize_classes(np.where(t[i] == 255, 0, t[i]).astype(np.uint8))
            prd = colorize_classes(pred[i].astype(np.uint8))
        rows.append(np.concatenate([rgb.transpose(1, 2, 0), ref, prd], 1))
    with atomic_path(path, overwrite=True) as tmp:
        Image.fromarray(np.concatenate(rows, 0)).save(tmp, format="PNG")
