"""Per-source, per-modality ``.npy`` shards written without knowing the chip count upfront.

Chips are appended to a hidden raw file; :meth:`ShardWriter.finish` writes the ``.npy``
(header + data, copied in chunks) under a temporary name and renames it, so a shard is
either complete or absent -- never half-written. :meth:`abort` removes everything.
A failed write (disk full) is an :class:`~rsgeo.errors.OutputWriteError` naming the shard.
Plain file writes, not a memory map: a page of a memory-mapped file that the disk has no
room for kills the process with SIGBUS instead of raising.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rsgeo.errors import OutputWriteError
from rsgeo.io.atomic import reason, remove, temp_name


class ShardWriter:
    def __init__(self, path: Path, chip_shape: tuple[int, ...], dtype, shown: Path | None = None):
        """``shown``: the name errors give (the shard's place in the finished dataset when
        ``path`` is in a work folder)."""
        self.path, self.shape, self.dtype = Path(path), tuple(chip_shape), np.dtype(dtype)
        self.shown = self.path if shown is None else Path(shown)
        self.raw = self.path.with_name(f".{self.path.stem}.raw")
        try:
            self.fh = open(self.raw, "wb")
        except OSError as e:
            raise self._failed(e) from e
        self.count = 0

    def _failed(self, e: OSError) -> OutputWriteError:
        return OutputWriteError(f"{reason(e)} (write failed)", self.shown)

    def append(self, chip: np.ndarray) -> int:
        """Add one chip; returns its index in the shard."""
        a = np.ascontiguousarray(chip, dtype=self.dtype)
        if a.shape != self.shape:
            raise ValueError(f"chip shape {a.shape} != shard shape {self.shape}")
        try:
            self.fh.write(a.tobytes())
        except OSError as e:
            raise self._failed(e) from e
        self.count += 1
        return self.count - 1

    def finish(self) -> Path:
        tmp = temp_name(self.path)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.count, *self.shape)}
        try:
            self.fh.close()   # the last buffered chips are written here
            with open(self.raw, "rb") as src, open(tmp, "wb") as out:
                np.lib.format.write_array_header_1_0(out, header)  # as np.save writes it
                shutil.copyfileobj(src, out, 1 << 20)
            tmp.replace(self.path)
        except OSError as e:
            remove(tmp)
            raise self._failed(e) from e
        except BaseException:
            remove(tmp)
            raise
        finally:
            self.raw.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        try:
            self.fh.close()
        except OSError:   # the chips still buffered could not be written either (disk full)
            pass
        self.raw.unlink(missing_ok=True)
