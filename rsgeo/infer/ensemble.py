"""Several height models as one runner: their predictions averaged tile by tile.

Height models trained from different seeds disagree most where one model alone is wrong.
Trained on synthetic cities only, each model picks its own height *scale* on real imagery:
four seeds of ``benchmarks/synth_to_real.py`` put IGN Montpellier's buildings at 0.09x,
2.46x, 0.05x and 2.16x their LiDAR height (median ratio over building pixels above 2 m),
their ensemble at 1.25x, and its F1^HE is 0.52 against 0.17-0.22 for each model alone
(README, "Synthetic to real heights").

Every member sees the same raw tiles, normalised with its *own* per-band mean and std (the
input's stretch offset, folded into the first model's mean by the caller, is carried over),
and the members' outputs (metres) are averaged with equal weights in float32, summed in
the order given. One member's output is returned as it is, so an ensemble of one model is
that model, bit for bit.

    runner = EnsembleRunner([r1, r2], means=[m1, m2], stds=[s1, s2])
    runner.submit(raw, norm)  # norm: the first model's, as predict-height builds it
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from rsgeo.infer.session import Done, Norm, as_runner


class Pending:
    """The members' pending results of one batch: ``result()`` is their mean (computed
    once, into an array of its own), ``release()`` hands every member's buffers back."""

    def __init__(self, pending: list):
        self.pending, self._out = pending, None

    def result(self) -> np.ndarray:
        if self._out is None:
            out = np.array(self.pending[0].result(), dtype=np.float32, copy=True)
            for p in self.pending[1:]:
                out += p.result()
            if len(self.pending) > 1:
                out /= np.float32(len(self.pending))
            self._out = out
        return self._out

    def release(self) -> None:
        for p in self.pending:
            p.release()


class EnsembleRunner:
    """Average the outputs of ``runners`` (each a runner with ``submit``, or a callable on
    normalised batches); ``means`` / ``stds``: each member's per-band normalisation on the
    0-255 scale (the first is the one the caller's :class:`Norm` was built from)."""

    def __init__(self, runners: Sequence, means: Sequence[Sequence[float]],
                 stds: Sequence[Sequence[float]]):
        if not runners or not len(runners) == len(means) == len(stds):
            raise ValueError("one mean and one std per runner, at least one runner")
        self.runners = [as_runner(r) for r in runners]
        self.means = [tuple(float(v) for v in m) for m in means]
        self.stds = [tuple(float(v) for v in s) for s in stds]
        self.device = getattr(self.runners[0], "device", "cpu")

    def member_norms(self, norm: Norm) -> list[Norm]:
        """Each member's :class:`Norm` for a batch the first member would get with ``norm``:
        its own mean and std, plus the stretch offset ``norm.mean - means[0]``."""
        base = self.means[0]
        norms = [norm]
        for mean, std in zip(self.means[1:], self.stds[1:]):
            norms.append(replace(norm, mean=tuple(n - b + m for n, b, m in
                                                  zip(norm.mean, base, mean)), std=std))
        return norms

    def submit(self, raw, norm: Norm) -> "Pending":
        """Submit the batch to every member (CUDA runners return at once, so the members
        and, as with one model, consecutive batches overlap); the mean is taken when the
        result is asked for."""
        return Pending([r.submit(raw, n) for r, n in zip(self.runners, self.member_norms(norm))])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """A batch normalised for the first member (tests, export checks): only when every
        member shares its normalisation."""
        if any(m != self.means[0] or s != self.stds[0] for m, s in zip(self.means, self.stds)):
            raise ValueError("members normalise differently: use submit(raw, norm)")
        return Pending([Done(r(batch)) for r in self.runners]).result()
