"""Height metrics in metres, streamed: MAE, RMSE, delta accuracies and F1^HE (rsgeo protocol).

F1^HE (SynRS3D appendix A.3.2): significance T = 1 m, ``ratio = max(p/g, g/p)``;
``TP = p > T and g > T and ratio < eta``, ``FP = p > T and g <= T``,
``FN = p <= T and g > T``, with ``eta = 1.25^k`` for k = 1, 2, 3.

The rsgeo protocol, for real-world rasters of any size:

- pixels that are nodata/NaN in either raster (or outside ``valid``) are excluded;
- counts are pooled over all valid pixels of all images, so a 40k x 40k raster streamed in
  windows gives one honest number, equal to the one-shot result;
- an image whose reference has no pixel above T contributes to MAE/RMSE/delta but not to
  F1^HE (the paper's rule); an image is what :meth:`HeightAccumulator.update` receives in one
  call, or the windows between :meth:`update_window` calls and :meth:`end_image`;
- delta accuracies use heights clamped to a floor of ``FLOOR`` = 0.1 m, so ground-on-ground
  pixels count as accurate (ratio 1) and 30 cm of noise on bare ground does not (ratio 3);
- precision, recall and F1 are 0 when their denominators are 0;
- heights are float32 and ``ratio`` is their float32 quotient (correctly rounded, as in the
  published float32 code; the torch path of :mod:`rsgeo.tasks.scores` gives the same
  counts): an exact ratio less than half a float32 step (6e-8 relative) below ``eta``
  rounds to ``eta`` and is not accurate. Decimal heights (centimetres) whose true ratio is
  exactly 1.25 are not exact in binary, so no float type puts all of them on one side.
"""

from __future__ import annotations

import math

import numpy as np

from rsgeo.metrics.counts import precision_recall_f1

T = 1.0
FLOOR = 0.1
ETAS = (1.25, 1.25 ** 2, 1.25 ** 3)
CHUNK = 65536  # pixels per pass group: a few arrays of this size stay in L2


