"""Reusable numpy buffers for the streaming engine.

The engine allocates the same few shapes over and over (strips, block rows). Taking them
from a small pool instead of allocating each time keeps the heap from fragmenting across
threads, so resident memory stays flat however long the sweep is.
"""

from __future__ import annotations

import threading

import numpy as np


class ArrayPool:
    """Arrays by (shape, dtype); ``take`` reuses a returned one, ``give`` returns it.

    Holds at most ``keep`` idle arrays per shape; thread-safe.
    """

    def __init__(self, keep: int = 4):
        self.keep = keep
        self._free: dict[tuple, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def take(self, shape, dtype, zero: bool = False) -> np.ndarray:
        key = (tuple(int(s) for s in shape), np.dtype(dtype).str)
        with self._lock:
            stack = self._free.get(key)
            arr = stack.pop() if stack else None
        if arr is None:
            return np.zeros(key[0], dtype) if zero else np.empty(key[0], dtype)
        if zero:
            arr.fill(0)
        return arr

    def give(self, arr: np.ndarray) -> None:
        key = (arr.shape, arr.dtype.str)
        with self._lock:
            stack = self._free.setdefault(key, [])
            if len(stack) < self.keep:
                stack.append(arr)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()
