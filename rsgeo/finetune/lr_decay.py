"""Fine-tuning optimiser groups: head at the full rate, encoder scaled, layer-wise decay.

The rule (BEiT / MAE fine-tuning, ``param_groups_lrd`` in MAE's ``util/lr_decay.py``):
an encoder with L blocks has L + 2 layers: 0 = patch embedding, class/register tokens and
position embedding; 1..L = the blocks in order of depth (a Swin's blocks counted over its
stages, a patch-merging layer with the block before it); L + 1 = whatever comes after the
blocks (the final norm). A parameter of layer ``l`` learns at

    lr x encoder_lr_scale x layer_decay ** (L + 1 - l)

and every parameter outside the encoder(s) (the task head(s)) at ``lr``. Each group's
factor is its ``lr_scale`` key, which the engine's warm-up + cosine schedule multiplies
into the rate of every step (:class:`rsgeo.train.schedule.WarmupCosine`). Weight decay
follows the engine's split (:func:`rsgeo.train.engine.param_groups`): none on biases,
norms, tokens and position embeddings. Parameters that do not train (``--freeze-encoder``,
an EMA teacher) are in no group.
"""

from __future__ import annotations

import re

from torch import nn

from rsgeo.errors import InputError
from rsgeo.models.backbones import encoder_kind
from rsgeo.train.engine import param_groups

_EMBED = ("patch_embed.", "cls_token", "reg_token", "pos_embed", "absolute_pos_embed",
          "norm_pre.")


def layer_ids(encoder: nn.Module) -> tuple[dict[str, int], int]:
    """``({parameter name: layer id}, L)`` for a timm ViT or Swin encoder (see the module
    docstring for the numbering; L is the number of blocks).

    Raises:
        InputError: the encoder is neither (no block structure to decay over).
    """
    try:
        kind = encoder_kind(encoder)
    except TypeError:
        raise InputError(f"--layer-decay needs a ViT or Swin encoder (blocks to decay over); "
                         f"{type(encoder).__name__} has none (use --layer-decay 1)") from None
    if kind == "vit":
        offsets, depth = None, len(encoder.blocks)
    else:
        depths = [len(stage.blocks) for stage in encoder.layers]
        offsets = [sum(depths[:s]) for s in range(len(depths))]
        depth = sum(depths)
    ids = {}
    for name, _ in encoder.named_parameters():
        ids[name] = _layer_of(name, offsets, depth)
    return ids, depth


def _layer_of(name: str, offsets: list[int] | None, depth: int) -> int:
    if name.startswith(_EMBED):
        return 0
    if offsets is None:
        m = re.match(r"blocks\.(\d+)\.", name)
        return int(m.group(1)) + 1 if m else depth + 1
    m = re.match(r"layers\.(\d+)\.(blocks\.(\d+)\.|downsample\.)", name)
    if not m:
        return depth + 1
    stage = int(m.group(1))
    if m.group(3) is None:  # patch merging opens the stage: with the block before it
        return offsets[stage]
    return offsets[stage] + int(m.group(3)) + 1


def encoder_scales(encoders: list[nn.Module], encoder_lr_scale: float,
                   layer_decay: float) -> dict[int, tuple[float, int]]:
    """``{id(parameter): (lr factor, layer id)}`` for every parameter of ``encoders``.

    With ``layer_decay == 1`` the encoders need no block structure (every factor is
    ``encoder_lr_scale``, layer id 0).
    """
    out = {}
    for enc in encoders:
        if layer_decay == 1.0:
            out.update({id(p): (encoder_lr_scale, 0) for p in enc.parameters()})
            continue
        ids, depth = layer_ids(enc)
        for name, p in enc.named_parameters():
            layer = ids[name]
            out[id(p)] = (encoder_lr_scale * layer_decay ** (depth + 1 - layer), layer)
    return out


def check_layer_decay(layer_decay: float, freeze_encoder: bool) -> None:
    """InputError unless ``0 < layer_decay <= 1`` (and < 1 only when the encoder trains)."""
    if not 0.0 < layer_decay <= 1.0:
        raise InputError(f"--layer-decay {layer_decay} is out of range (0, 1]; 1 is off")
    if layer_decay < 1.0 and freeze_encoder:
        raise InputError(f"--layer-decay {layer_decay} has no effect with --freeze-encoder "
                         "(the encoder does not train); drop one of them")


def check_head_steps(head_steps: int, freeze_encoder: bool, steps: int | None) -> None:
    """InputError unless ``0 <= head_steps`` (below ``steps`` when given), and 0 with a
    frozen encoder (LP-FT's head-only phase needs an encoder that trains afterwards)."""
    if head_steps < 0:
        raise InputError(f"--head-steps {head_steps} must be >= 0 (0: off)")
    if head_steps and freeze_encoder:
        raise InputError(f"--head-steps {head_steps} has no effect with --freeze-encoder "
                         "(the encoder never trains); drop one of them")
    if head_steps and steps is not None and head_steps >= steps:
        raise InputError(f"--head-steps {head_steps} must be below --steps {steps} (the encoder "
                         "would never train; use --freeze-encoder)")


def finetune_groups(module: nn.Module, encoders: list[nn.Module], weight_decay: float,
                    encoder_lr_scale: float = 1.0, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups for fine-tuning ``module`` whose encoder(s) are ``encoders``.

    Each group: ``params``, ``weight_decay``, ``lr_scale`` (see the module docstring) and
    ``layer`` (encoder layer id, None for the head). Only trainable parameters appear.
    """
    scales = encoder_scales(encoders, encoder_lr_scale, layer_decay)
    groups: dict[tuple, dict] = {}
    for g in param_groups(module, weight_decay):
        for p in g["params"]:
            scale, layer = scales.get(id(p), (1.0, None))
            key = (g["weight_decay"], layer, scale)
            groups.setdefault(key, {"params": [], "weight_decay": g["weight_decay"],
                                    "lr_scale": scale, "layer": layer})["params"].append(p)
    return list(groups.values())


def lr_rule(lr: float, encoders: list[nn.Module], encoder_lr_scale: float,
            layer_decay: float, freeze_encoder: bool = False, head_steps: int = 0) -> str:
    """How the learning rates were set, one line (printed and recorded with the run)."""
    if freeze_encoder:
        return f"head lr {lr:.3g}; encoder frozen"
    if head_steps:
        return (f"steps 0-{head_steps - 1}: head only, encoder frozen (--head-steps); then "
                + lr_rule(lr, encoders, encoder_lr_scale, layer_decay))
    enc = f"lr {lr:.3g}" + (f" x {encoder_lr_scale:g} (--encoder-lr-scale)"
                            if encoder_lr_scale != 1.0 else "")
    if layer_decay == 1.0:
        return f"head lr {lr:.3g}; encoder {enc}"
    depth = layer_ids(encoders[0])[1]
    top = lr * encoder_lr_scale * layer_decay
    low = lr * encoder_lr_scale * layer_decay ** (depth + 1)
    return (f"head lr {lr:.3g}; encoder {enc} x {layer_decay:g}^({depth + 1} - layer), layer 0 "
            f"embeddings ... {depth} last block ({low:.3g} ... {top:.3g}), final norm "
            f"{lr * encoder_lr_scale:.3g} (layer-wise decay)")
