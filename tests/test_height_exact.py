"""The height accumulator's fused passes give exactly the numbers of the plain formulas.

``plain_stats`` is the accumulator's piece statistics written as plainly as they were
before the passes were fused (subtract, floor both heights, divide the larger by the
smaller, compare); the fast implementation must
match it bit for bit (sums included) on any input: NaN, inf, negative heights, invalid
masks, any threshold and floor.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rsgeo.metrics.height import CHUNK, ETAS, HeightAccumulator


def plain_stats(p, g, valid, threshold, floor):
    """Piece statistics from the formulas: (n, sum |d|, sum d^2, delta, tp, fp, fn, has_ref)."""
    p, g = np.asarray(p, np.float32).ravel(), np.asarray(g, np.float32).ravel()
    ok = np.isfinite(p) & np.isfinite(g)
    if valid is not None:
        ok &= np.asarray(valid, bool).ravel()
    p, g = p[ok], g[ok]
    if p.size == 0:
        return 0, 0.0, 0.0, (0, 0, 0), (0, 0, 0), 0, 0, False
    f = np.float32(floor)
    pc, gc = np.maximum(p, f), np.maximum(g, f)
    with np.errstate(all="ignore"):
        ratio = np.maximum(pc, gc) / np.minimum(pc, gc)
    sp, sg = p > threshold, g > threshold
    delta = tuple(int(np.count_nonzero(ratio < np.float32(e))) for e in ETAS)
    tp = tuple(int(np.count_nonzero((ratio < np.float32(e)) & sp & sg)) for e in ETAS)
    fp, fn = int(np.count_nonzero(sp & ~sg)), int(np.count_nonzero(~sp & sg))
    with np.errstate(all="ignore"):
        d = p - g
    return (int(p.size), float(np.abs(d).sum(dtype=np.float64)),
            float(np.square(d).sum(dtype=np.float64)), delta, tp, fp, fn,
            bool(np.count_nonzero(sg)))


def heights(rng, n, kind):
    g = np.where(rng.random(n) < 0.4, 0.0, rng.uniform(0, 40, n))
    p = g + rng.normal(0, [0.05, 2.0, 30.0][kind % 3], n)
    if kind in (3, 4):                       # near the floor and the threshold, negatives
        g = rng.choice(np.float32([-0.5, 0, 0.05, 0.1, 0.1000001, 0.5, 1, 1.0000001, 1.25]), n)
        p = g * rng.choice(np.float32([0.8, 1, 1.25, 1.2500001, 1.5625, 1.953125, 2]), n)
    return p.astype(np.float32), g.astype(np.float32)


@given(st.integers(0, 10 ** 6), st.integers(1, 3000), st.integers(0, 4),
       st.sampled_from([(1.0, 0.1), (2.5, 0.3), (0.05, 0.1), (1.0, 0.0), (0.0, -1.0)]),
       st.booleans(), st.booleans())
@settings(max_examples=120, deadline=None)
def test_piece_stats_are_the_formulas_bit_for_bit(seed, n, kind, tf, holes, mask):
    rng = np.random.default_rng(seed)
    p, g = heights(rng, n, kind)
    if holes:
        for a in (p, g):
            a[rng.random(n) < 0.05] = rng.choice([np.nan, np.inf, -np.inf])
    valid = rng.random(n) > 0.1 if mask else None
    acc = HeightAccumulator(*tf)
    with np.errstate(all="ignore"):
        got = acc.window_stats(p, g, valid)
    assert got == [plain_stats(p, g, valid, *tf)]


def test_large_windows_piece_by_piece_and_overflow():
    rng = np.random.default_rng(5)
    p, g = heights(rng, 3 * CHUNK + 17, 1)
    p[7] = 3e38                              # p - g overflows to inf: the sums say so
    g[7] = -3e38
    acc = HeightAccumulator()
    with np.errstate(all="ignore"):
        got = acc.window_stats(p, g)
    want = [plain_stats(p[i:i + CHUNK], g[i:i + CHUNK], None, 1.0, 0.1)
            for i in range(0, p.size, CHUNK)]
    assert got == want and got[0][1] == np.inf
    acc.update(p[CHUNK:], g[CHUNK:])         # reused work buffers, smaller pieces
    assert acc.result()["n_pixels"] == p.size - CHUNK


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int16])
def test_input_dtypes_are_read_as_float32(dtype):
    rng = np.random.default_rng(2)
    p, g = heights(rng, 999, 1)
    a, b = HeightAccumulator(), HeightAccumulator()
    a.update(p.astype(dtype), g.astype(dtype))
    b.update(p.astype(dtype).astype(np.float32), g.astype(dtype).astype(np.float32))
    assert a.result() == b.result()
