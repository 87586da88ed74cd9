"""Fit a timm-named ViT state dict to a built encoder: tokens, grid, patch size, bands.

Input: a state dict already in timm ``VisionTransformer`` names (see
:mod:`rsgeo.models.external` for the remapping), with the position embedding split into
``pos_prefix`` (``[1, P, D]`` for the class token, or absent) and ``pos_grid``
(``[1, S*S, D]``). Output: a state dict the target encoder loads with every tensor
filled, plus a list of what was adapted. What is adapted:

- position embeddings: the patch grid is resampled bicubically (timm's
  ``resample_abs_pos_embed``) to the target's grid; the class token's entry is kept
  (or folded into the class token when the target has no prefix position, as timm does
  for DINOv2 with registers);
- patch size: a kernel of another size (DINOv2's 14 px) is resampled to the target's
  (timm's ``resample_patch_embed``, FlexiViT);
- bands: a C-band target from a 3-band kernel keeps the RGB filters and gives each extra
  band the mean RGB filter / C; a 1-band target gets the sum of the RGB filters (the
  same response to a grey image);
- LayerScale: a checkpoint's ``ls1.gamma`` / ``ls2.gamma`` is folded exactly into
  ``attn.proj`` / ``mlp.fc2`` when the target has none; a target's gamma with none in the
  checkpoint starts at 1;
- register tokens the target lacks are dropped (reported);
- a missing q/k/v bias (``qkv_bias=False`` models) becomes zeros.

:func:`check_fit` then compares names and shapes with the target and raises
:class:`~rsgeo.errors.InputError` (one line: counts and the first mismatches) unless
everything loads; only LayerNorm parameters of the final norm may stay at their
initial (ones/zeros) values.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from rsgeo.errors import InputError

# checkpoint keys that are not part of an encoder: classifier heads, pooling norms, MAE
# decoders, mask tokens (dropped and counted in the report, never an error)
DROPPABLE = re.compile(r"^(head\.|head_drop|fc_norm\.|pre_logits\.|pooler\.|classifier\.|"
                       r"decoder|mask_token$|attn_pool\.)")
# target keys that may keep their initial values (not random: LayerNorm ones/zeros)
TOLERATED_MISSING = re.compile(r"^(norm|fc_norm)\.(weight|bias)$")


def grid_side(n: int, what: str) -> int:
    """Side S of a square grid of ``n`` patch positions (InputError if ``n`` is no square)."""
    s = math.isqrt(n)
    if s * s != n:
        raise InputError(f"{what}: {n} patch positions are not a square grid")
    return s


def fold_layer_scale(state: dict, encoder: nn.Module, notes: list[str]) -> None:
    """Fold or fill LayerScale gammas so ``state`` matches the target's blocks, and give
    blocks without a q/k/v bias a zero one (in place; both exact)."""
    target = encoder.state_dict()
    folded = filled = 0
    for key in [k for k in list(state) if re.match(r"blocks\.\d+\.ls[12]\.gamma$", k)]:
        if key in target:
            continue
        blk, ls = key.rsplit(".", 2)[0], key.split(".")[-2]
        g = state.pop(key).float()
        into = f"{blk}.attn.proj" if ls == "ls1" else f"{blk}.mlp.fc2"
        if f"{into}.weight" in state:
            state[f"{into}.weight"] = state[f"{into}.weight"] * g[:, None]
            if f"{into}.bias" in state:
                state[f"{into}.bias"] = state[f"{into}.bias"] * g
            folded += 1
    for key, v in target.items():
        if re.match(r"blocks\.\d+\.ls[12]\.gamma$", key) and key not in state:
            state[key] = torch.ones_like(v)
            filled += 1
    zeros = 0
    for key, v in target.items():  # checkpoints without q/k/v bias (HF qkv_bias=False)
        if key.endswith("attn.qkv.bias") and key not in state and key[:-4] + "weight" in state:
            state[key] = torch.zeros_like(v)
            zeros += 1
    if zeros:
        notes.append(f"qkv bias absent, set to 0 ({zeros} blocks)")
    if folded:
        notes.append(f"LayerScale folded into attn.proj/mlp.fc2 ({folded} gammas)")
    if filled:
        notes.append(f"LayerScale gammas started at 1 ({filled})")


def fit_tokens(state: dict, encoder: nn.Module, notes: list[str], dropped: list[str]) -> None:
    """Class/register tokens and position embeddings to the target's layout (in place)."""
    prefix = state.pop("pos_prefix", None)
    grid = state.pop("pos_grid", None)
    n_reg = int(getattr(encoder, "num_reg_tokens", 0) or 0)
    reg = state.pop("reg_token", None)
    if reg is not None and n_reg == 0:
        dropped.append(f"reg_token ({reg.shape[1]} registers)")
    elif reg is not None:
        state["reg_token"] = reg
    target_pos = getattr(encoder, "pos_embed", None)
    if grid is None or target_pos is None:
        return
    no_cls_pos = bool(getattr(encoder, "no_embed_class", False))
    if prefix is not None and no_cls_pos and "cls_token" in state:
        state["cls_token"] = state["cls_token"] + prefix[:, :1]
        notes.append("class-token position folded into cls_token")
    old = grid_side(grid.shape[1], "pos_embed")
    new = tuple(int(s) for s in encoder.patch_embed.grid_size)
    if (old, old) != new:
        from timm.layers import resample_abs_pos_embed

        grid = resample_abs_pos_embed(grid.float(), list(new), [old, old], num_prefix_tokens=0)
        notes.append(f"pos_embed grid {old}x{old} -> {new[0]}x{new[1]} (bicubic)")
    n_pre = 0 if no_cls_pos else target_pos.shape[1] - grid.shape[1]
    if n_pre > 0:
        pre = torch.zeros(1, n_pre, grid.shape[2], dtype=grid.dtype)
        if prefix is not None:
            pre[:, :1] = prefix[:, :1]
        grid = torch.cat([pre, grid], 1)
    state["pos_embed"] = grid


