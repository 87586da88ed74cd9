"""Source-to-target style transfer of image batches: FDA and histogram matching.

Batch-wise, vectorised torch on whatever device the batch is on (no host round trip):

- :func:`fda`: Fourier Domain Adaptation (Yang & Soatto, CVPR 2020): the amplitude
  spectrum of each source band inside a centred low-frequency square is replaced by the
  target's, the phase is kept.
- :func:`histogram_match`: per-band CDF matching (``F_tgt^-1(F_src(x))``) by sorting.
- :class:`StyleTransfer`: RS3DAda's source augmentation (Song et al., SynRS3D, NeurIPS
  2024): with probability ``p`` per sample, one of FDA (``beta`` drawn in ``[0, beta]``)
  or histogram matching (blended with the source at a ratio drawn in ``blend``) toward
  a randomly chosen reference chip. RS3DAda's third choice, pixel-distribution
  adaptation, is not implemented.

Pixel values are used as given: uint8 (0-255 digital numbers) or floats in any range
(e.g. normalised). Every function returns float32 except :class:`StyleTransfer`, which
hands back the input dtype (uint8 rounded and clipped to 0-255).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rsgeo.train.seeds import uniform_from_seeds

STYLES = ("fda", "hm", "both", "none")
STREAM = 0x5717E                      # uniform_from_seeds stream of the style draws


def _per_sample(v, n: int, device) -> torch.Tensor:
    """A float or ``[B]`` tensor -> float64 ``[B]`` (or ``[1]``) on ``device``."""
    t = torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1)
    if t.numel() not in (1, n):
        raise ValueError(f"expected one value or {n} (one per sample), got {t.numel()}")
    return t


def low_band(H: int, W: int, beta, device=None) -> torch.Tensor:
    """Boolean ``[B or 1, H, W]`` mask of FDA's low-frequency square, unshifted FFT layout.

    Half-width ``b = floor(min(H, W) * beta)`` frequency bins: bins with ``|ky| <= b`` and
    ``|kx| <= b`` (a ``(2b + 1)^2`` square around DC, symmetric, so the swapped spectrum
    stays Hermitian and the result real). ``beta = 0`` selects nothing (the identity, as
    in the FDA authors' code); any ``beta > 0`` includes at least DC, the band means (as
    albumentations' ``FDA``, which RS3DAda uses).
    """
    beta = torch.as_tensor(beta, dtype=torch.float64, device=device).reshape(-1)
    b = torch.floor(min(H, W) * beta)                                   # [B]
    ky = (torch.fft.fftfreq(H, device=device, dtype=torch.float64) * H).abs()
    kx = (torch.fft.fftfreq(W, device=device, dtype=torch.float64) * W).abs()
    b = b[:, None, None]
    return (ky[None, :, None] <= b) & (kx[None, None, :] <= b) & (beta > 0)[:, None, None]


def fda(src: torch.Tensor, tgt: torch.Tensor, beta) -> torch.Tensor:
    """Fourier Domain Adaptation of ``src`` toward ``tgt``.

    Args:
        src, tgt: ``[B, C, H, W]`` images (any real dtype, same shape; ``tgt`` may have
            ``B = 1``).
        beta: window ratio, a float or a ``[B]`` tensor (FDA uses 0.01-0.09): see
            :func:`low_band`. Samples whose window is empty come back unchanged.

    Returns:
        float32 ``[B, C, H, W]``: ``ifft2(|F(tgt)| e^{i arg F(src)})`` inside the low band,
        ``src``'s spectrum elsewhere; the real part (exact up to rounding, the spectrum
        being Hermitian). Values may leave the input range; clip if needed.
    """
    if src.dim() != 4 or tgt.shape[1:] != src.shape[1:]:
        raise ValueError(f"fda needs [B, C, H, W] images of one size, got {tuple(src.shape)} "
                         f"and {tuple(tgt.shape)}")
    B, _, H, W = src.shape
    x = src.float()
    inside = low_band(H, W, _per_sample(beta, B, src.device), src.device)[:, None]
    fs, ft = torch.fft.fft2(x), torch.fft.fft2(tgt.float())
    swapped = torch.where(inside, torch.polar(ft.abs(), fs.angle()), fs)
    out = torch.fft.ifft2(swapped).real
    active = inside.flatten(1).any(1).view(-1, 1, 1, 1)
    return torch.where(active, out, x)


def histogram_match(src: torch.Tensor, tgt: torch.Tensor, blend=1.0) -> torch.Tensor:
    """Per-sample, per-band histogram matching of ``src`` to ``tgt`` (finite values).

    Each source value ``x`` goes to the target's empirical quantile at the source's
    cumulative share ``q = #{src <= x} / N``: position ``q M - 1`` in the sorted target
    values (``M`` of them), linearly interpolated and clipped to ``[0, M - 1]`` (the
    cumulative-histogram convention of ``skimage.exposure.match_histograms``). The map
    is monotone (non-decreasing) and equal values stay equal; for ``M = N`` and distinct
    source values the sorted result *is* the sorted target.

    Args:
        src: ``[B, C, H, W]``; tgt: ``[B or 1, C, h, w]`` (any size); any real dtypes.
        blend: share of the matched image, a float or ``[B]`` tensor in [0, 1]
            (``blend * matched + (1 - blend) * src``; RS3DAda draws it in [0.8, 1]).

    Returns:
        float32 ``[B, C, H, W]``, within the target's range where ``blend = 1``.
    """
    if src.dim() != 4 or tgt.dim() != 4 or tgt.shape[1] != src.shape[1]:
        raise ValueError(f"histogram_match needs [B, C, H, W] images with the same bands, "
                         f"got {tuple(src.shape)} and {tuple(tgt.shape)}")
    B, C, H, W = src.shape
    N, M = H * W, tgt.shape[-2] * tgt.shape[-1]
    s = src.float().reshape(B, C, N)
    ts = tgt.float().reshape(tgt.shape[0], C, M).sort(-1).values.expand(B, C, M)
    upper = torch.searchsorted(s.sort(-1).values, s, right=True)          # 1..N, int64
    num = (upper * M - N).clamp_min(0)                                     # pos = num / N
    lo = (num // N).clamp_max(M - 1)
    frac = ((num - lo * N).float() / N).clamp(0, 1)
    hi = (lo + 1).clamp_max(M - 1)
    matched = torch.lerp(ts.gather(-1, lo), ts.gather(-1, hi), frac).view(B, C, H, W)
    w = _per_sample(blend, B, src.device).float().view(-1, 1, 1, 1)
    return torch.lerp(src.float(), matched, w)


class StyleTransfer:
    """RS3DAda's style-transfer augmentation of source images toward target references.

    Args:
        style: ``"both"`` (one of FDA / histogram matching, even odds: RS3DAda's
            ``OneOf``), ``"fda"``, ``"hm"`` or ``"none"``.
        p: probability per sample that the chip is restyled (RS3DAda 0.8).
        beta: FDA's window ratio is drawn uniformly in ``[0, beta]`` (RS3DAda 0.01; a
            64 px chip then swaps its band means only, a 392 px crop up to a 7 x 7 square).
        blend: histogram matching's ratio is drawn uniformly in ``blend`` (RS3DAda 0.8-1).

    Every draw (applied?, which method, reference, beta, blend) is a function of the
    sample's seed alone (:func:`rsgeo.train.seeds.uniform_from_seeds`), on the device.
    """

    def __init__(self, style: str = "both", p: float = 0.8, beta: float = 0.01,
                 blend: tuple[float, float] = (0.8, 1.0)):
        if style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
        lo, hi = (float(v) for v in blend)
        if not (0 <= p <= 1 and 0 <= beta < 0.5 and 0 <= lo <= hi <= 1):
            raise ValueError(f"need 0 <= p <= 1, 0 <= beta < 0.5 and 0 <= blend <= 1; got "
                             f"p={p}, beta={beta}, blend={blend}")
        self.style, self.p, self.beta, self.blend = style, float(p), float(beta), (lo, hi)

    def __repr__(self) -> str:
        return (f"StyleTransfer(style={self.style!r}, p={self.p}, beta={self.beta}, "
                f"blend={self.blend})")

    def __call__(self, src: torch.Tensor, refs: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        """Restyle ``src [B, C, H, W]`` toward chips of ``refs [R, C, h, w]``.

        ``seeds [B]`` int64 drive the draws; the reference of sample ``b`` is
        ``refs[floor(u R)]`` (resized bilinearly to ``H x W`` for FDA if its size
        differs). Returns ``src``'s dtype: uint8 inputs are rounded and clipped to 0-255.
        """
        if self.style == "none" or self.p == 0:
            return src
        B, _, H, W = src.shape
        u = uniform_from_seeds(seeds.to(src.device), 5, STREAM)            # [B, 5]
        ref = refs[(u[:, 2] * len(refs)).long().clamp_max(len(refs) - 1).to(refs.device)]
        ref = ref.to(src.device).float()
        on = u[:, 0] < self.p
        use_fda = {"fda": torch.ones_like(on), "hm": torch.zeros_like(on)}.get(
            self.style, u[:, 1] < 0.5)
        out = src.float()
        if self.style in ("fda", "both"):
            r = ref if ref.shape[-2:] == (H, W) else \
                F.interpolate(ref, size=(H, W), mode="bilinear", align_corners=False)
            y = fda(out, r, u[:, 3] * self.beta)
            out = torch.where((on & use_fda).view(-1, 1, 1, 1), y, out)
        if self.style in ("hm", "both"):
            lo, hi = self.blend
            y = histogram_match(out, ref, lo + u[:, 4] * (hi - lo))
            out = torch.where((on & ~use_fda).view(-1, 1, 1, 1), y, out)
        if src.dtype == torch.uint8:
            return out.round_().clamp_(0, 255).to(torch.uint8)
        return out.to(src.dtype) if src.is_floating_point() else out
