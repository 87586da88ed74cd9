"""``finetune``: task models from a pretrained (or random) encoder, on the training engine.

Tasks: ``height`` (monocular nDSM regression, DPT head over the last 4 encoder levels,
non-negative metres; ``aux_landcover`` adds RS3DAda's land-cover head, ``adapt_to``
RS3DAda-style adaptation to unlabelled target chips, :mod:`rsgeo.finetune.adapt`),
``segmentation`` (UperNet head, cross-entropy, class weights, ignore index 255;
elevation-only input with ``inputs="dsm"``; RGB+DSM through two encoders from a fusedmim
run), ``change`` (siamese encoder over pre/post chips, [a, b, |a - b|] fused per level,
DPT head, binary), ``classification`` (pooled features + linear; with
``freeze_encoder=True`` a linear probe).

Validation runs every ``val_every`` steps (default: about ten times a run) and after the
last step, batched on the training device (:mod:`rsgeo.finetune.validate`), on
``val_dataset``, else the dataset's ``val`` split, else 10 % of the training chips held
out with the seed; the summary reports its share of the wall time (``val_share``). The best
checkpoint by F1^HE (height), mIoU (segmentation), change F1 or accuracy is
``RUN/best.ckpt`` (a task checkpoint :mod:`rsgeo.models.task`; ``rsgeo export`` turns it
into ONNX), with ``best.json`` and a validation preview PNG beside it. ``train_size=N`` draws a fixed,
seeded subset of N labelled chips (the low-resource protocol: 10/50/200/450).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from rsgeo.errors import InputError

log = logging.getLogger("rsgeo.finetune")
SCORE = {"height": "f1he_1", "segmentation": "miou", "change": "change_f1",
         "classification": "accuracy"}


def finetune(dataset, task: str, out: str | os.PathLike, *, encoder: str = "random",
             backbone: str | None = None, head: str | None = None, inputs: str = "rgb",
             freeze_encoder: bool = False, train_size: int | None = None,
             num_classes: int | None = None, class_weights: list[float] | None = None,
             crop: int | None = None, val_dataset=None, val_split: str = "val",
             head_features: int = 64, aux_landcover: bool = False, adapt_to=None,
             adapt: dict | None = None, encoder_lr_scale: float = 1.0,
             resume: bool = False, overwrite: bool = False, **train) -> dict:
    """Fine-tune a task model; returns a summary (best score, paths, steps).

    Args:
        dataset: a chip folder (``rsgeo prepare``) or a Dataset of dict samples.
        encoder: ``path/encoder.safetensors`` (or a fusedmim run folder for ``rgb+dsm``), a
            timm / Hugging Face / DINOv2 / MAE checkpoint (:mod:`rsgeo.models.external`),
            ``timm:NAME`` (timm's pretrained weights, needs them cached), or ``random``
            (then ``backbone`` names the architecture).
        val_dataset: a chip folder or Dataset to validate on (default: the ``val`` split).
        aux_landcover: height only: a second DPT head learns land cover (RS3DAda multi-task).
        adapt_to: height only: unlabelled target chips (folder or Dataset with ``rgb``) for
            RS3DAda-style adaptation (:mod:`rsgeo.finetune.adapt`; implies the aux head).
        adapt: adaptation options (``tau``, ``eta``, ``ema``, ``target_weight``,
            ``feat_weight``, ``feat_threshold``, ``ground_classes``; source style transfer
            ``style`` fda/hm/both/none, ``style_p``, ``fda_beta``, ``hm_blend``).
        encoder_lr_scale: encoder learning rate / head learning rate (RS3DAda: 0.1).
        train: engine settings (steps, epochs, batch_size, lr, device, precision, seed,
            workers, val_every: steps between validations, default about ten a run, ...).
    """
    import torch

    from rsgeo.finetune.data import TaskView, needed_modalities, subset_indices
    from rsgeo.finetune.tasks import TaskModule
    from rsgeo.models.task import TASKS, build_task_model
    from rsgeo.data.dataset import open_chips
    from rsgeo.train.runs import claim_run
    from rsgeo.train.config import TrainConfig
    from rsgeo.train.engine import Trainer, resolve_device

    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    from rsgeo.finetune.data import INPUTS

    if inputs not in INPUTS:
        raise InputError(f"--modalities must be one of {', '.join(INPUTS)}, got {inputs!r}")
    seed = int(train.get("seed", 0))
    resolve_device(train.get("device", "auto"))
    aux = bool(aux_landcover or adapt_to is not None)
    if aux and task != "height":
        raise InputError("--aux-landcover and --adapt-to are for --task height")
    mods = needed_modalities(task, inputs, aux)
    ds, stats, have, label = open_chips(dataset, mods, "train")
    missing = [m for m in mods if m not in have]
    if missing:
        raise InputError(f"{task} needs {', '.join(missing)} chips; the dataset has "
                         f"{', '.join(sorted(have))}", label)
    train_idx, val_ds, val_idx = _split(ds, dataset, val_dataset, mods, val_split, seed)
    if train_size is not None:
        if not 0 < train_size <= len(train_idx):
            raise InputError(f"--train-size {train_size} must be in 1..{len(train_idx)} "
                             "(labelled training chips)", label)
        train_idx = train_idx[subset_indices(len(train_idx), train_size, seed)]
    first = TaskView(ds, task, inputs, [0], train=False).sample(0)["x"]
    in_chans, chip = int(first.shape[0]), int(min(first.shape[-2:]))
    encoders, enc_meta, backbone = _encoders(encoder, backbone, inputs, int(crop or chip))
    crop = int(crop or chip)
    if task in ("segmentation", "classification") or aux:
        num_classes = num_classes or _num_classes(dataset)
    config = {"task": task, "backbone": backbone, "in_chans": in_chans, "img_size": crop,
              "head": head or ("upernet" if task == "segmentation" else "dpt"),
              "head_features": head_features, "num_classes": num_classes,
              "split": 3 if inputs.startswith("rgb+") and not (encoders and len(encoders) == 1) else None,
              "aux_classes": num_classes if aux else None}
    import random

    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)  # --seed: same run twice
    net = build_task_model(config, encoders)
    if crop % 32 or crop > chip:
        raise InputError(f"crop {crop} px must be a multiple of 32 and at most the chip size "
                         f"{chip} (use --crop)", label)
    if freeze_encoder:
        for p in net.encoder.parameters():
            p.requires_grad_(False)
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    if adapt_to is not None:
        from rsgeo.finetune.adapt import AdaptModule, split_style, structure_classes

        opts, style = split_style({"feat_weight": 0.0 if encoder == "random" else 1.0,
                                   **(adapt or {})})
        ground = opts.pop("ground_classes", None) or structure_classes(_classes(dataset))
        if not ground:
            raise InputError("--adapt-to needs the tree and building class ids of the source "
                             "land cover (dataset.json classes, or adapt ground_classes)", label)
        model = AdaptModule(net, ground, **opts)
    else:
        model = TaskModule(net, task, weights)
    meta = _bundle_meta(task, inputs, stats, dataset, crop, config, enc_meta, num_classes)

    out = Path(out)
    claim_run(out, "finetune", resume=resume, overwrite=overwrite)
    settings = {k: v for k, v in train.items() if v is not None}
    settings.setdefault("lr", 1e-4)
    settings.setdefault("weight_decay", 0.05)
    settings.setdefault("batch_size", min(16, len(train_idx)))
    extra = {"task": task, "encoder": str(encoder), "backbone": backbone, "inputs": inputs,
             "train_size": train_size, "freeze_encoder": freeze_encoder, "crop": crop,
             "dataset": label, "num_classes": num_classes, "head": config["head"],
             "aux_landcover": aux, "encoder_lr_scale": encoder_lr_scale,
             "adapt_to": None if adapt_to is None else str(adapt_to), "adapt": adapt or None,
             "encoder_report": enc_meta.get("load_report")}
    cfg = TrainConfig(extra=extra, **settings)
    view = TaskView(ds, task, inputs, train_idx, crop=crop, seed=seed, train=True, aux=aux)
    if adapt_to is not None:
        from rsgeo.finetune.adapt import AdaptView

        view = AdaptView(view, _target_chips(adapt_to), crop, seed, style)
    val_view = TaskView(val_ds, task, inputs, val_idx, crop=crop, seed=seed, train=False,
                        aux=aux)
    best = {"score": -np.inf, "metrics": None, "step": None}
    if resume and (out / "best.json").is_file():  # keep the best of the interrupted part
        prev = json.loads((out / "best.json").read_text())
        best.update(score=prev.get(SCORE[task], -np.inf), step=prev.pop("step", None),
                    metrics=prev)

    cache = {}

    def validate(trainer):
        """Score the model on the validation chips (rank 0 only); keep the best."""
        from rsgeo.finetune.validate import ValSet, evaluate_view, save_val_preview

        if not trainer.info.is_main:
            return None
        if "val" not in cache:  # collated once, resident on the training device
            cache["val"] = ValSet(val_view, trainer.device, max(8, 2 * trainer.micro))
        metrics = evaluate_view(trainer.model, cache["val"], task, num_classes=num_classes)
        score = metrics[SCORE[task]]
        if score > best["score"] or best["metrics"] is None:
            best.update(score=score, metrics=metrics, step=trainer.step)
            from rsgeo.models.task import save_task_model

            save_task_model(trainer.model.net, config, {**meta, "val": metrics,
                                                        "step": trainer.step}, out / "best.ckpt")
            save_val_preview(trainer.model, cache["val"], task, trainer.device,
                             out / "val_preview.png")
            (out / "best.json").write_text(json.dumps({"step": trainer.step, **metrics},
                                                      indent=2, default=float))
        return metrics

    groups = _param_groups(model, float(settings["weight_decay"]), encoder_lr_scale)
    trainer = Trainer(model, view, cfg, out, resume=resume, on_validate=validate,
                      param_groups=groups, job=f"finetune {task}")
    summary = trainer.fit()
    return {**summary, "best": best["metrics"], "best_step": best["step"],
            "checkpoint": str(out / "best.ckpt"), "train_chips": int(len(train_idx)),
            "val_chips": int(len(val_idx)), "config": config,
            "encoder_report": enc_meta.get("load_report")}


def _split(ds, dataset, val_dataset, mods, val_split, seed):
    from rsgeo.data.dataset import open_chips

    n = len(ds)
    if val_dataset is not None:
        if isinstance(val_dataset, (str, os.PathLike)):
            val_dataset, *_ = open_chips(val_dataset, mods, val_split)
        return np.arange(n), val_dataset, np.arange(len(val_dataset))
    if isinstance(dataset, (str, os.PathLike)):
        try:
            vds, *_ = open_chips(dataset, mods, val_split)
            return np.arange(n), vds, np.arange(len(vds))
        except InputError:
            pass
    if n < 2:
        raise InputError("need at least 2 labelled chips (one for validation)")
    order = np.random.default_rng(seed + 1).permutation(n)
    k = max(1, n // 10)
    return np.sort(order[k:]), ds, np.sort(order[:k])


def _target_chips(target):
    """Unlabelled target chips for --adapt-to: the train split, else every kept chip."""
    from rsgeo.data.dataset import open_chips

    if not isinstance(target, (str, os.PathLike)):
        return target
    try:
        return open_chips(target, ("rgb",), "train")[0]
    except InputError as e:
        if "no train chips" not in str(e):
            raise
    return open_chips(target, ("rgb",), None)[0]


def _param_groups(model, weight_decay: float, encoder_lr_scale: float) -> list[dict]:
    """The engine's AdamW groups, split so the encoder learns at ``encoder_lr_scale`` x lr."""
    from rsgeo.train.engine import param_groups

    enc = {id(p) for p in model.net.encoder.parameters()}
    groups = []
    for g in param_groups(model, weight_decay):
        for scale, params in ((encoder_lr_scale, [p for p in g["params"] if id(p) in enc]),
                              (1.0, [p for p in g["params"] if id(p) not in enc])):
            if params:
                groups.append({**g, "params": params, "lr_scale": scale})
    return groups


def _classes(dataset) -> dict | None:
    if isinstance(dataset, (str, os.PathLike)):
        return json.loads((Path(dataset) / "dataset.json").read_text()).get("classes")
    return getattr(dataset, "classes", None)


def _encoders(encoder: str, backbone: str | None, inputs: str, chip: int):
    """(list of encoders or None, encoder meta, backbone name)."""
    from rsgeo.models.backbones import check_backbone, load_encoder
    from rsgeo.models.external import BANDS, is_rsgeo_encoder, open_encoder

    if encoder == "random":
        if not backbone:
            raise InputError("--encoder random needs --backbone NAME")
        check_backbone(backbone)
        return None, {}, backbone
    if encoder.startswith("timm:"):
        import timm

        name = encoder[5:]
        check_backbone(name)
        try:
            enc = timm.create_model(name, pretrained=True, num_classes=0, img_size=chip,
                                    dynamic_img_size=True, in_chans=BANDS[inputs])
        except Exception as e:
            raise InputError(f"could not load timm's pretrained weights for {name} "
                             f"({type(e).__name__}); they must be in the local cache") from None
        return [enc], {"source": encoder}, name
    p = Path(encoder)
    if inputs.startswith("rgb+") and (is_rsgeo_encoder(p) or (p / "encoder_rgb.safetensors").is_file()):
        if not p.is_dir():
            raise InputError("--modalities rgb+dsm needs a fusedmim run folder "
                             "(encoder_rgb.* and encoder_dsm.*)", p)
        a, ma = load_encoder(p / "encoder_rgb.safetensors")
        b, mb = load_encoder(p / "encoder_dsm.safetensors")
        return [a, b], {"rgb": ma, "dsm": mb}, ma["backbone"]
    enc, meta = open_encoder(p, backbone, inputs, chip)
    return [enc], meta, meta["backbone"]


def _num_classes(dataset) -> int:
    if isinstance(dataset, (str, os.PathLike)):
        info = json.loads((Path(dataset) / "dataset.json").read_text())
        classes = info.get("classes") or {}
        if classes:
            return max(int(k) for k in classes) + 1
    n = getattr(dataset, "num_classes", None)
    if n:
        return int(n)
    raise InputError("the dataset does not list its classes; pass --num-classes")


def _bundle_meta(task, inputs, stats, dataset, crop, config, enc_meta, num_classes) -> dict:
    """What predict-height needs to feed the model (see rsgeo.models.task)."""
    from rsgeo.finetune.data import INPUTS
    from rsgeo.data.dataset import pooled_stats

    mean, std, bands = [], [], []
    for m in INPUTS[inputs]:
        if m == "rgb":
            st = pooled_stats(stats, m)
            mean += st.get("mean", [0.0] * 3)
            std += st.get("std", [1.0] * 3)
            bands += ["red", "green", "blue"]
        else:  # ChipDataset feeds heights in metres, unnormalised: record exactly that
            mean, std, bands = mean + [0.0], std + [1.0], bands + [m]
    gsd = None
    if isinstance(dataset, (str, os.PathLike)):
        info = json.loads((Path(dataset) / "dataset.json").read_text())
        gsd = info.get("gsd")
    classes = None
    if isinstance(dataset, (str, os.PathLike)) and task in ("segmentation", "classification"):
        classes = json.loads((Path(dataset) / "dataset.json").read_text()).get("classes")
    return {"task": task, "bands": bands, "mean": mean, "std": std, "input_range": [0, 255],
            "gsd": gsd, "tile": max(crop, 256) // 32 * 32, "overlap": max(crop, 256) // 8,
            "units": "m" if task == "height" else "class", "nodata": -9999,
            "num_classes": num_classes, "classes": classes,
            "encoder": {k: v for k, v in enc_meta.items() if k in ("backbone", "method", "steps")}
            if isinstance(enc_meta, dict) else None}