def fit_patch_embed(state: dict, encoder: nn.Module, notes: list[str]) -> None:
    """Patch-embedding kernel to the target's patch size and band count (in place)."""
    key = "patch_embed.proj.weight"
    if key not in state or key not in encoder.state_dict():
        return
    w = state[key].float()
    if w.ndim == 5 and w.shape[2] == 1:  # Prithvi-style 3-D patch embedding with one frame
        w = w[:, :, 0]
        notes.append("3-D patch embedding (1 frame) squeezed to 2-D")
    out_c, in_c, kh, kw = encoder.state_dict()[key].shape
    if w.ndim != 4:
        return
    if tuple(w.shape[-2:]) != (kh, kw):
        from timm.layers import resample_patch_embed

        notes.append(f"patch {w.shape[-1]} -> {kw} px (resampled)")
        w = resample_patch_embed(w, [kh, kw])
    if w.shape[1] != in_c:
        w = adapt_bands(w, in_c)
        notes.append(f"patch embedding {state[key].shape[1]} -> {in_c} bands")
    state[key] = w


def adapt_bands(w: torch.Tensor, bands: int) -> torch.Tensor:
    """A ``[O, C, k, k]`` kernel for ``bands`` inputs.

    More bands: the first C filters are kept, each extra band gets the mean filter / bands.
    One band: the sum over C (a grey image gives the checkpoint's response). Fewer (> 1):
    the first ``bands`` filters.
    """
    c = w.shape[1]
    if bands > c:
        extra = w.mean(1, keepdim=True).expand(-1, bands - c, -1, -1) / bands
        return torch.cat([w, extra], 1)
    if bands == 1:
        return w.sum(1, keepdim=True)
    return w[:, :bands].clone()


def _shape(t) -> str:
    return "x".join(str(int(s)) for s in t.shape) or "scalar"


def check_fit(state: dict, encoder: nn.Module, backbone: str, source) -> dict:
    """Compare ``state`` with the encoder's; InputError unless it loads. Returns counts/keys."""
    target = encoder.state_dict()
    dropped = sorted(k for k in state if k not in target and DROPPABLE.match(k))
    unexpected = sorted(k for k in state if k not in target and not DROPPABLE.match(k))
    missing = [k for k in target if k not in state]
    bad = [(k, state[k], target[k]) for k in target if k in state
           and tuple(state[k].shape) != tuple(target[k].shape)]
    hard_missing = [k for k in missing if not TOLERATED_MISSING.match(k)]
    if bad or hard_missing or unexpected:
        parts = []
        if bad:
            shown = ", ".join(f"{k} {_shape(a)} vs {_shape(b)}" for k, a, b in bad[:3])
            parts.append(f"{len(bad)} shape mismatch(es) (checkpoint vs model: {shown})")
        if hard_missing:
            parts.append(f"{len(hard_missing)} missing ({', '.join(hard_missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        raise InputError(f"checkpoint does not fit backbone {backbone}: {'; '.join(parts)} "
                         f"of {len(target)} tensors (pass --backbone matching it)", source)
    return {"loaded": len(target) - len(missing), "total": len(target),
            "kept_initial": missing, "dropped": dropped}
