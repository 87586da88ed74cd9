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
``RUN/best.ckpt`` (a task checkpoint :mod:`rsgeo.tasks.bundle`; ``rsgeo export`` turns it
into ONNX), with ``best.json`` and a validation preview PNG beside it. ``train_size=N`` draws a fixed,
seeded subset of N labelled chips (the low-resource protocol: 10/50/200/450).
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rsgeo.data.dataset import open_chips, pooled_stats
from rsgeo.data.folder import dataset_classes
from rsgeo.errors import InputError
from rsgeo.finetune.adapt import AdaptModule, AdaptView, split_style, structure_classes
from rsgeo.finetune.data import TaskView, needed_modalities, subset_indices
from rsgeo.finetune.lr_decay import (check_head_steps, check_layer_decay, finetune_groups,
                                     lr_rule)
from rsgeo.finetune.tasks import TaskModule
from rsgeo.finetune.validate import ValSet, evaluate_view, save_val_preview
from rsgeo.io.atomic import all_or_nothing, atomic_path, replacing
from rsgeo.models.backbones import (check_backbone, load_encoder, resize_encoder,
                                    timm_pretrained)
from rsgeo.models.external import BANDS, is_rsgeo_encoder, open_encoder
from rsgeo.tasks.bundle import build_task_model, save_task_model
from rsgeo.tasks.files import check_encoder_arg
from rsgeo.tasks import INPUTS, TaskSpec, get_task
from rsgeo.train.config import TrainConfig
from rsgeo.train.engine import Trainer, resolve_device
from rsgeo.train.runs import claim_run
from rsgeo.train.style import StyleTransfer

log = logging.getLogger("rsgeo.finetune")


