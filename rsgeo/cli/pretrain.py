"""``rsgeo pretrain DATASET --method M --backbone B -o RUN/``: masked-image pretraining.

Thin: parses options and calls :func:`rsgeo.pretrain.pretrain`. Options left unset fall
back to ``--config run.yaml`` (keys = option names), then to the defaults.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from rsgeo.cli.app import app, state
from rsgeo.cli.options import DeviceChoice, Json, Overwrite, Precision


class Method(str, Enum):
    mae = "mae"
    simmim = "simmim"
    selectivemae = "selectivemae"
    ctxmim = "ctxmim"
    fusedmim = "fusedmim"


class Selection(str, Enum):
    hog = "hog"
    random = "random"


def _opt(*names, help: str, **kw):
    return typer.Option(*names, help=help, **kw)


@app.command("pretrain")
def pretrain_command(
    dataset: Annotated[Path, typer.Argument(help="Chip dataset folder (from rsgeo prepare).")],
    output: Annotated[Path, _opt("-o", "--output", help="Run folder (checkpoints, metrics, "
                                 "previews, encoder weights).")],
    method: Annotated[Optional[Method], _opt("--method", help="Pretraining method.")] = None,
    backbone: Annotated[Optional[str], _opt("--backbone", help="Encoder: vit-tiny-4, swin-tiny-2 "
                                            "or a timm ViT/Swin name.")] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", min=1, help="Run length in epochs.")] = None,
    steps: Annotated[Optional[int], _opt("--steps", min=1, help="Run length in optimiser steps "
                                         "(wins over --epochs).")] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", min=1, help="Global batch (all "
                                              "processes) per optimiser step (default 64).")] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Peak learning rate (default base lr x batch/256).")] = None,
    mask_ratio: Annotated[Optional[float], _opt("--mask-ratio", min=0.0, max=0.99,
                                                help="Share of patches masked (default method's).")] = None,
    selection: Annotated[Optional[Selection], _opt("--selection", help="selectivemae: rank "
                                                   "patches by HOG energy or at random.")] = None,
    rec_ratio: Annotated[Optional[float], _opt("--rec-ratio", help="selectivemae: share of "
                                               "patches reconstructed (default 0.25).")] = None,
    tau: Annotated[Optional[float], _opt("--tau", help="fusedmim: InfoNCE temperature (default 0.07).")] = None,
    alpha: Annotated[Optional[float], _opt("--alpha", help="fusedmim: InfoNCE weight (default 0.05).")] = None,
    modality: Annotated[Optional[str], _opt("--modality", help="Bands a single-encoder method "
                                            "trains on: rgb, dsm or ndsm (default rgb).")] = None,
    dsm_modality: Annotated[Optional[str], _opt("--dsm-modality", help="fusedmim: height "
                                                "modality, dsm or ndsm (default dsm).")] = None,
    crop: Annotated[Optional[int], _opt("--crop", min=16, help="Random-crop size in px "
                                        "[chip size].")] = None,
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
    seed: Annotated[Optional[int], _opt("--seed", help="Random seed (default 0).")] = None,
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
):
    """Pretrain an encoder on chips (mae, simmim, selectivemae, ctxmim, fusedmim).

    Runs on CPU or CUDA; for several GPUs or nodes launch it with torchrun, e.g.
    [bold]torchrun --nproc_per_node 4 -m rsgeo pretrain chips/ --method mae ...[/bold]
    """
    from rsgeo.jsonout import dumps
    import os

    from rsgeo import progress
    from rsgeo.errors import InputError
    from rsgeo.pretrain import pretrain
    from rsgeo.train.runs import removed_if_refused

    if state.get("verbose", 1) <= 0:
        progress.ENABLED = False
    settings = dict(epochs=epochs, steps=steps, batch_size=batch_size, lr=lr,
                    mask_ratio=mask_ratio, rec_ratio=rec_ratio, tau=tau, alpha=alpha,
                    selection=selection.value if selection else None, modality=modality,
                    dsm_modality=dsm_modality, crop=crop, accum_steps=accum_steps,
                    device=device.value if device else None,
                    precision=precision.value if precision else None, compile=compile,
                    seed=seed, workers=workers, ckpt_every=ckpt_every, log_every=log_every,
                    preview_every=preview_every)
    file = {}
    if config is not None:
        from rsgeo.train.config import read_yaml

        file = read_yaml(config)
    method_name = method.value if method else file.get("method")
    backbone_name = backbone or file.get("backbone")
    if not method_name or not backbone_name:
        raise InputError("--method and --backbone are required (on the command line or in "
                         "--config)")
    with removed_if_refused(output):
        summary = pretrain(dataset, method_name, backbone_name, output, config=config,
                           resume=resume, overwrite=overwrite, **settings)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    if json_out:
        typer.echo(dumps(summary, indent=2))
    else:
        files = ", ".join(summary["encoders"].values())
        loss = "n/a" if summary["loss"] is None else f"{summary['loss']:.4f}"
        typer.echo(f"{output}: {summary['step']} steps, loss {loss}; encoder(s): {files}")
