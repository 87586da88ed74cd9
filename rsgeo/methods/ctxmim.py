"""CtxMIM (Zhang, Liu, Wang): SimMIM plus a context branch on the unmasked image.

Two passes through the *same* encoder and decoder (Siamese, shared weights):

- reconstructive branch: the masked image (SimMIM) -> ``Y_Re``;
- context branch: the whole, unmasked image -> ``Y_Pr``.

    L = L_Re + L_Pr + L_Cc
    L_Re = |Y_Re - X|_1 over masked pixels      (Eq. 2, normalised by masked pixels x bands)
    L_Pr = |Y_Pr - X|_1 over the same pixels     (Eq. 2 applied to the context branch)
    L_Cc = |Y_Re - sg(Y_Pr)|_1 over the same pixels

Our choices where the paper leaves them open (no public code): ``Dist`` in Eq. 3 is the
same masked mean absolute difference as the reconstruction terms (one scale for all three
terms); the context prediction is the consistency *target* and is detached (stop-gradient,
so the context branch is not pulled towards the harder masked prediction); ``L_Pr`` is
taken on the masked pixels, as Eq. 2 defines the distance over masked pixels.
"""

from __future__ import annotations

import torch

from rsgeo.methods.base import masked_l1, valid_weight
from rsgeo.methods.simmim import SimMIM


class CtxMIM(SimMIM):
    """SimMIM's masked branch (same encoder, mask token, decoder) plus a context branch."""

    name = "ctxmim"

    def run(self, batch: dict):
        x = batch[self.modalities[0]]
        mask = self.branch.draw_mask(batch, x, 0)
        y_re = self.branch.decoder(self.branch.features(x, mask))
        y_pr = self.branch.decoder(self.branch.features(x, None))
        return x, y_re, y_pr, self.branch.pixel_mask(mask)

    def forward(self, batch: dict):
        x, y_re, y_pr, m = self.run(batch)
        w = m * valid_weight(batch, self.modalities[0], x)
        re, n = masked_l1(y_re, x, w)
        pr, _ = masked_l1(y_pr, x, w)
        cc, _ = masked_l1(y_re, y_pr.detach(), w)
        l_re, l_pr, l_cc = re / (n + 1e-5), pr / (n + 1e-5), cc / (n + 1e-5)
        return l_re + l_pr + l_cc, {"l_re": l_re.detach(), "l_pr": l_pr.detach(),
                                    "l_cc": l_cc.detach()}

    def preview(self, batch: dict) -> dict:
        one = {k: v[:1] for k, v in batch.items() if torch.is_tensor(v)}
        x, y_re, _, m = self.run(one)
        return {self.modalities[0]: {"input": x[0], "masked": (x * (1 - m))[0],
                                     "reconstruction": (x * (1 - m) + y_re * m)[0]}}
