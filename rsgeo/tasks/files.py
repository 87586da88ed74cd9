"""Model files as users name them: a file, or the run folder ``rsgeo finetune`` wrote.

Torch-free (ONNX inference imports it without torch).
"""

from __future__ import annotations

import os
from pathlib import Path

from rsgeo.errors import InputError
from rsgeo.io.atomic import marker_kind


def resolve_model_path(path: str | os.PathLike) -> Path:
    """The model file a user means: ``path`` itself, or a fine-tuning run folder's
    ``best.ckpt`` (``rsgeo finetune -o RUN`` writes it). One-line error otherwise."""
    p = Path(path)
    if p.is_dir():
        if (p / "best.ckpt").is_file():
            return p / "best.ckpt"
        raise InputError(_not_a_model_folder(p), p)
    if not p.is_file():
        raise InputError("no such model file", p)
    return p


def _not_a_model_folder(p: Path) -> str:
    """Why folder ``p`` (without best.ckpt) is no model, naming what to give instead: the
    folders users mistake for one are a pretraining run and a demo folder."""
    kind = marker_kind(p)
    if kind == "pretrain":
        return ("a pretraining run (an encoder for `rsgeo finetune --encoder`), not a task "
                "model: fine-tune it and give that run folder or its best.ckpt")
    if kind == "demo" and (p / "height.onnx").is_file():
        return f"a demo folder, not a model: its height model is {p / 'height.onnx'}"
    return ("a folder without best.ckpt: give a model file (.onnx or .ckpt) or a run folder "
            "of `rsgeo finetune`")


ONNX_SUFFIX = ".onnx"


def check_onnx_output(path: str | os.PathLike) -> Path:
    """``path`` if it names an ONNX file, else InputError: ``rsgeo export`` writes ONNX only,
    and a model written as ``m.txt`` (or without an extension) is misread by whatever goes
    by the name. Checked before any work (the CLI before torch loads)."""
    p = Path(path)
    if p.suffix.lower() != ONNX_SUFFIX:
        raise InputError(f"rsgeo export writes ONNX models: give a name ending in {ONNX_SUFFIX}",
                         p)
    return p


def model_label(path: str | os.PathLike) -> str:
    """A short name for a model file in tags and tables: ``RUN/best.ckpt`` keeps its run
    folder's name (every run's checkpoint is called best.ckpt), any other file its name."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}" if p.name == "best.ckpt" and p.parent.name else p.name


def check_encoder_arg(encoder: str, backbone: str | None) -> None:
    """``--encoder`` as fine-tuning takes it: ``random`` (then ``backbone`` names the
    architecture), ``timm:NAME``, or a checkpoint file or folder that exists."""
    if encoder == "random":
        if not backbone:
            raise InputError("--encoder random needs --backbone NAME")
    elif not encoder.startswith("timm:") and not Path(encoder).exists():
        raise InputError("encoder checkpoint not found", encoder)
