"""The SynRS3D evaluation protocol, number for number (its public evaluation code).

Its rules differ from the paper's prose; reproduced on purpose so numbers compare with
published tables:

1. per image, before anything: reference NaN or > 450 m -> 0; then every value <= 0 in
   prediction and reference -> 1e-6 (float32, no nodata mask);
2. groups ``whole`` (t = 0, with F1), ``low`` (1), ``mid`` (2), ``high`` (3): a group is
   skipped for an image unless reference and prediction both have a pixel > t and the
   union mask (ref > t or pred > t) holds at least 49 pixels; metrics use the union-mask
   pixels: mae, rmse = sqrt(mean square) per image, log10 error, delta_k = mean(ratio <
   1.25^k);
3. F1 on ``whole``: significance a fixed 1 m (strict >) whatever t; pixels with both > 1 m
   but ratio >= eta count in none of TP/FP/FN; precision/recall/F1 are 0 when their
   denominators are 0 (an all-ground image scores F1 = 0 and is still averaged in);
4. every metric is a per-image value averaged over the images where its group is valid
   (0 if none); F1 is averaged per image, never pooled.
"""

from __future__ import annotations

import numpy as np

from rsgeo.metrics.counts import precision_recall_f1

GROUPS = {"whole": 0.0, "low": 1.0, "mid": 2.0, "high": 3.0}
ETAS = (1.25, 1.25 ** 2, 1.25 ** 3)


def synrs3d_image_metrics(pred, ref) -> dict[str, dict]:
    """Per-group metrics of one image: ``{group: {metric: value}}`` for valid groups only."""
    p = np.array(pred, dtype=np.float32, copy=True)
    g = np.array(ref, dtype=np.float32, copy=True)
    g[np.isnan(g) | (g > 450)] = 0
    p[p <= 0] = np.float32(1e-6)
    g[g <= 0] = np.float32(1e-6)
    out = {}
    for name, t in GROUPS.items():
        if not ((g > t).any() and (p > t).any()):
            continue
        union = (g > t) | (p > t)
        pv, gv = p[union], g[union]
        if pv.size < 49:
            continue
        d = np.abs(pv - gv)
        ratio = np.maximum(pv / gv, gv / pv)
        m = {"mae": float(d.mean()), "rmse": float(np.sqrt((d ** 2).mean())),
             "log10": float(np.abs(np.log10(pv) - np.log10(gv)).mean())}
        for k, eta in enumerate(ETAS, start=1):
            m[f"delta{k}"] = float((ratio < eta).mean())
        if name == "whole":
            sp, sg = pv > 1, gv > 1
            fp, fn = int((sp & ~sg).sum()), int((~sp & sg).sum())
            for k, eta in enumerate(ETAS, start=1):
                tp = int((sp & sg & (ratio < eta)).sum())
                m[f"precision_{k}"], m[f"recall_{k}"], m[f"f1he_{k}"] = precision_recall_f1(
                    tp, fp, fn)
        out[name] = m
    return out


class Synrs3dAverager:
    """Per-image averages per group (0 for a group no image made valid)."""

    def __init__(self):
        self.sums: dict[str, dict[str, float]] = {g: {} for g in GROUPS}
        self.counts = {g: 0 for g in GROUPS}
        self.n_images = 0

    def update(self, pred, ref) -> dict[str, dict]:
        m = synrs3d_image_metrics(pred, ref)
        self.n_images += 1
        for group, vals in m.items():
            self.counts[group] += 1
            for k, v in vals.items():
                self.sums[group][k] = self.sums[group].get(k, 0.0) + v
        return m

    def result(self, groups=("whole", "low", "mid", "high")) -> dict:
        """Flat keys: ``mae, rmse, ... f1he_1..3`` for ``whole``, ``mae_high`` etc. for others."""
        keys = ["mae", "rmse", "log10", "delta1", "delta2", "delta3"]
        out = {"n_images": self.n_images}
        for group in groups:
            n = self.counts[group]
            names = keys + (["f1he_1", "f1he_2", "f1he_3", "precision_1", "precision_2",
                             "precision_3", "recall_1", "recall_2", "recall_3"]
                            if group == "whole" else [])
            for k in names:
                v = self.sums[group].get(k, 0.0) / n if n else 0.0
                out[k if group == "whole" else f"{k}_{group}"] = v
            out["n_valid" if group == "whole" else f"n_valid_{group}"] = n
        return out
