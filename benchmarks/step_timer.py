"""Timed pretraining steps on random images, shared by pretrain_speed.py and decoder_size.py
(run from this folder, so ``import step_timer`` works)."""

from __future__ import annotations

import time


def random_pretrain_batch(batch: int, size: int, device) -> dict:
    """``batch`` random smooth RGB images ``[B, 3, size, size]`` (float32, roughly normalised)
    with their HOG scores and per-sample seeds, on ``device``, as the chip dataset feeds a
    pretraining method."""
    import torch  # lazy: `--help` of the scripts stays fast

    from rsgeo.data.hog import hog_energy

    x = torch.randn(batch, 3, size, size).cumsum(-1) / 10
    return {"rgb": x.to(device), "hog": hog_energy(x).to(device),
            "seed": torch.arange(batch, dtype=torch.int64)}


def time_steps(model, batch: dict, steps: int, warmup: int = 1, lr: float = 1e-4):
    """``(seconds, optimiser)``: wall time of ``steps`` AdamW optimiser steps (forward,
    backward, update) of ``model(batch) -> (loss, logs)`` after ``warmup`` untimed ones.

    On CUDA the device is synchronised at both ends and its peak-memory counter reset after
    the warm-up (read it with ``torch.cuda.max_memory_allocated``). The optimiser is returned
    so callers can measure its state (checkpoint size).
    """
    import torch  # lazy: `--help` of the scripts stays fast

    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def step():
        loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, opt
