"""Pretraining's learning-rate rule: linear from batch 256 up, square root below, --lr wins."""

import math

import pytest

from rsgeo.methods import registry
from rsgeo.pretrain import batch_scaled_lr, defaults, learning_rate


@pytest.mark.parametrize("batch, factor, rule", [
    (16, 0.25, "base 0.00015 x sqrt(16/256) (square-root rule below 256)"),
    (255, math.sqrt(255 / 256), "sqrt(255/256)"),
    (256, 1.0, "base 0.00015 x 256/256 (linear rule)"),
    (4096, 16.0, "4096/256 (linear rule)")])
def test_batch_scaled_lr(batch, factor, rule):
    lr, text = batch_scaled_lr(1.5e-4, batch)
    assert lr == pytest.approx(1.5e-4 * factor) and rule in text


def test_small_batches_keep_more_than_the_linear_rule():
    lr16, _ = batch_scaled_lr(1.5e-4, 16)
    assert lr16 == pytest.approx(4 * 1.5e-4 * 16 / 256)          # 4x the linear rule at 16
    rates = [batch_scaled_lr(1e-4, b)[0] for b in (1, 8, 64, 255, 256, 257, 1024)]
    assert rates == sorted(rates)                                # continuous and increasing


def test_method_scale_and_explicit_lr():
    spec = registry.get("selectivemae")
    cfg = {**defaults(), "batch_size": 4}
    lr, rule = learning_rate(cfg, spec, {})
    assert lr == pytest.approx(1.5e-4 * math.sqrt(4 / 256) * 0.25 / 0.85)
    assert rule == "base 0.00015 x sqrt(4/256) (square-root rule below 256) x selectivemae 0.294"
    assert learning_rate({**cfg, "lr": 2e-3}, spec, {}) == (2e-3, "--lr")
    assert learning_rate({**cfg, "blr": 1e-3}, spec, {})[0] == pytest.approx(
        1e-3 * math.sqrt(4 / 256) * 0.25 / 0.85)