def finetune(dataset, task: str, out: str | os.PathLike, *, encoder: str = "random",
             backbone: str | None = None, head: str | None = None, inputs: str = "rgb",
             freeze_encoder: bool = False, train_size: int | None = None,
             num_classes: int | None = None, class_weights: list[float] | None = None,
             crop: int | None = None, val_dataset=None, val_split: str = "val",
             head_features: int = 64, aux_landcover: bool = False, adapt_to=None,
             adapt: dict | None = None, encoder_lr_scale: float = 1.0, layer_decay: float = 1.0,
             feature_norm: bool = True, photometric: float = 0.0, head_steps: int = 0,
             resume: bool = False, overwrite: bool = False, **train) -> dict:
    """Fine-tune a task model; returns a summary (best score, paths, steps).

    Args:
        dataset: a chip folder (``rsgeo prepare``) or a Dataset of dict samples.
        task: a registered task (:mod:`rsgeo.tasks`): height, segmentation, change,
            classification, or one registered at run time.
        head: one of the task's heads (default: its first).
        inputs: one of the task's input sets (rgb, dsm, ndsm, rgb+dsm, rgb+ndsm).
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
        freeze_encoder: train the head(s) only (a probe of the encoder's features; with
            ``task="classification"`` the classic linear probe); default: full fine-tuning.
        encoder_lr_scale: encoder learning rate / head learning rate (RS3DAda: 0.1).
        layer_decay: layer-wise learning-rate decay in (0, 1] (BEiT/MAE; 1: off; MAE uses
            0.65-0.75): encoder layer ``l`` of ``L + 1`` learns at ``lr x encoder_lr_scale x
            layer_decay ** (L + 1 - l)`` (:mod:`rsgeo.finetune.lr_decay`).
        head_steps: LP-FT (Kumar et al. 2022): the first ``head_steps`` steps train the
            head(s) only, the encoder frozen as loaded; then everything (0: off; TaskModule).
        feature_norm: ViT feature levels through the encoder's final LayerNorm (as DINOv2's DPT).
        photometric: per-sample colour jitter / blur strength on training inputs (0: off).
        train: engine settings (steps, epochs, batch_size, lr, device, precision, seed,
            workers, val_every: steps between validations, default about ten a run, ...).
    """
    spec = get_task(task)
    head, seed = _check_options(spec, head, inputs, train, layer_decay, freeze_encoder,
                                head_steps)
    aux = _check_aux(spec, aux_landcover, adapt_to, adapt)
    num_classes = spec.check_classes(num_classes, class_weights,
                                     *_dataset_classes(spec, aux, dataset, val_dataset))
    data = _open_data(dataset, val_dataset, spec, inputs, aux, val_split, train_size, seed)
    model = _build_model(spec, data, encoder=encoder, backbone=backbone, head=head, inputs=inputs,
                         crop=crop, num_classes=num_classes, head_features=head_features,
                         aux=aux, seed=seed, feature_norm=feature_norm)
    for p in model.net.encoder.parameters() if freeze_encoder else ():
        p.requires_grad_(False)
    weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
    module, style = _adapt_module(model.net, encoder, dataset, adapt, data.label, head_steps) \
        if adapt_to is not None else (TaskModule(model.net, task, weights, photometric,
                                                 head_steps), None)
    out = Path(out)
    claim_run(out, "finetune", resume=resume, overwrite=overwrite, inputs=(dataset,))
    extra = {"task": task, "encoder": str(encoder), "backbone": model.config["backbone"],
             "inputs": inputs, "train_size": train_size, "freeze_encoder": freeze_encoder,
             "crop": model.crop, "dataset": data.label, "num_classes": model.num_classes,
             "head": head, "aux_landcover": aux, "encoder_lr_scale": encoder_lr_scale,
             "layer_decay": layer_decay, "head_steps": head_steps, "photometric": photometric,
             "adapt": adapt or None, "val_dataset": _dataset_label(val_dataset),
             "class_weights": class_weights and [float(w) for w in class_weights],
             "adapt_to": None if adapt_to is None else str(adapt_to), "encoder_report": model.report}
    view = TaskView(data.ds, task, inputs, data.train_idx, crop=model.crop, seed=seed,
                    train=True, aux=aux)
    if adapt_to is not None:
        view = AdaptView(view, _target_chips(adapt_to), model.crop, seed, style)
    val_view = TaskView(data.val_ds, task, inputs, data.val_idx, crop=model.crop, seed=seed,
                        train=False, aux=aux)
    with replacing(out):  # --overwrite: the earlier run comes back if this one fails first
        keeper = BestKeeper(spec, val_view, out, model, resume)
        summary = _train(module, view, out, train, extra, keeper, resume, len(data.train_idx))
    return {**summary, "best": keeper.metrics, "best_step": keeper.step,
            "checkpoint": str(out / "best.ckpt"), "train_chips": int(len(data.train_idx)),
            "val_chips": int(len(data.val_idx)), "config": model.config,
            "encoder_report": model.report}


def _check_options(spec: TaskSpec, head: str | None, inputs: str, train: dict,
                   layer_decay: float, freeze_encoder: bool, head_steps: int) -> tuple[str, int]:
    """``(head, seed)``; InputError for a head, input set, device, layer decay or LP-FT
    phase the run cannot take (all before any data or weights are read)."""
    head = spec.check_head(head)
    spec.check_inputs(inputs)
    resolve_device(train.get("device", "auto"))
    check_layer_decay(layer_decay, freeze_encoder)
    check_head_steps(head_steps, freeze_encoder, train.get("steps"))
    return head, int(train.get("seed", 0))


def _check_aux(spec: TaskSpec, aux_landcover: bool, adapt_to, adapt: dict | None) -> bool:
    """Whether the land-cover aux head is on (``--aux-landcover`` or ``--adapt-to``);
    InputError for adaptation options without a target or a task without the aux head."""
    if adapt and adapt_to is None:
        raise InputError(f"adaptation options ({', '.join(sorted(adapt))}) need --adapt-to")
    aux = bool(aux_landcover or adapt_to is not None)
    if aux and not spec.aux_landcover:
        raise InputError(f"--aux-landcover and --adapt-to are not available for --task "
                         f"{spec.name} (use --task height)")
    return aux


@dataclass
class _Data:
    """Opened chips: training set and indices, validation set and indices, stats, label."""

    ds: object
    stats: dict
    label: str
    train_idx: np.ndarray
    val_ds: object
    val_idx: np.ndarray
    dataset: object


