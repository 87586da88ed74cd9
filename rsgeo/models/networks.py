"""Task networks: an encoder (or two) + a head, and builders for each head layout.

:class:`FeatureEncoder` gives the 4 feature levels of one encoder, or of two (RGB + DSM)
concatenated; :class:`DenseTaskModel` (per-pixel outputs, optional land-cover ``aux``
head), :class:`ChangeModel` (siamese pre/post) and :class:`ClassifierModel` (pooled
features + linear) wrap it. The ``*_model`` builders are what task specs
(:mod:`rsgeo.tasks`) call from ``build(encoder, config)``.
"""

from __future__ import annotations

import torch
from torch import nn

from rsgeo.models.backbones import encoder_features, encoder_kind, out_channels, patch_size
from rsgeo.models.heads import ChangeHead, DPTHead, LinearHead, UperNetHead


class FeatureEncoder(nn.Module):
    """One encoder, or two (RGB + DSM, HiRes-FusedMIM style) whose maps are concatenated.

    ``features(x)`` -> 4 maps; with two encoders the first ``split`` bands feed the first
    encoder, the rest the second, and each level is concatenated channel-wise. ``norm``:
    ViT levels go through the encoder's final LayerNorm
    (:func:`~rsgeo.models.backbones.encoder_features`; the task config's ``feature_norm``).
    """

    def __init__(self, encoders: list[nn.Module], split: int | None = None, norm: bool = False):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.split, self.norm = split, norm

    @property
    def channels(self) -> list[int]:
        chans = [out_channels(e) for e in self.encoders]
        return [sum(c[i] for c in chans) for i in range(4)]

    @property
    def strides(self) -> list[int]:
        e = self.encoders[0]
        p = patch_size(e)
        return [p] * 4 if encoder_kind(e) == "vit" else [p, 2 * p, 4 * p, 8 * p]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if len(self.encoders) == 1:
            return encoder_features(self.encoders[0], x, self.norm)
        a = encoder_features(self.encoders[0], x[:, :self.split], self.norm)
        b = encoder_features(self.encoders[1], x[:, self.split:], self.norm)
        return [torch.cat([u, v], 1) for u, v in zip(a, b)]


class DenseTaskModel(nn.Module):
    """Encoder + dense head: ``[B, C, H, W]`` normalised input -> ``[B, K, H, W]``.

    For ``task="height"`` the single output channel is the height above ground in metres;
    for segmentation, K class logits. H and W must be multiples of the encoder stride.
    ``aux`` (height models, RS3DAda's multi-task set-up) is a second DPT head giving
    land-cover logits from the same features: :meth:`forward_all` returns both, while
    ``forward`` (and so export and predict-height) returns the heights only.
    """

    def __init__(self, encoder: FeatureEncoder, head: nn.Module, aux: nn.Module | None = None):
        super().__init__()
        self.encoder, self.head, self.aux = encoder, head, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x))

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(main output, auxiliary logits or None)`` from one encoder pass."""
        feats = self.encoder.features(x)
        return self.head(feats), (self.aux(feats) if self.aux is not None else None)


class ChangeModel(nn.Module):
    """Siamese encoder over pre/post images + :class:`ChangeHead`.

    ``forward(pre, post)`` (both ``[B, C, H, W]``, normalised) -> change logits ``[B, 1, H, W]``.
    """

    def __init__(self, encoder: FeatureEncoder, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(pre), self.encoder.features(post))


class ClassifierModel(nn.Module):
    """Encoder + :class:`LinearHead`: ``[B, C, H, W]`` -> ``[B, K]`` logits."""

    def __init__(self, encoder: FeatureEncoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = LinearHead(encoder.channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.features(x)[3])


def dpt_model(enc: FeatureEncoder, out: int, features: int, relu_out: bool = False,
              aux_classes: int | None = None) -> DenseTaskModel:
    """Encoder + DPT head with ``out`` channels (``relu_out``: non-negative, heights); with
    ``aux_classes`` a second DPT head gives land-cover logits (RS3DAda multi-task)."""
    head = DPTHead(enc.channels, enc.strides, features=features, out_channels=out,
                   relu_out=relu_out)
    aux = DPTHead(enc.channels, enc.strides, features=features, out_channels=int(aux_classes),
                  relu_out=False) if aux_classes else None
    return DenseTaskModel(enc, head, aux)


def upernet_model(enc: FeatureEncoder, num_classes: int, features: int) -> DenseTaskModel:
    """Encoder + UperNet head: ``num_classes`` logits per pixel."""
    return DenseTaskModel(enc, UperNetHead(enc.channels, enc.strides, int(num_classes), features))


def change_model(enc: FeatureEncoder, features: int) -> ChangeModel:
    """Siamese encoder + :class:`ChangeHead` (one change logit per pixel)."""
    return ChangeModel(enc, ChangeHead(enc.channels, enc.strides, features=features))
