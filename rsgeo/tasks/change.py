"""``change``: pre/post change (siamese encoder, [a, b, |a - b|] fused per level, DPT head,
one logit), binary cross-entropy with ignore index 255. Scored by change F1; prediction
writes a uint8 change mask and the change probability.
"""

from __future__ import annotations

from rsgeo.tasks.losses import binary_loss
from rsgeo.tasks.scores import LabelScore
from rsgeo.tasks.spec import Layer, TaskSpec, Writer


def build(encoder, config: dict):
    from rsgeo.models.networks import change_model  # lazy: torch + timm (--help)

    return change_model(encoder, int(config.get("head_features", 64)))


def loss(net, batch: dict, class_weights=None):
    return binary_loss(net(*SPEC.model_args(batch)), batch["target"]), {}


def predict(net, batch: dict):
    return (net(*SPEC.model_args(batch))[:, 0] > 0).long()


def accumulator(num_classes, net) -> LabelScore:
    return LabelScore(2, predict, lambda m: m.change_result())


def make_target(arr, crop: int):
    return arr.reshape(crop, crop)


SPEC = TaskSpec(
    name="change", summary="pre/post change mask", target="change", inputs=("rgb",),
    heads=("dpt",), out_channels=lambda config: 1, build=build, loss=loss, predict=predict,
    accumulator=accumulator, score="change_f1", make_target=make_target,
    model_inputs=("x", "x_post"), export_inputs=("pre", "post"),
    extra_modalities=("post_rgb",),
    writer=Writer("raster", "sigmoid", (
        Layer("change", "uint8", "1", "change mask (1 = changed)", nodata=255),
        Layer("probability", "float32", "1", "change probability"))))
