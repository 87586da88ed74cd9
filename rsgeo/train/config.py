"""Training settings: one dataclass, merged from defaults < YAML file < explicit options.

The resolved settings are written to ``RUN/config.yaml``; ``--resume`` compares the
settings that shape the run (everything except :data:`RESUMABLE_CHANGES`) with that file
and refuses a different run.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rsgeo.errors import InputError
from rsgeo.io.atomic import atomic_path


@dataclass
class TrainConfig:
    """Engine settings. Sizes in samples/steps; ``batch_size`` is the global batch."""

    epochs: int | None = None         # run length in epochs (one of epochs/steps; default 1 epoch)
    steps: int | None = None          # run length in optimiser steps (wins over epochs)
    batch_size: int = 64              # samples per optimiser step over all ranks
    accum_steps: int = 1              # micro-batches per optimiser step (per rank)
    lr: float = 1.5e-4                # peak learning rate (after warm-up)
    min_lr: float = 0.0               # learning rate at the end of the cosine
    warmup: float = 0.05              # warm-up: steps if >= 1, else a fraction of the run
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    clip_grad: float | None = 3.0     # max global gradient norm (None: no clipping)
    precision: str = "fp32"           # fp32 | bf16 | fp16 (fp16: CUDA only)
    compile: bool = False             # torch.compile the model
    device: str = "auto"              # auto | cpu | cuda
    seed: int = 0
    workers: int = 0                  # DataLoader worker processes per rank
    ckpt_every: int = 500             # steps between checkpoints (and one at the end)
    log_every: int = 10               # steps between metrics.jsonl records
    preview_every: int = 0            # steps between preview PNGs (0: only at the end)
    val_every: int | None = None      # steps between validations (None: ~10 a run; 0: at the end only)
    find_unused_parameters: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # caller's settings (method, data ...)

    def __post_init__(self):
        """Refuse settings that make no sense, naming the option a user typed."""
        checks = [("--lr", self.lr, self.lr > 0), ("--min-lr", self.min_lr, self.min_lr >= 0),
                  ("--warmup", self.warmup, self.warmup >= 0),
                  ("--weight-decay", self.weight_decay, self.weight_decay >= 0),
                  ("--batch-size", self.batch_size, self.batch_size >= 1),
                  ("--accum-steps", self.accum_steps, self.accum_steps >= 1),
                  ("--workers", self.workers, self.workers >= 0),
                  ("--seed", self.seed, 0 <= self.seed < 2**32),  # np.random.seed's range
                  ("--clip-grad", self.clip_grad, self.clip_grad is None or self.clip_grad > 0)]
        checks += [(f"--{k.replace('_', '-')}", v, v is None or v >= 1)
                   for k, v in (("steps", self.steps), ("epochs", self.epochs))]
        for flag, value, ok in checks:
            if not ok:
                raise InputError(f"{flag} {value} is out of range (see `--help`)")


# Settings that may differ between a run and its resumption (they do not change results).
RESUMABLE_CHANGES = {"device", "workers", "log_every", "ckpt_every", "preview_every", "compile",
                     "val_every"}


def to_dict(cfg: TrainConfig) -> dict:
    d = dataclasses.asdict(cfg)
    d["betas"] = list(d["betas"])
    return d


def from_dict(d: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise InputError(f"unknown training setting(s): {', '.join(unknown)}")
    d = dict(d)
    if "betas" in d:
        d["betas"] = tuple(d["betas"])
    return TrainConfig(**d)


def read_yaml(path: str | os.PathLike) -> dict:
    """A YAML mapping from ``path`` (InputError when missing or not a mapping)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise InputError("config file not found", p)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({str(e).splitlines()[0]})", p) from None
    if not isinstance(data, dict):
        raise InputError("config must be a YAML mapping of option: value", p)
    return data


def write_yaml(path: str | os.PathLike, data: dict) -> None:
    import yaml

    with atomic_path(path, overwrite=True) as tmp:
        Path(tmp).write_text(yaml.safe_dump(data, sort_keys=False))


def differences(saved: dict, current: dict, ignore=RESUMABLE_CHANGES) -> list[str]:
    """``key: saved -> current`` for every setting that differs (nested ``extra`` too)."""
    out = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{d}" for d in differences(a, b, ignore)]
        elif _norm(a) != _norm(b):
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def _norm(v):
    return list(v) if isinstance(v, tuple) else v
