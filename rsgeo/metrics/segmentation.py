"""Streaming confusion matrix for segmentation and change (bincount; rows = reference).

Per class: IoU = TP / (TP + FP + FN), precision, recall, F1 (0 when undefined). mIoU is the
plain mean over all ``num_classes`` classes (a class absent from both reference and
prediction scores 0, as in SynRS3D's evaluation); OA = trace / total. Reference pixels equal
to ``ignore_index`` are skipped.
"""

from __future__ import annotations

import numpy as np

from rsgeo.metrics.counts import precision_recall_f1


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.k = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.k, self.k), np.int64)

    def update(self, pred, ref) -> None:
        """Add label arrays of any (equal) shape; values outside [0, k) raise ValueError."""
        p = np.asarray(pred).ravel().astype(np.int64)
        r = np.asarray(ref).ravel().astype(np.int64)
        if self.ignore_index is not None:
            keep = r != self.ignore_index
            p, r = p[keep], r[keep]
        for name, a in (("prediction", p), ("reference", r)):
            if a.size and (a.min() < 0 or a.max() >= self.k):
                raise ValueError(f"{name} has class ids outside 0..{self.k - 1}")
        self.matrix += np.bincount(r * self.k + p, minlength=self.k * self.k).reshape(self.k, self.k)

    def per_class(self) -> dict[str, np.ndarray]:
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        fp, fn = m.sum(0) - tp, m.sum(1) - tp

        def div(a, b):
            return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

        prec, rec, f1 = precision_recall_f1(tp, fp, fn)
        return {"iou": div(tp, tp + fp + fn), "precision": prec, "recall": rec, "f1": f1}

    def result(self, class_names: dict[int, str] | list[str] | None = None) -> dict:
        """Flat dict: miou, oa, iou_<class>, f1_<class>, precision_<class>, recall_<class>."""
        pc = self.per_class()
        total = self.matrix.sum()
        names = [str((class_names or {}).get(i, i)) if isinstance(class_names, dict) else
                 (class_names[i] if class_names else str(i)) for i in range(self.k)]
        out = {"miou": float(pc["iou"].mean()),
               "oa": float(np.trace(self.matrix) / total) if total else 0.0}
        for key in ("iou", "f1", "precision", "recall"):
            for i, n in enumerate(names):
                out[f"{key}_{n}"] = float(pc[key][i])
        return out

    def change_result(self) -> dict:
        """Binary change metrics of class 1: change_iou, change_f1, change_precision, change_recall."""
        pc = self.per_class()
        return {f"change_{k}": float(pc[k][1]) for k in ("iou", "f1", "precision", "recall")}
