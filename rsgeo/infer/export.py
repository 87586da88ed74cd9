"""``rsgeo export``: a task checkpoint -> one self-describing ONNX file, verified.

The graph takes ``image`` ``[B, bands, H, W]`` float32 (change models: ``pre`` and
``post``), *already normalised* with the per-band mean/std stored in the metadata, with
dynamic batch and spatial size (H, W multiples of the encoder stride), and returns
``output``: ``[B, K, H, W]`` (heights in metres for ``task=height``, class or change
logits otherwise) or ``[B, K]`` class logits for ``task=classification``.
``metadata_props`` hold every key of the checkpoint's ``meta`` (JSON values) plus
``rsgeo_version``, ``config``, ``stride``, ``inputs`` and ``writer`` (what prediction writes
for the task: :class:`rsgeo.tasks.Writer`), so prediction needs nothing else. The graph
inputs are the task spec's ``export_inputs`` (:mod:`rsgeo.tasks`).
Before the file appears, ONNX Runtime's output is compared with torch's on random batches
of three sizes; a difference beyond tolerance fails the export. The graph comes from torch's
TorchScript exporter (:mod:`rsgeo.infer.onnx_trace`, about 1 s) or, when that fails or does
not match, from the dynamo exporter (10-15 s on 2 CPU cores).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from rsgeo import __version__
from rsgeo.errors import InputError, RsgeoError, first_line
from rsgeo.infer import session
from rsgeo.infer.onnx_trace import export_traced, trace_size
from rsgeo.io.atomic import atomic_path, check_output, named_reason, write_problem
from rsgeo.progress import progress
from rsgeo.tasks import get_task
from rsgeo.tasks.files import check_onnx_output

log = logging.getLogger("rsgeo.infer")


def stride_of(config: dict) -> int:
    from rsgeo.models.backbones import TINY  # lazy: torch + timm; prediction from ONNX reads this

    name = config["backbone"]
    if name in TINY:
        cfg = TINY[name]
        return cfg["patch_size"] * (1 if cfg["kind"] == "vit" else 8)
    return 32 if name.startswith("swin") else int(name.split("patch")[1].split("_")[0])


EXPORTERS = ("auto", "torchscript", "dynamo")


def export_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                atol: float = 1e-3, rtol: float = 1e-3, opset: int | None = None,
                exporter: str = "auto") -> dict:
    """Export ``checkpoint`` to ``out`` (.onnx) and verify it; returns a summary dict.

    ``exporter``: ``torchscript`` (torch's tracing exporter, :mod:`rsgeo.infer.onnx_trace`:
    about 1 s for a tiny model), ``dynamo`` (``torch.export``: 10-15 s on 2 CPU cores) or
    ``auto``: TorchScript, then dynamo if tracing fails or its model does not match torch at
    other input sizes. The summary's ``exporter`` says which one wrote the file."""
    import onnx

    from rsgeo.tasks.bundle import load_task_model  # lazy: torch + timm (read_metadata needs neither)

    if exporter not in EXPORTERS:
        raise InputError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    check_onnx_output(out)
    check_output(out, overwrite, inputs=(checkpoint,))  # before the slow load and export
    model, config, meta = load_task_model(checkpoint)
    model.eval()
    stride = stride_of(config)
    bands = int(config.get("in_chans", 3))
    spec = get_task(config.get("task", "height"))
    inputs = list(spec.export_inputs)
    shape = dict(bands=bands, stride=stride, img_size=int(config.get("img_size", 2 * stride)),
                 tile=int(meta.get("tile", 2 * stride)))
    with atomic_path(out, overwrite, inputs=(checkpoint,)) as tmp, \
            progress(2, "export: tracing and checking", unit="stages") as bar:
        used, diff = export_checked(model, tmp, inputs, shape, exporter, opset, (atol, rtol),
                                    checkpoint)
        bar.advance(1)
        bar.update(description="export: writing metadata")
        proto = onnx.load(str(tmp))
        props = {k: json.dumps(v) for k, v in meta.items()}
        props.update(rsgeo_version=json.dumps(__version__), config=json.dumps(config),
                     stride=json.dumps(stride), format=json.dumps("rsgeo-onnx"),
                     inputs=json.dumps(inputs), writer=json.dumps(spec.writer.describe()))
        onnx.helper.set_model_props(proto, props)
        onnx.save(proto, str(tmp))
        bar.advance(1)
    return {"output": str(out), "task": meta.get("task"), "bands": bands, "stride": stride,
            "inputs": inputs, "max_abs_diff": diff, "exporter": used, "metadata": sorted(props)}


