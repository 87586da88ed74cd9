"""``rsgeo pretrain DATASET --method M --backbone B -o RUN/``: masked-image pretraining.

Thin: parses options and calls :func:`rsgeo.pretrain.pretrain`. Options left unset fall
back to ``--config run.yaml`` (keys = option names), then to the defaults. ``--method``
choices and the per-method flags (``--mask-ratio``, ``--rec-ratio``, ...) are generated
from :mod:`rsgeo.methods.registry` each time the command is built, so a method registered
at run time shows up with its options.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Annotated, Any, Optional, get_origin

import typer

from rsgeo import progress
from rsgeo.cli.app import app, state
from rsgeo.cli.helptext import examples
from rsgeo.cli.generated import DynamicCommand, choice_enum, keyword_params, option_param, plain
from rsgeo.cli.options import DIR, SEED_MAX, DeviceChoice, Json, Overwrite, Precision
from rsgeo.errors import InputError
from rsgeo.jsonout import dumps
from rsgeo.methods import registry
from rsgeo.train.config import read_yaml


Modality = choice_enum("Modality", registry.MODALITIES)
HeightModality = choice_enum("HeightModality", registry.HEIGHT_MODALITIES)


def _opt(*names, help: str, **kw):
    return typer.Option(*names, help=help, **kw)


def pretrain_command(
    dataset: Annotated[Path, typer.Argument(help="Chip dataset folder (from rsgeo prepare).")],
    output: Annotated[Path, _opt("-o", "--output", metavar=DIR, help="Run folder (checkpoints, metrics, "
                                 "previews, encoder weights).")],
    method: Annotated[Optional[str], _opt("--method", help="Pretraining method.")] = None,
    backbone: Annotated[Optional[str], _opt("--backbone", help="Encoder: vit-tiny-4, swin-tiny-2 "
                                            "or a timm ViT/Swin name.")] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", min=1, help="Run length in epochs.")] = None,
    steps: Annotated[Optional[int], _opt("--steps", min=1, help="Run length in optimiser steps "
                                         "(wins over --epochs).")] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", min=1, help="Global batch (all "
                                              "processes) per optimiser step (default 64).")] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Peak learning rate (default: the method's base lr x batch/256 from batch 256 up, x sqrt(batch/256) below).")] = None,
    modality: Annotated[Optional[Modality], _opt("--modality", help="Bands a single-encoder "
                                                 "method trains on (default rgb).")] = None,
    dsm_modality: Annotated[Optional[HeightModality], _opt("--dsm-modality", help="fusedmim: "
                                                           "height modality (default dsm).")] = None,
    crop: Annotated[Optional[int], _opt("--crop", min=16, help="Random-crop size in px "
                                        "(default the chip size).")] = None,
    accum_steps: Annotated[Optional[int], _opt("--accum-steps", min=1,
                                               help="Gradient accumulation steps (default 1).")] = None,
    config: Annotated[Optional[Path], _opt("--config", help="YAML file of option: value.")] = None,
    resume: Annotated[bool, _opt("--resume", help="Continue the run in OUTPUT from its last "
                                 "checkpoint (same settings).")] = False,
    device: Annotated[Optional[DeviceChoice], _opt("--device", help="Where to train (default auto).")] = None,
    precision: Annotated[Optional[Precision], _opt("--precision", help="Autocast precision "
                                                   "(fp16: CUDA only) (default fp32).")] = None,
    compile: Annotated[Optional[bool], _opt("--compile/--no-compile",
                                            help="torch.compile the model.")] = None,
    seed: Annotated[Optional[int], _opt("--seed", min=0, max=SEED_MAX,
                                        help="Random seed (default 0).")] = None,
    workers: Annotated[Optional[int], _opt("--workers", min=0, help="DataLoader workers per "
                                           "process (default 0).")] = None,
    ckpt_every: Annotated[Optional[int], _opt("--ckpt-every", min=1,
                                              help="Steps between checkpoints (default 500).")] = None,
    log_every: Annotated[Optional[int], _opt("--log-every", min=1,
                                             help="Steps between metrics records (default 10).")] = None,
    preview_every: Annotated[Optional[int], _opt("--preview-every", min=0, help="Steps between "
                                                 "preview PNGs (0: at the end only) (default 0).")] = None,
    overwrite: Overwrite = False,
    json_out: Json = False,
    **method_options: Any,
):
    """Pretrain an encoder on chips (the methods are listed below)."""
    if state.get("verbose", 1) <= 0:
        progress.ENABLED = False
    settings = dict(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr,
                    modality=plain(modality), dsm_modality=plain(dsm_modality), crop=crop,
                    accum_steps=accum_steps,
                    device=plain(device), precision=plain(precision), compile=compile,
                    seed=seed, workers=workers, ckpt_every=ckpt_every, log_every=log_every,
                    preview_every=preview_every)
    settings.update({k: plain(v) for k, v in method_options.items()})
    file = read_yaml(config) if config is not None else {}
    method_name = plain(method) or file.get("method")
    backbone_name = backbone or file.get("backbone")
    if not method_name or not backbone_name:
        raise InputError("--method and --backbone are required (on the command line or in "
                         "--config)")
    from rsgeo.cli import preflight  # lazy: task and method registries; --help stays fast

    preflight.pretrain(dataset, method_name, output, resume=resume, overwrite=overwrite)
    # lazy: rsgeo.pretrain imports torch and timm; `rsgeo --help` stays fast without them
    from rsgeo.pretrain import pretrain
    from rsgeo.train.runs import removed_if_refused

    with removed_if_refused(output):
        summary = pretrain(dataset, method_name, backbone_name, output, config=config,
                           resume=resume, overwrite=overwrite, **settings)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    if json_out:
        typer.echo(dumps(summary))
    else:
        files = ", ".join(summary["encoders"].values())
        loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
        typer.echo(f"{output}: {summary['step']} steps, loss {loss}, lr {summary['lr']:.3g} "
                   f"({summary['lr_rule']}); encoder(s): {files}")


def _default_text(uses: list[tuple[str, registry.Option]]) -> str:
    """``default 0.25`` or, when methods differ, ``default mae 0.75, simmim/ctxmim 0.6``."""
    def fmt(o: registry.Option) -> str:
        d = o.default
        return (o.flag if d else "--no-" + o.flag[2:]) if isinstance(d, bool) else f"{d:g}" \
            if isinstance(d, float) else str(d)

    groups: dict[str, list[str]] = {}
    for name, o in uses:
        groups.setdefault(fmt(o), []).append(name)
    if len(groups) == 1:
        return f"default {next(iter(groups))}"
    return "default " + ", ".join(f"{'/'.join(ms)} {d}" for d, ms in groups.items())


def method_params() -> list[inspect.Parameter]:
    """One ``--flag`` per option of the registered methods (help: owners and defaults)."""
    uses: dict[str, list[tuple[str, registry.Option]]] = {}
    for m in registry.methods():
        for o in m.fields():
            if o.cli and get_origin(o.base) is not tuple:
                uses.setdefault(o.name, []).append((m.name, o))
    params = []
    for name, used in uses.items():
        o = used[0][1]
        owners = [m for m, _ in used]
        prefix = "" if len(owners) == len(registry.names()) else f"{', '.join(owners)}: "
        default = "" if all(u.default is None for _, u in used) else f" ({_default_text(used)})"
        text = f"{prefix}{o.help.rstrip('.')}{default}."
        kind = str if o.choices() is not None else o.base
        params.append(option_param(name, kind, text, choices=o.choices(), min=o.min, max=o.max))
    return params


def signature() -> inspect.Signature:
    """``pretrain_command``'s parameters, ``--method`` choices and method flags after ``--lr``."""
    core = keyword_params(pretrain_command)
    names = [p.name for p in core]
    at, i = names.index("lr") + 1, names.index("method")
    choices = choice_enum("Method", registry.names())
    core[i] = core[i].replace(annotation=Annotated[Optional[choices],
                                                   core[i].annotation.__metadata__[0]])
    return inspect.Signature(core[:at] + method_params() + core[at:])


def doc() -> str:
    """The command's help: one line per registered method."""
    lines = [f"[bold]{m.name}[/bold] ({', '.join(registry.KINDS.get(k, k) for k in m.backbones)}): "
             f"{m.summary}" for m in registry.methods()]
    return ("Pretrain an encoder on chips with a masked-image-modelling method.\n\n"
            + "\n\n".join(lines) + "\n\nRuns on CPU or CUDA; for several GPUs or nodes launch it "
            "with torchrun, e.g. [bold]torchrun --nproc_per_node 4 -m rsgeo pretrain chips/ "
            "--method mae ...[/bold]")


app.command("pretrain", epilog=examples(
    'rsgeo pretrain chips/ --method mae --backbone vit-tiny-4 -o runs/mae',
    'rsgeo pretrain chips/ --method mae --backbone vit-tiny-4 -o runs/mae --resume',
    'rsgeo pretrain chips/ --method fusedmim --backbone swin-tiny-2 -o runs/fused'))(DynamicCommand(pretrain_command, signature, doc))
