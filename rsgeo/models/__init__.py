"""Networks: backbone adapters over timm (``backbones``), heads and fusion modules.

Importing this package makes ``import timm`` work next to a torchvision wheel whose C++
operators were built for another torch (e.g. a CUDA torchvision beside a CPU torch, as the
local wheel mirror provides): torchvision then fails at import while registering fake
kernels for ``torchvision::nms``/``qnms``, operators its missing ``_C`` library should have
defined. We define those two schemas (no kernels) so the import completes; timm only needs
torchvision's pure-Python parts (``FrozenBatchNorm2d``, feature extraction). Nothing here
runs when torchvision imports cleanly.
"""

from __future__ import annotations

import sys

_SHIM = None  # keeps the torch.library fragment alive while the process runs


def _repair_torchvision_import() -> None:
    global _SHIM
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    import torch

    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    _SHIM = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        _SHIM.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811


_repair_torchvision_import()
