import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rsgeo.metrics.height import HeightAccumulator
from rsgeo.metrics.segmentation import ConfusionMatrix


def test_height_hand_computed():
    ref = np.array([0.0, 0.0, 5.0, 5.0, 10.0, 2.0])
    pred = np.array([0.0, 2.0, 5.5, 0.5, 10.0, 4.0])
    acc = HeightAccumulator()
    acc.update(pred, ref)
    r = acc.result()
    d = pred - ref
    assert r["mae"] == pytest.approx(np.abs(d).mean()) and r["rmse"] == pytest.approx(np.sqrt((d ** 2).mean()))
    # significant: pred > 1: idx 1,2,4,5 ; ref > 1: idx 2,3,4,5
    # ratios: idx2 1.1, idx4 1.0, idx5 2.0 -> eta 1.25: TP 2 (2,4); FP 1 (idx1); FN 1 (idx3)
    assert (r["precision_1"], r["recall_1"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    # eta 1.25^3 = 1.95 < 2.0: still TP 2
    assert r["f1he_3"] == pytest.approx(2 / 3)
    # delta1 (floor 0.1): idx0 ratio 1, idx2 1.1, idx4 1.0 -> 3/6
    assert r["delta1"] == pytest.approx(0.5)


def test_all_ground_image_is_skipped_for_f1_only():
    acc = HeightAccumulator()
    acc.update(np.array([3.0, 0.0]), np.array([0.0, 0.0]))     # ground-only reference
    acc.update(np.array([5.0, 0.0]), np.array([5.0, 0.0]))
    r = acc.result()
    assert r["n_images"] == 2 and r["f1he_1"] == 1.0 and r["mae"] == pytest.approx(0.75)


@given(st.integers(1, 60), st.integers(1, 60), st.integers(1, 20), st.integers(0, 10 ** 6))
@settings(max_examples=40, deadline=None)
def test_streamed_equals_one_shot(h, w, rows, seed):
    rng = np.random.default_rng(seed)
    ref = np.where(rng.random((h, w)) < 0.5, 0, rng.uniform(0, 20, (h, w))).astype(np.float32)
    pred = np.clip(ref + rng.normal(0, 2, (h, w)), 0, None).astype(np.float32)
    pred[rng.random((h, w)) < 0.05] = np.nan
    one = HeightAccumulator()
    one.update(pred, ref)
    many = HeightAccumulator()
    for r0 in range(0, h, rows):
        many.update_window(pred[r0:r0 + rows], ref[r0:r0 + rows])
    many.end_image()
    a, b = one.result(), many.result()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, nan_ok=True), k


def test_perfect_prediction():
    ref = np.random.default_rng(1).uniform(0, 30, 500)
    acc = HeightAccumulator()
    acc.update(ref, ref)
    r = acc.result()
    assert r["mae"] == 0 and r["f1he_1"] == 1 and r["delta1"] == 1


def test_confusion_matrix():
    cm = ConfusionMatrix(3, ignore_index=255)
    cm.update(np.array([0, 1, 1, 2, 2, 0]), np.array([0, 1, 2, 2, 255, 1]))
    r = cm.result(["a", "b", "c"])
    # ref/pred pairs: (0,0) (1,1) (2,1) (2,2) (1,0)
    assert r["iou_a"] == pytest.approx(1 / 2) and r["iou_b"] == pytest.approx(1 / 3)
    assert r["iou_c"] == pytest.approx(1 / 2) and r["oa"] == pytest.approx(3 / 5)
    assert r["miou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    with pytest.raises(ValueError):
        cm.update(np.array([5]), np.array([0]))
    ch = ConfusionMatrix(2)
    ch.update(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert ch.change_result() == {"change_iou": pytest.approx(1 / 3), "change_f1": 0.5,
                                  "change_precision": 0.5, "change_recall": 0.5}


@given(st.integers(0, 10 ** 6))
@settings(max_examples=30, deadline=None)
def test_symmetry_where_it_holds(seed):
    """Swapping prediction and reference keeps MAE, RMSE and delta, and swaps precision and recall."""
    rng = np.random.default_rng(seed)
    a = np.where(rng.random(400) < 0.5, 0, rng.uniform(0, 30, 400)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 3, 400), 0, None).astype(np.float32)
    x, y = HeightAccumulator(), HeightAccumulator()
    x.update(a, b)
    y.update(b, a)
    rx, ry = x.result(), y.result()
    for k in ("mae", "rmse", "delta1", "delta2", "delta3"):
        assert rx[k] == pytest.approx(ry[k])
    if (a > 1).any() and (b > 1).any():
        assert rx["precision_1"] == pytest.approx(ry["recall_1"])
        assert rx["f1he_1"] == pytest.approx(ry["f1he_1"])


def _plain_height_metrics(images, t=1.0, floor=0.1):
    """The module docstring's definitions as plain loops over pixels (ratio: float32 quotient)."""
    etas = (1.25, 1.25 ** 2, 1.25 ** 3)
    n, s_abs, s_sq, delta, counts = 0, 0.0, 0.0, [0, 0, 0], np.zeros((3, 3), int)
    for pred, ref in images:
        img, has_ref = np.zeros((3, 3), int), False
        for p, g in zip(np.ravel(pred).tolist(), np.ravel(ref).tolist()):
            if not (np.isfinite(p) and np.isfinite(g)):
                continue
            n, s_abs, s_sq = n + 1, s_abs + abs(p - g), s_sq + (p - g) ** 2
            pc, gc = (np.float32(max(v, np.float32(floor))) for v in (p, g))
            ratio = max(pc / gc, gc / pc)
            has_ref |= g > t
            for k, eta in enumerate(etas):
                delta[k] += bool(ratio < eta)
                img[k] += (p > t and g > t and ratio < eta, p > t >= g, g > t >= p)
        counts += img if has_ref else 0
    out = {"n_pixels": n, "mae": s_abs / n, "rmse": (s_sq / n) ** 0.5}
    for k in range(3):
        tp, fp, fn = counts[k].tolist()
        prec, rec = (tp / (tp + fp) if tp + fp else 0.0), (tp / (tp + fn) if tp + fn else 0.0)
        out.update({f"delta{k + 1}": delta[k] / n, f"precision_{k + 1}": prec,
                    f"recall_{k + 1}": rec,
                    f"f1he_{k + 1}": 2 * prec * rec / (prec + rec) if prec + rec else 0.0})
    return out


@given(st.integers(0, 10 ** 6))
@settings(max_examples=25, deadline=None)
def test_height_metrics_equal_plain_definitions_on_adversarial_values(seed):
    """Negative and zero heights, exactly T, exact ratio bounds (x1.25, x0.8), NaN/inf
    nodata, an all-ground and an all-invalid image, any window split, and the torch path."""
    import torch

    from rsgeo.tasks.scores import height_update

    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(1, 14, 2))
    ref = np.where(rng.random((3, h, w)) < 0.4, rng.choice([0, -0.5, 1.0, 0.05]),
                   rng.uniform(-2, 30, (3, h, w))).astype(np.float32)
    pred = (ref * rng.choice([1, 1.25, 0.8, 1.5625], ref.shape)
            + rng.normal(0, rng.choice([0, 0.5, 3]), ref.shape)).astype(np.float32)
    pred[rng.random(ref.shape) < 0.1] = rng.choice([1.0, 0.0, np.nan])
    ref[rng.random(ref.shape) < 0.05] = np.inf
    ref[1] = np.minimum(ref[1], 0.5)          # all ground: in MAE, not in F1^HE
    pred[2] = np.nan                          # no valid pixel: an image of nothing
    pred[0, 0, 0], ref[0, 0, 0] = 2.0, np.float32(1.6)   # exact ratio 1.25 - 1.5e-8 -> 1.25
    want = _plain_height_metrics(zip(pred, ref))
    rows = int(rng.integers(1, h + 1))
    streamed, batched = HeightAccumulator(), HeightAccumulator()
    for p, g in zip(pred, ref):
        for r0 in range(0, h, rows):
            streamed.update_window(p[r0:r0 + rows], g[r0:r0 + rows])
        streamed.end_image()
    height_update(batched, torch.from_numpy(pred), torch.from_numpy(ref))
    for got in (streamed.result(), batched.result()):
        assert got["n_images"] == 3
        for k, v in want.items():   # |d| and d² are float32 (summed in float64): 1e-7
            assert got[k] == pytest.approx(v, rel=1e-7 if k in ("mae", "rmse") else 1e-12), k
