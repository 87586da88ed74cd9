"""``rsgeo finetune DATASET --task T --encoder E -o RUN2/``: task models from an encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand

from rsgeo.cli.app import app
from rsgeo.cli.helptext import examples
from rsgeo.cli.options import DIR, SEED_MAX, DeviceChoice, Json, Overwrite, Precision
from rsgeo.errors import InputError


class FinetuneCommand(TyperCommand):
    """``rsgeo finetune`` whose --task/--head/--modalities help and choices (and the tasks
    --class-weights serves) are read from the task registry (:mod:`rsgeo.tasks`) when the
    command is used, so tasks registered at run time appear too; the values are checked by
    the library (exit 2, one line)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        from rsgeo.tasks import INPUTS, all_heads, get_task, task_names  # lazy: numpy; rsgeo --help stays fast

        specs = [get_task(n) for n in task_names()]
        text = {
            "task": ("What to learn: " + ", ".join(task_names()) + ".", list(task_names())),
            "head": ("Head per task (default: the first): " + "; ".join(
                f"{s.name}: {', '.join(s.heads)}" for s in specs) + ".", list(all_heads())),
            "modalities": ("Input bands per task: " + "; ".join(
                f"{s.name}: {', '.join(s.inputs)}" for s in specs) + ".", list(INPUTS))}
        weighted = [s.name for s in specs if s.weighted_loss]
        for p in params:
            if p.name in text:
                p.help, choices = text[p.name]
                p.metavar = "<name>"
                p.completion_choices = choices  # read by rsgeo.cli.completion
            elif p.name == "class_weights":
                p.help = ("Comma-separated weight per class, for the tasks whose loss takes "
                          f"them: {', '.join(weighted)}.")
        return params


@app.command("finetune", cls=FinetuneCommand, epilog=examples(
    'rsgeo finetune chips/ --task height --encoder runs/mae -o runs/height',
    'rsgeo finetune chips/ --task segmentation --backbone vit-tiny-4 -o runs/seg'))
