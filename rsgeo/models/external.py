"""Encoders from checkpoints users have: timm, Hugging Face, DINOv2 and MAE files.

:func:`open_encoder` is the one entry point fine-tuning uses for ``--encoder PATH``:

- rsgeo's own ``encoder.safetensors`` + ``encoder.json`` (:func:`~rsgeo.models.backbones.load_encoder`),
  or the pretraining run folder holding them (a fusedmim run: the branch, ``encoder_rgb``
  or ``encoder_dsm``, that learnt from the input, :func:`run_folder_encoder`);
- a timm ViT state dict (``.pth``/``.pt``/``.bin``/``.ckpt`` or ``.safetensors``), bare or
  wrapped in ``{"model": ...}``, ``{"state_dict": ...}``, ``{"teacher": ...}``, with any
  key prefix (``module.``, ``backbone.``, ...);
- a Hugging Face model folder (``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin``) of a ``ViTModel``, ``ViTMAEModel`` or ``Dinov2Model``
  (with or without registers);
- a DINOv2 state dict (facebookresearch names: ``register_tokens``, ``mask_token``,
  ``ls1.gamma``; position embedding with the class token);
- an MAE checkpoint (``{"model": ...}`` with ``decoder_*`` keys, which are dropped).

The weights are remapped to timm ``VisionTransformer`` names and fitted to the encoder
rsgeo builds (:mod:`rsgeo.models.weight_fit`: position-embedding grid, patch size, band
count, LayerScale), then loaded; anything that does not fit is an InputError naming the
mismatches, never a random start. Without ``--backbone`` the architecture is inferred from
the embedding width and depth (:data:`KNOWN`). Nothing is downloaded.
Checkpoints are read with ``torch.load(weights_only=True)`` (``argparse.Namespace``, as
MAE checkpoints store, is allowed); other pickled objects are refused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import sys
from pathlib import Path

import torch
from torch import nn

from rsgeo import progress
from rsgeo.errors import InputError, first_line
from rsgeo.models.backbones import (build_encoder, encoder_kind, load_encoder, patch_size,
                                    resize_encoder)
from rsgeo.models.weight_fit import check_fit, fit_patch_embed, fit_tokens, fold_layer_scale, grid_side

ANCHORS = ("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight")
WRAPPERS = ("model", "state_dict", "teacher", "module", "model_ema", "encoder", "net")
# (embed dim, depth) -> (backbone, heads): rsgeo's tiny ViTs and timm's patch-16 ViTs
KNOWN = {(96, 2): ("vit-tiny-2", 3), (192, 4): ("vit-tiny-4", 3),
         (192, 12): ("vit_tiny_patch16_224", 3), (384, 12): ("vit_small_patch16_224", 6),
         (768, 12): ("vit_base_patch16_224", 12), (1024, 24): ("vit_large_patch16_224", 16)}
BANDS = {"rgb": 3, "dsm": 1, "ndsm": 1, "rgb+dsm": 4, "rgb+ndsm": 4}


def is_rsgeo_encoder(path: str | os.PathLike) -> bool:
    """True for rsgeo's own encoder files (``NAME.safetensors`` with a ``NAME.json`` sidecar
    naming its backbone)."""
    p = Path(path)
    side = p.with_suffix(".json")
    if p.is_dir() or p.suffix not in (".safetensors", ".json", "") or not side.is_file():
        return False
    try:
        return "backbone" in json.loads(side.read_text())
    except (json.JSONDecodeError, TypeError):
        return True  # load_encoder names the broken sidecar


def _torch_load(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated or not a torch file
        if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():
            raise InputError(f"cannot read the checkpoint ({first_line(e, 120)})", path) \
                from None  # a pickle asking for code: refused, as it says
        if not _torch_file(path):  # was PyTorch's "Weights only load failed. In ..." or "(105)"
            raise InputError("not a checkpoint (not a torch file): give weights (.pth, .pt, "
                             ".bin, .safetensors), a Hugging Face model folder or a "
                             "pretraining run", path) from None
        raise InputError(f"cannot read the checkpoint, damaged or truncated? "
                         f"({first_line(e, 120)})", path) from None


def _torch_file(path: Path) -> bool:
    """Whether ``path`` starts as torch.save writes: a zip archive (even one cut short), or a
    pickle (the legacy format)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _read_weights(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:
            raise InputError(f"cannot read safetensors ({first_line(e, 120)})", path) from None
    return _torch_load(path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """``(tensors by name, Hugging Face config or None)`` from a file or a HF model folder."""
    p = Path(path)
    config = None
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise InputError("an encoder folder must be a pretraining run (encoder.safetensors, "
                             "or fusedmim's encoder_rgb/encoder_dsm) or a Hugging Face model "
                             "folder (config.json + model.safetensors or pytorch_model.bin)", p)
        config = json.loads((p / "config.json").read_text())
        files = [p / n for n in ("model.safetensors", "pytorch_model.bin") if (p / n).is_file()]
        if not files:
            raise InputError("Hugging Face folder without model.safetensors or "
                             "pytorch_model.bin (sharded checkpoints are not supported)", p)
        p = files[0]
    elif not p.is_file():
        raise InputError("encoder checkpoint not found", p)
    obj = _read_weights(p)
    for _ in range(3):  # {"model": {...}}, {"teacher": {...}}, ...
        if isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
            inner = next((obj[w] for w in WRAPPERS if isinstance(obj.get(w), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict):
        raise InputError(f"not a state dict (a {type(obj).__name__})", p)
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}, config


def strip_prefix(state: dict, source) -> tuple[dict, list[str]]:
    """Keys under the prefix of the patch embedding (``module.``, ``backbone.``, ``vit.``...).

    Returns the encoder's tensors without the prefix and the names of the others.
    """
    for key in state:
        anchor = next((a for a in ANCHORS if key.endswith(a)), None)
        if anchor and (key == anchor or key[:-len(anchor)].endswith(".")):
            pre = key[:-len(anchor)]
            kept = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
            return kept, [k for k in state if not k.startswith(pre)]
    shown = ", ".join(list(state)[:4]) or "no tensors"
    raise InputError(f"no ViT patch embedding in the checkpoint (keys: {shown}, ...)", source)


HF_BLOCK = [  # Hugging Face ViT / DINOv2 block names -> timm
    (r"layernorm_before\.", "norm1."), (r"layernorm_after\.", "norm2."),
    (r"norm1\.", "norm1."), (r"norm2\.", "norm2."),
    (r"attention\.output\.dense\.", "attn.proj."), (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."), (r"mlp\.fc1\.", "mlp.fc1."), (r"mlp\.fc2\.", "mlp.fc2."),
    (r"layer_scale1\.lambda1", "ls1.gamma"), (r"layer_scale2\.lambda1", "ls2.gamma")]
HF_TOP = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
          "embeddings.register_tokens": "register_tokens",
          "embeddings.position_embeddings": "pos_embed",
          "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
          "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
          "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}


def hf_to_timm(state: dict) -> dict:
    """Hugging Face ``ViTModel``/``Dinov2Model`` names to timm's (q, k, v merged into qkv)."""
    out, qkv = {}, {}
    for k, v in state.items():
        if k in HF_TOP:
            out[HF_TOP[k]] = v
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.*)$", k)
        if not m:
            out[k] = v  # pooler.*, ...: reported as dropped or unexpected
            continue
        i, rest = m.groups()
        a = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
        if a:
            qkv.setdefault((i, a.group(2)), {})[a.group(1)] = v
            continue
        for pat, rep in HF_BLOCK:
            if re.match(pat, rest):
                rest = re.sub(pat, rep, rest, count=1)
                break
        out[f"blocks.{i}.{rest}"] = v
    for (i, kind), parts in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[n] for n in ("query", "key", "value")])
    return out


def split_pos(state: dict, source) -> dict:
    """Split ``pos_embed`` into ``pos_prefix`` (class token, ``[1, P, D]``) and ``pos_grid``.

    The prefix length is the one that leaves a square grid, trying class + register
    tokens, the class token alone, then none (timm's DINOv2-with-registers layout).
    """
    state = dict(state)
    if "register_tokens" in state:  # facebookresearch / HF DINOv2 names
        state["reg_token"] = state.pop("register_tokens")
    pos = state.pop("pos_embed", None)
    if pos is None:
        return state
    if pos.ndim == 2:
        pos = pos[None]
    n_cls = 1 if "cls_token" in state else 0
    n_reg = state["reg_token"].shape[1] if "reg_token" in state else 0
    for n_pre in dict.fromkeys((n_cls + n_reg, n_cls, 0)):
        side = math.isqrt(max(pos.shape[1] - n_pre, 0))
        if side > 0 and side * side == pos.shape[1] - n_pre:
            break
    else:
        grid_side(pos.shape[1], f"{source}: pos_embed")  # raises: no square grid
    state["pos_grid"] = pos[:, n_pre:].float()
    if n_pre:
        state["pos_prefix"] = pos[:, :n_pre].float()
    return state


def describe(state: dict) -> dict:
    """Architecture read from a timm-named ViT state dict: dim, depth, patch, bands, ..."""
    w = state["patch_embed.proj.weight"]
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    return {"embed_dim": int(w.shape[0]), "depth": depth, "patch": int(w.shape[-1]),
            "in_chans": int(w.shape[1]), "layer_scale": any(".ls1.gamma" in k for k in state),
            "registers": int(state["reg_token"].shape[1]) if "reg_token" in state else 0}


def infer_backbone(arch: dict, heads: int | None, source) -> str:
    """A backbone name for ``arch`` from :data:`KNOWN` (InputError when none fits)."""
    if not arch["depth"]:
        raise InputError("no ViT blocks (blocks.N.*) in the checkpoint to infer a backbone "
                         "from; pass --backbone NAME (Swin and other timm models)", source)
    name, known_heads = KNOWN.get((arch["embed_dim"], arch["depth"]), (None, None))
    if name is None or (heads and heads != known_heads):
        h = f", {heads} heads" if heads else ""
        raise InputError(f"cannot infer a backbone for a ViT with embed dim {arch['embed_dim']}, "
                         f"depth {arch['depth']}{h}, patch {arch['patch']}; pass --backbone "
                         f"NAME (known: {', '.join(n for n, _ in KNOWN.values())})", source)
    return name


def layout_name(state: dict, hf: bool, dropped: list[str]) -> str:
    if hf:
        return "huggingface"
    if any(k.startswith("decoder") for k in state) or any(k.startswith("decoder") for k in dropped):
        return "mae"
    if "register_tokens" in state or "mask_token" in state:
        return "dinov2"
    return "timm"


def _vit_patch_check(encoder: nn.Module, backbone: str) -> None:
    if encoder_kind(encoder) == "vit" and 32 % patch_size(encoder):
        raise InputError(f"backbone {backbone} has {patch_size(encoder)}-px patches; rsgeo's "
                         "dense heads need a patch size dividing 32: use a patch-16 backbone "
                         "(the checkpoint's patch embedding is resampled to it)")


def open_external(path, backbone: str | None, in_chans: int, img_size: int) -> tuple[nn.Module, dict]:
    """Build and load an encoder from a non-rsgeo checkpoint; ``(encoder, meta)``.

    ``meta`` holds ``backbone``, ``in_chans``, ``img_size``, ``source`` and ``load_report``
    (layout, loaded/total tensors, adaptations, dropped and kept-initial keys).
    """
    raw, config = read_checkpoint(path)
    state, outside = strip_prefix(raw, path)
    hf = "embeddings.patch_embeddings.projection.weight" in state
    layout = layout_name(state, hf, outside)
    state = split_pos(hf_to_timm(state) if hf else state, path)
    arch = describe(state)
    heads = int(config["num_attention_heads"]) if config and "num_attention_heads" in config else None
    inferred = not backbone
    backbone = backbone or infer_backbone(arch, heads, path)
    encoder = build_encoder(backbone, in_chans, img_size)
    _vit_patch_check(encoder, backbone)
    notes, dropped = [], []
    fold_layer_scale(state, encoder, notes)
    fit_tokens(state, encoder, notes, dropped)
    fit_patch_embed(state, encoder, notes)
    fit = check_fit(state, encoder, backbone, path)
    target = encoder.state_dict()
    encoder.load_state_dict({k: v.to(target[k].dtype) for k, v in state.items() if k in target},
                            strict=False)
    n_dec = sum(k.startswith("decoder") for k in list(state) + outside)
    dropped += [k for k in fit["dropped"] if not k.startswith("decoder")]
    dropped += [f"{n_dec} decoder tensors"] if n_dec else []
    dropped += [k for k in outside if not k.startswith("decoder")][:5]
    report = {"source": str(path), "layout": layout, "backbone": backbone,
              "backbone_inferred": inferred, "checkpoint": arch, "loaded": fit["loaded"],
              "total": fit["total"], "adapted": notes, "dropped": dropped,
              "kept_initial": fit["kept_initial"]}
    meta = {"backbone": backbone, "in_chans": in_chans, "img_size": img_size,
            "source": str(path), "method": f"external:{layout}", "load_report": report}
    return encoder, meta


def report_lines(r: dict) -> list[str]:
    """The load report as a short block of text lines."""
    how = "inferred" if r["backbone_inferred"] else "--backbone"
    lines = [f"encoder {r['source']} ({r['layout']} layout) -> {r['backbone']} ({how})",
             f"  loaded {r['loaded']}/{r['total']} tensors"
             + (f"; kept initial: {', '.join(r['kept_initial'])}" if r["kept_initial"] else "")]
    if r["adapted"]:
        lines.append("  adapted: " + "; ".join(r["adapted"]))
    if r["dropped"]:
        lines.append("  dropped: " + ", ".join(r["dropped"]))
    return lines


FUSED_BRANCHES = ("encoder_rgb", "encoder_dsm")  # a fusedmim run's two encoders


def _branch_modality(path: Path) -> str | None:
    """The modality an rsgeo encoder file learnt from (its sidecar's ``modality``)."""
    try:
        return json.loads(path.with_suffix(".json").read_text()).get("modality")
    except (OSError, ValueError, AttributeError):
        return None


def run_folder_encoder(folder, inputs: str) -> Path:
    """The encoder file a pretraining run folder holds for ``inputs``: its
    ``encoder.safetensors``, or the branch of a fusedmim run (``encoder_rgb``,
    ``encoder_dsm``) that learnt from exactly that modality (the RGB branch for ``rgb``);
    the folder itself when it holds neither (a Hugging Face model folder). InputError for
    a fusedmim run without a branch for ``inputs``, naming the inputs it can feed."""
    folder = Path(folder)
    if is_rsgeo_encoder(folder / "encoder.safetensors"):
        return folder / "encoder.safetensors"
    branches = {}
    for stem in FUSED_BRANCHES:
        f = folder / f"{stem}.safetensors"
        if is_rsgeo_encoder(f):
            branches.setdefault(_branch_modality(f) or stem.split("_")[1], f)
    if not branches:
        return folder
    if inputs in branches:
        return branches[inputs]
    other = next((m for m in branches if m != "rgb"), "dsm")
    raise InputError(f"a fusedmim run (RGB + {other.upper()} encoders) has no encoder for "
                     f"--inputs {inputs}: use --inputs {' or '.join(branches)} (one branch) "
                     f"or rgb+{other} (both)", folder)


def open_encoder(path, backbone: str | None, inputs: str, img_size: int) -> tuple[nn.Module, dict]:
    """The encoder for ``--encoder PATH`` with ``--modalities inputs``: ``(encoder, meta)``.

    rsgeo's own files load as written (their band count must match ``inputs``; a ViT's
    position embeddings resampled to ``img_size``, :func:`resize_encoder`); any
    other checkpoint goes through :func:`open_external` and its report is printed to
    stderr (unless progress output is off, ``-q``).
    """
    want = BANDS[inputs]
    if Path(path).is_dir():
        path = run_folder_encoder(path, inputs)
    if is_rsgeo_encoder(path):
        enc, meta = load_encoder(path)
        if int(meta["in_chans"]) != want:
            raise InputError(f"encoder has {meta['in_chans']} input band(s); --modalities "
                             f"{inputs} needs {want}", path)
        if backbone and backbone != meta["backbone"]:
            raise InputError(f"--backbone {backbone} differs from the encoder's "
                             f"{meta['backbone']}", path)
        return resize_encoder(enc, meta, img_size)
    enc, meta = open_external(path, backbone, want, img_size)
    if progress.ENABLED is not False:
        print("\n".join(report_lines(meta["load_report"])), file=sys.stderr)
    return enc, meta
