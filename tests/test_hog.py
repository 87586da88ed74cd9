import numpy as np
import pytest
import torch

from rsgeo.data.hog import hog_energy, hog_energy_numpy


def as_numpy(images):
    return torch.as_tensor(hog_energy_numpy(np.asarray(images)))


@pytest.mark.parametrize("hog", [hog_energy, as_numpy], ids=["torch", "numpy"])
def test_edge_rich_patches_rank_above_flat_ones(hog):
    rng = np.random.default_rng(0)
    img = np.full((3, 64, 64), 120, np.uint8)
    img[:, :16, :16] = rng.integers(0, 255, (3, 16, 16))       # texture in patch 0
    img[:, 16:32, 40:44] = 250                                   # a bright edge in patch (1, 2)
    s = hog(img)
    assert s.shape == (16,)
    others = [i for i in range(16) if i not in (0, 6)]
    assert min(s[0], s[6]) > 5 * s[others].max()     # edge-rich patches on top
    far = [3, 7, 8, 9, 11, 12, 13, 14, 15]            # patches with no edge nearby
    assert torch.allclose(s[far], torch.zeros(len(far)), atol=1e-6)


@pytest.mark.parametrize("hog", [hog_energy, as_numpy], ids=["torch", "numpy"])
def test_batch_matches_single_and_scores_are_not_constant(hog):
    imgs = torch.rand(2, 3, 32, 48) * 255
    b = hog(imgs)
    assert b.shape == (2, 6)
    assert torch.allclose(b[1], hog(imgs[1]))
    assert b.std() > 0


def test_numpy_twin_scores_what_torch_scores():
    """prepare stores numpy's scores, SelectiveMAE computes torch's on the fly: the same
    descriptor, to float rounding, on uint8 chips (exact gradients) of any size and band count."""
    rng = np.random.default_rng(1)
    for shape in [(5, 3, 64, 64), (2, 1, 32, 48), (3, 128, 64)]:
        imgs = rng.integers(0, 256, shape).astype(np.uint8)
        want = hog_energy(imgs).numpy()
        got = hog_energy_numpy(imgs)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * want.max())
    with pytest.raises(ValueError, match="multiple of patch"):
        hog_energy_numpy(np.zeros((3, 40, 64), np.uint8))


def reference_hog(img: np.ndarray, patch=16, cell=8, bins=9) -> np.ndarray:
    """The descriptor written out plainly in float64: Sobel kernels, atan2, np.add.at."""
    x = img.astype(np.float64)
    C, H, W = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float64)
    gx = sum(kx[i, j] * p[:, i:i + H, j:j + W] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[:, i:i + H, j:j + W] for i in range(3) for j in range(3))
    mag = np.hypot(gx, gy)
    b = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * bins).astype(int), bins - 1)
    hist = np.zeros((C, bins, H // cell, W // cell))
    c, r, q = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    np.add.at(hist, (c, b, r // cell, q // cell), mag)
    k = patch // cell
    energy = [[np.sqrt((hist[:, :, i * k:(i + 1) * k, j * k:(j + 1) * k] ** 2).sum())
               for j in range(W // patch)] for i in range(H // patch)]
    return np.array(energy).ravel() / patch ** 2


def test_numpy_twin_is_the_exact_descriptor_for_uint8_images():
    """uint8 images have integer gradients, which never lie on a bin boundary: the sign
    tests bin them as atan2 in float64 does, and the scores match to float32 rounding."""
    rng = np.random.default_rng(2)
    smooth = np.cumsum(rng.integers(0, 3, (3, 32, 48)), axis=2).clip(0, 255)  # gentle slopes
    for img in (rng.integers(0, 256, (3, 32, 48)), smooth, np.eye(32, dtype=int)[None] * 200):
        img = img.astype(np.uint8)
        np.testing.assert_allclose(hog_energy_numpy(img), reference_hog(img), rtol=1e-6)


@pytest.mark.cuda
def test_torch_scores_on_the_images_device():
    """SelectiveMAE scores crops on the fly on the training device: the Sobel kernels and
    histograms must live there too."""
    imgs = torch.rand(2, 3, 32, 48) * 255
    on_gpu = hog_energy(imgs.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), hog_energy(imgs), rtol=1e-4, atol=1e-4)