class HeightAccumulator:
    """Pooled height metrics over any number of images and windows."""

    def __init__(self, threshold: float = T, floor: float = FLOOR):
        self.threshold, self.floor = threshold, floor
        self.n_images = 0
        self.n = 0
        self.abs_sum = self.sq_sum = 0.0
        self.delta = np.zeros(3, np.int64)
        self.f1_counts = np.zeros((3, 3), np.int64)      # [eta, (tp, fp, fn)]
        self._img_counts = np.zeros((3, 3), np.int64)
        self._img_has_ref = False
        self._img_open = False
        self._bufs: dict[str, np.ndarray] = {}

    def update_window(self, pred, ref, valid=None) -> None:
        """Add one window of the current image (call :meth:`end_image` after its last window).

        Large windows are processed in pieces of :data:`CHUNK` pixels, so the twenty-odd
        numpy passes run in cache instead of streaming from memory (about 3x faster).
        """
        for stats in self.window_stats(pred, ref, valid):
            self.add_stats(stats)

    def window_stats(self, pred, ref, valid=None) -> list[tuple]:
        """The statistics of each :data:`CHUNK`-pixel piece of a window, not yet added.

        Only this accumulator's work buffers are used, not its totals: accumulators in
        several threads may compute pieces at once, and :meth:`add_stats` of every piece in
        order gives the totals of :meth:`update_window`, bit for bit.
        """
        p = np.asarray(pred, np.float32).ravel()
        g = np.asarray(ref, np.float32).ravel()
        v = None if valid is None else np.asarray(valid, bool).ravel()
        if p.size <= CHUNK:
            return [self._stats(p, g, v)]
        return [self._stats(p[i:i + CHUNK], g[i:i + CHUNK], None if v is None else v[i:i + CHUNK])
                for i in range(0, p.size, CHUNK)]

    def add_stats(self, stats: tuple) -> None:
        """Add one piece's statistics (from :meth:`window_stats`) to the current image."""
        n, abs_sum, sq_sum, delta, tp, fp, fn, has_ref = stats
        self._img_open = True
        if n == 0:
            return
        self.n += n
        self.abs_sum += abs_sum
        self.sq_sum += sq_sum
        for k in range(3):
            self.delta[k] += delta[k]
            self._img_counts[k] += (tp[k], fp, fn)
        self._img_has_ref |= has_ref

    def _stats(self, p, g, valid) -> tuple:
        """One piece (1-D float32 views): ``(n, sum |d|, sum d^2, delta counts, tp, fp, fn,
        reference has a pixel > T)``. Values are exactly those of the plain formulas: the fast
        path only skips the masking when every pixel is valid and finite (a finite float64
        sum of ``|p - g|`` proves it: ``inf - x``, ``nan - x`` are not finite).

        Fewer passes than the formulas, same numbers: ``|p - g| = max(p, g) - min(p, g)``
        exactly (float subtraction is sign-symmetric); both heights are above T exactly when
        the smaller one is; and the larger height needs no floor for ``ratio < eta``: when
        it is below the floor, so is the smaller one, and ``hi / floor <= 1 < eta`` as
        ``floor / floor`` is.
        """
        n = p.size
        hi = np.maximum(p, g, out=self._scratch("hi", n))
        lo = np.minimum(p, g, out=self._scratch("lo", n))
        a = np.subtract(hi, lo, out=self._scratch("a", n))
        abs_sum = float(a.sum(dtype=np.float64))
        if not math.isfinite(abs_sum) or (valid is not None and not valid.all()):
            ok = np.isfinite(p)
            ok &= np.isfinite(g)
            if valid is not None:
                ok &= valid
            if not ok.all():
                p, g = p[ok], g[ok]
                n = p.size
                hi, lo = np.maximum(p, g), np.minimum(p, g)
                a = np.subtract(hi, lo)
                abs_sum = float(a.sum(dtype=np.float64))
        if n == 0:
            return 0, 0.0, 0.0, (0, 0, 0), (0, 0, 0), 0, 0, False
        sq_sum = float(np.square(a, out=a).sum(dtype=np.float64))
        both = np.greater(lo, self.threshold, out=self._scratch("both", n, bool))
        n_both = int(np.count_nonzero(both))
        good = self._scratch("good", n, bool)
        n_sp = int(np.count_nonzero(np.greater(p, self.threshold, out=good)))
        n_sg = int(np.count_nonzero(np.greater(g, self.threshold, out=good)))
        # ratio = max(pc/gc, gc/pc) with pc, gc = p, g floored = hi / floored lo (see above)
        lo = np.maximum(lo, self._floor(n), out=lo)
        if not self.floor > 0:  # hi / 0 could pass where floor / floor (nan) does not
            hi = np.maximum(hi, self._floor(n), out=hi)
        ratio = np.divide(hi, lo, out=hi)
        delta, tp = [], []
        for eta in ETAS:
            np.less(ratio, np.float32(eta), out=good)
            delta.append(int(np.count_nonzero(good)))
            good &= both
            tp.append(int(np.count_nonzero(good)))
        fn = n_sg - n_both  # sg & ~sp; fp: sp & ~sg
        return (int(n), abs_sum, sq_sum, tuple(delta), tuple(tp), n_sp - n_both, fn,
                bool(fn or n_both))

    def _scratch(self, name: str, n: int, dtype=np.float32) -> np.ndarray:
        """A reused 1-D work buffer of ``n`` elements (no allocation per piece)."""
        buf = self._bufs.get(name)
        if buf is None or buf.size < n:
            buf = self._bufs[name] = np.empty(max(n, CHUNK), dtype)
        return buf[:n]

    def _floor(self, n: int) -> np.ndarray:
        """``n`` copies of the floor (float32): an array operand is faster than a scalar."""
        buf = self._bufs.get("floor")
        if buf is None or buf.size < n:
            buf = self._bufs["floor"] = np.full(max(n, CHUNK), np.float32(self.floor))
        return buf[:n]

    def merge(self, other: "HeightAccumulator") -> "HeightAccumulator":
        """Add the closed images of ``other`` (e.g. per-image accumulators into a total)."""
        other.end_image()
        self.end_image()
        self.n_images += other.n_images
        self.n += other.n
        self.abs_sum += other.abs_sum
        self.sq_sum += other.sq_sum
        self.delta += other.delta
        self.f1_counts += other.f1_counts
        return self

    def end_image(self) -> None:
        """Close the current image: its F1 counts count only if its reference had a pixel > T."""
        if not self._img_open:
            return
        self.n_images += 1
        if self._img_has_ref:
            self.f1_counts += self._img_counts
        self._img_counts[:] = 0
        self._img_has_ref = self._img_open = False

    def update(self, pred, ref, valid=None) -> None:
        """Add one whole image (arrays of any shape, metres)."""
        self.update_window(pred, ref, valid)
        self.end_image()

    def result(self) -> dict:
        """Flat dict: n_images, n_pixels, mae, rmse, delta1..3, f1he_/precision_/recall_1..3."""
        self.end_image()
        n = max(self.n, 1)
        out = {"n_images": self.n_images, "n_pixels": int(self.n),
               "mae": self.abs_sum / n if self.n else float("nan"),
               "rmse": float(np.sqrt(self.sq_sum / n)) if self.n else float("nan")}
        for k in range(3):
            out[f"delta{k + 1}"] = self.delta[k] / n if self.n else float("nan")
        for k in range(3):
            prec, rec, f1 = precision_recall_f1(*(int(v) for v in self.f1_counts[k]))
            out[f"precision_{k + 1}"] = prec
            out[f"recall_{k + 1}"] = rec
            out[f"f1he_{k + 1}"] = f1
        return out
