import numpy as np
import torch

from rsgeo.data.hog import hog_energy


def test_edge_rich_patches_rank_above_flat_ones():
    rng = np.random.default_rng(0)
    img = np.full((3, 64, 64), 120, np.uint8)
    img[:, :16, :16] = rng.integers(0, 255, (3, 16, 16))       # texture in patch 0
    img[:, 16:32, 40:44] = 250                                   # a bright edge in patch (1, 2)
    s = hog_energy(img)
    assert s.shape == (16,)
    others = [i for i in range(16) if i not in (0, 6)]
    assert min(s[0], s[6]) > 5 * s[others].max()     # edge-rich patches on top
    far = [3, 7, 8, 9, 11, 12, 13, 14, 15]            # patches with no edge nearby
    assert torch.allclose(s[far], torch.zeros(len(far)), atol=1e-6)


def test_batch_matches_single_and_scores_are_not_constant():
    imgs = torch.rand(2, 3, 32, 48) * 255
    b = hog_energy(imgs)
    assert b.shape == (2, 6)
    assert torch.allclose(b[1], hog_energy(imgs[1]))
    assert b.std() > 0
