"""``classification``: one class per chip (the chip's most frequent land-cover class,
ignoring 255) from pooled encoder features and a linear head (``--freeze-encoder``: a
linear probe). Scored by accuracy (also mIoU); prediction writes one row per tile or input.
"""

from __future__ import annotations

import numpy as np

from rsgeo.tasks.losses import IGNORE
from rsgeo.tasks.scores import LabelScore
from rsgeo.tasks.spec import Layer, TaskSpec, Writer


def out_channels(config: dict) -> int:
    return int(config["num_classes"])


def build(encoder, config: dict):
    from rsgeo.models.networks import ClassifierModel  # lazy: torch + timm (--help)

    return ClassifierModel(encoder, out_channels(config))


def loss(net, batch: dict, class_weights=None):
    import torch.nn.functional as F

    out = net(batch["x"])
    return F.cross_entropy(out, batch["target"], weight=class_weights, ignore_index=IGNORE), {}


def predict(net, batch: dict):
    return net(batch["x"]).argmax(1)


def accumulator(num_classes, net) -> LabelScore:
    return LabelScore(num_classes, predict, lambda m: {"accuracy": m.result()["oa"],
                                                       "miou": m.result()["miou"]})


def make_target(arr, crop: int) -> int:
    lab = arr.reshape(-1)
    counts = np.bincount(lab[lab != IGNORE].astype(np.int64), minlength=1)
    return int(counts.argmax()) if counts.sum() else 0


SPEC = TaskSpec(
    name="classification", summary="one class per chip", target="labels",
    inputs=("rgb", "dsm", "ndsm", "rgb+dsm", "rgb+ndsm"), heads=("linear",),
    legacy_heads=("dpt",), out_channels=out_channels, build=build, loss=loss,
    predict=predict, accumulator=accumulator, score="accuracy", make_target=make_target,
    needs_classes=True, weighted_loss=True, preview=None,
    writer=Writer("rows", "softmax", (
        Layer("class", "int64", "class", "predicted class id"),
        Layer("score", "float32", "1", "probability of that class"),
        Layer("probability", "float32", "1", "class probability", per_class=True,
              optional=True))))
