"""``height``: monocular nDSM regression in metres (DPT head, non-negative output).

SmoothL1 (beta 1 m) on pixels with a finite reference; with ``aux_classes`` a second DPT
head learns land cover (RS3DAda multi-task, ``AUX_WEIGHT x`` cross-entropy). Scored by
F1^HE at eta 1.25 (also MAE, RMSE, delta1); prediction writes one float32 band in metres.
"""

from __future__ import annotations

from rsgeo.tasks.losses import AUX_WEIGHT, class_loss, height_loss
from rsgeo.tasks.scores import HeightScore
from rsgeo.tasks.spec import Layer, TaskSpec, Writer


def build(encoder, config: dict):
    from rsgeo.models.networks import dpt_model  # lazy: torch + timm; the registry loads for --help

    return dpt_model(encoder, 1, int(config.get("head_features", 64)), relu_out=True,
                     aux_classes=config.get("aux_classes"))


def loss(net, batch: dict, class_weights=None):
    if getattr(net, "aux", None) is None:
        value, mae = height_loss(net(batch["x"]), batch["target"])
        return value, {"mae": mae}
    h, lc = net.forward_all(batch["x"])
    lh, mae = height_loss(h, batch["target"])
    lc_loss = class_loss(lc, batch["labels"])
    return lh + AUX_WEIGHT * lc_loss, {"mae": mae, "height_loss": lh.detach(),
                                      "landcover_loss": lc_loss.detach()}


def predict(net, batch: dict):
    return net(batch["x"])[:, 0]


def make_target(arr, crop: int):
    return arr.reshape(1, crop, crop)


SPEC = TaskSpec(
    name="height", summary="height above ground (m) per pixel", target="ndsm",
    inputs=("rgb", "dsm", "rgb+dsm"), heads=("dpt",), out_channels=lambda config: 1,
    build=build, loss=loss, predict=predict, accumulator=HeightScore.for_net, score="f1he_1",
    make_target=make_target, target_float=True, units="m", aux_landcover=True,
    preview="heights",
    writer=Writer("raster", "identity", (
        Layer("height", "float32", "metre", "height above ground (m)", nodata=-9999.0),)))
