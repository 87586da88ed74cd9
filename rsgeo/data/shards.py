"""Per-source, per-modality ``.npy`` shards written without knowing the chip count upfront.

Chips are appended to a hidden raw file; :meth:`ShardWriter.finish` writes the ``.npy``
(header + data, copied in chunks) under a temporary name and renames it, so a shard is
either complete or absent -- never half-written. :meth:`abort` removes everything.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rsgeo.io.atomic import remove, temp_name


class ShardWriter:
    def __init__(self, path: Path, chip_shape: tuple[int, ...], dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(chip_shape), np.dtype(dtype)
        self.raw = self.path.with_name(f".{self.path.stem}.raw")
        self.fh = open(self.raw, "wb")
        self.count = 0

    def append(self, chip: np.ndarray) -> int:
        """Add one chip; returns its index in the shard."""
        a = np.ascontiguousarray(chip, dtype=self.dtype)
        if a.shape != self.shape:
            raise ValueError(f"chip shape {a.shape} != shard shape {self.shape}")
        self.fh.write(a.tobytes())
        self.count += 1
        return self.count - 1

    def finish(self) -> Path:
        self.fh.close()
        tmp = temp_name(self.path)
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype,
                                            shape=(self.count, *self.shape))
            if self.count:
                src = np.memmap(self.raw, dtype=self.dtype, mode="r",
                                shape=(self.count, *self.shape))
                for i in range(0, self.count, 256):
                    out[i:i + 256] = src[i:i + 256]
                del src
            out.flush()
            del out
            tmp.replace(self.path)
        except BaseException:
            remove(tmp)
            raise
        finally:
            self.raw.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        self.fh.close()
        self.raw.unlink(missing_ok=True)
