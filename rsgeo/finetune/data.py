"""Task views of a chip dataset: inputs and targets cropped and flipped together.

Every random choice for sample ``i`` in epoch ``e`` comes from
``np.random.default_rng([seed, e, i])`` (same chips on any worker, rank or resumed run).
Evaluation views (``train=False``) take the centre crop and never flip.

A sample becomes ``{"x": [C, h, w] float32 normalised input, "target": ..., "seed": int64}``:
height -> ``[1, h, w]`` metres (NaN = nodata), plus ``labels [h, w]`` with ``aux=True``
(the land-cover auxiliary head); segmentation -> ``[h, w]`` int64 (255 = ignore); change
-> ``x_post`` too and ``[h, w]`` int64 0/1/255; classification -> a 0-d int64 (the
chip's most frequent land-cover class, ignoring 255). ``seed`` drives any further
per-sample randomness (domain-adaptation augmentations).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE = 255
INPUTS = {"rgb": ("rgb",), "dsm": ("dsm",), "ndsm": ("ndsm",), "rgb+dsm": ("rgb", "dsm"),
          "rgb+ndsm": ("rgb", "ndsm")}
TARGETS = {"height": "ndsm", "segmentation": "labels", "change": "change",
           "classification": "labels"}


def needed_modalities(task: str, inputs: str, aux: bool = False) -> tuple[str, ...]:
    mods = list(INPUTS[inputs]) + [TARGETS[task]]
    if task == "change":
        mods.append("post_rgb")
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
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices)
        self.crop, self.seed, self.train, self.epoch = crop, seed, train, 0

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, i: int) -> dict:
        s = self.base[int(self.indices[i])]
        x = torch.cat([_nan_to_zero(torch.as_tensor(s[m]).float()) for m in self.inputs])
        H, W = x.shape[-2:]
        c = min(self.crop or min(H, W), H, W)
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        if self.train:
            oy, ox = int(rng.integers(0, H - c + 1)), int(rng.integers(0, W - c + 1))
            hflip, vflip = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        else:
            oy, ox, hflip, vflip = (H - c) // 2, (W - c) // 2, False, False

        def view(t: torch.Tensor) -> torch.Tensor:
            t = t[..., oy:oy + c, ox:ox + c]
            t = t.flip(-1) if hflip else t
            return (t.flip(-2) if vflip else t).contiguous()

        out = {"x": view(x)}
        if self.task == "change":
            out["x_post"] = view(_nan_to_zero(torch.as_tensor(s["post_rgb"]).float()))
        target = torch.as_tensor(s[TARGETS[self.task]])
        if self.task == "height":
            out["target"] = view(target.float().reshape(1, H, W))
            if self.aux:
                out["labels"] = view(torch.as_tensor(s["labels"]).reshape(H, W).long())
        else:
            lab = view(target.reshape(H, W).long())
            if self.task == "classification":
                counts = torch.bincount(lab[lab != IGNORE].flatten(), minlength=1)
                out["target"] = counts.argmax() if counts.sum() else torch.tensor(0)
            else:
                out["target"] = lab
        out["seed"] = torch.tensor(int(rng.integers(0, 2**62)), dtype=torch.int64)
        return out


def _nan_to_zero(t: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(t, nan=0.0)
