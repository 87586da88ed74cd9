"""Validation on the device: the same counts as the numpy accumulators, batched."""

import numpy as np
import pytest
import torch

from rsgeo.finetune.validate import ValSet, confusion_update, height_update
from rsgeo.metrics.height import HeightAccumulator
from rsgeo.metrics.segmentation import ConfusionMatrix


def test_batched_height_counts_match_the_accumulator(rng):
    ref = rng.gamma(1.0, 3.0, (6, 16, 16)).astype(np.float32)
    ref[1] = 0.2                                   # an image without anything above 1 m
    ref[2, :3] = np.nan                            # nodata
    pred = (ref * rng.uniform(0.6, 1.5, ref.shape) + rng.normal(0, 0.5, ref.shape)).astype(np.float32)
    pred[3, 5:9] = np.nan
    one = HeightAccumulator()
    for p, r in zip(pred, ref):
        one.update(p, r)
    batched = HeightAccumulator()
    height_update(batched, torch.from_numpy(pred[:4]), torch.from_numpy(ref[:4]))
    height_update(batched, torch.from_numpy(pred[4:]), torch.from_numpy(ref[4:]))
    a, b = one.result(), batched.result()
    assert a.keys() == b.keys()
    for k in a:
        assert np.isclose(a[k], b[k], rtol=1e-9, atol=0), k


def test_batched_confusion_matches(rng):
    ref = rng.integers(0, 4, (3, 8, 8))
    ref[0, 0] = 255
    pred = rng.integers(0, 4, (3, 8, 8))
    one, batched = ConfusionMatrix(4, 255), ConfusionMatrix(4, 255)
    one.update(pred, ref)
    confusion_update(batched, torch.from_numpy(pred), torch.from_numpy(ref))
    assert (one.matrix == batched.matrix).all()


class View(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": torch.full((2, 4, 4), i, dtype=torch.uint8), "target": torch.tensor(i)}

    def on_device(self, batch):
        batch["x"] = batch["x"].float() / 2
        return batch


def test_valset_resident_or_streamed_gives_the_same_batches():
    kept, streamed = ValSet(View(), "cpu", 4), ValSet(View(), "cpu", 4, max_bytes=0)
    assert kept.data is not None and streamed.data is None
    for a, b in zip(kept.batches(), streamed.batches()):
        assert a["x"].dtype == torch.float32 and torch.equal(a["x"], b["x"])
        assert torch.equal(a["target"], b["target"])
    assert [len(b["target"]) for b in kept.batches()] == [4, 4, 2]
    assert [len(b["target"]) for b in kept.batches(limit=3)] == [3]
    assert kept.data["x"].dtype == torch.uint8      # kept as stored, prepared per batch


@pytest.mark.cuda
def test_counts_on_cuda_match_cpu(rng):
    ref = torch.from_numpy(rng.gamma(1.0, 3.0, (4, 32, 32)).astype(np.float32))
    pred = ref * 1.1 + 0.3
    cpu, gpu = HeightAccumulator(), HeightAccumulator()
    height_update(cpu, pred, ref)
    height_update(gpu, pred.cuda(), ref.cuda())
    a, b = cpu.result(), gpu.result()
    assert all(np.isclose(a[k], b[k], rtol=1e-6) for k in a)
    kept = ValSet(View(), "cuda", 4)
    assert all(b["x"].is_cuda for b in kept.batches())