def export_checked(model, path: Path, inputs: list[str], shape: dict, exporter: str,
                   opset: int | None, tol: tuple[float, float], checkpoint) -> tuple[str, float]:
    """Write ``model`` to ``path`` with ``exporter`` (``auto``: TorchScript, then dynamo)
    and :func:`verify` it; returns ``(exporter used, max |ORT - torch|)``."""
    tries = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    for i, name in enumerate(tries):
        try:
            if name == "torchscript":
                _export_torchscript(model, path, inputs, shape, opset, checkpoint)
            else:
                _export_dynamo(model, path, inputs, shape, opset, checkpoint)
            return name, verify(model, path, shape["bands"], shape["stride"], *tol,
                                img_size=shape["img_size"])
        except RsgeoError as e:
            if i == len(tries) - 1:
                raise
            log.warning("export: the %s exporter's model was refused (%s); trying %s",
                        name, first_line(e, 160), tries[i + 1])
    raise AssertionError("unreachable")


def _out_of_room(e: Exception, path: Path) -> bool:
    """The exporter failed because the output could not be written (disk full, file size
    limit), not because of the model: no other exporter is tried, and the error names the
    output and the OS's reason rather than the checkpoint."""
    return bool(named_reason(e) or write_problem(path if path.exists() else path.parent))


def _export_torchscript(model, path, inputs, shape, opset, checkpoint) -> None:
    import torch

    h, w = trace_size(shape["stride"])
    example = tuple(torch.randn(2, shape["bands"], h, w) for _ in inputs)
    try:
        export_traced(model, example, inputs, path, opset)
    except Exception as e:
        if _out_of_room(e, path):
            raise   # the disk, not the model: atomic_path names the output and the reason
        raise RsgeoError(f"torch.onnx.export (TorchScript) failed ({type(e).__name__}: "
                         f"{first_line(e, 160)})", checkpoint) from None


def _export_dynamo(model, path, inputs, shape, opset, checkpoint) -> None:
    import torch

    stride, bands = shape["stride"], shape["bands"]
    size = max(shape["tile"] // 4 // stride * stride, 2 * stride)
    example = tuple(torch.randn(2, bands, size, size) for _ in inputs)
    batch = torch.export.Dim("batch", min=1, max=4096)
    h, w = torch.export.Dim("h", min=1, max=4096), torch.export.Dim("w", min=1, max=4096)
    dims = tuple({0: batch, 2: stride * h, 3: stride * w} for _ in inputs)
    kw = {"opset_version": opset} if opset else {}
    try:
        with warnings.catch_warnings():  # axis-name notes about the shared batch/h/w dims
            warnings.simplefilter("ignore", UserWarning)
            program = torch.onnx.export(model, example, dynamo=True, input_names=inputs,
                                        output_names=["output"], dynamic_shapes=dims,
                                        optimize=True, verbose=False, **kw)
        program.save(str(path))
    except Exception as e:
        if _out_of_room(e, path):
            raise   # the disk, not the model: atomic_path names the output and the reason
        raise RsgeoError(f"torch.onnx.export failed ({type(e).__name__}: "
                         f"{first_line(e, 160)})", checkpoint) from None


def verify(model, path: Path, bands: int, stride: int, atol: float, rtol: float,
           img_size: int | None = None) -> float:
    """Compare ORT with torch on random inputs of three shapes (batch 1-3, sizes other than
    the traced one, and the ``img_size`` square the position embedding is stored for);
    raise if they differ."""
    import torch

    sess = session.ort_session(path, "cpu")
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    worst = 0.0
    g = max((img_size or 2 * stride) // stride, 1)
    for shape in ((2, bands, 2 * stride, 3 * stride), (1, bands, 4 * stride, 2 * stride),
                  (3, bands, g * stride, g * stride)):
        xs = [rng.standard_normal(shape).astype(np.float32) for _ in names]
        with torch.no_grad():
            ref = model(*(torch.from_numpy(x) for x in xs)).numpy()
        try:
            got = sess.run(None, dict(zip(names, xs)))[0]
        except Exception as e:  # a size baked into the graph: ORT refuses other sizes
            raise RsgeoError(f"export check failed: ONNX Runtime cannot run input {shape} "
                             f"({first_line(e, 120)})") from None
        if got.shape != ref.shape:
            raise RsgeoError(f"export check failed: ONNX output shape {got.shape} != {ref.shape}")
        diff = float(np.abs(got - ref).max())
        worst = max(worst, diff)
        if not np.allclose(got, ref, atol=atol, rtol=rtol):
            raise RsgeoError(f"export check failed: ONNX Runtime differs from torch by {diff:.3g} "
                             f"(atol {atol}, rtol {rtol}) on input {shape}")
    return worst


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON-decoded metadata_props of an rsgeo ONNX file."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, truncated file, not ONNX at all
        raise InputError(f"not a readable ONNX model, damaged or truncated? ({first_line(e, 120)})",
                         path) from None
    out = {}
    for p in proto.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            out[p.key] = p.value
    return out
