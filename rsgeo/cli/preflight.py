"""Checks a training or export command makes before it imports the library (torch, timm).

Those imports take 4-7 s on 2 cores; a mistyped dataset, encoder, task or method, or an
occupied output folder, is answered at once (one line, exit 2) instead of after them. The
library makes every one of these checks itself where it meets the thing; these only come
first. Nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path

from rsgeo.data.folder import dataset_classes, require_chip_dataset
from rsgeo.errors import InputError
from rsgeo.io.atomic import check_output
from rsgeo.methods import registry
from rsgeo.tasks import get_task
from rsgeo.tasks.files import check_encoder_arg, check_onnx_output, resolve_model_path
from rsgeo.train.runs import check_run


def finetune(dataset, task: str, out, *, encoder: str = "random", backbone: str | None = None,
             head: str | None = None, inputs: str = "rgb", val_dataset=None, adapt_to=None,
             num_classes: int | None = None, class_weights=None, aux: bool = False,
             resume: bool = False, overwrite: bool = False) -> None:
    """``rsgeo finetune``'s arguments, before :func:`rsgeo.finetune.finetune` loads."""
    spec = get_task(task)
    spec.check_head(head)
    spec.check_inputs(inputs)
    for folder in (dataset, val_dataset, adapt_to):
        if folder is not None:
            require_chip_dataset(folder)
    declared, found = dataset_classes([d for d in (dataset, val_dataset) if d],
                                      spec.class_modality(aux))
    spec.check_classes(num_classes, class_weights, declared, aux, found)
    check_encoder_arg(encoder, backbone)
    check_run(out, "finetune", resume=resume, overwrite=overwrite, inputs=(dataset,))


def pretrain(dataset, method: str, out, *, resume: bool = False,
             overwrite: bool = False) -> None:
    """``rsgeo pretrain``'s arguments, before :func:`rsgeo.pretrain.pretrain` loads."""
    registry.get(method)
    require_chip_dataset(dataset)
    check_run(out, "pretrain", resume=resume, overwrite=overwrite, inputs=(dataset,))


def export(checkpoint, out, *, overwrite: bool = False) -> None:
    """``rsgeo export``'s arguments, before :func:`rsgeo.infer.export.export_onnx` loads."""
    if Path(checkpoint).suffix.lower() == ".onnx" and Path(checkpoint).is_file():
        raise InputError("is already an ONNX model; rsgeo export takes a fine-tuned "
                         "checkpoint (RUN/best.ckpt or the run folder)", checkpoint)
    resolve_model_path(checkpoint)
    check_onnx_output(out)
    check_output(out, overwrite, inputs=(checkpoint,))
