"""HiRes-FusedMIM (Mutreja, Schuegraf, Bittner): dual-encoder SimMIM on RGB + DSM.

An RGB encoder (3 bands) and a DSM encoder (1 band) of the same backbone each see their
own masked input (60 % of 32-px units, mask token). Their last-stage feature maps are
concatenated channel-wise and fed to two light decoders (1x1 conv + PixelShuffle) that
reconstruct RGB (3 bands) and DSM (1 band). Loss:

    L = (1 - a) * L_MIM + a * L_InfoNCE,    a = 0.05
    L_MIM = sum of |R - X| over masked pixels of both modalities / their count (x bands)
    L_InfoNCE = symmetric InfoNCE between the encoders' mean-pooled, projected, L2-normed
                embeddings (positive: the same chip; negatives: every other chip of the
                global batch, gathered across DDP ranks), temperature ``tau`` (0.07)

Our choices where the paper is silent (no public code): the two modalities are masked
independently (so the fused decoders can fill one modality's hole from the other's
visible evidence); the projection heads are Linear-GELU-Linear to 128-d; DSM pixels
without data (``dsm_valid`` = 0) are left out of L_MIM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsgeo.methods.base import PretrainMethod, masked_l1, valid_weight
from rsgeo.methods.simmim import MaskedBranch
from rsgeo.models.backbones import build_encoder, out_channels
from rsgeo.train.distributed import gather_with_grad


def info_nce(za: torch.Tensor, zb: torch.Tensor, tau: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE of L2-normalised ``za, zb [B, E]`` (row i of each is a pair).

    Under DDP the other ranks' rows join as negatives (:func:`gather_with_grad`); the loss
    is the mean over this rank's rows, so DDP's gradient averaging yields the global mean.
    """
    all_a, offset = gather_with_grad(za)
    all_b, _ = gather_with_grad(zb)
    labels = torch.arange(za.shape[0], device=za.device) + offset
    logits_ab = za.float() @ all_b.float().T / tau
    logits_ba = zb.float() @ all_a.float().T / tau
    return (F.cross_entropy(logits_ab, labels) + F.cross_entropy(logits_ba, labels)) / 2


class Projection(nn.Sequential):
    def __init__(self, dim: int, out: int = 128):
        super().__init__(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out))


class FusedMIM(PretrainMethod):
    name = "fusedmim"

    def __init__(self, rgb_encoder, dsm_encoder, *, mask_ratio: float, mask_unit: int,
                 alpha: float, tau: float, proj_dim: int, dsm_modality: str = "dsm"):
        """Options (defaults in :mod:`rsgeo.methods.catalog`): see ``FusedMIMOptions``."""
        super().__init__()
        self.modalities = ("rgb", dsm_modality)
        self.alpha, self.tau = alpha, tau
        a, b = rgb_encoder, dsm_encoder
        feat = out_channels(a)[-1]
        self.rgb = MaskedBranch(a, 3, mask_ratio, mask_unit, decoder_in=2 * feat)
        self.dsm = MaskedBranch(b, 1, mask_ratio, mask_unit, decoder_in=2 * feat)
        self.proj_rgb, self.proj_dsm = Projection(feat, proj_dim), Projection(feat, proj_dim)

    def encoders(self) -> dict:
        return {"encoder_rgb": (self.rgb.encoder, "rgb"),
                "encoder_dsm": (self.dsm.encoder, self.modalities[1])}

    def run(self, batch: dict):
        x_rgb, x_dsm = batch["rgb"], batch[self.modalities[1]]
        m_rgb = self.rgb.draw_mask(batch, x_rgb, 0)
        m_dsm = self.dsm.draw_mask(batch, x_dsm, 1)
        f_rgb, f_dsm = self.rgb.features(x_rgb, m_rgb), self.dsm.features(x_dsm, m_dsm)
        fused = torch.cat([f_rgb, f_dsm], dim=1)                        # [B, 2C, h, w]
        return (f_rgb, f_dsm, self.rgb.decoder(fused), self.dsm.decoder(fused),
                self.rgb.pixel_mask(m_rgb), self.dsm.pixel_mask(m_dsm))

    def forward(self, batch: dict):
        x_rgb, x_dsm = batch["rgb"], batch[self.modalities[1]]
        f_rgb, f_dsm, r_rgb, r_dsm, m_rgb, m_dsm = self.run(batch)
        s1, n1 = masked_l1(r_rgb, x_rgb, m_rgb * valid_weight(batch, "rgb", x_rgb))
        s2, n2 = masked_l1(r_dsm, x_dsm, m_dsm * valid_weight(batch, self.modalities[1], x_dsm))
        l_mim = (s1 + s2) / (n1 + n2 + 1e-5)
        z_rgb = F.normalize(self.proj_rgb(f_rgb.float().mean(dim=(2, 3))), dim=-1)
        z_dsm = F.normalize(self.proj_dsm(f_dsm.float().mean(dim=(2, 3))), dim=-1)
        l_nce = info_nce(z_rgb, z_dsm, self.tau)
        loss = (1 - self.alpha) * l_mim + self.alpha * l_nce
        return loss, {"l_mim": l_mim.detach(), "l_infonce": l_nce.detach()}

    def preview(self, batch: dict) -> dict:
        one = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
        _, _, r_rgb, r_dsm, m_rgb, m_dsm = self.run(one)   # no InfoNCE: no collective here
        out = {}
        for name, x, r, m in (("rgb", one["rgb"], r_rgb, m_rgb),
                              (self.modalities[1], one[self.modalities[1]], r_dsm, m_dsm)):
            out[name] = {"input": x[0], "masked": (x * (1 - m))[0],
                         "reconstruction": (x * (1 - m) + r * m)[0]}
        return out


def build(backbone: str, img_size: int, modality: str = "rgb", in_chans: int = 3,
          dsm_modality: str = "dsm", **options) -> FusedMIM:
    """The registry's ``build``: an RGB (3-band) and a height (1-band) encoder of ``backbone``."""
    rgb = build_encoder(backbone, 3, img_size)
    dsm = build_encoder(backbone, 1, img_size)
    return FusedMIM(rgb, dsm, dsm_modality=dsm_modality, **options)
