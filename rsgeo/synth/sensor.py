"""Atmosphere, optics, sensor and compression applied to a rendered RGB scene.

Order follows the imaging chain: haze (airlight mixed in, so contrast drops) -> blur
(Gaussian point-spread function) -> per-band gain and offset -> Gaussian sensor noise ->
the ortho producer's tone curve (contrast stretch about the image's mean grey, saturation
about each pixel's grey; 1 = unchanged) -> 8-bit quantisation -> JPEG re-compression
(Pillow) at a given quality. Images are
``[3, H, W]``; intermediate steps work on float32 grey levels (0..255).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage


@dataclass
class Sensor:
    """One acquisition's degradations (all drawn per image, see :mod:`rsgeo.synth.domain`)."""

    haze: float                          # share of airlight mixed in, 0 = clear
    airlight: tuple[int, int, int]       # airlight colour, grey levels
    blur_sigma: float                    # Gaussian PSF sigma, pixels (0 = none)
    gain: tuple[float, float, float]     # per-band multiplicative gain
    offset: tuple[float, float, float]   # per-band additive offset, grey levels
    noise_sigma: float                   # Gaussian noise sd, grey levels
    jpeg_quality: int | None             # JPEG quality 1..95, None = no re-compression
    contrast: float = 1.0                # deviations from the mean grey scaled by this
    saturation: float = 1.0              # deviations from each pixel's grey scaled by this


def haze(img: np.ndarray, strength: float, airlight) -> np.ndarray:
    """``img * (1 - strength) + strength * airlight`` (float32 ``[3, H, W]``); contrast
    (any band's standard deviation) falls by the factor ``1 - strength``."""
    a = np.asarray(airlight, np.float32)[:, None, None]
    return img * np.float32(1 - strength) + np.float32(strength) * a


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of each band by ``sigma`` pixels (no-op at 0)."""
    if sigma <= 0:
        return img
    return ndimage.gaussian_filter(img, sigma=(0, sigma, sigma), mode="reflect")


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode ``rgb`` (uint8 ``[3, H, W]``) as a JPEG of ``quality`` and decode it again
    (4:2:0 chroma subsampling, Pillow's default): block and ringing artefacts, same
    shape and dtype."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0))).save(
        buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1).copy()


def tone(img: np.ndarray, contrast: float, saturation: float) -> np.ndarray:
    """An ortho's tone curve on float32 ``[3, H, W]`` grey levels: each pixel's grey (the
    band mean) moved from the image's mean grey by ``contrast``, its colour from its grey
    by ``saturation`` (any band's deviation from the pixel grey scales by it exactly)."""
    if contrast == 1 and saturation == 1:
        return img
    grey = img.mean(axis=0, keepdims=True)
    level = grey.mean()
    return (level + np.float32(contrast) * (grey - level)) + np.float32(saturation) * (img - grey)


def apply_sensor(rgb: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    """The whole chain on a uint8 ``[3, H, W]`` image; returns uint8 ``[3, H, W]``."""
    img = haze(rgb.astype(np.float32), s.haze, s.airlight)
    img = blur(img, s.blur_sigma)
    img = img * np.asarray(s.gain, np.float32)[:, None, None] \
        + np.asarray(s.offset, np.float32)[:, None, None]
    if s.noise_sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(s.noise_sigma)
    img = tone(img, s.contrast, s.saturation)
    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return jpeg(out, s.jpeg_quality) if s.jpeg_quality is not None else out
