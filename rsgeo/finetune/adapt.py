"""RS3DAda-style unsupervised domain adaptation of a height model (``--adapt-to``).

Labelled source chips (heights + land cover) and unlabelled target chips train one
student; an EMA teacher labels the target (RS3DAda, SynRS3D appendix A.4, and its public code):

1. Source: SmoothL1 on heights + ``AUX_WEIGHT`` x cross-entropy on land cover.
2. Teacher on the target image: pseudo land cover (argmax) with confidence weight
   ``w_s`` = share of pixels whose top probability >= ``tau`` (0.95); pseudo heights set
   to 0 wherever the pseudo class is neither tree nor building (ground mask); height
   consistency ``w_h`` = share of pixels whose height on a photometrically augmented copy
   stays within a ratio ``eta`` (1.55) of the original. Both weights are one scalar per
   batch, as in the reference code.
3. ClassMix: half of the land-cover classes present in each source chip (rounded up) are
   pasted onto its target chip, with their true heights and classes (weight 1); the
   rest keeps the pseudo labels (weights ``w_h`` / ``w_s``). The mixed image gets strong
   photometric augmentation (colour jitter p 0.8, Gaussian blur p 0.5); the student's
   weighted losses on it are the target terms.
4. Feature constraint (pretrained encoders only): tokens of the student's last encoder
   level whose cosine similarity to a frozen copy of the initial encoder falls below
   ``feat_threshold`` (0.8) are pulled back: ``1 - mean(cos)`` over those tokens.
5. Before each optimiser step the teacher follows the student:
   ``theta_t <- a theta_t + (1 - a) theta_s``, ``a = min(1 - 1/(step + 1), 0.99)``.

Where we depart from the public code (deliberately): the teacher starts as a copy of the
student (not a fresh network with random heads) and its buffers follow the student too
(the reference teacher's BatchNorm statistics never leave 0/1); the consistency ratio
is taken on heights clamped at ``1e-3`` m (the reference takes it on raw outputs, so
negative pairs can count as consistent); photometric augmentations act on the
normalised tensors (no albumentations dependency).

Source style transfer (RS3DAda's ``OneOf([FDA, HistogramMatching, PDA], p=0.8)``): before
normalisation, each source chip is restyled with probability ``style_p`` (0.8) toward
a random target chip of its batch, by FDA (low-frequency amplitude swap, window ratio
drawn in ``[0, fda_beta]``, 0.01) or histogram matching (blend drawn in ``hm_blend``,
0.8-1), :mod:`rsgeo.train.style`. ``style`` picks ``both`` (default), ``fda``, ``hm`` or
``none``; pixel-distribution adaptation, RS3DAda's third choice, is not implemented.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from rsgeo.data.batch import SourceNorm
from rsgeo.data.dataset import cut
from rsgeo.errors import InputError
from rsgeo.finetune.photometric import photometric
from rsgeo.finetune.tasks import TaskModule
from rsgeo.tasks.losses import AUX_WEIGHT, IGNORE, class_loss, height_loss
from rsgeo.train.seeds import batch_generator, draw, mix64, sample_seed
from rsgeo.train.style import StyleTransfer

STYLE_DEFAULTS = {"style": "both", "style_p": 0.8, "fda_beta": 0.01, "hm_blend": (0.8, 1.0)}


def split_style(opts: dict) -> tuple[dict, StyleTransfer | None]:
    """Adaptation options -> (:class:`AdaptModule` options, source style transfer or None).

    Style keys (defaults: RS3DAda's): ``style`` (fda, hm, both, none), ``style_p``,
    ``fda_beta``, ``hm_blend`` (low, high).
    """
    rest = {k: v for k, v in opts.items() if k not in STYLE_DEFAULTS}
    s = {**STYLE_DEFAULTS, **{k: v for k, v in opts.items() if k in STYLE_DEFAULTS}}
    try:
        st = StyleTransfer(s["style"], s["style_p"], s["fda_beta"], tuple(s["hm_blend"]))
    except (ValueError, TypeError) as e:
        raise InputError(f"--style / adapt options: {e}") from None
    return rest, (None if st.style == "none" else st)


class AdaptView(Dataset):
    """Source sample ``i`` (a TaskView with labels) + a random target chip as ``x_target``.

    The target chip and its crop/flips are a hash of ``(seed, epoch, i)`` (a stream apart
    from the source's), so pairs are the same on any worker, rank or resumed run. Workers
    hand over the target crop as stored (uint8); :meth:`on_device` normalises it with the
    target dataset's per-source statistics after the source's own batch stage. With a
    ``style`` (:func:`split_style`), the source images (``in_rgb``, as stored) are first
    restyled toward the batch's target chips.
    """

    def __init__(self, source: Dataset, target: Dataset, crop: int, seed: int = 0,
                 style: StyleTransfer | None = None):
        self.source, self.target, self.crop, self.seed, self.epoch = source, target, crop, seed, 0
        self.style = style
        self.fast = hasattr(target, "read") and hasattr(target, "source_ids")
        self.norm = target.source_norm() if hasattr(target, "source_norm") else SourceNorm({})

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.source.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict:
        out = dict(self.source[i])
        s = mix64(sample_seed(self.seed, self.epoch, int(i)) + 1) >> 2
        k = draw(s, 0, len(self.target))
        if self.fast:
            H, W = self.target.chip_shape(k)
        else:
            t = self.target[k]["rgb"]
            H, W = t.shape[-2:]
        c = min(self.crop, H, W)
        win = (draw(s, 1, H - c + 1), draw(s, 2, W - c + 1), c, c)
        hflip, vflip = draw(s, 3, 2) == 1, draw(s, 4, 2) == 1
        if self.fast:
            out["x_target"] = torch.from_numpy(self.target.read(k, "rgb", win, hflip, vflip))
            out["x_target_source_id"] = int(self.target.source_ids[k])
        else:
            out["x_target"] = torch.from_numpy(cut(t, win, hflip, vflip))
            out["x_target_source_id"] = -1
        return out

    def on_device(self, batch: dict) -> dict:
        if self.style is not None and "in_rgb" in batch:
            batch["in_rgb"] = self.style(batch["in_rgb"], batch["x_target"], batch["seed"])
        batch = self.source.on_device(batch)
        x = self.norm(batch["x_target"], "rgb", batch.pop("x_target_source_id"))
        batch["x_target"] = torch.nan_to_num(x, nan=0.0)
        return batch


def class_mix_mask(labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``[B, 1, H, W]`` float: 1 on ceil(n/2) randomly chosen classes present in each chip."""
    masks = []
    for lab in labels:
        present = torch.unique(lab[lab != IGNORE])
        if len(present) == 0:
            masks.append(torch.zeros_like(lab, dtype=torch.float32))
            continue
        pick = present[torch.randperm(len(present), generator=g)[:math.ceil(len(present) / 2)]
                       .to(present.device)]
        masks.append(torch.isin(lab, pick).float())
    return torch.stack(masks)[:, None]


class AdaptModule(TaskModule):
    """A height TaskModule (net with a land-cover ``aux`` head) + EMA teacher + target loss."""

    def __init__(self, net: nn.Module, ground_classes: list[int], tau: float = 0.95,
                 eta: float = 1.55, ema: float = 0.99, target_weight: float = 1.0,
                 feat_weight: float = 1.0, feat_threshold: float = 0.8, head_steps: int = 0):
        super().__init__(net, "height", head_steps=head_steps)
        if getattr(net, "aux", None) is None:
            raise ValueError("adaptation needs a height network with a land-cover aux head")
        self.teacher = copy.deepcopy(net).requires_grad_(False).eval()
        self.frozen = copy.deepcopy(net.encoder).requires_grad_(False).eval() \
            if feat_weight > 0 else None
        self.register_buffer("ground_classes", torch.tensor(ground_classes, dtype=torch.long),
                             persistent=False)
        self.tau, self.eta, self.ema, self.target_weight = tau, eta, ema, target_weight
        self.feat_weight, self.feat_threshold = feat_weight, feat_threshold

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()                 # the teacher and the frozen encoder never train
        if self.frozen is not None:
            self.frozen.eval()
        return self

    @torch.no_grad()
    def set_progress(self, step: int, total: int) -> None:
        """EMA update of the teacher, once before every optimiser step (engine hook); the
        encoder's phase (``head_steps``, :class:`TaskModule`)."""
        super().set_progress(step, total)
        a = min(1 - 1 / (step + 1), self.ema)
        for t, s in zip(self.teacher.parameters(), self.net.parameters()):
            t.lerp_(s.detach(), 1 - a)
        for t, s in zip(self.teacher.buffers(), self.net.buffers()):
            t.copy_(s)

    @torch.no_grad()
    def pseudo_labels(self, x: torch.Tensor, g: torch.Generator):
        """Teacher heights (ground-masked), classes, and the scalar weights ``w_h, w_s``."""
        h, lc = self.teacher.forward_all(x)
        prob = lc.float().softmax(1)
        conf, cls = prob.max(1)
        w_s = (conf >= self.tau).float().mean()
        h_aug, _ = self.teacher.forward_all(photometric(x, g))
        a, b = h.float().clamp_min(1e-3), h_aug.float().clamp_min(1e-3)
        w_h = (torch.maximum(a / b, b / a) < self.eta).float().mean()
        structure = torch.isin(cls, self.ground_classes)[:, None]
        return torch.where(structure, h.float(), torch.zeros_like(h, dtype=torch.float32)), \
            cls, w_h, w_s

    def feature_loss(self, x: torch.Tensor) -> torch.Tensor:
        s = self.net.encoder.features(x)[3].flatten(2)
        with torch.no_grad():
            f = self.frozen.features(x)[3].flatten(2)
        cos = F.cosine_similarity(s, f, dim=1)                 # [B, tokens]
        low = cos < self.feat_threshold
        return (1 - cos[low]).mean() if low.any() else s.sum() * 0

    def forward(self, batch: dict):
        g = batch_generator(batch["seed"])
        h, lc = self.net.forward_all(batch["x"])
        lh, mae = height_loss(h, batch["target"])
        src = lh + AUX_WEIGHT * class_loss(lc, batch["labels"])

        xt = batch["x_target"]
        pseudo_h, pseudo_c, w_h, w_s = self.pseudo_labels(xt, g)
        m = class_mix_mask(batch["labels"], g)
        mixed = photometric(m * batch["x"] + (1 - m) * xt, g, p_jitter=0.8, p_blur=0.5)
        mix_h = torch.where(m > 0, batch["target"], pseudo_h)
        mix_c = torch.where(m[:, 0] > 0, batch["labels"], pseudo_c)
        hm, lcm = self.net.forward_all(mixed)
        th, _ = height_loss(hm, mix_h, weight=m + (1 - m) * w_h)
        tc = class_loss(lcm, mix_c, weight=m[:, 0] + (1 - m[:, 0]) * w_s)
        tgt = th + AUX_WEIGHT * tc
        loss = src + self.target_weight * tgt
        logs = {"mae": mae, "source_loss": src.detach(), "target_loss": tgt.detach(),
                "w_h": w_h, "w_s": w_s}
        if self.frozen is not None:
            fl = self.feature_loss(xt)
            loss = loss + self.feat_weight * fl
            logs["feature_loss"] = fl.detach()
        return loss, logs


def structure_classes(classes: dict | None) -> list[int]:
    """Ids of the tree and building classes in a ``{"id": "name"}`` class table."""
    ids = [int(k) for k, v in (classes or {}).items()
           if any(w in str(v).lower() for w in ("tree", "building"))]
    return sorted(ids)