@dataclass
class _Model:
    """The network to train, its config and checkpoint meta, crop and class count."""

    net: torch.nn.Module
    config: dict
    meta: dict
    crop: int
    num_classes: int | None
    report: dict | None = None  # the external encoder's load report (rsgeo.models.external)


def _open_data(dataset, val_dataset, spec: TaskSpec, inputs: str, aux: bool, val_split: str,
               train_size: int | None, seed: int) -> _Data:
    """Open the chips a task needs (one-line errors for missing modalities or sizes)."""
    mods = needed_modalities(spec.name, inputs, aux)
    ds, stats, have, label = open_chips(dataset, mods, "train")
    missing = [m for m in mods if m not in have]
    if missing:
        raise InputError(f"{spec.name} needs {', '.join(missing)} chips; the dataset has "
                         f"{', '.join(sorted(have))}", label)
    train_idx, val_ds, val_idx = _split(ds, dataset, val_dataset, mods, val_split, seed)
    if train_size is not None:
        if not 0 < train_size <= len(train_idx):
            raise InputError(f"--train-size {train_size} must be in 1..{len(train_idx)} "
                             "(labelled training chips)", label)
        train_idx = train_idx[subset_indices(len(train_idx), train_size, seed)]
    return _Data(ds, stats, label, train_idx, val_ds, val_idx, dataset)


def _build_model(spec: TaskSpec, data: _Data, *, encoder, backbone, head, inputs, crop,
                 num_classes, head_features, aux, seed, feature_norm=True) -> _Model:
    """Encoders, config, network (seeded) and the checkpoint meta."""
    first = TaskView(data.ds, spec.name, inputs, [0], train=False).sample(0)["x"]
    in_chans, chip = int(first.shape[0]), int(min(first.shape[-2:]))
    encoders, enc_meta, backbone = _encoders(encoder, backbone, inputs, int(crop or chip))
    crop = int(crop or chip)
    config = {"task": spec.name, "backbone": backbone, "in_chans": in_chans, "img_size": crop,
              "head": head, "head_features": head_features, "num_classes": num_classes,
              "split": 3 if len(INPUTS[inputs]) > 1 and not (encoders and len(encoders) == 1)
              else None,
              "aux_classes": num_classes if aux else None, "feature_norm": bool(feature_norm)}
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)  # --seed: same run twice
    net = build_task_model(config, encoders)
    if crop % 32 or crop > chip:
        raise InputError(f"crop {crop} px must be a multiple of 32 and at most the chip size "
                         f"{chip} (use --crop)", data.label)
    meta = _bundle_meta(spec, inputs, data.stats, data.dataset, crop, enc_meta, num_classes)
    return _Model(net, config, meta, crop, num_classes, enc_meta.get("load_report"))


def _adapt_module(net, encoder, dataset, adapt, label,
                  head_steps: int = 0) -> tuple[AdaptModule, StyleTransfer | None]:
    """RS3DAda-style adaptation around a height network with the land-cover head, and the
    source style transfer (FDA / histogram matching) its options ask for."""
    opts, style = split_style({"feat_weight": 0.0 if encoder == "random" else 1.0,
                               **(adapt or {})})
    ground = opts.pop("ground_classes", None) or structure_classes(_classes(dataset))
    if not ground:
        raise InputError("--adapt-to needs the tree and building class ids of the source "
                         "land cover (dataset.json classes, or adapt ground_classes)", label)
    return AdaptModule(net, ground, head_steps=head_steps, **opts), style


def _train(module, view, out: Path, train: dict, extra: dict, keeper, resume: bool,
           n_train: int) -> dict:
    """Run the engine with the fine-tuning defaults; validation goes through ``keeper``.

    Learning rates per parameter group: :mod:`rsgeo.finetune.lr_decay` (``extra`` holds
    ``encoder_lr_scale``, ``layer_decay`` and ``freeze_encoder``); the summary adds ``lr``
    and ``lr_rule``."""
    settings = {k: v for k, v in train.items() if v is not None}
    settings.setdefault("lr", 1e-4)
    settings.setdefault("weight_decay", 0.05)
    settings.setdefault("batch_size", min(16, n_train))
    if extra["head_steps"]:  # DDP: the frozen encoder gets no gradient in the first phase
        settings.setdefault("find_unused_parameters", True)
    cfg = TrainConfig(extra=extra, **settings)
    encoders = list(getattr(module.net.encoder, "encoders", [module.net.encoder]))
    scale, decay = extra["encoder_lr_scale"], extra["layer_decay"]
    groups = finetune_groups(module, encoders, cfg.weight_decay, scale, decay)
    rule = lr_rule(cfg.lr, encoders, scale, decay, extra["freeze_encoder"], extra["head_steps"])
    trainer = Trainer(module, view, cfg, out, resume=resume, on_validate=keeper,
                      param_groups=groups, job=f"finetune {extra['task']}")
    return {**trainer.fit(), "lr": cfg.lr, "lr_rule": rule}


