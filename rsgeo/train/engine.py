"""The training engine: a loop that knows nothing about methods or tasks.

API (pretraining and fine-tuning both use it)::

    from rsgeo.train.engine import Trainer
    from rsgeo.train.config import TrainConfig

    trainer = Trainer(model, dataset, TrainConfig(steps=1000, batch_size=64, lr=1e-4),
                      "RUN/", resume=False, on_epoch_end=validate)
    summary = trainer.fit()     # {"step", "epoch", "loss", "run_dir", "world_size", ...}

``model`` is an ``nn.Module`` whose ``forward(batch) -> (loss, logs)`` takes the collated
batch (a dict of tensors, already on the device) and returns the scalar loss to minimise
plus a dict of floats/0-d tensors to log. Optional hooks on the model:

- ``set_progress(step, total_steps)``: called before each optimiser step (curricula, e.g.
  SelectiveMAE's token-selection stages);
- ``preview(batch) -> {modality: {"input", "masked", "reconstruction"}}`` (``[C, H, W]``
  tensors): a PNG in ``RUN/previews/`` every ``preview_every`` steps and at the end.

``dataset`` is any map-style ``torch.utils.data.Dataset`` (dict samples); if it has
``set_epoch(epoch)`` it is told the epoch of every sample it serves, inside the DataLoader
workers too (per-sample augmentation seeds). If it has ``on_device(batch) -> batch`` (or
``batch_transform=`` is given), that runs on each collated batch after the copy to the
device: the per-batch stage (float conversion, normalisation, valid masks), so workers
only slice stored chips. If it has ``get_batch(indices) -> batch`` (and no ``collate_fn``
is given), each worker builds a whole collated batch in one call
(:meth:`rsgeo.train.augment.PretrainView.get_batch`) instead of one sample at a time.
One DataLoader iterator serves the whole run (persistent workers with one torch thread
each, SIGINT/SIGTERM ignored there, pinned memory and non-blocking copies on CUDA):
epochs never tear the workers down.

What the engine does: AdamW (fused on CPU and CUDA: one kernel over all parameters,
2.7x faster than the per-tensor loop for vit-tiny-4 + DPT on 2 CPU cores; no weight decay
on biases, norms, tokens and position embeddings; pass ``param_groups`` to override, an ``lr_scale`` key scales a group's
learning rate), linear warm-up + cosine (per step), gradient accumulation, gradient-norm
clipping, AMP (bf16/fp16 autocast on CUDA with a GradScaler for fp16; bf16 autocast on
CPU), optional ``torch.compile``, DDP under ``torchrun`` (NCCL on CUDA, gloo on CPU, a
sharded sampler with ``set_epoch``), checkpoints every ``ckpt_every`` steps and at the end
(``RUN/checkpoints/last.pt``: model, optimiser, schedule, scaler, RNG states, data
position, config), ``resume=True`` continuing the same run (a different config is
refused), ``RUN/config.yaml`` (resolved config), ``RUN/metrics.jsonl`` (``step, epoch,
loss, lr, img_per_s, max_mem_mb`` + the model's logs, every ``log_every`` steps), a rich
progress bar named after ``job`` ("finetune height", "pretrain mae"; loss, img/s, ETA),
and three hooks:

- ``on_validate(trainer) -> dict | None``: validation every ``val_every`` steps (default
  about ten times a run; 0: only at the end) and always after the last step, in eval mode
  without gradients and with its random-number use isolated (a run validated often gives
  the losses of one validated never). The dict is logged with ``kind: "val"``,
  ``val_seconds`` and ``val_share`` (validation time / wall time so far); the summary
  has ``seconds``, ``val_seconds`` and ``val_share``;
- ``on_epoch_end(trainer, epoch) -> dict | None``: the same, after every epoch;
- ``on_step_end(trainer, step, record)``.

CPU threads (:mod:`rsgeo.train.threads`): ``fit`` runs torch with ``cores - workers``
intra-op threads (at least 1; ``RSGEO_NUM_THREADS`` overrides), so a rank and its loader
processes never ask for more cores than the process may use.

Preemption (:mod:`rsgeo.train.stop`): during ``fit`` SIGTERM and SIGINT only ask the main
process to stop; it finishes the step (and a validation under way), saves
``checkpoints/last.pt`` and raises ``TrainingInterrupted`` (exit 143 / 130), also when the
signal comes during the final validation of a resumed run whose steps were all done (its
checkpoint then records that validation). Under torchrun the ranks agree on the step.
Resuming gives the loss curve of an uninterrupted run.

``batch_size`` is the global batch per optimiser step: each of W ranks draws
``batch_size / (W * accum_steps)`` samples per micro-batch, so a run gives the same
losses on 1 or W processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rsgeo.device import resolve_device
from rsgeo.errors import InputError, OutputWriteError, PeerFailed, RsgeoError
from rsgeo.io.atomic import keep_new, remove_stale_temps
from rsgeo.progress import progress
from rsgeo.train import distributed as D
from rsgeo.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from rsgeo.train.config import TrainConfig, differences, to_dict, write_yaml
from rsgeo.train.logging import MetricsLog, max_mem_mb
from rsgeo.train.preview import save_preview
from rsgeo.train.sampler import (EpochBatched, EpochBatches, EpochIndexed, ShardedSampler,
                                 whole_batch)
from rsgeo.train.schedule import WarmupCosine
from rsgeo.train.stop import StopSignals, TrainingInterrupted, stop_group
from rsgeo.train.threads import plan_threads, torch_threads
from rsgeo.train.workers import loader_options


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise InputError("--precision fp16 needs CUDA (use bf16 or fp32 on CPU)")
        return torch.float16
    raise InputError(f"--precision {precision!r}: use fp32, bf16 or fp16")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no decay for 1-D parameters (biases, norms) and tokens/embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim <= 1 or name.endswith(("token", "pos_embed")) or "relative_position" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Runs ``model`` over ``dataset`` for ``cfg``; see the module docstring."""

    def __init__(self, model: nn.Module, dataset: Dataset, cfg: TrainConfig,
                 out_dir: str | os.PathLike, *, resume: bool = False,
                 param_groups: list[dict] | None = None, collate_fn: Callable | None = None,
                 on_epoch_end: Callable | None = None, on_step_end: Callable | None = None,
                 on_validate: Callable | None = None, job: str = "train",
                 batch_transform: Callable | None = None):
        self.cfg, self.out_dir, self.resume = cfg, Path(out_dir), resume
        self.on_epoch_end, self.on_step_end = on_epoch_end, on_step_end
        self.on_validate, self.job = on_validate, job
        self.device = resolve_device(cfg.device)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.info = D.setup(self.device)
        ws = self.info.world_size
        if cfg.batch_size % (ws * cfg.accum_steps):
            raise InputError(f"--batch-size {cfg.batch_size} must be a multiple of processes x "
                             f"accumulation steps ({ws} x {cfg.accum_steps})")
        self.micro = cfg.batch_size // (ws * cfg.accum_steps)

        self.threads = plan_threads(cfg.workers)  # torch threads + workers <= cores
        self.dataset, self.collate_fn = dataset, collate_fn
        self.batch_transform = batch_transform or getattr(dataset, "on_device", None)
        self._stream = None
        self.sampler = ShardedSampler(len(dataset), ws, self.info.rank, cfg.seed)
        self.steps_per_epoch = self.sampler.per_rank // self.micro // cfg.accum_steps
        if self.steps_per_epoch == 0:
            raise InputError(f"--batch-size {cfg.batch_size} is larger than the dataset "
                             f"({len(dataset)} samples)")
        self.total_steps = cfg.steps or (cfg.epochs or 1) * self.steps_per_epoch
        warmup = cfg.warmup if cfg.warmup >= 1 else cfg.warmup * self.total_steps
        self.warmup_steps = int(round(warmup))
        self.val_every = (max(1, round(self.total_steps / 10)) if cfg.val_every is None
                          else int(cfg.val_every))

        self.model = model.to(self.device)  # the plain module (checkpoints, hooks)
        groups = param_groups or globals()["param_groups"](self.model, cfg.weight_decay)
        fused = self.device.type in ("cuda", "cpu")  # torch >= 2.4 fuses AdamW on both
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=fused)
        self.schedule = WarmupCosine(self.optimizer, self.total_steps, cfg.lr, self.warmup_steps,
                                     cfg.min_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.ddp = self.model
        if ws > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=cfg.find_unused_parameters)
        self.forward = torch.compile(self.ddp) if cfg.compile else self.ddp
        self.step = self.epoch = self.samples_done = 0
        self.last_loss: float | None = None
        self.last_val_step = self.saved_step = -1
        self.val_seconds = 0.0
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", enabled=self.info.is_main)

        self._stop_group = stop_group()  # collective: every rank builds it here

    # ------------------------------------------------------------------ state
    @property
    def ckpt_path(self) -> Path:
        return self.out_dir / "checkpoints" / "last.pt"

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rng_state(), "step": self.step, "epoch": self.epoch,
                "samples_done": self.samples_done, "config": to_dict(self.cfg),
                "world_size": self.info.world_size, "loss": self.last_loss,
                "last_val_step": self.last_val_step}

    def save(self) -> None:
        with self.together():
            if self.info.is_main:
                save_checkpoint(self.ckpt_path, **self.state_dict())
                keep_new(self.out_dir)  # --overwrite: the earlier run goes once this can resume
        self.saved_step = self.step

    @contextlib.contextmanager
    def together(self):
        """Every rank runs the block (what rank 0 alone writes: a checkpoint, the run's
        config, the best model); then all learn whether it failed anywhere (an all-reduce,
        also the barrier). A failure (rank 0's disk full) stops every rank: the failing one
        raises its error, the others :class:`~rsgeo.errors.PeerFailed` -- none is left
        waiting at the next collective for a rank that has gone."""
        failed = None
        try:
            yield
        except Exception as e:
            failed = e
        if not D.all_ok(failed is None, self._stop_group):
            raise failed if failed is not None else PeerFailed()

    def _restore(self) -> None:
        ckpt = load_checkpoint(self.ckpt_path)
        diff = differences(ckpt["config"], to_dict(self.cfg))
        if diff:
            raise InputError(f"--resume with a different config ({'; '.join(diff[:3])})",
                             self.out_dir)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.step, self.epoch = ckpt["step"], ckpt["epoch"]
        samples = ckpt["samples_done"] * ckpt["world_size"] // self.info.world_size
        self.samples_done = samples
        self.saved_step = self.step
        self.last_val_step = ckpt.get("last_val_step", -1)
        self.last_loss = ckpt.get("loss")
        if self.last_loss is None:  # a checkpoint from before "loss" was stored
            self.last_loss = self.metrics.last_loss(self.step)
        self.metrics.truncate_after(self.step)

    def _start(self) -> None:
        if self.resume:
            if self.info.is_main:  # a run killed while saving left its temporary file
                for folder in (self.out_dir, self.ckpt_path.parent):
                    remove_stale_temps(folder)
            self._restore()
        elif self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        with self.together():
            if self.info.is_main:
                write_yaml(self.out_dir / "config.yaml", to_dict(self.cfg))

    # ------------------------------------------------------------------ loop
    def _loader(self):
        """The run's batch stream, already on the device and through the batch stage.

        One DataLoader iterator serves the whole run (from the current epoch and position
        to ``total_steps``): epochs travel with the indices (:class:`EpochBatches`), so
        workers persist across epochs. Calling this again returns the same stream.
        """
        if self._stream is None:
            self._stream = self._batches()
        return self._stream

    def _batches(self):
        accum = self.cfg.accum_steps
        batches = EpochBatches(self.sampler, self.micro, self.micro * accum, self.epoch,
                               self.samples_done, (self.total_steps - self.step) * accum)
        # its own generator: starting the iterator (here, or mid-run after --resume) must
        # not draw from the global RNG that dropout and drop-path use
        # whole batches built in place by the dataset (PretrainView.get_batch) unless a
        # custom collate_fn wants the samples
        whole = self.collate_fn is None and hasattr(self.dataset, "get_batch")
        loader = DataLoader(EpochBatched(self.dataset) if whole else EpochIndexed(self.dataset),
                            batch_sampler=batches,
                            collate_fn=whole_batch if whole else self.collate_fn,
                            generator=torch.Generator().manual_seed(self.cfg.seed),
                            **loader_options(self.cfg.workers, self.device.type == "cuda"))
        it = iter(loader)
        try:
            for k in range(len(batches)):
                batch = to_device(next(it), self.device)
                if k == len(batches) - 1 and hasattr(it, "_shutdown_workers"):
                    it._shutdown_workers()  # the run's last batch: free the workers now
                yield self.batch_transform(batch) if self.batch_transform else batch
        finally:
            del it

    def close_loader(self) -> None:
        """Stop the batch stream and its worker processes (e.g. when stopping early)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _optimizer_step(self, batches) -> tuple[torch.Tensor, dict]:
        """Forward/backward over the micro-batches of one step, then update."""
        total, logs = torch.zeros((), device=self.device), {}
        n = len(batches)
        for i, batch in enumerate(batches):
            sync = i == n - 1 or self.ddp is self.model
            ctx = contextlib.nullcontext() if sync else self.ddp.no_sync()
            with ctx:
                with self._autocast():
                    loss, parts = self.forward(batch)
                self.scaler.scale(loss / n).backward()
            total += loss.detach().float() / n
            for k, v in parts.items():  # tensors stay on the device: no sync per step
                v = v.detach().float() if torch.is_tensor(v) else float(v)
                logs[k] = logs.get(k, 0.0) + v / n
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            logs["grad_norm"] = nn.utils.clip_grad_norm_(self.model.parameters(),
                                                         self.cfg.clip_grad).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total, logs

    def fit(self) -> dict:
        """Train to ``total_steps``; returns a summary dict (last loss, steps, run folder).

        Raises :class:`~rsgeo.train.stop.TrainingInterrupted` (exit 130/143) after saving
        ``checkpoints/last.pt`` when SIGINT/SIGTERM arrived during the run.
        """

        with torch_threads(self.threads):
            try:
                return self._fit()
            except OutputWriteError as e:  # a full disk mid-run: what a rerun starts from
                raise OutputWriteError(f"{e.message}; {self.kept_note()}", e.path) from e
            finally:
                self.close_loader()  # worker processes end with the run, also when it stops

    def kept_note(self) -> str:
        """What a run whose writing failed leaves to continue from (checkpoints are atomic:
        a failed save leaves the previous one as it was)."""
        if self.saved_step >= 0 and self.ckpt_path.is_file():
            return (f"the checkpoint of step {self.saved_step} is kept as it was: with room "
                    "again, the same command with --resume continues from it")
        return "no checkpoint was saved yet: with room again, rerun with --overwrite"

    def _fit(self) -> dict:
        t_start = time.perf_counter()
        self.val_seconds = 0.0
        self._start()
        self.model.train()
        accum, last_batch = self.cfg.accum_steps, None
        t0, seen = time.perf_counter(), 0
        title = self.job if self.step == 0 else f"{self.job} (resumed)"
        with StopSignals(self._stop_group) as stop, \
                progress(self.total_steps, title, unit="steps") as bar:
            bar.advance(self.step)
            while self.step < self.total_steps:
                it = iter(self._loader())
                try:
                    left = (self.sampler.per_rank - self.samples_done) // (self.micro * accum)
                    for _ in range(min(left, self.total_steps - self.step)):
                        batches = [to_device(next(it), self.device) for _ in range(accum)]
                        last_batch = batches[-1]
                        if hasattr(self.model, "set_progress"):
                            self.model.set_progress(self.step, self.total_steps)
                        lr = self.schedule.lr
                        loss, logs = self._optimizer_step(batches)
                        self.schedule.step()
                        self.step += 1
                        self.samples_done += self.micro * accum
                        seen += self.cfg.batch_size
                        record = None
                        if self.step % self.cfg.log_every == 0 or self.step == self.total_steps:
                            dt, t0 = time.perf_counter() - t0, time.perf_counter()
                            record = self._log(loss, logs, lr, seen / max(dt, 1e-9))
                            seen = 0
                            bar.update(description=f"{self.job} · loss {record['loss']:.4f} · "
                                                   f"{record['img_per_s']:.1f} img/s")
                        bar.advance(1)
                        if self.cfg.preview_every and self.step % self.cfg.preview_every == 0:
                            self.write_preview(last_batch)
                        if self.step == self.total_steps or (
                                self.val_every and self.step % self.val_every == 0):
                            tv = time.perf_counter()
                            self.validate(t_start)
                            t0 += time.perf_counter() - tv  # img/s: training time only
                        if self.step % self.cfg.ckpt_every == 0 or self.step == self.total_steps:
                            self.save()
                        if self.on_step_end:
                            self.on_step_end(self, self.step, record)
                        if stop.agreed():
                            self._interrupt(stop.signum)
                finally:
                    it = None  # the stream itself ends in fit (close_loader)
                if self.samples_done + self.micro * accum > self.sampler.per_rank:
                    self._end_epoch()
            final = self.last_val_step != self.step  # a resumed run whose steps were all done
            if final:
                self.validate(t_start)
            if stop.agreed():  # a signal after the last step's check (the validation above)
                if final:      # the checkpoint records that it ran: --resume has nothing to do
                    self.save()
                self._interrupt(stop.signum)
        if last_batch is not None:
            self.write_preview(last_batch)
        wall = time.perf_counter() - t_start
        loss = self.last_loss if self.last_loss is not None and math.isfinite(self.last_loss) \
            else None
        return {"step": self.step, "epoch": self.epoch, "loss": loss,
                "run_dir": str(self.out_dir), "world_size": self.info.world_size,
                "total_steps": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
                "threads": self.threads, "workers": self.cfg.workers,
                "seconds": round(wall, 3), "val_seconds": round(self.val_seconds, 3),
                "val_share": self.val_seconds / wall if wall > 0 else 0.0}

    def _log(self, loss: torch.Tensor, logs: dict, lr: float, img_per_s: float) -> dict:
        """All-reduce the step's loss and logs, append them to metrics.jsonl, return the record."""
        keys = sorted(logs)
        vals = D.all_reduce_mean(torch.stack([torch.as_tensor(v, device=self.device).double()
                                              for v in [loss] + [logs[k] for k in keys]]))
        loss_all = float(vals[0])
        if not math.isfinite(loss_all):
            raise RsgeoError(f"loss is {loss_all} at step {self.step}; "
                             "try a lower --lr or --precision fp32")
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        record = {"step": self.step, "epoch": self.epoch, "loss": loss_all, "lr": lr,
                  "img_per_s": img_per_s, "max_mem_mb": max_mem_mb(self.device),
                  **dict(zip(keys, vals[1:].tolist()))}
        self.last_loss = loss_all
        self.metrics.write(record)
        return record

    def validate(self, t_start: float | None = None) -> dict | None:
        """Run ``on_validate(trainer)`` in eval mode, without gradients, its RNG use isolated.

        The returned dict is logged as a ``kind: "val"`` record with ``val_seconds`` (this
        validation) and ``val_share`` (validation time / wall time of this ``fit`` so far).
        """
        if self.on_validate is None:
            return None
        t = time.perf_counter()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        self.model.eval()
        with self.together(), torch.no_grad(), torch.random.fork_rng(devices=devices):
            result = self.on_validate(self)  # finetune: rank 0 scores, saves the best model
        self.model.train()
        dt = time.perf_counter() - t
        self.val_seconds += dt
        self.last_val_step = self.step
        if result:
            wall = time.perf_counter() - (t_start if t_start is not None else t)
            self.metrics.write({"kind": "val", "step": self.step, "epoch": self.epoch,
                                **{k: float(v) for k, v in result.items()},
                                "val_seconds": dt, "val_share": self.val_seconds / max(wall, 1e-9)})
        return result

    def _interrupt(self, signum: int) -> None:
        """Save (unless this step is saved) and raise TrainingInterrupted."""
        import signal as _signal

        if self.saved_step != self.step:
            self.save()
        name = _signal.Signals(signum).name
        raise TrainingInterrupted(signum, f"{name}: stopped at step {self.step}/"
                                  f"{self.total_steps}, saved {self.ckpt_path} "
                                  "(run the same command with --resume to continue)")

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.samples_done = 0
        if self.on_epoch_end:
            self.model.eval()
            with torch.no_grad():
                result = self.on_epoch_end(self, self.epoch)
            self.model.train()
            if result:
                self.metrics.write({"kind": "val", "step": self.step, "epoch": self.epoch,
                                    **{k: float(v) for k, v in result.items()}})

    def write_preview(self, batch) -> None:
        if not (self.info.is_main and hasattr(self.model, "preview")):
            return

        self.model.eval()
        with torch.no_grad(), self._autocast():
            panels = self.model.preview(batch)
        self.model.train()
        save_preview(self.out_dir / "previews" / f"step-{self.step:07d}.png", panels)
