"""Task views of a chip dataset: inputs and targets cropped and flipped together.

Every random choice for sample ``i`` in epoch ``e`` is a hash of ``(seed, e, i)``
(:func:`rsgeo.train.seeds.sample_seed`): same chips on any worker, rank or resumed run.
Evaluation views (``train=False``) take the centre crop and never flip.

Workers cut and flip by numpy slicing and hand over the stored dtypes: ``in_<modality>``
for each input (``rgb`` uint8 ``[3, h, w]``, heights float ``[1, h, w]`` with NaN),
``post_rgb`` for change pairs, ``target`` as stored (heights ``[1, h, w]`` float with
NaN, label maps uint8 ``[h, w]``, classification an int), ``source_id`` and ``seed``.
:meth:`TaskView.on_device` (called by the engine and by validation after the copy to the
device) makes the model inputs:

``{"x": [B, C, h, w] float32 normalised input, "target": ..., "seed": [B] int64}``:
images normalised with their source's statistics, input heights in metres with NaN set
to 0; height -> ``target [B, 1, h, w]`` float32 metres (NaN = nodata), plus ``labels
[B, h, w]`` int64 with ``aux=True`` (the land-cover auxiliary head); segmentation ->
``[B, h, w]`` int64 (255 = ignore); change -> ``x_post`` too and ``[B, h, w]`` int64
0/1/255; classification -> ``[B]`` int64 (the chip's most frequent land-cover class,
ignoring 255). ``seed`` drives any further per-sample randomness (domain-adaptation
augmentations). :meth:`TaskView.sample` gives one prepared sample on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from rsgeo.data.batch import IMAGES, SourceNorm, heights
from rsgeo.data.dataset import cut
from rsgeo.tasks import INPUTS, get_task
from rsgeo.train.seeds import draw, sample_seed


def needed_modalities(task: str, inputs: str, aux: bool = False) -> tuple[str, ...]:
    """Chip modalities a task view reads: inputs, the task's target and extras, aux labels."""
    spec = get_task(task)
    mods = list(INPUTS[inputs]) + [spec.target, *spec.extra_modalities]
    if aux:
        mods.append("labels")
    return tuple(dict.fromkeys(mods))


def subset_indices(n: int, size: int | None, seed: int) -> np.ndarray:
    """A fixed, seeded subset of ``size`` chips (all chips when ``size`` is None)."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:size] if size else order)


class TaskView(Dataset):
    def __init__(self, base: Dataset, task: str, inputs: str, indices=None, crop: int | None = None,
                 seed: int = 0, train: bool = True, aux: bool = False):
        self.base, self.task, self.inputs, self.aux = base, task, INPUTS[inputs], aux
        self.spec = get_task(task)
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices)
        self.crop, self.seed, self.train, self.epoch = crop, seed, train, 0
        self.fast = hasattr(base, "read") and hasattr(base, "source_ids")
        self.norm = base.source_norm() if hasattr(base, "source_norm") else SourceNorm({})

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        j = int(self.indices[i])
        s = sample_seed(self.seed, self.epoch, i)
        sample = None
        if self.fast:
            H, W = self.base.chip_shape(j)
        else:
            sample = self.base[j]
            H, W = sample[self.inputs[0]].shape[-2:]
        c = min(self.crop or min(H, W), H, W)
        if self.train:
            oy, ox = draw(s, 0, H - c + 1), draw(s, 1, W - c + 1)
            hflip, vflip = draw(s, 2, 2) == 1, draw(s, 3, 2) == 1
        else:
            oy, ox, hflip, vflip = (H - c) // 2, (W - c) // 2, False, False
        win = (oy, ox, c, c)

        def get(m: str) -> np.ndarray:
            if self.fast:
                return self.base.read(j, m, win, hflip, vflip)
            return cut(sample[m], win, hflip, vflip)

        out = {f"in_{m}": torch.from_numpy(get(m)) for m in self.inputs}
        for m in self.spec.extra_modalities:
            out[m] = torch.from_numpy(get(m))
        target = self.spec.make_target(get(self.spec.target), c)
        out["target"] = torch.from_numpy(target) if isinstance(target, np.ndarray) else target
        if self.aux:
            out["labels"] = torch.from_numpy(get("labels").reshape(c, c))
        out["source_id"] = int(self.base.source_ids[j]) if self.fast \
            else int(sample.get("source_id", -1))
        out["seed"] = s
        return out

    def _input(self, x: torch.Tensor, m: str, sid) -> torch.Tensor:
        if m in IMAGES:
            return torch.nan_to_num(self.norm(x, m, sid), nan=0.0)
        return heights(x)[0]

    def on_device(self, batch: dict) -> dict:
        """The collated batch (on the training device) -> model inputs (see module doc)."""
        sid = batch.get("source_id")
        batch["x"] = torch.cat([self._input(batch.pop(f"in_{m}"), m, sid)
                                for m in self.inputs], dim=1)
        if "post_rgb" in batch:
            batch["x_post"] = self._input(batch.pop("post_rgb"), "post_rgb", sid)
        t = batch["target"]
        batch["target"] = t.float() if self.spec.target_float else t.long()
        if "labels" in batch:
            batch["labels"] = batch["labels"].long()
        return batch

    def sample(self, i: int) -> dict:
        """Sample ``i`` prepared as the model sees it (CPU, no batch dimension)."""
        b = self.on_device(default_collate([self[i]]))
        return {k: v[0] for k, v in b.items()}