class BestKeeper:
    """The engine's ``on_validate`` hook: score the validation chips (rank 0 only) with the
    task's accumulator and keep the best model (by the spec's score and direction) as
    ``best.ckpt``, ``best.json`` and ``val_preview.png``. With ``resume`` the best of the
    interrupted part (``best.json``) is the one to beat."""

    def __init__(self, spec: TaskSpec, val_view, out: Path, model: _Model, resume: bool):
        self.spec, self.val_view, self.out, self.model = spec, val_view, Path(out), model
        self.metrics, self.step, self.cache = None, None, None
        self.sign = 1.0 if spec.higher_is_better else -1.0
        self.score = -np.inf
        if resume and (self.out / "best.json").is_file():
            prev = self._previous(self.out / "best.json")
            self.step = prev.pop("step", None)
            self.metrics = prev
            self.score = self.sign * prev.get(spec.score, self.sign * -np.inf)

    def _previous(self, path: Path) -> dict:
        """The best so far from ``best.json`` (InputError naming it when damaged)."""
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            prev = None
        if not isinstance(prev, dict) or not isinstance(prev.get(self.spec.score), (int, float)):
            raise InputError(f"damaged (not the JSON record of best.ckpt's {self.spec.score}); "
                             "--resume needs it to know the best so far", path)
        return prev

    def __call__(self, trainer):
        if not trainer.info.is_main:
            return None
        if self.cache is None:  # collated once, resident on the training device
            self.cache = ValSet(self.val_view, trainer.device, max(8, 2 * trainer.micro))
        metrics = evaluate_view(trainer.model, self.cache, self.spec.name,
                                num_classes=self.model.num_classes)
        score = self.sign * metrics[self.spec.score]
        if score > self.score or self.metrics is None:
            with all_or_nothing():  # a failed write (disk full) keeps the previous best's three
                save_task_model(trainer.model.net, self.model.config,
                                {**self.model.meta, "val": metrics, "step": trainer.step},
                                self.out / "best.ckpt")
                save_val_preview(trainer.model, self.cache, self.spec.name, trainer.device,
                                 self.out / "val_preview.png")
                with atomic_path(self.out / "best.json", overwrite=True) as tmp:
                    tmp.write_text(json.dumps({"step": trainer.step, **metrics}, indent=2,
                                              default=float))
            self.score, self.metrics, self.step = score, metrics, trainer.step  # once saved
        return metrics


def _split(ds, dataset, val_dataset, mods, val_split, seed):
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


def _dataset_label(dataset) -> str | None:
    """How a run's config records a dataset: a folder's resolved path (as ``open_chips``
    labels it), an in-memory Dataset's class name, None for none."""
    if dataset is None:
        return None
    if isinstance(dataset, (str, os.PathLike)):
        return str(Path(dataset).resolve())
    return type(dataset).__name__


def _target_chips(target):
    """Unlabelled target chips for --adapt-to: the train split, else every kept chip."""
    if not isinstance(target, (str, os.PathLike)):
        return target
    try:
        return open_chips(target, ("rgb",), "train")[0]
    except InputError as e:
        if "no train chips" not in str(e):
            raise
    return open_chips(target, ("rgb",), None)[0]


def _classes(dataset) -> dict | None:
    if isinstance(dataset, (str, os.PathLike)):
        return json.loads((Path(dataset) / "dataset.json").read_text()).get("classes")
    return getattr(dataset, "classes", None)


