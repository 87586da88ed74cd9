"""Counter-based random numbers: a hash of (seed, counters) instead of a generator state.

Every random choice of the data pipeline and of the methods' masks is a pure function of
(run seed, epoch, sample index) and, for masks, (stream, position): the same sample gets
the same crop, flips and mask whichever DataLoader worker, DDP rank, batch or resumed run
draws it, and nothing has to be seeded or carried between steps.

The hash is SplitMix64's finaliser (Steele, Lea & Flood 2014), written twice: on Python
ints for the per-sample choices in DataLoader workers (:func:`sample_seed`,
:func:`draw`), and on int64 tensors for per-batch masks on the training device
(:func:`uniform_from_seeds`). Both give the same bits (tests check this).
"""

from __future__ import annotations

import numpy as np
import torch

_M64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def mix64(x: int) -> int:
    """SplitMix64 finaliser of a Python int (taken modulo 2**64): an int in [0, 2**64)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * _C1) & _M64
    x = ((x ^ (x >> 27)) * _C2) & _M64
    return x ^ (x >> 31)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The 62-bit seed of sample ``index`` in ``epoch`` of a run with ``seed`` (>= 0)."""
    h = mix64(int(seed) + _GAMMA)
    h = mix64(h + int(epoch) + _GAMMA)
    return mix64(h + int(index) + _GAMMA) >> 2


def draw(sample: int, k: int, n: int) -> int:
    """The ``k``-th integer in ``[0, n)`` drawn for a sample seed (``n`` >= 1)."""
    return mix64(sample + (k + 1) * _GAMMA) % n


# -------------------------------------------------------------------- numpy (uint64) version
def mix64_np(x: np.ndarray) -> np.ndarray:
    """:func:`mix64` on a uint64 array (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(_C1)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(_C2)
    return x ^ (x >> np.uint64(31))


def sample_seeds(seed: int, epoch: int, indices) -> np.ndarray:
    """:func:`sample_seed` of many ``indices`` at once (uint64 array, values < 2**62)."""
    g = np.uint64(_GAMMA)
    h = mix64(mix64(int(seed) + _GAMMA) + int(epoch) + _GAMMA)
    return mix64_np(np.uint64(h) + np.asarray(indices, np.int64).astype(np.uint64) + g) \
        >> np.uint64(2)


def draws(seeds: np.ndarray, k: int, n) -> np.ndarray:
    """:func:`draw` for an array of sample seeds (``n``: an int or an array like ``seeds``);
    int64 values in ``[0, n)``."""
    step = np.uint64(((k + 1) * _GAMMA) & _M64)
    return (mix64_np(seeds + step) % np.asarray(n, np.uint64)).astype(np.int64)


# -------------------------------------------------------------------- torch (int64) version
def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_T_GAMMA, _T_C1, _T_C2 = _signed(_GAMMA), _signed(_C1), _signed(_C2)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (two's complement) tensors."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def mix64_t(x: torch.Tensor) -> torch.Tensor:
    """:func:`mix64` on an int64 tensor (wrapping arithmetic; bits as two's complement)."""
    x = (x ^ _shr(x, 30)) * _T_C1
    x = (x ^ _shr(x, 27)) * _T_C2
    return x ^ _shr(x, 31)


def uniform_from_seeds(seeds: torch.Tensor, n: int, stream: int) -> torch.Tensor:
    """``[B, n]`` float32 uniforms in [0, 1) (24-bit) from per-sample ``seeds [B]`` int64.

    Element ``[b, j]`` depends only on ``(seeds[b], stream, j)``; computed on the device of
    ``seeds`` with a handful of vectorised int64 operations (no host round trip).
    """
    s = seeds.to(torch.int64).reshape(-1, 1)
    key = mix64_t(s + _signed((stream * _GAMMA + _GAMMA) & ((1 << 64) - 1)))
    j = torch.arange(1, n + 1, device=seeds.device, dtype=torch.int64) * _T_GAMMA
    h = mix64_t(key + j)
    return _shr(h, 40).to(torch.float32) * (1.0 / (1 << 24))


def batch_generator(seeds: torch.Tensor) -> torch.Generator:
    """A CPU generator for one batch's random choices, seeded from its samples' seeds
    (``[B]`` int64, :func:`sample_seed`): the same batch draws the same on any worker, rank
    or resumed run."""
    return torch.Generator().manual_seed(int(seeds.sum().item()) % (2**63))
