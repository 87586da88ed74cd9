"""``segmentation``: per-pixel classes (UperNet head by default, or DPT), cross-entropy with
optional class weights, ignore index 255. Scored by mIoU (also overall accuracy);
prediction writes a uint8 class raster from the blended per-class scores (argmax after
blending, not per tile) and, on request, one probability band per class.
"""

from __future__ import annotations

from rsgeo.tasks.losses import IGNORE
from rsgeo.tasks.scores import LabelScore
from rsgeo.tasks.spec import Layer, TaskSpec, Writer


def out_channels(config: dict) -> int:
    return int(config["num_classes"])


def build(encoder, config: dict):
    from rsgeo.models.networks import dpt_model, upernet_model  # lazy: torch + timm (--help)

    feats = int(config.get("head_features", 64))
    if (config.get("head") or "upernet") == "upernet":
        return upernet_model(encoder, out_channels(config), feats)
    return dpt_model(encoder, out_channels(config), feats)


def loss(net, batch: dict, class_weights=None):
    import torch.nn.functional as F

    out = net(batch["x"])
    return F.cross_entropy(out, batch["target"], weight=class_weights, ignore_index=IGNORE), {}


def predict(net, batch: dict):
    return net(*SPEC.model_args(batch)).argmax(1)


def accumulator(num_classes, net) -> LabelScore:
    return LabelScore(num_classes, predict, lambda m: {"miou": m.result()["miou"],
                                                       "oa": m.result()["oa"]})


def make_target(arr, crop: int):
    return arr.reshape(crop, crop)


SPEC = TaskSpec(
    name="segmentation", summary="a class per pixel", target="labels",
    inputs=("rgb", "dsm", "ndsm", "rgb+dsm", "rgb+ndsm"), heads=("upernet", "dpt"),
    out_channels=out_channels, build=build, loss=loss, predict=predict,
    accumulator=accumulator, score="miou", make_target=make_target, needs_classes=True,
    weighted_loss=True,
    writer=Writer("raster", "softmax-argmax", (
        Layer("class", "uint8", "class", "class id (argmax of the blended class scores)",
              nodata=255),
        Layer("probability", "float32", "1", "class probability", per_class=True,
              optional=True))))