def _encoders(encoder: str, backbone: str | None, inputs: str, chip: int):
    """(list of encoders or None, encoder meta, backbone name)."""
    check_encoder_arg(encoder, backbone)
    if encoder == "random":
        check_backbone(backbone)
        return None, {}, backbone
    if encoder.startswith("timm:"):
        name = encoder[5:]
        enc = timm_pretrained(name, num_classes=0, img_size=chip, dynamic_img_size=True,
                              in_chans=BANDS[inputs])
        return [enc], {"source": encoder}, name
    p = Path(encoder)
    if len(INPUTS[inputs]) > 1 and (is_rsgeo_encoder(p) or (p / "encoder_rgb.safetensors").is_file()):
        if not p.is_dir():
            raise InputError(f"--modalities {inputs} needs a fusedmim run folder "
                             "(encoder_rgb.* and encoder_dsm.*)", p)
        a, ma = resize_encoder(*load_encoder(p / "encoder_rgb.safetensors"), chip)
        b, mb = resize_encoder(*load_encoder(p / "encoder_dsm.safetensors"), chip)
        return [a, b], {"rgb": ma, "dsm": mb}, ma["backbone"]
    enc, meta = open_encoder(p, backbone, inputs, chip)
    return [enc], meta, meta["backbone"]


def _dataset_classes(spec: TaskSpec, aux: bool, *datasets) -> tuple:
    """``(declared, aux, found)`` for :meth:`TaskSpec.check_classes`: the most classes the
    datasets declare (a folder's dataset.json class ids, a Dataset's ``num_classes``; None
    when none lists any) and, for folders that list none, the largest class id in their
    label chips + 1 (:func:`rsgeo.data.folder.dataset_classes`)."""
    folders = [d for d in datasets if isinstance(d, (str, os.PathLike))]
    declared, found = dataset_classes(folders, spec.class_modality(aux))
    objects = [getattr(d, "num_classes", None) for d in datasets
               if d is not None and not isinstance(d, (str, os.PathLike))]
    declared = max((int(n) for n in [declared, *objects] if n), default=None)
    return declared, aux, found


def recommended_tile(crop: int) -> tuple[int, int]:
    """(tile, overlap) in px that ``predict`` uses by default for a model trained on ``crop``
    px crops: twice the crop up to 256 px, never below the crop, a multiple of 32; overlap an
    eighth of the tile. Measured on three real height rasters (``benchmarks/synth_to_real.py``)
    with five height models trained on 64 px synthetic crops: 128 px tiles scored a higher
    F1^HE than 256 px tiles in 12 of 15 site-model pairs (a ViT whose position embeddings
    are stretched from the 4 x 4 token grid it learnt to 16 x 16, presumably, loses more
    than the added context gives)."""
    tile = max(crop, min(2 * crop, 256)) // 32 * 32
    return tile, tile // 8


def _bundle_meta(spec: TaskSpec, inputs, stats, dataset, crop, enc_meta, num_classes) -> dict:
    """What prediction needs to feed the model and read its output (see rsgeo.tasks.bundle)."""
    mean, std, bands = [], [], []
    for m in INPUTS[inputs]:
        if m == "rgb":
            st = pooled_stats(stats, m)
            mean += st.get("mean", [0.0] * 3)
            std += st.get("std", [1.0] * 3)
            bands += ["red", "green", "blue"]
        else:  # ChipDataset feeds heights in metres, unnormalised: record exactly that
            mean, std, bands = mean + [0.0], std + [1.0], bands + [m]
    info = json.loads((Path(dataset) / "dataset.json").read_text()) \
        if isinstance(dataset, (str, os.PathLike)) else {}
    classes = info.get("classes") if spec.needs_classes else None
    return {"task": spec.name, "bands": bands, "mean": mean, "std": std,
            "input_range": [0, 255], "gsd": info.get("gsd"),
            **dict(zip(("tile", "overlap"), recommended_tile(crop))),
            "units": spec.units, "nodata": -9999, "num_classes": num_classes,
            "classes": classes,
            "encoder": {k: v for k, v in enc_meta.items() if k in ("backbone", "method", "steps")}
            if isinstance(enc_meta, dict) else None}
