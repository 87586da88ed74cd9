"""Precision, recall and F1 from true/false positive and false negative counts."""

from __future__ import annotations

import numpy as np


def precision_recall_f1(tp, fp, fn):
    """``(precision, recall, f1)``, each 0 where undefined (no prediction, no reference).

    Counts are numbers (the result is three floats) or arrays of one shape (three float64
    arrays, element-wise, e.g. one value per class).
    """
    scalar = all(np.ndim(x) == 0 for x in (tp, fp, fn))
    tp, fp, fn = (np.asarray(x, np.float64) for x in (tp, fp, fn))
    prec, rec = _div(tp, tp + fp), _div(tp, tp + fn)
    f1 = _div(2 * prec * rec, prec + rec)
    return (float(prec), float(rec), float(f1)) if scalar else (prec, rec, f1)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)
