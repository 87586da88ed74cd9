"""Pooled batch buffers: reused only once no consumer can see the batch they carried."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from rsgeo.data.dataset import ChipDataset
from rsgeo.data.pool import BatchPool, layout
from rsgeo.train.augment import PretrainView
from rsgeo.train.sampler import EpochBatched, whole_batch
from tests.test_loader import write_chips

SPEC = {"x": ((4, 3, 8, 8), np.uint8), "h": ((4, 1, 8, 8), np.float16), "s": ((4,), np.int64)}


@pytest.fixture(scope="module")
def chips(tmp_path_factory):
    return write_chips(tmp_path_factory.mktemp("pool") / "chips")


def test_layout_aligns_every_tensor():
    plan, nbytes = layout(SPEC)
    assert [(k, off) for k, _, _, off in plan] == [("x", 0), ("h", 768), ("s", 1280)]
    assert nbytes == 1344 and all(off % 64 == 0 for *_, off in plan)


def test_main_process_slots_are_reused_only_when_released():
    pool = BatchPool(slots=2)
    a = pool.batch(SPEC)
    assert a["x"].dtype == torch.uint8 and a["h"].shape == (4, 1, 8, 8)
    assert a["h"].dtype == torch.float16 and a["s"].dtype == torch.int64
    a["x"].fill_(7)
    b = pool.batch(SPEC)                      # a is alive: another slot
    assert b["x"].data_ptr() != a["x"].data_ptr()
    c = pool.batch(SPEC)                      # both slots busy: a buffer of its own
    assert c["x"].data_ptr() not in (a["x"].data_ptr(), b["x"].data_ptr())
    b["x"].fill_(1)
    assert (a["x"] == 7).all()
    keep = a["h"]                             # one view of a's slot keeps it busy
    ptr = a["x"].data_ptr()
    del a
    assert pool.batch(SPEC)["x"].data_ptr() != ptr
    del keep
    assert pool.batch(SPEC)["x"].data_ptr() == ptr


def run_loader(view, batches, hold):
    keys = [[(k, (3 * k + j) % len(view)) for j in range(5)] for k in range(batches)]
    loader = DataLoader(EpochBatched(view), batch_sampler=keys, collate_fn=whole_batch,
                        num_workers=1, prefetch_factor=2)
    held, ok = [], True
    for k, batch in zip(keys, loader):
        view.set_epoch(k[0][0])  # a new epoch each batch: no two batches alike
        want = default_collate([view[i] for _, i in k])
        ok &= all(torch.equal(batch[m].nan_to_num(), want[m].nan_to_num()) for m in want)
        if hold == "all":
            held.append((batch, want))
        elif hold:  # only the storage object of one tensor: the least a consumer can hold
            x = batch[hold]
            held.append(((x.untyped_storage(), x.storage_offset(), x.shape, x.dtype), want[hold]))
            del batch, x
    for batch, want in held:  # nothing a consumer still holds was rewritten
        if isinstance(batch, tuple):
            storage, offset, shape, dtype = batch
            got = torch.empty(0, dtype=dtype).set_(storage, offset, shape)
            ok &= torch.equal(got, want)
        else:
            ok &= all(torch.equal(batch[m].nan_to_num(), want[m].nan_to_num()) for m in want)
    return ok


def test_worker_slots_are_reused_after_release_and_never_while_held(chips):
    mods = ("rgb", "ndsm")
    view = PretrainView(ChipDataset(chips, modalities=mods + ("hog",)), mods, crop=32, seed=2)
    assert run_loader(view, 12, hold=False)
    released = view.pool.released[0]
    assert (released >= 0).sum() >= 1        # the main process gave slots back ...
    view = PretrainView(ChipDataset(chips, modalities=mods + ("hog",)), mods, crop=32, seed=2)
    view.pool.slots = 3                      # ... and holding every batch never corrupts one
    assert run_loader(view, 12, hold="all")
    view = PretrainView(ChipDataset(chips, modalities=mods + ("hog",)), mods, crop=32, seed=2)
    assert run_loader(view, 12, hold="seed")
