"""The fast ONNX export path: torch's TorchScript (tracing) exporter with dynamic axes.

On 2 CPU cores it exports a vit-tiny-4 + DPT height model in about 1 s of CPU time, where
the dynamo exporter takes about 15 s. Tracing records shapes read from tensors
(``x.shape``) as graph operations, so a model whose sizes all come from its inputs exports
with dynamic batch, height and width. Two things would otherwise fix the tile size:

* timm's ViT resamples its position embedding to each input's patch grid but skips the
  resampling when the grid equals the stored one; tracing at that size would record the
  stored embedding as a constant. :func:`trace_size` picks an example whose grid differs.
* The resampling is torch's antialiased bicubic interpolation, which the TorchScript
  exporter cannot translate; :func:`bicubic_aa` maps it to ONNX ``Resize`` (opset 18,
  ``antialias=1``, ``cubic_coeff_a=-0.5``, ``exclude_outside=1``: the settings the dynamo
  exporter's torchlib uses for the same operator).

Whatever comes out is checked against torch at other sizes and batch sizes by
:func:`rsgeo.infer.export.verify` before it is kept.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

OPSET = 18  # Resize with antialias needs opset 18
_AA_OP = "aten::_upsample_bicubic2d_aa"


def bicubic_aa(g, x, output_size, align_corners, *_scales):
    """Symbolic for ``aten::_upsample_bicubic2d_aa``: ``[N, C, h, w]`` -> ``[N, C, *output_size]``."""
    import torch
    from torch.onnx import symbolic_helper

    corners = symbolic_helper._maybe_get_const(align_corners, "b")
    shape = g.op("Shape", x)
    lead = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([0])),
                g.op("Constant", value_t=torch.tensor([2])))
    size = g.op("Concat", lead, g.op("Cast", output_size, to_i=7), axis_i=0)  # 7: int64
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", x, empty, empty, size, mode_s="cubic",
                coordinate_transformation_mode_s="align_corners" if corners is True
                else "half_pixel", cubic_coeff_a_f=-0.5, antialias_i=1, exclude_outside_i=1,
                nearest_mode_s="floor")


@contextlib.contextmanager
def _aa_symbolic(opset: int):
    import torch

    torch.onnx.register_custom_op_symbolic(_AA_OP, bicubic_aa, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic(_AA_OP, opset)


def trace_size(stride: int) -> tuple[int, int]:
    """An example ``(H, W)`` in pixels for tracing: a 2 x 3 grid of ``stride`` cells, whose
    6 cells can never match the square grid a position embedding is stored for."""
    return 2 * stride, 3 * stride


def export_traced(model, example: tuple, names: list[str], path: Path, opset: int | None) -> None:
    """Trace ``model`` on ``example`` (tensors ``[B, C, H, W]``, one per name in ``names``)
    into ``path`` with dynamic batch, height and width for every input and ``output``."""
    import torch

    opset = opset or OPSET
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in names}
    axes["output"] = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        if model(*example).dim() == 2:  # [B, K] class logits: batch only
            axes["output"] = {0: "batch"}
    with _aa_symbolic(opset), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic, deprecation notes
        torch.onnx.export(model, example, str(path), dynamo=False, input_names=names,
                          output_names=["output"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