def finetune_cmd(
    dataset: Annotated[Path, typer.Argument(help="Chip dataset folder (rsgeo prepare).")],
    task: Annotated[str, typer.Option("--task", help="What to learn (a registered task).")],
    output: Annotated[Path, typer.Option("-o", "--output", metavar=DIR, help="Run folder (best.ckpt, metrics).")],
    encoder: Annotated[str, typer.Option("--encoder", help="A pretraining RUN folder (fusedmim: the branch for --inputs, both for rgb+dsm) or RUN/encoder.safetensors, a timm/HF/DINOv2/MAE checkpoint file or HF folder, timm:NAME or random.")] = "random",
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Architecture (needed with random).")] = None,
    head: Annotated[Optional[str], typer.Option("--head", help="Head (default: the task's first).")] = None,
    modalities: Annotated[str, typer.Option("--modalities", "--inputs", help="Input bands.")] = "rgb",
    freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="Train the head only, the encoder stays as loaded (a probe of its features; the linear probe with --task classification). Default: full fine-tuning.")] = False,
    train_size: Annotated[Optional[int], typer.Option("--train-size", min=1, help="A fixed, seeded subset of N labelled chips.")] = None,
    num_classes: Annotated[Optional[int], typer.Option("--num-classes", min=2, help="Classes (default: from dataset.json).")] = None,
    class_weights: Annotated[Optional[str], typer.Option("--class-weights", help="Comma-separated weight per class.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Run length in epochs (default 1 when --steps is not given).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Run length in optimiser steps (wins over --epochs).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Global batch (all processes) per optimiser step (default 16, or the number of training chips when fewer).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default 1e-4).")] = None,
    val_every: Annotated[Optional[int], typer.Option("--val-every", min=0, help="Steps between validations (default: about 10 a run, and always at the end; 0: only at the end).")] = None,
    crop: Annotated[Optional[int], typer.Option("--crop", min=32, help="Training crop px (multiple of 32; default the chip size).")] = None,
    aux_landcover: Annotated[bool, typer.Option("--aux-landcover", help="Height: also learn land cover with a second head (RS3DAda multi-task).")] = False,
    adapt_to: Annotated[Optional[Path], typer.Option("--adapt-to", help="Height: unlabelled target chip dataset for RS3DAda-style adaptation (EMA teacher, ground-masked pseudo heights, ClassMix).")] = None,
    style: Annotated[str, typer.Option("--style", help="With --adapt-to: source style transfer toward the target, fda, hm (histogram matching), both (RS3DAda: one of them, p 0.8) or none.")] = "both",
    val_dataset: Annotated[Optional[Path], typer.Option("--val-dataset", help="Chip dataset to validate on (default: DATASET's val split).")] = None,
    encoder_lr_scale: Annotated[float, typer.Option("--encoder-lr-scale", min=0.0, help="Encoder lr / head lr (RS3DAda uses 0.1).")] = 1.0,
    layer_decay: Annotated[float, typer.Option("--layer-decay", help="Layer-wise lr decay in (0, 1] (BEiT/MAE, e.g. 0.75; 1: off): encoder layer l of L+1 (0 embeddings, blocks 1..L) learns at lr x encoder-lr-scale x F^(L+1-l); ViT and Swin encoders.")] = 1.0,
    head_steps: Annotated[int, typer.Option("--head-steps", min=0, help="LP-FT: the first N steps train the head only (encoder frozen as loaded), then everything trains (0: off).")] = 0,
    photometric: Annotated[float, typer.Option("--photometric", min=0.0, help="Per-sample colour jitter (brightness +-2S std, contrast and saturation x 1+-S) and blur of the training images, strength S (0: off; e.g. 0.4 for synthetic cities meant for real imagery).")] = 0.0,
    device: Annotated[DeviceChoice, typer.Option("--device", help="Where to train: auto picks CUDA when available.")] = DeviceChoice.auto,
    precision: Annotated[Precision, typer.Option("--precision", help="Autocast precision (fp16: CUDA only).")] = Precision.fp32,
    seed: Annotated[int, typer.Option("--seed", min=0, max=SEED_MAX, help="Random seed (chip subset, crops, init).")] = 0,
    workers: Annotated[int, typer.Option("--workers", min=0, help="DataLoader workers per process.")] = 0,
    log_every: Annotated[Optional[int], typer.Option("--log-every", min=1, help="Steps between metrics records (default 10).")] = None,
    ckpt_every: Annotated[Optional[int], typer.Option("--ckpt-every", min=1, help="Steps between checkpoints (default 500; one at the end and on SIGTERM/SIGINT).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUTPUT from its last checkpoint (same settings).")] = False,
    overwrite: Overwrite = False,
    json_out: Json = False,
):
    """Fine-tune a task model (height, segmentation, change, classification, ...: see
    --task) from a pretrained (or random) encoder; the best validation checkpoint is
    OUTPUT/best.ckpt."""
    from rsgeo.cli import preflight  # lazy: task and method registries; --help stays fast

    weights = None
    if class_weights:
        try:
            weights = [float(w) for w in class_weights.split(",")]
        except ValueError:
            raise InputError(f"--class-weights {class_weights!r} is not a list of numbers") from None
    preflight.finetune(dataset, task, output, encoder=encoder, backbone=backbone, head=head,
                       inputs=modalities, val_dataset=val_dataset, adapt_to=adapt_to,
                       num_classes=num_classes, class_weights=weights,
                       aux=aux_landcover or adapt_to is not None,
                       resume=resume, overwrite=overwrite)  # answered before torch loads
    # lazy: torch + timm; `rsgeo --help` stays fast
    from rsgeo.finetune import finetune
    from rsgeo.train.runs import removed_if_refused

    if adapt_to is None and style != "both":
        raise InputError(f"--style {style} needs --adapt-to (source style transfer toward "
                         "unlabelled target chips)")
    with removed_if_refused(output):
        s = finetune(dataset, task, output, encoder=encoder, backbone=backbone,
                     head=head, inputs=modalities,
                     freeze_encoder=freeze_encoder, train_size=train_size, num_classes=num_classes,
                     class_weights=weights, crop=crop, aux_landcover=aux_landcover,
                     adapt_to=adapt_to, adapt={"style": style} if adapt_to else None,
                     val_dataset=val_dataset, encoder_lr_scale=encoder_lr_scale,
                     layer_decay=layer_decay, photometric=photometric, head_steps=head_steps,
                     resume=resume, overwrite=overwrite,
                     epochs=epochs, steps=steps, batch_size=batch_size, lr=lr, device=device.value,
                     precision=precision.value, seed=seed, workers=workers, val_every=val_every,
                     log_every=log_every, ckpt_every=ckpt_every)
    if json_out:
        typer.echo(json.dumps(s, default=float))
    else:
        best = ", ".join(f"{k} {v:.4g}" for k, v in (s["best"] or {}).items())
        typer.echo(f"{s['checkpoint']}: best at step {s['best_step']} ({best}); "
                   f"{s['seconds']:.0f} s, validation {100 * s['val_share']:.0f} % of it; "
                   f"{s['lr_rule']}")
