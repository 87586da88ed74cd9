"""``pretrain``: chips -> encoder weights with a registered masked-image-modelling method.

    from rsgeo.pretrain import pretrain
    summary = pretrain("chips/", "selectivemae", "vit-tiny-4", "runs/sel", steps=2000,
                       batch_size=64)

writes ``RUN/config.yaml``, ``RUN/metrics.jsonl``, ``RUN/checkpoints/last.pt``,
``RUN/previews/*.png`` and, at the end, the encoder(s): ``RUN/encoder.safetensors`` +
``RUN/encoder.json`` (fusedmim: ``encoder_rgb.*`` and ``encoder_dsm.*``), loadable with
:func:`rsgeo.models.backbones.load_encoder`.

Settings resolve as: explicit keyword (not None) > ``config`` YAML > :func:`defaults`
(:data:`DEFAULTS` for training; each method's options default to its own, see
:mod:`rsgeo.methods.registry`).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from rsgeo.data.dataset import open_chips, pooled_stats
from rsgeo.errors import InputError, OutputWriteError
from rsgeo.io.atomic import replacing
from rsgeo.methods import registry
from rsgeo.models.backbones import check_backbone, save_encoder
from rsgeo.train.augment import PretrainView
from rsgeo.train.config import TrainConfig, read_yaml
from rsgeo.train.engine import Trainer, resolve_device
from rsgeo.train.launch import env_info
from rsgeo.train.runs import claim_run

# Training settings; each method's options (mask_ratio, ...) come from rsgeo.methods.registry
# and default to None here (None: the method's own default).
DEFAULTS = dict(
    epochs=None, steps=None, batch_size=64, lr=None, blr=None, min_lr=0.0, warmup=0.05,
    weight_decay=0.05, clip_grad=3.0, accum_steps=1, precision="fp32", compile=False,
    device="auto", seed=0, workers=0, ckpt_every=500, log_every=10, preview_every=0,
    crop=None, modality="rgb", dsm_modality="dsm", split="train",
)
TRAIN_KEYS = ("epochs", "steps", "batch_size", "accum_steps", "min_lr", "warmup", "weight_decay",
              "clip_grad", "precision", "compile", "device", "seed", "workers", "ckpt_every",
              "log_every", "preview_every")


def defaults() -> dict:
    """:data:`DEFAULTS` plus every registered method option (None)."""
    clash = set(DEFAULTS) & set(registry.option_names())
    if clash:
        raise ValueError(f"method option(s) {', '.join(sorted(clash))} shadow training settings")
    return {**DEFAULTS, **dict.fromkeys(registry.option_names())}


def resolve(explicit: dict, config: str | os.PathLike | None) -> dict:
    """Merge explicit settings over the YAML file over the defaults (unknown keys refused)."""
    file = read_yaml(config) if config else {}
    file = {k.replace("-", "_"): v for k, v in file.items()}
    base = defaults()
    unknown = sorted(set(file) - set(base) - {"method", "backbone", "dataset"})
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)}", config)
    out = {**base, **file}
    out.update({k: v for k, v in explicit.items() if v is not None})
    return out


REFERENCE_BATCH = 256  # the batch base learning rates are quoted for (MAE: per 256 samples)


def batch_scaled_lr(blr: float, batch: int) -> tuple[float, str]:
    """Peak learning rate for a global ``batch`` from the base rate ``blr`` per 256 samples.

    At 256 and above the linear rule (MAE, Goyal et al.): ``blr x batch / 256``. Below 256
    the square-root rule, ``blr x sqrt(batch / 256)`` (the usual scaling for Adam-type
    optimisers, whose step size does not shrink with the gradient noise the way SGD's
    does): the linear rule would give blr / 16 at batch 16 and the loss hardly moves.
    Returns the rate and the rule as text.
    """
    if batch >= REFERENCE_BATCH:
        return blr * batch / REFERENCE_BATCH, f"base {blr:.3g} x {batch}/{REFERENCE_BATCH} (linear rule)"
    return (blr * math.sqrt(batch / REFERENCE_BATCH),
            f"base {blr:.3g} x sqrt({batch}/{REFERENCE_BATCH}) (square-root rule below "
            f"{REFERENCE_BATCH})")


def learning_rate(cfg: dict, method: registry.Method, options: dict) -> tuple[float, str]:
    """``--lr``, else :func:`batch_scaled_lr` of the base rate x the method's scale.

    ``blr``: ``--blr`` or the method's base learning rate per 256 samples. Returns the
    rate and how it was found (printed in the run summary).
    """
    if cfg["lr"] is not None:
        return cfg["lr"], "--lr"
    blr = method.blr if cfg["blr"] is None else cfg["blr"]
    if not (isinstance(blr, (int, float)) and 0 < blr < math.inf):
        raise InputError(f"blr {blr!r}: the base learning rate must be a number above 0")
    lr, rule = batch_scaled_lr(blr, int(cfg["batch_size"]))
    scale = method.scale(method.parse(options))
    if scale != 1:
        rule += f" x {method.name} {scale:.3g}"
    return lr * scale, rule


def pretrain(dataset, method: str, backbone: str, out: str | os.PathLike, *,
             config: str | os.PathLike | None = None, resume: bool = False,
             overwrite: bool = False, on_step_end=None, **settings) -> dict:
    """Pretrain ``backbone`` on ``dataset`` (a chip folder or a Dataset of dict samples).

    Returns a summary: ``run_dir``, ``step``, ``loss``, ``encoders`` (paths), ``config``,
    ``lr`` (the peak learning rate) and ``lr_rule`` (how it was found).
    Raises InputError for anything the user can fix (missing modality, unknown backbone,
    batch larger than the dataset, --resume with a different config, CUDA absent).
    """
    cfg = resolve(settings, config)
    spec = registry.get(method)
    given = {k: cfg[k] for k in registry.option_names() if cfg[k] is not None}
    spec.parse(given)  # unknown or bad method options fail before anything is written
    options = {o.name: given[o.name] for o in spec.fields() if o.name in given}
    resolve_device(cfg["device"])  # fail early on --device cuda without CUDA
    check_backbone(backbone)
    registry.check_modalities(cfg["modality"], cfg["dsm_modality"])
    mods = registry.required_modalities(method, cfg["modality"], cfg["dsm_modality"])
    ds, stats, have, label = open_chips(dataset, mods, cfg["split"])
    missing = [m for m in mods if m not in have]
    if missing:
        raise InputError(f"{method} needs {', '.join(missing)} chips; the dataset has "
                         f"{', '.join(sorted(have))}", label)
    first = ds[0][mods[0]]
    chip = min(first.shape[-2:])
    out = Path(out)

    random.seed(cfg["seed"]), np.random.seed(cfg["seed"]), torch.manual_seed(cfg["seed"])
    in_chans = 3 if mods[0] == "rgb" else int(first.shape[0])
    crop = cfg["crop"] or chip
    model = registry.build_method(method, backbone, crop, modality=mods[0], in_chans=in_chans,
                                  dsm_modality=cfg["dsm_modality"], **options)
    unit = model.size_multiple()
    if crop > chip or crop % unit:
        raise InputError(f"crop {crop} px must be a multiple of {unit} and at most the chip "
                         f"size {chip} (use --crop)", label)
    model.check_crop(crop)
    lr, lr_rule = learning_rate(cfg, spec, options)
    # claimed once every setting is known to be usable: a refused run writes nothing
    claim_run(out, "pretrain", resume=resume, overwrite=overwrite, inputs=(dataset,))
    extra = {"method": method, "backbone": backbone, "dataset": label, "crop": crop,
             "modality": cfg["modality"], "dsm_modality": cfg["dsm_modality"],
             "split": cfg["split"], **options}
    train_cfg = TrainConfig(lr=lr, extra=extra, **{k: cfg[k] for k in TRAIN_KEYS})
    view = PretrainView(ds, mods, crop=crop, seed=cfg["seed"])
    with replacing(out):  # --overwrite: the earlier run comes back if this one fails first
        trainer = Trainer(model, view, train_cfg, out, resume=resume, on_step_end=on_step_end,
                          job=f"pretrain {method}")
        summary = trainer.fit()

    encoders = {}
    if env_info().rank == 0:
        for stem, (enc, modality) in model.encoders().items():
            bands = ["red", "green", "blue"] if modality == "rgb" else [modality]
            meta = {"backbone": backbone, "in_chans": len(bands), "img_size": crop,
                    "bands": bands, "modality": modality, "method": method,
                    "method_options": options, "steps": summary["step"], "dataset": label,
                    **pooled_stats(stats, modality)}
            try:
                encoders[stem] = str(save_encoder(enc, out / f"{stem}.safetensors", meta)[0])
            except OutputWriteError as e:  # --resume of the finished run writes it again
                raise OutputWriteError(f"{e.message}; {trainer.kept_note()}", e.path) from e
    return {**summary, "encoders": encoders, "config": train_cfg.extra, "lr": lr,
            "lr_rule": lr_rule}
